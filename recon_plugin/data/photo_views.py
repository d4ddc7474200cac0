"""What every photo layout of ``nero-data`` reads into: calibrated views in world units, before the split.

A layout reader (GlossySynthetic, transforms.json, NeuS/IDR, LLFF) produces a :class:`PhotoViews`; the dataparser
then places the unit sphere, splits the views and builds nerfstudio's cameras. Images are taken upright: a JPEG's
EXIF orientation is applied where the cameras describe the upright picture (see :func:`fit_to_images`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image, ImageOps

from recon_plugin.data.errors import NeroDataError
from recon_plugin.data.normalisation import SceneNormalisation

__all__ = ["PHOTO_SUFFIXES", "PhotoViews", "fit_to_images", "image_sizes", "list_photos", "read_photo"]

_EXIF_ORIENTATION = 0x0112

#: Image files a photo layout reads (case-insensitive).
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class PhotoViews:
    """Every view of a capture (world units, OpenGL camera axes), before the split and the normalisation."""

    image_filenames: List[Path]
    camera_to_worlds: np.ndarray
    """(N, 3, 4) camera-to-world, OpenGL camera axes (x right, y up, z backwards)."""
    intrinsics: np.ndarray
    """(N, 4) fx, fy, cx, cy in pixels of the images as the model sees them (after any downscaling), pixel
    centres at +0.5 (nerfstudio's convention)."""
    widths: np.ndarray
    heights: np.ndarray
    mask_filenames: List[Path] | None
    mask_kind: str
    """"depth" | "image" | "alpha" | "none"."""
    world_transform: np.ndarray = field(default_factory=lambda: np.eye(4)[:3])
    """(3, 4) original world -> world of the poses (transforms.json's applied_transform; identity otherwise)."""
    world_scale: float = 1.0
    split_indices: Dict[str, np.ndarray] | None = None
    """Named splits stated by the file (transforms.json's lists), or None: the dataparser's eval_mode decides."""
    distortion: torch.Tensor | None = None
    camera_type: CameraType = CameraType.PERSPECTIVE
    camera_metadata: Dict | None = None
    sphere_points: np.ndarray | None = None
    """World points that bound the object (depth maps or a point cloud), if the layout has them."""
    sphere_points_source: str = ""
    recorded_normalisation: SceneNormalisation | None = None
    """The unit sphere stored with the cameras (NeuS/IDR ``scale_mat_0``), if any."""
    upright: List[bool] | None = None
    """Per view, whether the image is read with its EXIF orientation applied (set by :func:`fit_to_images`)."""

    def __len__(self) -> int:
        return len(self.image_filenames)


def list_photos(folder: Path) -> list[Path]:
    """The PNG/JPEG files of a folder in sorted name order (hidden files skipped)."""
    return sorted(
        path for path in folder.iterdir() if path.suffix.lower() in PHOTO_SUFFIXES and not path.name.startswith(".")
    )


def image_sizes(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(width, height) of the stored pixels and of the upright picture (EXIF orientation applied), checking that
    the file decodes; the error names the file."""
    if not path.is_file():
        raise NeroDataError(f"{path}: image file missing")
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:  # verify() leaves the file unusable
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception as err:  # PIL raises many types for unreadable files
        raise NeroDataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    stored = (int(width), int(height))
    # EXIF orientations 5-8 turn the picture by 90 degrees.
    return stored, (stored[::-1] if orientation in (5, 6, 7, 8) else stored)


def fit_to_images(
    views: PhotoViews,
    where: str,
    downscale_factor: int = 1,
    exif_orientation: str = "auto",
    scaled_copies: bool = False,
) -> None:
    """Decides how each view's image is read and sets its size and intrinsics to match.

    On entry ``views.widths``/``heights`` are the image size the camera file describes. Per view, the stored
    pixels or the upright picture (EXIF orientation applied) is the image the camera describes: ``"auto"`` takes
    the one whose shape fits the camera and, when both fit (a square picture, a 180-degree turn), the stored
    pixels, which is what COLMAP computes poses on (it ignores EXIF orientation; LLFF, ns-process-data and NeuS's
    preprocessing use it); ``"apply"`` and ``"ignore"`` force one. The image is then divided by
    ``downscale_factor`` and the intrinsics scaled to it.

    ``scaled_copies``: the files may be a uniformly scaled copy of the described images (LLFF's poses_bounds.npy
    describes the full-size camera next to ``images_N/``); otherwise the sizes must agree to a pixel. A mismatch is
    an error naming the file.
    """
    if downscale_factor < 1:
        raise NeroDataError(f"--downscale-factor must be a positive integer, got {downscale_factor}")
    if exif_orientation not in ("auto", "apply", "ignore"):
        raise NeroDataError(f"--exif-orientation must be auto, apply or ignore, got {exif_orientation!r}")
    upright = []
    for index, path in enumerate(views.image_filenames):
        described = (float(views.widths[index]), float(views.heights[index]))
        stored, turned = image_sizes(path)

        if exif_orientation == "auto":
            use_turned = (
                turned != stored
                and _fits(turned, described, scaled_copies)
                and not _fits(stored, described, scaled_copies)
            )
        else:
            use_turned = exif_orientation == "apply"
        size = turned if use_turned else stored
        if not _fits(size, described, scaled_copies):
            both = ""
            if turned != stored:
                both = f" (stored {stored[0]}x{stored[1]}, EXIF-oriented {turned[0]}x{turned[1]})"
            raise NeroDataError(
                f"{path}: the image is {size[0]}x{size[1]} px{both} but {where} describes a "
                f"{described[0]:g}x{described[1]:g} px camera: not the same {'shape' if scaled_copies else 'size'}"
            )
        new_w, new_h = max(1, round(size[0] / downscale_factor)), max(1, round(size[1] / downscale_factor))
        scale_x, scale_y = new_w / described[0], new_h / described[1]
        views.intrinsics[index] *= np.array([scale_x, scale_y, scale_x, scale_y])
        views.widths[index], views.heights[index] = new_w, new_h
        upright.append(use_turned)
    views.upright = upright
    if any(upright):
        CONSOLE.print(f"nero-data: EXIF orientation applied to {sum(upright)} of {len(upright)} images")


def _fits(size: tuple[int, int], described: tuple[float, float], scaled_copies: bool) -> bool:
    """Whether an image of ``size`` is the one a camera of ``described`` size sees (to a pixel, or up to scale)."""
    if scaled_copies:
        return bool(np.isclose(size[0] / described[0], size[1] / described[1], rtol=0.01))
    return abs(size[0] - described[0]) <= 1 and abs(size[1] - described[1]) <= 1


def read_photo(path: Path, size: tuple[int, int] | None = None, upright: bool = False) -> np.ndarray:
    """The image as (H, W, 3 or 4) uint8: EXIF orientation applied when ``upright``, area-resampled to ``size``
    (width, height) when given. Grey, palette and 16-bit images are converted."""
    if not path.is_file():
        raise NeroDataError(f"{path}: image file missing")
    try:
        image = Image.open(path)
        image.load()
    except Exception as err:
        raise NeroDataError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    if upright:
        image = ImageOps.exif_transpose(image)
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(int(s) for s in size), resample=Image.Resampling.BOX)
    if image.mode in ("RGB", "RGBA"):
        array = np.asarray(image)
    elif image.mode in ("LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        array = np.asarray(image.convert("RGBA"))
    elif image.mode.startswith("I"):
        array = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        array = np.repeat(array[..., None], 3, axis=-1)
    else:
        array = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(array, dtype=np.uint8)
