"""Material and relighting errors of a nero-material run against a ``recon-synth glossy`` ground truth.

- :func:`material_errors`: at the ground-truth surface points (``gt_materials.npz``, world units), albedo error
  after a per-channel scale fit (the albedo / light scale is ambiguous), roughness mean absolute error and the
  share of points whose metallic is on the right side of 0.5.
- :func:`evaluate_relight_dirs`: relit PNGs against ``DATA/relight/k.png``; PSNR over the object's pixels (the
  depth maps' foreground) and over the whole image, SSIM (and LPIPS when its weights are available offline) of
  the image with the background taken from the ground truth, so they measure the object alone.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from recon_plugin.data.image_io import read_image

__all__ = [
    "evaluate_relight_dirs",
    "material_errors",
    "material_errors_of_pipeline",
    "material_errors_of_run",
    "read_ground_truth_materials",
]


def material_errors(predicted: dict, truth: dict) -> dict:
    """Errors of predicted albedo (N, 3) linear, roughness (N,), metallic (N,) against the same keys of ``truth``."""
    albedo, gt_albedo = np.asarray(predicted["albedo"], np.float64), np.asarray(truth["albedo"], np.float64)
    # Per-channel least-squares scale s_c minimising |s_c p_c - g_c|^2.
    scale = (albedo * gt_albedo).sum(0) / np.maximum((albedo * albedo).sum(0), 1e-12)
    roughness = np.asarray(predicted["roughness"], np.float64).reshape(-1)
    metallic = np.asarray(predicted["metallic"], np.float64).reshape(-1)
    gt_roughness = np.asarray(truth["roughness"], np.float64).reshape(-1)
    gt_metallic = np.asarray(truth["metallic"], np.float64).reshape(-1)
    return {
        "albedo_mae_after_scale": float(np.abs(albedo * scale - gt_albedo).mean()),
        "albedo_scale": scale.tolist(),
        "roughness_mae": float(np.abs(roughness - gt_roughness).mean()),
        "metallic_accuracy": float(((metallic > 0.5) == (gt_metallic > 0.5)).mean()),
        "metallic_mae": float(np.abs(metallic - gt_metallic).mean()),
        "num_points": int(len(gt_roughness)),
    }


def read_ground_truth_materials(data: Path) -> dict:
    """``data/gt_materials.npz`` (written by recon-synth glossy): world-unit points and their true materials."""
    gt_path = Path(data) / "gt_materials.npz"
    if not gt_path.is_file():
        raise FileNotFoundError(f"{gt_path}: no ground-truth materials (written by recon-synth glossy)")
    with np.load(gt_path) as archive:
        return {key: archive[key] for key in ("points", "albedo", "roughness", "metallic")}


def material_errors_of_pipeline(pipeline, truth: dict) -> dict:
    """:func:`material_errors` of a loaded nero-material pipeline at the world-unit points of ``truth``."""
    from recon_plugin.data.transforms import world_to_normalized
    from recon_plugin.export.materials import query_materials

    outputs = pipeline.datamanager.train_dataparser_outputs
    points = world_to_normalized(
        truth["points"], outputs.dataparser_transform.double().numpy(), float(outputs.dataparser_scale)
    )
    with torch.no_grad():
        predicted = query_materials(pipeline.model, points)
    return material_errors(predicted, truth)


def material_errors_of_run(config: Path, data: Path) -> dict:
    """:func:`material_errors` of a nero-material run (its config.yml) at ``data/gt_materials.npz``."""
    truth = read_ground_truth_materials(data)
    from recon_plugin.export.loading import load_pipeline

    run_config, pipeline, _, step = load_pipeline(config)
    if run_config.method_name != "nero-material":
        raise ValueError(f"{config}: a {run_config.method_name} run, not nero-material")
    return {**material_errors_of_pipeline(pipeline, truth), "step": step}


def evaluate_relight_dirs(pred_dir: Path, data_dir: Path) -> dict:
    """Relighting PSNR / SSIM of ``pred_dir/k.png`` against ``data_dir/relight/k.png`` for every relit view."""
    from recon_plugin.components.image_metrics import ImageMetrics
    from recon_plugin.data.nero_dataparser import DEPTH_BACKGROUND, read_glossy_depth

    pred_dir, data_dir = Path(pred_dir), Path(data_dir)
    references = sorted((data_dir / "relight").glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    if not references:
        raise FileNotFoundError(f"{data_dir / 'relight'}: no relit ground-truth views (recon-synth glossy writes them)")
    metrics = ImageMetrics()
    object_error, image_error, object_pixels, image_pixels = 0.0, 0.0, 0, 0
    per_view = {}
    for reference in references:
        prediction = pred_dir / reference.name
        if not prediction.is_file():
            raise FileNotFoundError(f"{prediction}: missing relit view (the ground truth has {reference})")
        truth = read_image(reference)[..., :3].astype(np.float64)
        ours = read_image(prediction)[..., :3].astype(np.float64)
        if ours.shape != truth.shape:
            raise ValueError(f"{prediction}: size {ours.shape[:2]} differs from {reference}'s {truth.shape[:2]}")
        depth_path = data_dir / f"{reference.stem}-depth.png"
        on_object = (
            read_glossy_depth(depth_path) < DEPTH_BACKGROUND if depth_path.is_file() else np.ones(truth.shape[:2], bool)
        )
        squared = (ours - truth) ** 2
        object_error += float(squared[on_object].sum())
        object_pixels += int(on_object.sum()) * 3
        image_error += float(squared.sum())
        image_pixels += squared.size
        composite = np.where(on_object[..., None], ours, truth)
        # LPIPS's weight download and its fallback notice print to stdout; recon-eval's stdout is one JSON line.
        with contextlib.redirect_stdout(sys.stderr):
            view = metrics(torch.from_numpy(composite).float(), torch.from_numpy(truth).float())
        view["psnr_object"] = (
            float(-10.0 * np.log10(max(squared[on_object].mean(), 1e-10))) if on_object.any() else None
        )
        per_view[reference.name] = view
    result = {
        "psnr_object": float(-10.0 * np.log10(max(object_error / max(object_pixels, 1), 1e-10))),
        "psnr_image": float(-10.0 * np.log10(max(image_error / image_pixels, 1e-10))),
        "ssim": float(np.mean([view["ssim"] for view in per_view.values()])),
        "num_views": len(per_view),
        "per_view": per_view,
    }
    lpips = [view["lpips"] for view in per_view.values() if "lpips" in view]
    if len(lpips) == len(per_view):
        result["lpips"] = float(np.mean(lpips))
    return result
