"""Surface-to-surface mesh metrics: accuracy, completeness, Chamfer distance, precision / recall / F-score.

Both meshes are sampled uniformly by area (seeded), and each sample's exact distance to the other
mesh's triangles is measured (open3d's RaycastingScene; trimesh's proximity query as a fallback).

- accuracy: mean distance from predicted samples to the ground-truth surface;
- completeness: mean distance from ground-truth samples to the predicted surface;
- chamfer: mean of the two;
- precision@t / recall@t: fraction of predicted / ground-truth samples within ``t × scale``;
  fscore@t is their harmonic mean.

Distances are reported in world units and, with a ``_rel`` suffix, divided by ``scale`` (for example
the object's bounding radius), so scenes of different sizes compare. Thresholds are fractions of
``scale``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh

from recon_plugin.data.transforms import load_dataparser_transform, normalized_to_world

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MeshLoadError",
    "evaluate_mesh_files",
    "evaluate_meshes",
    "load_mesh",
    "point_to_mesh_distance",
    "sample_surface",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.005, 0.01, 0.02)


class MeshLoadError(ValueError):
    """A mesh file is missing, unreadable, or holds no triangles."""


def load_mesh(path: Path | str) -> trimesh.Trimesh:
    """Reads a triangle mesh (PLY, OBJ, STL, GLB, ...) without modifying it.

    Raises:
        MeshLoadError: naming the file, if it is missing, unreadable, or has no triangles.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshLoadError(f"{path}: mesh file not found")
    if path.stat().st_size == 0:
        raise MeshLoadError(f"{path}: mesh file is empty")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many different types for bad files
        raise MeshLoadError(f"{path}: could not read mesh ({type(err).__name__}: {err})") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(getattr(mesh, "faces", ())) == 0:
        raise MeshLoadError(f"{path}: no triangles in the file (a point cloud or an empty mesh?)")
    if not np.all(np.isfinite(mesh.vertices)):
        raise MeshLoadError(f"{path}: mesh has NaN or infinite vertex coordinates")
    return mesh


def sample_surface(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points (float64) drawn uniformly by area over the mesh's triangles (deterministic per seed)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    triangles = vertices[np.asarray(mesh.faces)]
    areas = 0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(areas), size=count, p=areas / total)
    r1 = np.sqrt(rng.random(count))
    r2 = rng.random(count)
    a, b, c = triangles[chosen, 0], triangles[chosen, 1], triangles[chosen, 2]
    return (1.0 - r1)[:, None] * a + (r1 * (1.0 - r2))[:, None] * b + (r1 * r2)[:, None] * c


