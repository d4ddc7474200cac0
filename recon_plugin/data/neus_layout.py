"""The NeuS / IDR photo layout (DTU and BlendedMVS as NeuS prepared them)::

    DATA/
      cameras_sphere.npz     world_mat_i = K[R|t] (world -> pixels), scale_mat_i (unit sphere -> world)
                             (or cameras.npz, IDR's name)
      image/000000.png ...   the photos (PNG or JPEG), matched to world_mat_i by sorted file order
      mask/000.png ...       optional silhouettes, same order (any bit depth, grey or RGB; white = object)

NeuS and IDR cast the ray of pixel (u, v) through the integer coordinate (u, v): OpenCV's convention, where a
pixel's centre sits on integer coordinates. nerfstudio puts it at (u + 0.5, v + 0.5), so the principal point
moves by half a pixel (``pixel_centers="integer"``, the default for this layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from recon_plugin.data.errors import NeroDataError
from recon_plugin.data.normalisation import from_similarity
from recon_plugin.data.photo_views import PhotoViews, image_sizes, list_photos
from recon_plugin.data.rnb_cameras import read_idr_cameras, split_similarity

#: Camera files of the layout, looked for in this order.
NEUS_CAMERA_FILES = ("cameras_sphere.npz", "cameras.npz")
#: A skew below this many pixels at the image's edge is dropped (nerfstudio's cameras have none).
MAX_DROPPED_SKEW_PX = 0.5


def neus_camera_file(root: Path) -> Path | None:
    """The layout's camera file in ``root`` when ``root`` holds an ``image/`` folder, else None."""
    if not (root / "image").is_dir():
        return None
    return next((root / name for name in NEUS_CAMERA_FILES if (root / name).is_file()), None)


def read_neus_layout(root: Path, pixel_centers: str = "integer") -> PhotoViews:
    """Reads a NeuS/IDR folder into :class:`PhotoViews` (world units, OpenGL axes, the described image size)."""
    camera_path = neus_camera_file(root)
    if camera_path is None:
        raise NeroDataError(f"{root}: not a NeuS/IDR folder (needs image/ and one of {', '.join(NEUS_CAMERA_FILES)})")
    images = list_photos(root / "image")
    if not images:
        raise NeroDataError(f"{root / 'image'}: no PNG or JPEG images")
    cameras = read_idr_cameras(camera_path)
    if len(cameras) != len(images):
        raise NeroDataError(
            f"{camera_path}: {len(cameras)} world_mat_i entries but {len(images)} images in {root / 'image'}"
        )
    intrinsics = cameras.intrinsics.copy()
    # K does not state its image size: of the stored pixels and the EXIF-upright picture, the camera describes the
    # one whose centre its principal point is nearer to (they differ only for photos turned by 90 degrees).
    sizes = []
    for index, path in enumerate(images):
        stored, turned = image_sizes(path)
        principal = intrinsics[index, :2, 2]
        sizes.append(min((stored, turned), key=lambda size: float(np.hypot(*(principal - np.asarray(size) / 2)))))
    widths, heights = (np.asarray(values, dtype=np.float64) for values in zip(*sizes, strict=True))
    masks = None
    if (root / "mask").is_dir():
        masks = list_photos(root / "mask")
        if len(masks) != len(images):
            raise NeroDataError(f"{root / 'mask'}: {len(masks)} masks but {len(images)} images in {root / 'image'}")
        for mask, image, size in zip(masks, images, sizes, strict=True):
            mask_size = image_sizes(mask)[0]
            if mask_size != size:
                raise NeroDataError(f"{mask}: size {mask_size} differs from its image {image} {size}")
    _drop_small_skew(intrinsics, widths, heights, camera_path)
    if pixel_centers == "integer":
        intrinsics[:, :2, 2] += 0.5
    recorded = None
    if cameras.recorded_normalisation is not None:
        scale, rotation, translation = split_similarity(cameras.recorded_normalisation, f"{camera_path}:scale_mat_0")
        recorded = from_similarity(scale, rotation, translation, f"{camera_path.name}:scale_mat_0")
    poses = cameras.poses[:, :3, :4] @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL camera axes
    return PhotoViews(
        image_filenames=images,
        camera_to_worlds=poses,
        intrinsics=np.stack(
            [intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2]], axis=-1
        ),
        widths=widths,
        heights=heights,
        mask_filenames=masks,
        mask_kind="image" if masks else "none",
        recorded_normalisation=recorded,
    )


def _drop_small_skew(intrinsics: np.ndarray, widths: np.ndarray, heights: np.ndarray, where: Path) -> None:
    """Zeroes K's skew where it moves no pixel by more than MAX_DROPPED_SKEW_PX (DTU's calibration has ~1e-3 fx);
    a larger skew is an error, since nerfstudio's pinhole cameras cannot represent it."""
    skew = intrinsics[:, 0, 1]
    shift = np.abs(skew) * heights / 2.0 / intrinsics[:, 1, 1]
    worst = int(np.argmax(shift))
    if shift[worst] > MAX_DROPPED_SKEW_PX:
        raise NeroDataError(
            f"{where}:world_mat_{worst}: K has skew {skew[worst]:.4g}, which moves the image's edge by "
            f"{shift[worst]:.2f} px; nerfstudio cameras have no skew (undistort/rectify the images first)"
        )
    if shift[worst] > 0.01:
        CONSOLE.print(f"nero-data: {where.name}: dropped K's skew (at most {shift[worst]:.3f} px at the image edge)")
    intrinsics[:, 0, 1] = 0.0
