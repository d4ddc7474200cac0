"""Dataset for RnB data: per-pixel world normals, albedo, silhouette and a shaded reference image."""

from __future__ import annotations

from typing import Dict, Literal

import cv2
import numpy as np
import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from recon_plugin.data.image_io import read_image
from recon_plugin.data.rnb_dataparser import (
    coded_normal_present,
    foreground_mask,
    normal_image_to_vectors,
    view_silhouette,
)


class RnbDataset(InputDataset):
    """Returns, per view: ``normal`` (H, W, 3, world frame, unit), ``albedo`` (H, W, 3) when present,
    ``fg_mask`` (H, W, 1) when the dataparser found a silhouette source (mask folder or the alpha of RGBA
    normal maps; else ``valid_normal``: pixels whose normal is not coded as absent),
    ``normal_weight`` (H, W, 1) with uncertainty masks (their folder, or the alpha of RGBA albedo maps), and
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
        source = metadata.get("rnb_silhouette_source")
        threshold = metadata.get("rnb_silhouette_threshold", 0.5)
        if source is not None:
            mask_files = metadata.get("rnb_mask_filenames")
            mask_image = read_image(mask_files[image_idx]) if mask_files is not None else normal_image
            mask = view_silhouette(normal_image, mask_image, source, threshold)
            assert mask is not None, f"{normal_path}: no silhouette from source {source}"
            mask = self._resized(mask.astype(np.float32), cv2.INTER_NEAREST) > 0.5
            data["fg_mask"] = torch.from_numpy(mask[..., None].astype(np.float32))
        else:
            # Without masks, background pixels are those whose normal is coded as absent (all-zero or zero vector).
            mask = coded_normal_present(normal_image)
            if normal_path.suffix.lower() == ".exr" or mask.all():
                mask = np.ones(normal_image.shape[:2], dtype=bool)
            mask = self._resized(mask.astype(np.float32), cv2.INTER_NEAREST) > 0.5
            data["valid_normal"] = torch.from_numpy(mask[..., None].astype(np.float32))
        albedo_image = None
        if metadata.get("rnb_albedo_filenames") is not None:
            albedo_image = read_image(metadata["rnb_albedo_filenames"][image_idx])
        trusted = None
        if metadata.get("rnb_uncertainty_filenames") is not None:
            trusted = foreground_mask(read_image(metadata["rnb_uncertainty_filenames"][image_idx]))
        elif metadata.get("rnb_uncertainty_source") == "albedo-alpha" and albedo_image is not None:
            # RNb-NeuS2: the albedo's alpha is the normal-uncertainty mask.
            trusted = albedo_image[..., 3] > metadata.get("rnb_uncertainty_alpha_threshold", 0.99)
        if trusted is not None:
            trusted = self._resized(trusted.astype(np.float32), cv2.INTER_NEAREST) > 0.5
            data["normal_weight"] = torch.from_numpy(trusted[..., None].astype(np.float32))
        if albedo_image is not None:
            albedo = self._resized(np.ascontiguousarray(albedo_image[..., :3]), cv2.INTER_AREA)
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
