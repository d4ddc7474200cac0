"""Quality of a reconstruction without a ground-truth mesh: agreement with the input views.

A real capture ships no reference surface, but every view carries evidence the surface must explain: its
silhouette, and (photometric-stereo data) its normal map. This module measures a trained run against them:

- silhouette IoU: the mesh ray-cast from each camera against the view's mask;
- normal error: the angle between the input normal map and the mesh's normals (ray-cast), and the model's
  volume-rendered normals, inside the mask, split into training views and views held out of training
  (``--pipeline.datamanager.dataparser.eval-mode interval``);
- detached pieces: the share of the raw marching-cubes surface outside its largest connected component;
- a picture per view: input normals | mesh normals | the mesh shaded | angular error.

Everything is computed in the run's normalised frame with the run's own cameras, so a mesh in world units
(``recon-extract-mesh``) is mapped with the run's ``dataparser_transform`` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import trimesh
from nerfstudio.pipelines.base_pipeline import Pipeline

from recon_plugin.components.raycast import MeshRayCaster
from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.data.transforms import world_to_normalized
from recon_plugin.eval.normal_metrics import angle_map_degrees, angle_summary

__all__ = ["ViewEvidence", "detached_fraction", "evaluate_views", "silhouette_iou"]

#: Error colour map's full scale in degrees.
ERROR_SCALE_DEG = 30.0


@dataclass
class ViewEvidence:
    """What one input view says about the surface, in the run's normalised frame."""

    name: str
    split: str
    """"train" or "held-out"."""
    camera_index: int
    """Index into the split's dataset."""
    mask: np.ndarray
    """(H, W) bool silhouette."""
    normal: np.ndarray | None
    """(H, W, 3) unit world-frame input normals, or None (photo data)."""
    trusted: np.ndarray | None
    """(H, W) bool pixels whose input normal the estimator trusts (uncertainty mask), or None."""
    image: np.ndarray
    """(H, W, 3) the view's image in [0, 1] (a photo, or the shaded reflectance of normal-map data)."""
    rotation: np.ndarray
    """(3, 3) camera-to-world rotation (OpenGL axes)."""


def silhouette_iou(predicted: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two boolean images (1.0 when both are empty)."""
    union = np.logical_or(predicted, mask).sum()
    return float(np.logical_and(predicted, mask).sum() / union) if union else 1.0


def detached_fraction(mesh: trimesh.Trimesh) -> tuple[float, int]:
    """Share of the surface area outside the largest connected component, and the number of components."""
    components = mesh.split(only_watertight=False)
    if len(components) <= 1:
        return 0.0, len(components)
    areas = np.array([part.area for part in components])
    return float(1.0 - areas.max() / areas.sum()), len(components)


def _view_evidence(pipeline: Pipeline) -> List[ViewEvidence]:
    """Every view of the run's data: the training split, then the held-out split when it differs."""
    datamanager = pipeline.datamanager
    views: List[ViewEvidence] = []
    splits = [("train", datamanager.train_dataset)]
    eval_dataset = getattr(datamanager, "eval_dataset", None)
    train_names = {str(name) for name in datamanager.train_dataset.image_filenames}
    if eval_dataset is not None and not {str(name) for name in eval_dataset.image_filenames} <= train_names:
        splits.append(("held-out", eval_dataset))
    for split, dataset in splits:
        for index in range(len(dataset)):
            data = dataset.get_data(index)
            mask = data.get("fg_mask")
            if mask is None:
                raise ValueError(
                    f"{dataset.image_filenames[index]}: the view has no silhouette (mask); silhouette IoU needs masks"
                )
            normal = data.get("normal")
            trusted = data.get("normal_weight")
            views.append(
                ViewEvidence(
                    name=Path(dataset.image_filenames[index]).stem,
                    split=split,
                    camera_index=index,
                    mask=mask[..., 0].numpy() > 0.5,
                    normal=None if normal is None else normal.numpy(),
                    trusted=None if trusted is None else trusted[..., 0].numpy() > 0.5,
                    image=data["image"][..., :3].numpy(),
                    rotation=dataset.cameras.camera_to_worlds[index, :3, :3].numpy(),
                )
            )
    return views


def _split_dataset(pipeline: Pipeline, split: str):
    datamanager = pipeline.datamanager
    return datamanager.train_dataset if split == "train" else datamanager.eval_dataset


def _camera_rays(pipeline: Pipeline, view: ViewEvidence) -> tuple[torch.Tensor, torch.Tensor]:
    cameras = _split_dataset(pipeline, view.split).cameras
    bundle = cameras.generate_rays(camera_indices=view.camera_index)
    return bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)


def _model_normals(pipeline: Pipeline, view: ViewEvidence) -> np.ndarray:
    """The model's volume-rendered world normals (H, W, 3) for a view."""
    cameras = _split_dataset(pipeline, view.split).cameras
    with torch.no_grad():
        outputs = pipeline.model.get_outputs_for_camera(cameras[view.camera_index : view.camera_index + 1])
    return outputs["normal"].cpu().numpy()


