"""The LLFF photo layout (LLFF, NeRD and Ref-NeRF real scenes)::

    DATA/
      poses_bounds.npy      (N, 17): per view a 3x5 matrix [R | t | (H, W, f)] flattened row by row, then the near
                            and far depth bounds; camera-to-world, R's columns in LLFF's (down, right, backwards) order
      images/ ...           the photos (PNG or JPEG), row i = the i-th file in sorted order
      images_4/ ...         optional downscaled copies, used for --downscale-factor 4 when present
      masks/ ...            optional silhouettes, matched to the images by file stem (DSC_0007.JPG <- DSC_0007.png)

(H, W, f) describe the camera of the full-size images; the files may be a scaled copy of them (same aspect ratio).
The principal point is the image centre. COLMAP, which LLFF's poses come from, puts pixel centres at +0.5, as
nerfstudio does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon_plugin.data.errors import NeroDataError
from recon_plugin.data.photo_views import PhotoViews, image_sizes, list_photos

LLFF_POSES = "poses_bounds.npy"


def llff_image_folder(root: Path, downscale_factor: int) -> tuple[Path, int]:
    """The folder to read and the factor still to apply: ``images_N/`` when it exists for factor N, else
    ``images/`` with the whole factor."""
    if downscale_factor > 1 and (root / f"images_{downscale_factor}").is_dir():
        return root / f"images_{downscale_factor}", 1
    return root / "images", downscale_factor


def read_llff_layout(root: Path, image_folder: Path) -> PhotoViews:
    """Reads an LLFF folder into :class:`PhotoViews` (world units, OpenGL axes, the described image size)."""
    poses_path = root / LLFF_POSES
    if not poses_path.is_file():
        raise NeroDataError(f"{poses_path}: missing (LLFF layout)")
    try:
        table = np.load(poses_path)
    except Exception as err:  # numpy raises ValueError/OSError/UnpicklingError for a bad file
        raise NeroDataError(f"{poses_path}: not a readable .npy file ({err})") from err
    if table.ndim != 2 or table.shape[1] != 17:
        raise NeroDataError(
            f"{poses_path}: expected an (N, 17) array (3x5 pose + near/far per view), got {table.shape}"
        )
    if not np.all(np.isfinite(table)):
        raise NeroDataError(f"{poses_path}: contains NaN or infinite values")
    if not image_folder.is_dir():
        raise NeroDataError(f"{image_folder}: folder not found (LLFF keeps its photos in images/)")
    images = list_photos(image_folder)
    if len(images) != len(table):
        raise NeroDataError(f"{poses_path}: {len(table)} poses but {len(images)} images in {image_folder}")

    matrices = table[:, :15].reshape(-1, 3, 5)
    down, right, backwards, centre = (matrices[:, :, i] for i in range(4))
    height, width, focal = matrices[:, 0, 4], matrices[:, 1, 4], matrices[:, 2, 4]
    if np.any(height <= 0) or np.any(width <= 0) or np.any(focal <= 0):
        view = int(np.argmin(np.minimum(np.minimum(height, width), focal)))
        raise NeroDataError(
            f"{poses_path}: row {view} has a non-positive H, W or focal length ({matrices[view, :, 4]})"
        )
    rotation = np.stack([right, -down, backwards], axis=-1)  # OpenGL: x right, y up, z backwards
    if not np.allclose(rotation @ rotation.transpose(0, 2, 1), np.eye(3), atol=1e-3):
        view = int(np.argmax(np.abs(rotation @ rotation.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))))
        raise NeroDataError(f"{poses_path}: row {view}'s 3x3 part is not a rotation")
    if np.any(np.linalg.det(rotation) < 0):
        view = int(np.argmin(np.linalg.det(rotation)))
        raise NeroDataError(f"{poses_path}: row {view} is a reflection, not a rotation (columns not down/right/back?)")

    masks = None
    if (root / "masks").is_dir():
        by_stem = {path.stem: path for path in list_photos(root / "masks")}
        masks = []
        for image in images:
            if image.stem not in by_stem:
                raise NeroDataError(f"{root / 'masks'}: no mask named {image.stem}.png/.jpg for the image {image}")
            mask = by_stem[image.stem]
            (mask_w, mask_h), (image_w, image_h) = image_sizes(mask)[0], image_sizes(image)[0]
            if mask_w * image_h != mask_h * image_w:
                raise NeroDataError(
                    f"{mask}: {mask_w}x{mask_h} px, not the shape of its image {image} ({image_w}x{image_h})"
                )
            masks.append(mask)
    return PhotoViews(
        image_filenames=images,
        camera_to_worlds=np.concatenate([rotation, centre[:, :, None]], axis=-1),
        intrinsics=np.stack([focal, focal, width / 2.0, height / 2.0], axis=-1),
        widths=width.astype(np.float64),
        heights=height.astype(np.float64),
        mask_filenames=masks,
        mask_kind="image" if masks else "none",
    )
