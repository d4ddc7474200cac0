"""Angular error between predicted and ground-truth normal maps.

Normal PNGs use the RnB encoding: camera-frame normals (OpenGL axes), stored as (n + 1) / 2 at 8 or
16 bits. Both sides are renormalised before comparison (quantisation leaves |n| != 1); a zero-length
vector (e.g. an empty prediction) counts as 90° off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recon_plugin.data.image_io import ImageReadError, decode_normals, list_images, read_image

__all__ = ["angle_map_degrees", "angle_summary", "evaluate_normal_dirs", "normal_angular_error"]

_WITHIN_DEG = (11.25, 22.5, 30.0)


def angle_summary(angles: np.ndarray) -> dict:
    """Mean, median and RMS of angles in degrees, and how many there are (None values when there are none)."""
    if angles.size == 0:
        return {"mean_deg": None, "median_deg": None, "rmse_deg": None, "num_pixels": 0}
    return {
        "mean_deg": float(angles.mean()),
        "median_deg": float(np.median(angles)),
        "rmse_deg": float(np.sqrt(np.mean(angles**2))),
        "num_pixels": int(angles.size),
    }


def normal_angular_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict:
    """Angular error in degrees between two normal maps on a mask.

    Args:
        pred, gt: normals in [-1, 1] (decoded, not necessarily unit), (H, W, 3) or (N, H, W, 3).
        mask: (H, W) or (N, H, W); boolean, or numeric with foreground > 0.5.

    Returns:
        ``mean_deg``, ``median_deg``, ``rmse_deg``, ``num_pixels`` over all masked pixels,
        ``within_<t>deg`` fractions for t in 11.25 / 22.5 / 30, and ``per_view`` (a list of the same
        summaries, one per view).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask)
    if pred.shape != gt.shape or pred.shape[-1] != 3 or pred.ndim not in (3, 4):
        raise ValueError(f"normal maps must both be (H, W, 3) or (N, H, W, 3); got {pred.shape} and {gt.shape}")
    if pred.ndim == 3:
        pred, gt, mask = pred[None], gt[None], mask[None]
    if mask.shape != pred.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match normal maps {pred.shape[:3]}")
    mask = mask if mask.dtype == bool else mask > 0.5
    return _aggregate([angle_map_degrees(p, g) for p, g in zip(pred, gt, strict=True)], list(mask))


def angle_map_degrees(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between two (..., 3) normal maps, after renormalisation."""

    pred_norm = np.linalg.norm(pred, axis=-1, keepdims=True)
    gt_norm = np.linalg.norm(gt, axis=-1, keepdims=True)
    a, b = pred / np.maximum(pred_norm, 1e-12), gt / np.maximum(gt_norm, 1e-12)
    # atan2(|a x b|, a . b) stays accurate for tiny angles, where arccos(a . b) loses precision.
    sine = np.linalg.norm(np.cross(a, b), axis=-1)
    angles = np.degrees(np.arctan2(sine, np.einsum("...i,...i->...", a, b)))
    degenerate = (pred_norm[..., 0] < 1e-6) | (gt_norm[..., 0] < 1e-6)
    return np.where(degenerate, 90.0, angles)


def _aggregate(angles: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Overall and per-view summaries of per-view angle maps on their masks."""
    per_view = [a[m] for a, m in zip(angles, masks, strict=True)]
    masked = np.concatenate(per_view) if per_view else np.zeros(0)
    result = angle_summary(masked)
    for t in _WITHIN_DEG:
        result[f"within_{t:g}deg"] = float(np.mean(masked < t)) if masked.size else None
    result["per_view"] = [angle_summary(v) for v in per_view]
    return result


def evaluate_normal_dirs(pred_dir: Path | str, data_dir: Path | str, mask_dir: Path | str | None = None) -> dict:
    """Compares the normal PNGs of ``pred_dir`` with ``data_dir/normal`` on ``data_dir/mask``.

    Files are matched by sorted order (the RnB convention); counts and image sizes must agree.
    """
    pred_dir, data_dir = Path(pred_dir), Path(data_dir)
    gt_dir = data_dir / "normal"
    mask_dir = Path(mask_dir) if mask_dir is not None else data_dir / "mask"
    for folder in (pred_dir, gt_dir, mask_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: folder not found")
    pred_files, gt_files, mask_files = list_images(pred_dir), list_images(gt_dir), list_images(mask_dir)
    if not gt_files:
        raise ImageReadError(f"{gt_dir}: no images")
    if len(pred_files) != len(gt_files) or len(mask_files) != len(gt_files):
        raise ValueError(
            f"image counts differ: {len(pred_files)} in {pred_dir}, {len(gt_files)} in {gt_dir}, "
            f"{len(mask_files)} in {mask_dir}"
        )
    angles, masks = [], []
    for pred_file, gt_file, mask_file in zip(pred_files, gt_files, mask_files, strict=True):
        gt = decode_normals(read_image(gt_file))
        pred = read_image(pred_file)
        if pred.ndim != 3:
            raise ImageReadError(f"{pred_file}: expected an RGB normal map, got shape {pred.shape}")
        pred = decode_normals(pred)
        mask = read_image(mask_file)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if pred.shape != gt.shape:
            raise ImageReadError(f"{pred_file}: size {pred.shape[:2]} differs from {gt_file} {gt.shape[:2]}")
        if mask.shape != gt.shape[:2]:
            raise ImageReadError(f"{mask_file}: size {mask.shape} differs from {gt_file} {gt.shape[:2]}")
        angles.append(angle_map_degrees(pred, gt))
        masks.append(mask > 0.5)
    result = _aggregate(angles, masks)
    for view, name in zip(result["per_view"], gt_files, strict=True):
        view["name"] = name.name
    return {"pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "mask_dir": str(mask_dir), **result}
