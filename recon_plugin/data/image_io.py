"""Reading and writing the image files of the RnB layout at their real bit depth.

PIL truncates 16-bit RGB PNGs, so everything goes through OpenCV, which keeps 8- and 16-bit
PNGs intact and reads EXR when its codec is enabled.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# OpenCV only decodes EXR when this is set before the module is imported.
os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
import cv2  # noqa: E402

IMAGE_SUFFIXES = (".png", ".exr", ".jpg", ".jpeg", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file is missing, unreadable or has an unexpected layout."""


def read_image(path: Path | str) -> np.ndarray:
    """Reads an image as float32 in [0, 1] (or the raw float values of an EXR).

    Integer images are divided by the maximum of their own bit depth (255 or 65535), so an 8-bit
    and a 16-bit encoding of the same picture give the same values. Colour images come back RGB
    (H, W, 3) or RGBA (H, W, 4); single-channel images come back (H, W).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageReadError(f"{path}: not a readable image (unsupported format or corrupt file)")
    if raw.dtype == np.uint8:
        image = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        image = raw.astype(np.float32) / 65535.0
    elif raw.dtype in (np.float32, np.float64, np.float16):
        image = raw.astype(np.float32)
    else:
        raise ImageReadError(f"{path}: unsupported pixel type {raw.dtype}")
    if image.ndim == 3:
        if image.shape[2] == 3:
            image = image[..., ::-1]
        elif image.shape[2] == 4:
            image = image[..., [2, 1, 0, 3]]
        elif image.shape[2] == 1:
            image = image[..., 0]
        else:
            raise ImageReadError(f"{path}: {image.shape[2]} channels, expected 1, 3 or 4")
    return np.ascontiguousarray(image)


def write_png(path: Path | str, image: np.ndarray, bit_depth: int = 16) -> None:
    """Writes an image with values in [0, 1] as an 8- or 16-bit PNG (1, 3 or 4 channels, RGB order)."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    image = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{path}: image contains NaN or infinite values")
    max_value = 255 if bit_depth == 8 else 65535
    encoded = np.round(np.clip(image, 0.0, 1.0) * max_value).astype(np.uint8 if bit_depth == 8 else np.uint16)
    if encoded.ndim == 3 and encoded.shape[2] == 3:
        encoded = encoded[..., ::-1]
    elif encoded.ndim == 3 and encoded.shape[2] == 4:
        encoded = encoded[..., [2, 1, 0, 3]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so an interrupted run never leaves a truncated PNG behind.
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), np.ascontiguousarray(encoded)):
        raise OSError(f"{path}: could not write PNG")
    os.replace(tmp, path)


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Maps unit normals in [-1, 1] to the (n + 1) / 2 colour encoding."""
    return (np.asarray(normals) + 1.0) * 0.5


def decode_normals(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_normals`, without renormalising."""
    return np.asarray(encoded)[..., :3] * 2.0 - 1.0


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in sorted name order (the RnB layout matches views by that order)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
