"""Synthetic scene: a shape placed in world coordinates, a pinhole camera rig, and a G-buffer ray caster.

Conventions (shared by every writer built on this module):

- World placement: ``x_world = scale * x_canonical + center``. The default placement is deliberately
  off the origin and not unit-sized, so code that forgets the normalisation shows it.
- Cameras are OpenCV pinholes: ``x_cam = R x_world + t`` with x right, y down, z forward, and
  ``pixel = K x_cam / z``. ``world_mat = [K 0; 0 1] · [R t; 0 1]`` (the IDR / RnB convention).
- Rays go through pixel centres: pixel (u, v) (column, row) is sampled at (u + 0.5, v + 0.5),
  nerfstudio's convention.
- G-buffers hold world-space quantities; writers convert them to their file conventions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recon_plugin.data.synthetic.shapes import Shape, get_shape

__all__ = [
    "DEFAULT_CENTER",
    "DEFAULT_SCALE",
    "PIXEL_CENTER",
    "Camera",
    "SyntheticScene",
    "albedo_canonical",
    "cast_rays",
    "look_at",
    "make_cameras",
    "make_scene",
    "render_gbuffer",
]

#: Offset added to pixel indices to get the sampled image coordinate (nerfstudio: pixel centres).
PIXEL_CENTER = 0.5
#: Default world placement of the canonical shape.
DEFAULT_CENTER = (0.4, -0.3, 1.2)
DEFAULT_SCALE = 2.5
#: World "up" axis of the camera rig.
WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class Camera:
    """An OpenCV pinhole camera: ``x_cam = R x_world + t``, ``pixel = K x_cam / z``."""

    K: np.ndarray
    """(3, 3) intrinsics."""
    R: np.ndarray
    """(3, 3) rotation world -> camera (OpenCV axes)."""
    t: np.ndarray
    """(3,) translation world -> camera."""
    width: int
    height: int

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def world_mat(self) -> np.ndarray:
        """(4, 4) ``[K 0; 0 1] · [R t; 0 1]``, world -> homogeneous pixels."""
        return self.camera_mat @ self.w2c

    @property
    def camera_mat(self) -> np.ndarray:
        """(4, 4) intrinsics ``[K 0; 0 1]``."""
        mat = np.eye(4)
        mat[:3, :3] = self.K
        return mat

    @property
    def w2c(self) -> np.ndarray:
        """(4, 4) world -> camera, OpenCV axes."""
        mat = np.eye(4)
        mat[:3, :3] = self.R
        mat[:3, 3] = self.t
        return mat

    @property
    def c2w_opencv(self) -> np.ndarray:
        """(4, 4) camera -> world, OpenCV camera axes (x right, y down, z forward)."""
        mat = np.eye(4)
        mat[:3, :3] = self.R.T
        mat[:3, 3] = self.center
        return mat

    @property
    def c2w_opengl(self) -> np.ndarray:
        """(4, 4) camera -> world, OpenGL camera axes (x right, y up, z backward) as nerfstudio uses."""
        return self.c2w_opencv @ np.diag([1.0, -1.0, -1.0, 1.0])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Projects (N, 3) world points to (N, 2) image coordinates (u, v), pixel centres at +0.5."""
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ self.world_mat[:3].T
        return homogeneous[:, :2] / homogeneous[:, 2:3]

    def pixel_rays(self, pixel_center: float = PIXEL_CENTER) -> tuple[np.ndarray, np.ndarray]:
        """World ray origins and unit directions, each (H, W, 3), through every pixel centre."""
        u, v = np.meshgrid(np.arange(self.width) + pixel_center, np.arange(self.height) + pixel_center)
        pixels = np.stack([u, v, np.ones_like(u)], axis=-1)
        dirs_cam = pixels @ np.linalg.inv(self.K).T
        dirs = dirs_cam @ self.R  # R^T applied to row vectors
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origins = np.broadcast_to(self.center, dirs.shape).copy()
        return origins, dirs