def _error_colours(angles: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Angular error as colour: black 0 deg, through red, to yellow at ERROR_SCALE_DEG; grey outside ``valid``."""
    t = np.clip(angles / ERROR_SCALE_DEG, 0.0, 1.0)
    colour = np.stack([np.clip(2.0 * t, 0, 1), np.clip(2.0 * t - 1.0, 0, 1), np.zeros_like(t)], axis=-1)
    return np.where(valid[..., None], colour, 0.25)


def _with_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with the mask's boundary drawn in yellow."""
    inside = np.pad(mask, 1, mode="edge")
    boundary = mask & ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
    return np.where(boundary[..., None], np.array([1.0, 0.9, 0.0]), np.clip(image, 0.0, 1.0))


def _shaded(normals_camera: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """A grey Lambertian rendering lit from the upper left of the camera (OpenGL camera frame)."""
    light = np.array([-0.4, 0.5, 0.77])
    light /= np.linalg.norm(light)
    value = 0.15 + 0.85 * np.clip(normals_camera @ light, 0.0, 1.0)
    return np.where(hit[..., None], value[..., None].repeat(3, -1), 0.0)


def evaluate_views(
    pipeline: Pipeline,
    mesh_world: trimesh.Trimesh,
    output_dir: Path | None = None,
    model_normals: str = "held-out",
    log: Callable[[str], None] | None = print,
) -> Dict:
    """Silhouette IoU and normal errors of a mesh (world units) and of the model, per view and per split.

    Args:
        pipeline: the loaded run (``load_pipeline``; its datasets give the views, masks and normal maps).
        mesh_world: the surface in the input's world units.
        output_dir: where ``views/<split>_<name>.png`` pictures go (input normals | mesh normals | shaded | error);
            None writes nothing.
        model_normals: which views also get the model's volume-rendered normals scored: "held-out", "all" or
            "none" (a full-size render costs tens of seconds per view on a CPU).
        log: progress lines (None: silent).

    Returns:
        A dict with ``silhouette_iou`` (mean, min, per view), ``mesh_normal_error`` and ``model_normal_error``
        (each per split: mean/median degrees over all masked pixels the surface covers) and ``per_view`` rows.
    """
    if model_normals not in ("held-out", "all", "none"):
        raise ValueError(f"model_normals must be 'held-out', 'all' or 'none', got {model_normals!r}")
    outputs = pipeline.datamanager.train_dataparser_outputs
    transform = outputs.dataparser_transform.cpu().numpy()
    scale = float(outputs.dataparser_scale)
    vertices = world_to_normalized(np.asarray(mesh_world.vertices), transform, scale)
    caster = MeshRayCaster(vertices, np.asarray(mesh_world.faces))
    views = _view_evidence(pipeline)
    rows: List[Dict] = []
    angles: Dict[str, Dict[str, List[np.ndarray]]] = {"mesh": {}, "model": {}}
    for number, view in enumerate(views):
        origins, directions = _camera_rays(pipeline, view)
        hits = caster.cast(origins, directions)
        height, width = view.mask.shape
        hit = hits.hit.numpy().reshape(height, width)
        row: Dict = {"name": view.name, "split": view.split, "silhouette_iou": silhouette_iou(hit, view.mask)}
        mesh_normals = hits.normal.numpy().reshape(height, width, 3)
        if view.normal is not None:
            scored = view.mask & hit
            mesh_angles = angle_map_degrees(mesh_normals, view.normal)
            angles["mesh"].setdefault(view.split, []).append(mesh_angles[scored])
            row["mesh_normal_error_deg"] = float(mesh_angles[scored].mean()) if scored.any() else None
            if view.trusted is not None:
                trusted = scored & view.trusted
                row["mesh_normal_error_trusted_deg"] = float(mesh_angles[trusted].mean()) if trusted.any() else None
            if model_normals == "all" or (model_normals == "held-out" and view.split == "held-out"):
                rendered = _model_normals(pipeline, view)
                model_angles = angle_map_degrees(rendered, view.normal)
                angles["model"].setdefault(view.split, []).append(model_angles[view.mask])
                row["model_normal_error_deg"] = float(model_angles[view.mask].mean())
        rows.append(row)
        if output_dir is not None:
            _write_picture(Path(output_dir) / "views" / f"{view.split}_{view.name}.png", view, hit, mesh_normals)
        if log is not None:
            scores = ", ".join(f"{key} {value:.3f}" for key, value in row.items() if isinstance(value, float))
            log(f"  view {number + 1}/{len(views)} {view.split} {view.name}: {scores}")

    ious = np.array([row["silhouette_iou"] for row in rows])
    result: Dict = {
        "silhouette_iou": {"mean": float(ious.mean()), "min": float(ious.min())},
        "num_views": {split: sum(row["split"] == split for row in rows) for split in ("train", "held-out")},
    }
    for source, by_split in angles.items():
        if by_split:
            result[f"{source}_normal_error"] = {
                split: angle_summary(np.concatenate(values)) for split, values in by_split.items()
            }
    result["per_view"] = rows
    return result


def _write_picture(path: Path, view: ViewEvidence, hit: np.ndarray, mesh_normals: np.ndarray) -> None:
    """input normals | mesh normals | mesh shaded | angular error (normal-map data) or photo with the mask's outline
    | mesh normals | mesh shaded (photos), side by side; normals in the camera frame's colour encoding."""
    to_camera = view.rotation  # world -> camera is R^T n; in row-vector form n @ R
    mesh_camera = mesh_normals @ to_camera
    panels = []
    if view.normal is not None:
        panels.append(encode_normals(view.normal @ to_camera) * view.mask[..., None])
    else:
        panels.append(_with_outline(view.image, view.mask))
    panels.append(np.where(hit[..., None], encode_normals(mesh_camera), 0.0))
    panels.append(_shaded(mesh_camera, hit))
    if view.normal is not None:
        scored = view.mask & hit
        panels.append(_error_colours(angle_map_degrees(mesh_normals, view.normal), scored))
    write_png(path, np.concatenate(panels, axis=1), bit_depth=8)