def point_to_mesh_distance(points: np.ndarray, mesh: trimesh.Trimesh, origin: np.ndarray | None = None) -> np.ndarray:
    """Exact unsigned distance (N,) from points (N, 3) to the mesh's triangles.

    ``origin`` is subtracted from both before the float32 open3d query, which keeps precision for
    geometry far from the coordinate origin (defaults to the mesh's bounding-box centre).
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if origin is None:
        origin = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    points = np.asarray(points, dtype=np.float64) - origin
    vertices = vertices - origin
    try:
        import open3d as o3d
    except ImportError:
        closest = trimesh.Trimesh(vertices, mesh.faces, process=False)
        _, distance, _ = trimesh.proximity.closest_point(closest, points)
        return np.asarray(distance, dtype=np.float64)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(vertices.astype(np.float32)),
        o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)),
    )
    distance = scene.compute_distance(o3d.core.Tensor(points.astype(np.float32)))
    return distance.numpy().astype(np.float64)


def _threshold_key(threshold: float) -> str:
    return f"{threshold:g}"


def evaluate_meshes(
    pred_mesh: trimesh.Trimesh,
    gt_mesh: trimesh.Trimesh,
    scale: float = 1.0,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    num_samples: int = 200_000,
    seed: int = 0,
) -> dict:
    """Compares a predicted mesh with the ground truth, both in the same (world) frame.

    Args:
        scale: reference length (e.g. the object's bounding radius); ``*_rel`` values are divided
            by it and thresholds are fractions of it.
        thresholds: relative distance thresholds for precision / recall / F-score.
        num_samples: points sampled on each surface.
        seed: sampling seed.

    Returns:
        A JSON-ready dict: ``accuracy``, ``completeness``, ``chamfer`` (world units), the same with
        ``_rel``, and ``precision`` / ``recall`` / ``fscore`` dicts keyed by threshold (e.g. "0.01").
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    thresholds = [float(t) for t in thresholds]
    gt_vertices = np.asarray(gt_mesh.vertices, dtype=np.float64)
    origin = 0.5 * (gt_vertices.min(axis=0) + gt_vertices.max(axis=0))
    pred_points = sample_surface(pred_mesh, num_samples, seed=seed)
    gt_points = sample_surface(gt_mesh, num_samples, seed=seed + 1)
    dist_pred_to_gt = point_to_mesh_distance(pred_points, gt_mesh, origin)
    dist_gt_to_pred = point_to_mesh_distance(gt_points, pred_mesh, origin)

    accuracy = float(dist_pred_to_gt.mean())
    completeness = float(dist_gt_to_pred.mean())
    chamfer = 0.5 * (accuracy + completeness)
    precision, recall, fscore = {}, {}, {}
    for t in thresholds:
        p = float(np.mean(dist_pred_to_gt < t * scale))
        r = float(np.mean(dist_gt_to_pred < t * scale))
        key = _threshold_key(t)
        precision[key], recall[key] = p, r
        fscore[key] = 2.0 * p * r / (p + r) if p + r > 0 else 0.0
    return {
        "accuracy": accuracy,
        "completeness": completeness,
        "chamfer": chamfer,
        "accuracy_rel": accuracy / scale,
        "completeness_rel": completeness / scale,
        "chamfer_rel": chamfer / scale,
        "precision": precision,
        "recall": recall,
        "fscore": fscore,
        "thresholds": thresholds,
        "thresholds_world": [t * scale for t in thresholds],
        "accuracy_median": float(np.median(dist_pred_to_gt)),
        "completeness_median": float(np.median(dist_gt_to_pred)),
        "scale": float(scale),
        "num_samples": int(num_samples),
        "seed": int(seed),
        "pred_vertices": len(pred_mesh.vertices),
        "pred_faces": len(pred_mesh.faces),
        "gt_vertices": len(gt_mesh.vertices),
        "gt_faces": len(gt_mesh.faces),
    }


def _scale_from_scene_json(gt_path: Path) -> tuple[float, str] | None:
    scene_json = gt_path.parent / "scene.json"
    if not scene_json.is_file():
        return None
    try:
        radius = float(json.loads(scene_json.read_text())["bounding_radius"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{scene_json}: cannot read 'bounding_radius' ({err}); pass --scale") from err
    return radius, f"{scene_json}:bounding_radius"


def evaluate_mesh_files(
    pred: Path | str,
    gt: Path | str,
    scale: float | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    num_samples: int = 200_000,
    seed: int = 0,
    transform: Path | str | None = None,
) -> dict:
    """File front end of :func:`evaluate_meshes`.

    Args:
        scale: reference length; when None, the ``bounding_radius`` of a ``scene.json`` beside the
            ground truth (synthetic scenes), else 1.0 (world units). ``scale_source`` says which.
        transform: ``dataparser_transforms.json`` (or its run folder) mapping PRED from nerfstudio's
            normalised frame back to world units, for meshes exported by ``ns-export``.
    """
    pred, gt = Path(pred), Path(gt)
    gt_mesh = load_mesh(gt)
    pred_mesh = load_mesh(pred)
    if transform is not None:
        matrix, factor = load_dataparser_transform(transform)
        pred_mesh = trimesh.Trimesh(
            normalized_to_world(pred_mesh.vertices, matrix, factor), pred_mesh.faces, process=False
        )
    if scale is not None:
        scale_source = "argument"
    else:
        found = _scale_from_scene_json(gt)
        scale, scale_source = found if found is not None else (1.0, "default (world units)")
    result = evaluate_meshes(pred_mesh, gt_mesh, scale=scale, thresholds=thresholds, num_samples=num_samples, seed=seed)
    return {
        "pred": str(pred),
        "gt": str(gt),
        **result,
        "scale_source": scale_source,
        "transform": None if transform is None else str(transform),
    }