def look_at(eye: np.ndarray, target: np.ndarray, K: np.ndarray, width: int, height: int, up=WORLD_UP) -> Camera:
    """Builds an OpenCV camera at ``eye`` looking at ``target`` with image-up towards ``up``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return Camera(K=np.asarray(K, dtype=np.float64), R=rotation, t=-rotation @ eye, width=width, height=height)


def albedo_canonical(points: np.ndarray) -> np.ndarray:
    """Smoothly varying RGB albedo (N, 3) in [0.15, 0.95] as a function of canonical position (N, 3)."""
    points = np.asarray(points, dtype=np.float64)
    w1 = np.array([[3.1, 1.7, -2.3], [-1.9, 2.9, 1.3], [1.2, -2.1, 3.3]])
    w2 = np.array([[-4.3, 2.2, 3.6], [3.7, 4.1, -2.5], [2.6, -3.9, -4.4]])
    phase1 = np.array([0.3, 1.9, 4.0])
    phase2 = np.array([2.2, 0.7, 5.1])
    wave = 0.6 * np.sin(points @ w1.T + phase1) + 0.4 * np.sin(points @ w2.T + phase2)
    return 0.55 + 0.4 * wave


@dataclass
class SyntheticScene:
    """A canonical shape placed in the world: ``x_world = scale * x_canonical + center``."""

    shape: Shape
    center: np.ndarray = field(default_factory=lambda: np.array(DEFAULT_CENTER, dtype=np.float64))
    scale: float = DEFAULT_SCALE

    @property
    def bounding_radius(self) -> float:
        """Radius, in world units, of a ball around ``center`` that contains the object."""
        return self.shape.bounding_radius * self.scale

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """World (N, 3) -> canonical (N, 3)."""
        return (np.asarray(points, dtype=np.float64) - self.center) / self.scale

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Canonical (N, 3) -> world (N, 3)."""
        return np.asarray(points, dtype=np.float64) * self.scale + self.center

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Implicit value in world units at world points (N, 3) (the canonical value times ``scale``)."""
        return self.shape.sdf(self.to_canonical(points)) * self.scale

    def normal(self, points: np.ndarray) -> np.ndarray:
        """Unit outward world normals (N, 3) at world points (the placement has no rotation)."""
        return self.shape.normal(self.to_canonical(points))

    def albedo(self, points: np.ndarray) -> np.ndarray:
        """RGB albedo (N, 3) in [0.15, 0.95] at world points, attached to the object (canonical frame)."""
        return albedo_canonical(self.to_canonical(points))


def make_scene(shape: str | Shape = "blob", center=DEFAULT_CENTER, scale: float = DEFAULT_SCALE) -> SyntheticScene:
    """Places a registered shape (by name) or a shape instance in the world."""
    if isinstance(shape, str):
        shape = get_shape(shape)
    return SyntheticScene(shape=shape, center=np.asarray(center, dtype=np.float64), scale=float(scale))


def make_cameras(
    scene: SyntheticScene,
    views: int,
    size: int | tuple[int, int],
    seed: int = 0,
    distance_factor: float = 3.0,
    fill: float = 0.85,
    max_elevation_deg: float = 70.0,
    min_elevation_deg: float | None = None,
) -> list[Camera]:
    """``views`` cameras on a sphere around the object, all looking at its centre.

    Directions follow a Fibonacci spiral over the elevation band [``min_elevation_deg``,
    ``max_elevation_deg``] (by default symmetric, so both hemispheres are covered evenly and no camera
    sits at a pole); the seed only rotates the spiral about the up axis. The cameras are
    ``distance_factor`` bounding radii away, and the focal length makes the bounding sphere's image span
    ``fill`` of the image width (the object itself ~70%).

    Args:
        size: image size in pixels, ``S`` (square) or ``(width, height)``.
        min_elevation_deg: lower end of the band; None: ``-max_elevation_deg``.
    """
    if views < 1:
        raise ValueError("views must be >= 1")
    low = -max_elevation_deg if min_elevation_deg is None else min_elevation_deg
    if not -90.0 < low < max_elevation_deg < 90.0:
        raise ValueError(f"camera elevation band [{low}, {max_elevation_deg}] deg must be increasing, within (-90, 90)")
    width, height = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([seed, 1])
    azimuth_offset = rng.uniform(0.0, 2.0 * np.pi)
    i = np.arange(views) + 0.5
    z_high, z_low = np.sin(np.radians(max_elevation_deg)), np.sin(np.radians(low))
    z = z_high - (z_high - z_low) * i / views
    phi = i * np.pi * (3.0 - np.sqrt(5.0)) + azimuth_offset
    r = np.sqrt(1.0 - z * z)
    dirs = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)

    radius = scene.bounding_radius
    distance = distance_factor * radius
    half_angle = np.arcsin(radius / distance)
    focal = 0.5 * fill * min(width, height) / np.tan(half_angle)
    K = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return [look_at(scene.center + distance * d, scene.center, K, width, height) for d in dirs]


def _ray_sphere(origins: np.ndarray, dirs: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry/exit distances of unit rays with a sphere at the origin (NaN where missed)."""
    b = np.einsum("ij,ij->i", origins, dirs)
    c = np.einsum("ij,ij->i", origins, origins) - radius * radius
    disc = b * b - c
    root = np.sqrt(np.where(disc >= 0, disc, np.nan))
    return -b - root, -b + root


