"""Dataset for RnB data: per-pixel world normals, albedo, silhouette and a shaded reference image."""

from __future__ import annotations

from typing import Dict, Literal

import cv2
import numpy as np
import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from recon_plugin.data.image_io import read_image
from recon_plugin.data.rnb_dataparser import foreground_mask, normal_image_to_vectors


class RnbDataset(InputDataset):
    """Returns, per view: ``normal`` (H, W, 3, world frame, unit), ``albedo`` (H, W, 3) when present,
    ``fg_mask`` (H, W, 1) when masks exist (else ``valid_normal``: pixels whose normal is not the all-zero
    background code), ``normal_weight`` (H, W, 1) with uncertainty masks, and
    ``image``: the albedo shaded by a headlight, which is what the model's ``rgb`` output renders.

    The silhouette is called ``fg_mask``, not ``mask``: nerfstudio's pixel sampler would otherwise
    draw rays only inside it, and the mask loss needs background rays.
    """

    def _resized(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        if self.scale_factor == 1.0:
            return image
        height, width = image.shape[:2]
        size = (int(width * self.scale_factor), int(height * self.scale_factor))
        return cv2.resize(image, size, interpolation=interpolation)

    def get_data(self, image_idx: int, image_type: Literal["uint8", "float32"] = "float32") -> Dict:
        metadata = self._dataparser_outputs.metadata
        normal_path = metadata["rnb_normal_filenames"][image_idx]
        normal_image = read_image(normal_path)
        normals = normal_image_to_vectors(normal_path, normal_image)
        normals = self._resized(normals, cv2.INTER_AREA)
        normals = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-8)
        rotation = self.cameras.camera_to_worlds[image_idx, :3, :3].numpy().astype(np.float32)
        height, width = normals.shape[:2]

        data: Dict = {"image_idx": image_idx}
        if metadata.get("rnb_mask_filenames") is not None:
            mask_image = self._resized(read_image(metadata["rnb_mask_filenames"][image_idx]), cv2.INTER_NEAREST)
            mask = foreground_mask(mask_image)
            data["fg_mask"] = torch.from_numpy(mask[..., None].astype(np.float32))
        else:
            # Without masks, background pixels are those whose normal is encoded as all-zero.
            mask = normal_image[..., :3].max(axis=-1) > 0
            if normal_path.suffix.lower() == ".exr" or mask.all():
                mask = np.ones(normal_image.shape[:2], dtype=bool)
            mask = self._resized(mask.astype(np.float32), cv2.INTER_NEAREST) > 0.5
            data["valid_normal"] = torch.from_numpy(mask[..., None].astype(np.float32))
        if metadata.get("rnb_uncertainty_filenames") is not None:
            trusted = self._resized(read_image(metadata["rnb_uncertainty_filenames"][image_idx]), cv2.INTER_NEAREST)
            data["normal_weight"] = torch.from_numpy(foreground_mask(trusted)[..., None].astype(np.float32))
        if metadata.get("rnb_albedo_filenames") is not None:
            albedo = self._resized(read_image(metadata["rnb_albedo_filenames"][image_idx])[..., :3], cv2.INTER_AREA)
            data["albedo"] = torch.from_numpy(np.ascontiguousarray(albedo, dtype=np.float32))
        else:
            albedo = np.ones((height, width, 3), dtype=np.float32)

        # Headlight shading in the camera frame: n_cam . (-ray direction), ray through each pixel centre.
        camera = self.cameras[image_idx]
        u = (np.arange(width, dtype=np.float32) + 0.5 - float(camera.cx)) / float(camera.fx)
        v = (np.arange(height, dtype=np.float32) + 0.5 - float(camera.cy)) / float(camera.fy)
        ray_gl = np.stack(np.broadcast_arrays(u[None, :], -v[:, None], -np.ones((1, 1), np.float32)), axis=-1)
        ray_gl /= np.linalg.norm(ray_gl, axis=-1, keepdims=True)
        shading = np.clip(-(normals * ray_gl).sum(-1, keepdims=True), 0.0, 1.0)
        image = albedo * shading * mask[..., None]

        data["normal"] = torch.from_numpy(np.ascontiguousarray(normals @ rotation.T, dtype=np.float32))
        data["image"] = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return data
