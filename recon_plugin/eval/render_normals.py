"""Normals rendered by a trained model, compared with the input normal maps of its training views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nerfstudio.pipelines.base_pipeline import Pipeline

from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.eval.normal_metrics import normal_angular_error


def render_view_normals(pipeline: Pipeline, view: int) -> np.ndarray:
    """World-frame normals (H, W, 3) rendered for training view ``view``."""
    cameras = pipeline.datamanager.train_dataset.cameras
    with torch.no_grad():
        outputs = pipeline.model.get_outputs_for_camera(cameras[view : view + 1].to(pipeline.device))
    return outputs["normal"].cpu().numpy()


def evaluate_rendered_normals(pipeline: Pipeline, output_dir: Path | None = None) -> dict:
    """Mean / median angular error (degrees) between rendered and input normals on the masks.

    With ``output_dir``, also writes the rendered normals as camera-frame PNGs in the input encoding,
    so that ``recon-eval normals OUTPUT_DIR DATA_DIR`` reproduces the figure.
    """
    dataset = pipeline.datamanager.train_dataset
    predictions, targets, masks = [], [], []
    for view in range(len(dataset)):
        data = dataset[view]
        rendered = render_view_normals(pipeline, view)
        mask = data.get("fg_mask", data.get("valid_normal"))
        mask_np = np.ones(rendered.shape[:2], bool) if mask is None else mask[..., 0].numpy() > 0.5
        predictions.append(rendered)
        targets.append(data["normal"].numpy())
        masks.append(mask_np)
        if output_dir is not None:
            rotation = dataset.cameras.camera_to_worlds[view, :3, :3].numpy()
            unit = rendered / np.maximum(np.linalg.norm(rendered, axis=-1, keepdims=True), 1e-8)
            camera_frame = unit @ rotation  # world -> camera: R^T n, row-vector form
            image = encode_normals(camera_frame) * mask_np[..., None]
            write_png(Path(output_dir) / f"{view:03d}.png", image, bit_depth=16)
    return normal_angular_error(np.stack(predictions), np.stack(targets), np.stack(masks))
