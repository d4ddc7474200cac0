"""Dataset for nero-data: the RGB image, plus the foreground mask as ``fg_mask`` when the data has one."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from recon_plugin.data.nero_dataparser import load_foreground_mask
from recon_plugin.data.photo_views import read_photo


class NeroDataset(InputDataset):
    """Per view: ``image`` (H, W, 3; an alpha channel is dropped) and, when the dataparser found masks
    (GlossySynthetic depth maps, transforms.json ``mask_path`` files or the images' alpha), ``fg_mask``
    (H, W, 1) float, 1 on the object.

    The silhouette is called ``fg_mask``, not ``mask``: nerfstudio's pixel sampler would otherwise draw
    rays only inside it, and NeRO needs the background rays.
    """

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        """The view's image as its camera sees it: EXIF orientation applied where the dataparser found the camera
        describes the upright picture, resized (area averaging) to the camera's size under ``--downscale-factor``."""
        path = Path(self._dataparser_outputs.image_filenames[image_idx])
        upright = self.metadata.get("photo_upright")
        camera = self.cameras
        size = (int(camera.width[image_idx]), int(camera.height[image_idx]))
        return read_photo(path, size, upright=bool(upright[image_idx]) if upright else False)

    def get_image_float32(self, image_idx: int) -> torch.Tensor:
        image = super().get_image_float32(image_idx)
        return image[..., :3]

    def get_image_uint8(self, image_idx: int) -> torch.Tensor:
        image = super().get_image_uint8(image_idx)
        return image[..., :3]

    def get_image_uint8_and_opaque_mask(self, image_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The image (H, W, 3) and, from one read, the (H, W) bool of the pixels that show the captured scene:
        all of them unless the image has an alpha channel, then those with full alpha (a transparent pixel's
        colour is not the scene's background)."""
        image = super().get_image_uint8(image_idx)
        if image.shape[-1] == 4:
            return image[..., :3], image[..., 3] == 255
        return image[..., :3], torch.ones(image.shape[:2], dtype=torch.bool)

    def get_metadata(self, data: Dict) -> Dict:
        filenames = self.metadata.get("fg_mask_filenames")
        if filenames is None:
            return {}
        mask = load_foreground_mask(filenames[data["image_idx"]], self.metadata["fg_mask_kind"])
        height, width = data["image"].shape[:2]
        if mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        return {"fg_mask": torch.from_numpy(mask[..., None].astype(np.float32))}
