"""Writes a synthetic scene in the RnB (RNb-NeuS) folder layout, with exact ground truth.

Output folder::

    cameras.npz      world_mat_i, scale_mat_i, camera_mat_i (IDR convention, see scene.py)
    normal/000.png   16-bit RGB camera-frame normals, OpenGL axes (x right, y up, z to the camera),
                     encoded (n + 1) / 2; 0 where no surface is seen
    albedo/000.png   16-bit RGB albedo, 0 where no surface is seen (optionally with per-view gains)
    mask/000.png     single-channel 8- or 16-bit, full range on the object (omitted with masks=False)
    mask_normal_uncertainty/000.png
                     written when normal noise is on: full range where the normal is trusted (its
                     injected noise is at most the threshold), 0 where the noise is larger or no
                     surface is seen (the rnb-data dataparser's convention)
    gt_mesh.ply      ground-truth surface of the object in world units (watertight)
    scene.json       generator parameters, ground-truth placement, realised per-view noise

Optionally (see backdrop.py) a textured floor or room fills the background of the normal and albedo
maps; it lies outside the normalisation sphere and is neither in ``gt_mesh.ply`` nor in the masks.
Photometric-stereo noise (see ps_realism.py) is applied to every written normal, object and backdrop.

The folder is assembled next to the target and renamed into place at the end, so an interrupted
run leaves nothing half-written under the requested name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.data.synthetic.backdrop import PLANE_MIN_ELEVATION_DEG, Backdrop, make_backdrop
from recon_plugin.data.synthetic.output import staged_output, write_scene_json
from recon_plugin.data.synthetic.ps_realism import (
    BiasField,
    PsRealism,
    albedo_gains,
    angle_between_deg,
    angular_noise,
    resolve_realism,
    rotate_vectors,
)
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
    "render_rnb_view",
    "scale_matrix",
    "write_gt_mesh",
    "write_rnb_scene",
]

GENERATOR_VERSION = "1.1.0"
#: The normalised unit sphere maps to a ball this many times the object's bounding radius.
SCALE_MAT_MARGIN = 1.1
#: Camera elevation band (degrees) without a floor.
MAX_ELEVATION_DEG = 70.0
UNCERTAINTY_DIR = "mask_normal_uncertainty"


def scale_matrix(scene: SyntheticScene, margin: float = SCALE_MAT_MARGIN) -> np.ndarray:
    """(4, 4) ``scale_mat``: unit sphere -> ball of radius ``margin × bounding radius`` at the object centre."""
    mat = np.eye(4)
    mat[:3, :3] *= margin * scene.bounding_radius
    mat[:3, 3] = scene.center
    return mat


def camera_normals_opengl(world_normals: np.ndarray, camera: Camera) -> np.ndarray:
    """World normals (..., 3) -> camera-frame normals in OpenGL axes (x right, y up, z towards the camera)."""
    return (world_normals @ camera.R.T) * np.array([1.0, -1.0, -1.0])


def write_gt_mesh(scene: SyntheticScene, path: Path, resolution: int = 256) -> tuple[int, int]:
    """Writes the ground-truth surface in world units as binary PLY; returns (vertex, face) counts."""
    import trimesh

    vertices, faces = extract_mesh(scene.shape, resolution)
    mesh = trimesh.Trimesh(scene.to_world(vertices), faces, process=False)
    mesh.export(str(path))
    return len(vertices), len(faces)


def render_rnb_view(
    scene: SyntheticScene,
    camera: Camera,
    realism: PsRealism,
    gains: np.ndarray,
    rng: np.random.Generator,
    backdrop: Backdrop | None = None,
) -> dict:
    """Renders one view's maps as a photometric-stereo pipeline would deliver them.

    Order: exact object (and backdrop) G-buffer -> camera-frame normals -> smooth bias rotation ->
    per-pixel noise -> uncertainty from the noise angle; albedo times the view's ``gains`` (3,).

    Returns:
        ``normal`` (H, W, 3) unit OpenGL camera-frame normals (zeros where no surface), ``albedo``
        (H, W, 3) in [0, 1], ``mask`` (H, W) object silhouette, ``surface`` (H, W) pixels holding a
        normal (object or backdrop), ``trusted`` (H, W), ``noise_deg`` (H, W) the injected per-pixel
        noise angle, and ``stats``: the realised per-view values for scene.json.
    """
    gbuffer = render_gbuffer(scene, camera)
    mask = gbuffer["mask"]
    height, width = mask.shape
    world_normal = gbuffer["normal"].copy()
    albedo = np.zeros((height, width, 3))
    albedo[mask] = scene.albedo(gbuffer["position"][mask])
    surface = mask.copy()
    if backdrop is not None:
        miss = np.flatnonzero(~mask.ravel())
        dirs = gbuffer["ray_direction"].reshape(-1, 3)[miss]
        hit = backdrop.intersect(np.broadcast_to(camera.center, dirs.shape), dirs)
        rows = miss[hit["hit"]]
        world_normal.reshape(-1, 3)[rows] = hit["normal"][hit["hit"]]
        albedo.reshape(-1, 3)[rows] = backdrop.albedo(hit["position"][hit["hit"]], hit["normal"][hit["hit"]])
        surface.reshape(-1)[rows] = True
    normal = np.where(surface[..., None], camera_normals_opengl(world_normal, camera), 0.0)

    stats: dict = {}
    if realism.normal_bias_deg > 0.0:
        field = BiasField.random(realism.normal_bias_deg, height, width, rng)
        rotation = field.evaluate(height, width)
        biased = rotate_vectors(normal[surface], rotation[surface])
        stats["bias_rms_deg"] = float(np.degrees(np.sqrt(np.mean(np.sum(rotation**2, axis=-1)))))
        stats["bias_max_deg"] = float(np.degrees(np.linalg.norm(rotation, axis=-1).max()))
        stats["bias_mean_normal_deviation_deg"] = float(angle_between_deg(biased, normal[surface]).mean())
        stats["bias_field"] = field.to_json()
        normal[surface] = biased
    noise_deg = np.zeros((height, width))
    if realism.normal_noise_deg > 0.0:
        normal[surface], noise_deg[surface] = angular_noise(normal[surface], realism.normal_noise_deg, rng)
        stats["noise_mean_deg"] = float(noise_deg[surface].mean())
    trusted = surface & (noise_deg <= realism.threshold_deg)
    if realism.normal_noise_deg > 0.0:
        stats["untrusted_fraction"] = float(1.0 - trusted[surface].mean())
    albedo = np.where(surface[..., None], np.clip(albedo * gains, 0.0, 1.0), 0.0)
    return {
        "normal": normal,
        "albedo": albedo,
        "mask": mask,
        "surface": surface,
        "trusted": trusted,
        "noise_deg": noise_deg,
        "stats": stats,
    }


def write_rnb_scene(
    out: Path | str,
    shape: str = "blob",
    views: int = 20,
    size: int = 128,
    seed: int = 0,
    albedo_scale_jitter: float | None = None,
    mask_bit_depth: int = 8,
    mesh_resolution: int = 256,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    *,
    realism: str = "none",
    normal_noise_deg: float | None = None,
    normal_bias_deg: float | None = None,
    uncertainty_threshold_deg: float | None = None,
    masks: bool = True,
    backdrop: str = "none",
) -> dict:
    """Renders a synthetic scene and writes it in the RnB layout.

    Args:
        out: target folder; must be missing or empty unless ``overwrite``.
        shape: a name from :data:`recon_plugin.data.synthetic.shapes.SHAPES`.
        views: number of cameras. size: square image size in pixels. seed: camera spiral rotation,
            albedo gains, noise and bias.
        albedo_scale_jitter: F > 0 multiplies each view's albedo by per-channel factors drawn in
            [1 - F, 1 + F] (then clips to [0, 1]); the factors go to scene.json.
        mask_bit_depth: 8 or 16 (masks and uncertainty masks).
        mesh_resolution: marching-cubes grid of the ground-truth mesh.
        log: progress printer (None for silence).
        realism: a preset of :data:`~recon_plugin.data.synthetic.ps_realism.REALISM_PRESETS`;
            ``albedo_scale_jitter``, ``normal_noise_deg``, ``normal_bias_deg`` and
            ``uncertainty_threshold_deg`` override its values when not None (see :class:`PsRealism`).
        masks: write mask/ (False: a capture without silhouettes).
        backdrop: "none", "plane" (a floor; cameras then stay above it) or "box" (a room).

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
    settings = resolve_realism(
        realism,
        normal_noise_deg=normal_noise_deg,
        normal_bias_deg=normal_bias_deg,
        albedo_scale_jitter=albedo_scale_jitter,
        uncertainty_threshold_deg=uncertainty_threshold_deg,
    )
    scene = make_scene(shape)
    scale_mat = scale_matrix(scene)
    ground = make_backdrop(backdrop, scene.center, float(scale_mat[0, 0]))
    min_elevation = PLANE_MIN_ELEVATION_DEG if backdrop == "plane" else -MAX_ELEVATION_DEG
    out = Path(out)
    start = time.perf_counter()
    gains = albedo_gains(views, settings.albedo_scale_jitter, seed)
    with staged_output(out, overwrite) as tmp:
        cameras = make_cameras(
            scene, views, size, seed=seed, max_elevation_deg=MAX_ELEVATION_DEG, min_elevation_deg=min_elevation
        )
        extras = (
            [f"realism '{realism}'"] + ([f"backdrop '{backdrop}'"] if ground else []) + ([] if masks else ["no masks"])
        )
        say(f"recon-synth: shape '{shape}', {views} views at {size}x{size} px, seed {seed}, {', '.join(extras)}")
        arrays: dict[str, np.ndarray] = {}
        names, coverage, backdrop_coverage, per_view = [], [], [], []
        for i, camera in enumerate(cameras):
            name = f"{i:03d}.png"
            names.append(name)
            view = render_rnb_view(scene, camera, settings, gains[i], np.random.default_rng([seed, 3, i]), ground)
            mask = view["mask"]
            coverage.append(float(mask.mean()))
            backdrop_coverage.append(float((view["surface"] & ~mask).mean()))
            normals = np.where(view["surface"][..., None], encode_normals(view["normal"]), 0.0)
            write_png(tmp / "normal" / name, normals, bit_depth=16)
            write_png(tmp / "albedo" / name, view["albedo"], bit_depth=16)
            if masks:
                write_png(tmp / "mask" / name, mask.astype(np.float64), bit_depth=mask_bit_depth)
            if settings.normal_noise_deg > 0.0:
                write_png(tmp / UNCERTAINTY_DIR / name, view["trusted"].astype(np.float64), bit_depth=mask_bit_depth)
            per_view.append({"image": name, **view["stats"]})
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
            "camera_elevation_deg": [min_elevation, MAX_ELEVATION_DEG],
            "pixel_center": PIXEL_CENTER,
            "camera_convention": "OpenCV; world_mat = [K 0; 0 1] [R t; 0 1] maps world to pixels",
            "normal_convention": "camera frame, OpenGL axes (x right, y up, z towards the camera), (n + 1) / 2",
            "normal_bit_depth": 16,
            "albedo_bit_depth": 16,
            "masks": masks,
            "mask_bit_depth": mask_bit_depth,
            "realism": realism,
            "ps_realism": settings.to_json(),
            "albedo_scale_jitter": settings.albedo_scale_jitter,
            "uncertainty_masks": settings.normal_noise_deg > 0.0,
            "uncertainty_mask_convention": "full range where the injected per-pixel noise angle <= "
            "ps_realism.uncertainty_threshold_deg; 0 where it is larger or no surface is seen",
            "backdrop": ground.to_json(float(scale_mat[0, 0])) if ground else None,
            "mesh_resolution": mesh_resolution,
            "mean_mask_coverage": float(np.mean(coverage)),
            "mean_backdrop_coverage": float(np.mean(backdrop_coverage)),
            "images": names,
            "per_view": per_view,
        }
        if settings.albedo_scale_jitter > 0:
            info["albedo_gains"] = gains.tolist()
        write_scene_json(tmp, info)
    seconds = time.perf_counter() - start
    say(f"recon-synth: wrote {out} in {seconds:.1f} s")
    return {**info, "path": str(out), "seconds": seconds}