def cast_rays(
    scene: SyntheticScene,
    origins: np.ndarray,
    dirs: np.ndarray,
    hit_tolerance: float = 1e-6,
    min_step: float = 1e-3,
    max_steps: int = 2000,
    newton_steps: int = 4,
) -> dict[str, np.ndarray]:
    """Sphere-traces (N, 3) world rays (unit ``dirs``) against the scene's shape.

    Tracing runs in the canonical frame with steps ``max(f / L, min_step)`` (L = the shape's Lipschitz
    bound). The floor keeps rays that run tangent to the surface from crawling; a step that ends
    inside (f < 0) is bisected back to the first crossing. Features thinner than ``min_step``
    (canonical units) could be stepped over; the registered shapes have none. Hits are then refined
    with safeguarded Newton steps along the ray, which puts them on the surface to ~1e-12.

    Returns a dict of flat arrays: ``hit`` (N,) bool, ``distance`` (N,) world distance along the ray,
    ``position`` (N, 3) world, ``normal`` (N, 3) unit world normal (analytic gradient),
    ``residual`` (N,) |f| at the hit in world units. Missed rays hold zeros.
    """
    shape = scene.shape
    o = (np.asarray(origins, dtype=np.float64) - scene.center) / scene.scale
    d = np.asarray(dirs, dtype=np.float64)
    n = len(o)
    t_in, t_out = _ray_sphere(o, d, shape.bounding_radius * 1.01)
    candidate = np.isfinite(t_in) & (t_out > 0)
    t = np.where(candidate, np.maximum(t_in, 0.0), 0.0)
    t_prev = t.copy()
    hit = np.zeros(n, dtype=bool)
    crossed = np.zeros(n, dtype=bool)

    def evaluate(index: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return shape.sdf(o[index] + ts[:, None] * d[index])

    active = np.flatnonzero(candidate)
    for _ in range(max_steps):
        if active.size == 0:
            break
        value = evaluate(active, t[active]) / shape.lipschitz
        inside = value < 0.0
        done = value < hit_tolerance
        hit[active[done]] = True
        crossed[active[inside]] = True
        step = np.maximum(value, min_step)
        t_prev[active[~done]] = t[active[~done]]
        t[active[~done]] += step[~done]
        keep = ~done & (t[active] <= t_out[active])
        active = active[keep]
    if active.size:
        # Out of steps: accept rays already within a loose band, drop the rest.
        near = evaluate(active, t[active]) < 10.0 * min_step
        hit[active[near]] = True

    # Bisect steps that ended inside back to the first crossing: f(lo) > 0 >= f(hi).
    idx = np.flatnonzero(crossed)
    lo, hi = t_prev[idx], t[idx]
    for _ in range(40):
        if idx.size == 0 or np.max(hi - lo) < 1e-3 * hit_tolerance:
            break
        mid = 0.5 * (lo + hi)
        outside = evaluate(idx, mid) > 0.0
        lo = np.where(outside, mid, lo)
        hi = np.where(outside, hi, mid)
    t[idx] = hi

    idx = np.flatnonzero(hit)
    th = t[idx]
    oh, dh = o[idx], d[idx]
    value, grad = shape.sdf_and_gradient(oh + th[:, None] * dh)
    for _ in range(newton_steps):
        slope = np.einsum("ij,ij->i", grad, dh)
        # Only step where the ray really enters the surface, and never far: a grazing ray that merely
        # touched the tolerance band keeps its traced point.
        entering = slope < -1e-3
        step = np.where(entering, -value / np.where(entering, slope, -1.0), 0.0)
        step = np.clip(step, -4.0 * hit_tolerance, 50.0 * hit_tolerance)
        trial_t = th + step
        trial_value, trial_grad = shape.sdf_and_gradient(oh + trial_t[:, None] * dh)
        better = np.abs(trial_value) < np.abs(value)
        th = np.where(better, trial_t, th)
        value = np.where(better, trial_value, value)
        grad = np.where(better[:, None], trial_grad, grad)

    normal = grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-12)
    distance = np.zeros(n)
    position = np.zeros((n, 3))
    normals = np.zeros((n, 3))
    residual = np.zeros(n)
    distance[idx] = th * scene.scale
    position[idx] = scene.to_world(oh + th[:, None] * dh)
    normals[idx] = normal
    residual[idx] = np.abs(value) * scene.scale
    return {"hit": hit, "distance": distance, "position": position, "normal": normals, "residual": residual}


def render_gbuffer(scene: SyntheticScene, camera: Camera) -> dict[str, np.ndarray]:
    """Ray-casts one view through its pixel centres and returns world-space G-buffers.

    Keys (H, W = the camera's image size; background pixels hold zeros):
        ``mask`` (H, W) bool; ``position`` (H, W, 3) world hit points; ``normal`` (H, W, 3) unit
        world normals; ``depth`` (H, W) camera z (OpenCV, along the optical axis); ``distance``
        (H, W) distance along the ray (nerfstudio's "depth"); ``ray_direction`` (H, W, 3) unit world
        ray directions (all pixels); ``canonical_position`` (H, W, 3) for materials attached to the
        object; ``residual`` (H, W) |f| at the hit in world units.
    """
    origins, dirs = camera.pixel_rays()
    shape_hw = dirs.shape[:2]
    result = cast_rays(scene, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    hit = result["hit"]
    depth = np.zeros(len(hit))
    depth[hit] = (result["position"][hit] @ camera.R.T + camera.t)[:, 2]
    canonical = np.zeros_like(result["position"])
    canonical[hit] = scene.to_canonical(result["position"][hit])
    return {
        "mask": hit.reshape(shape_hw),
        "position": result["position"].reshape(*shape_hw, 3),
        "normal": result["normal"].reshape(*shape_hw, 3),
        "depth": depth.reshape(shape_hw),
        "distance": result["distance"].reshape(shape_hw),
        "ray_direction": dirs,
        "canonical_position": canonical.reshape(*shape_hw, 3),
        "residual": result["residual"].reshape(shape_hw),
    }
