"""Writes a synthetic scene in the RnB (RNb-NeuS) folder layout, with exact ground truth.

Output folder::

    cameras.npz      world_mat_i, scale_mat_i, camera_mat_i (IDR convention, see scene.py)
    normal/000.png   16-bit RGB camera-frame normals, OpenGL axes (x right, y up, z to the camera),
                     encoded (n + 1) / 2, background 0
    albedo/000.png   16-bit RGB albedo, background 0 (optionally with per-view, per-channel gains)
    mask/000.png     single-channel 8- or 16-bit, 255 / 65535 on the object
    gt_mesh.ply      ground-truth surface in world units (watertight)
    scene.json       generator parameters and ground-truth placement

The folder is assembled next to the target and renamed into place at the end, so an interrupted
run leaves nothing half-written under the requested name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.data.synthetic.scene import (
    PIXEL_CENTER,
    Camera,
    SyntheticScene,
    make_cameras,
    make_scene,
    render_gbuffer,
)
from recon_plugin.data.synthetic.shapes import SHAPES, extract_mesh

__all__ = [
    "GENERATOR_VERSION",
    "albedo_gains",
    "camera_normals_opengl",
    "prepare_output",
    "scale_matrix",
    "write_gt_mesh",
    "write_rnb_scene",
]

GENERATOR_VERSION = "1.0.0"
#: The normalised unit sphere maps to a ball this many times the object's bounding radius.
SCALE_MAT_MARGIN = 1.1


def scale_matrix(scene: SyntheticScene, margin: float = SCALE_MAT_MARGIN) -> np.ndarray:
    """(4, 4) ``scale_mat``: unit sphere -> ball of radius ``margin × bounding radius`` at the object centre."""
    mat = np.eye(4)
    mat[:3, :3] *= margin * scene.bounding_radius
    mat[:3, 3] = scene.center
    return mat


def camera_normals_opengl(world_normals: np.ndarray, camera: Camera) -> np.ndarray:
    """World normals (..., 3) -> camera-frame normals in OpenGL axes (x right, y up, z towards the camera)."""
    return (world_normals @ camera.R.T) * np.array([1.0, -1.0, -1.0])


def albedo_gains(views: int, jitter: float, seed: int) -> np.ndarray:
    """Per-view, per-channel albedo factors (views, 3), uniform in [1 - jitter, 1 + jitter] (ones if 0)."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"albedo scale jitter must be in [0, 1), got {jitter}")
    if jitter == 0.0:
        return np.ones((views, 3))
    return np.random.default_rng([seed, 2]).uniform(1.0 - jitter, 1.0 + jitter, size=(views, 3))


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Checks the target folder and returns a fresh temporary folder beside it.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is off.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def _commit_output(tmp: Path, out: Path) -> None:
    """Moves the finished temporary folder to ``out``, replacing an existing folder."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_gt_mesh(scene: SyntheticScene, path: Path, resolution: int = 256) -> tuple[int, int]:
    """Writes the ground-truth surface in world units as binary PLY; returns (vertex, face) counts."""
    import trimesh

    vertices, faces = extract_mesh(scene.shape, resolution)
    mesh = trimesh.Trimesh(scene.to_world(vertices), faces, process=False)
    mesh.export(str(path))
    return len(vertices), len(faces)


def write_rnb_scene(
    out: Path | str,
    shape: str = "blob",
    views: int = 20,
    size: int = 128,
    seed: int = 0,
    albedo_scale_jitter: float = 0.0,
    mask_bit_depth: int = 8,
    mesh_resolution: int = 256,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Renders a synthetic scene and writes it in the RnB layout.

    Args:
        out: target folder; must be missing or empty unless ``overwrite``.
        shape: a name from :data:`recon_plugin.data.synthetic.shapes.SHAPES`.
        views: number of cameras. size: square image size in pixels. seed: camera spiral rotation
            and albedo gains.
        albedo_scale_jitter: F > 0 multiplies each view's albedo by per-channel factors drawn in
            [1 - F, 1 + F] (then clips to [0, 1]); the factors go to scene.json.
        mask_bit_depth: 8 or 16.
        mesh_resolution: marching-cubes grid of the ground-truth mesh.
        log: progress printer (None for silence).

    Returns:
        The scene.json content (plus ``path`` and ``seconds``).
    """
    say = log or (lambda _msg: None)
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    if mask_bit_depth not in (8, 16):
        raise ValueError(f"mask bit depth must be 8 or 16, got {mask_bit_depth}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    out = Path(out)
    start = time.perf_counter()
    gains = albedo_gains(views, albedo_scale_jitter, seed)
    tmp = prepare_output(out, overwrite)
    try:
        scene = make_scene(shape)
        cameras = make_cameras(scene, views, size, seed=seed)
        scale_mat = scale_matrix(scene)
        say(f"recon-synth: shape '{shape}', {views} views at {size}x{size} px, seed {seed}")
        arrays: dict[str, np.ndarray] = {}
        names = []
        coverage = []
        for i, camera in enumerate(cameras):
            name = f"{i:03d}.png"
            names.append(name)
            gbuffer = render_gbuffer(scene, camera)
            mask = gbuffer["mask"]
            coverage.append(float(mask.mean()))
            normals = np.where(mask[..., None], encode_normals(camera_normals_opengl(gbuffer["normal"], camera)), 0.0)
            albedo = np.zeros(mask.shape + (3,))
            albedo[mask] = np.clip(scene.albedo(gbuffer["position"][mask]) * gains[i], 0.0, 1.0)
            write_png(tmp / "normal" / name, normals, bit_depth=16)
            write_png(tmp / "albedo" / name, albedo, bit_depth=16)
            write_png(tmp / "mask" / name, mask.astype(np.float64), bit_depth=mask_bit_depth)
            arrays[f"world_mat_{i}"] = camera.world_mat
            arrays[f"scale_mat_{i}"] = scale_mat
            arrays[f"camera_mat_{i}"] = camera.camera_mat
            if (i + 1) % max(1, views // 4) == 0 or i + 1 == views:
                say(f"  rendered {i + 1}/{views} views ({time.perf_counter() - start:.1f} s)")
        np.savez(tmp / "cameras.npz", **arrays)
        n_vertices, n_faces = write_gt_mesh(scene, tmp / "gt_mesh.ply", mesh_resolution)
        say(f"  ground-truth mesh: {n_vertices} vertices, {n_faces} faces ({time.perf_counter() - start:.1f} s)")

        info = {
            "format": "rnb",
            "generator": "recon_plugin.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "shape": shape,
            "views": views,
            "size": size,
            "width": size,
            "height": size,
            "seed": seed,
            "object_center": scene.center.tolist(),
            "object_scale": scene.scale,
            "canonical_bounding_radius": scene.shape.bounding_radius,
            "bounding_radius": scene.bounding_radius,
            "scale_mat": scale_mat.tolist(),
            "pixel_center": PIXEL_CENTER,
            "camera_convention": "OpenCV; world_mat = [K 0; 0 1] [R t; 0 1] maps world to pixels",
            "normal_convention": "camera frame, OpenGL axes (x right, y up, z towards the camera), (n + 1) / 2",
            "normal_bit_depth": 16,
            "albedo_bit_depth": 16,
            "mask_bit_depth": mask_bit_depth,
            "albedo_scale_jitter": albedo_scale_jitter,
            "mesh_resolution": mesh_resolution,
            "mean_mask_coverage": float(np.mean(coverage)),
            "images": names,
        }
        if albedo_scale_jitter > 0:
            info["albedo_gains"] = gains.tolist()
        (tmp / "scene.json").write_text(json.dumps(info, indent=2) + "\n")
        _commit_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    say(f"recon-synth: wrote {out} in {seconds:.1f} s")
    return {**info, "path": str(out), "seconds": seconds}
