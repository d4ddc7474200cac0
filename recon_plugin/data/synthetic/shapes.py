"""Procedural shapes with analytic signed distance (or 1-Lipschitz implicit) functions and gradients.

Every shape lives in a canonical frame and fits inside a ball of radius ~0.8 around the origin. The
implicit ``f`` is negative inside, positive outside and 1-Lipschitz, so sphere tracing with step
``f`` never crosses the surface and ``|f(p)|`` never exceeds the distance from ``p`` to the surface.
Gradients are derived by hand (chain rule through the smooth-min / smooth-max blends), never by
finite differences or from a mesh; the tests compare them with finite differences.

Smooth blends use the polynomial smooth minimum

    h = clip(0.5 + 0.5 (b - a) / k, 0, 1),   smin(a, b) = b (1 - h) + a h - k h (1 - h),

which is C1, lies at most ``k / 4`` below ``min(a, b)`` and has the gradient ``h ∇a + (1 - h) ∇b``
(the derivative with respect to ``h`` vanishes inside the blend band), so it stays 1-Lipschitz.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = [
    "SHAPES",
    "Blob",
    "DimpledCube",
    "Shape",
    "Sphere",
    "Torus",
    "extract_mesh",
    "get_shape",
    "sample_grid",
    "smooth_max",
    "smooth_min",
]

_EPS = 1e-12


def smooth_min(
    a: np.ndarray, grad_a: np.ndarray, b: np.ndarray, grad_b: np.ndarray, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial smooth minimum of two implicits and its gradient.

    Args:
        a, b: values, shape (N,).
        grad_a, grad_b: gradients, shape (N, 3).
        k: blend width (same units as the values); ``k <= 0`` gives the plain minimum.

    Returns:
        (values (N,), gradients (N, 3)).
    """
    if k <= 0:
        take_a = a <= b
        return np.where(take_a, a, b), np.where(take_a[:, None], grad_a, grad_b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    value = b * (1.0 - h) + a * h - k * h * (1.0 - h)
    grad = h[:, None] * grad_a + (1.0 - h)[:, None] * grad_b
    return value, grad


def smooth_max(
    a: np.ndarray, grad_a: np.ndarray, b: np.ndarray, grad_b: np.ndarray, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Polynomial smooth maximum, ``-smin(-a, -b)``, and its gradient."""
    value, grad = smooth_min(-a, -grad_a, -b, -grad_b, k)
    return -value, -grad


def _sphere_sdf(points: np.ndarray, center: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    diff = points - center
    norm = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    grad = diff / np.maximum(norm, _EPS)[:, None]
    return norm - radius, grad


def _as_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"expected points of shape (N, 3), got {points.shape}")
    return points


class Shape(ABC):
    """A closed smooth surface given by an implicit function in the canonical frame."""

    name: str = "shape"
    #: Upper bound of |∇f|: sphere tracing divides steps by it.
    lipschitz: float = 1.0

    @property
    @abstractmethod
    def bounding_radius(self) -> float:
        """Radius of a ball around the canonical origin that contains the whole shape."""

    @abstractmethod
    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Implicit values (N,) and analytic gradients (N, 3) at canonical points (N, 3)."""

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Implicit values (N,) at canonical points (N, 3); negative inside."""
        return self.sdf_and_gradient(points)[0]

    def gradient(self, points: np.ndarray) -> np.ndarray:
        """Analytic gradients (N, 3) at canonical points (N, 3)."""
        return self.sdf_and_gradient(points)[1]

    def normal(self, points: np.ndarray) -> np.ndarray:
        """Unit outward normals (N, 3): the normalised gradient."""
        grad = self.gradient(points)
        return grad / np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), _EPS)

    def project(self, points: np.ndarray, steps: int = 5) -> np.ndarray:
        """Moves points near the surface onto it with Newton steps ``p <- p - f ∇f / |∇f|²``."""
        points = _as_points(points).copy()
        for _ in range(steps):
            value, grad = self.sdf_and_gradient(points)
            points -= (value / np.maximum(np.einsum("ij,ij->i", grad, grad), _EPS))[:, None] * grad
        return points

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bounding_radius={self.bounding_radius:.3f})"


class Sphere(Shape):
    """A sphere: exact SDF ``|p| - r``."""

    name = "sphere"

    def __init__(self, radius: float = 0.7) -> None:
        self.radius = float(radius)

    @property
    def bounding_radius(self) -> float:
        return self.radius

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _sphere_sdf(_as_points(points), np.zeros(3), self.radius)


class Torus(Shape):
    """A ring torus around the canonical z axis: exact SDF ``|(ρ - R, z)| - r`` with ρ = |(x, y)|.

    The hole (radius ``R - r``) is seen through by cameras near the axis; the inner wall by the others.
    """

    name = "torus"

    def __init__(self, major_radius: float = 0.55, minor_radius: float = 0.22) -> None:
        if minor_radius >= major_radius:
            raise ValueError("a ring torus needs minor_radius < major_radius")
        self.major_radius = float(major_radius)
        self.minor_radius = float(minor_radius)

    @property
    def bounding_radius(self) -> float:
        return self.major_radius + self.minor_radius

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points)
        rho = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        q = rho - self.major_radius
        length = np.sqrt(q * q + p[:, 2] ** 2)
        inv_len = 1.0 / np.maximum(length, _EPS)
        radial = q * inv_len / np.maximum(rho, _EPS)
        grad = np.stack([radial * p[:, 0], radial * p[:, 1], p[:, 2] * inv_len], axis=-1)
        return length - self.minor_radius, grad


def _fibonacci_directions(count: int, offset: float = 0.0) -> np.ndarray:
    """Deterministic, roughly even unit directions (no randomness involved)."""
    i = np.arange(count) + 0.5
    z = 1.0 - 2.0 * i / count
    phi = i * np.pi * (3.0 - np.sqrt(5.0)) + offset
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


class Blob(Shape):
    """The default demo shape: a sphere with smooth bumps and smooth concave dents.

    Base sphere (radius 0.56) smooth-unioned with 6 small spheres sticking out (bumps) and
    smooth-subtracted by 5 spheres sitting just outside the surface (shallow, wide dents). All blends
    are C1 with generous widths, so there are no creases; the dents are shallow enough to be seen
    from any camera on a ring above or below the object.
    """

    name = "blob"

    def __init__(self) -> None:
        self.base_radius = 0.56
        bump_dirs = _fibonacci_directions(6, offset=0.3)
        self.bump_centers = bump_dirs * np.array([0.52, 0.50, 0.55, 0.48, 0.53, 0.50])[:, None]
        self.bump_radii = np.array([0.22, 0.18, 0.20, 0.24, 0.17, 0.21])
        self.bump_k = 0.16
        # Dents between the bumps: rotate a second direction set so they do not land on a bump.
        dent_dirs = _fibonacci_directions(5, offset=1.9)
        dent_dirs = dent_dirs @ _rotation_xyz(0.4, -0.7, 0.2).T
        self.dent_radii = np.array([0.26, 0.22, 0.24, 0.20, 0.25])
        # Centre outside the base sphere so only a shallow cap (~0.08-0.1 deep) is carved.
        self.dent_centers = dent_dirs * (self.base_radius + self.dent_radii - 0.09)[:, None]
        self.dent_k = 0.12

    @property
    def bounding_radius(self) -> float:
        # smin lies at most k/4 below min, so the union grows by at most k/4; subtraction only shrinks.
        parts = [self.base_radius]
        parts += list(np.linalg.norm(self.bump_centers, axis=1) + self.bump_radii)
        return float(max(parts) + self.bump_k / 4.0)

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points)
        value, grad = _sphere_sdf(p, np.zeros(3), self.base_radius)
        for center, radius in zip(self.bump_centers, self.bump_radii, strict=True):
            b, gb = _sphere_sdf(p, center, radius)
            value, grad = smooth_min(value, grad, b, gb, self.bump_k)
        for center, radius in zip(self.dent_centers, self.dent_radii, strict=True):
            b, gb = _sphere_sdf(p, center, radius)
            value, grad = smooth_max(value, grad, -b, -gb, self.dent_k)
        return value, grad


class DimpledCube(Shape):
    """A cube with rounded edges and a smooth spherical dimple in the middle of each face.

    The rounded box is the exact SDF of an inner box (half-size ``half_size``) offset by ``rounding``;
    on and outside its surface that SDF is C1. The dimples are smooth subtractions, so the surface has
    flat faces, rounded edges and corners, and concave bowls.
    """

    name = "dimpled_cube"

    def __init__(self, half_size: float = 0.37, rounding: float = 0.12, dimple_radius: float = 0.24) -> None:
        self.half_size = float(half_size)
        self.rounding = float(rounding)
        self.dimple_radius = float(dimple_radius)
        face = self.half_size + self.rounding
        axes = np.concatenate([np.eye(3), -np.eye(3)])
        self.dimple_centers = axes * (face + self.dimple_radius - 0.09)
        self.dimple_k = 0.06

    @property
    def bounding_radius(self) -> float:
        return float(np.sqrt(3.0) * self.half_size + self.rounding)

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points)
        sign = np.where(p >= 0.0, 1.0, -1.0)
        q = np.abs(p) - self.half_size
        outside = np.maximum(q, 0.0)
        out_len = np.sqrt(np.einsum("ij,ij->i", outside, outside))
        inner = np.max(q, axis=1)
        is_out = inner > 0.0
        value = np.where(is_out, out_len, inner) - self.rounding
        # Outside the inner box: gradient of the distance to it; inside: the face of the largest q.
        grad_out = outside / np.maximum(out_len, _EPS)[:, None]
        grad_in = np.zeros_like(p)
        grad_in[np.arange(len(p)), np.argmax(q, axis=1)] = 1.0
        grad = np.where(is_out[:, None], grad_out, grad_in) * sign
        for center in self.dimple_centers:
            b, gb = _sphere_sdf(p, center, self.dimple_radius)
            value, grad = smooth_max(value, grad, -b, -gb, self.dimple_k)
        return value, grad


def _rotation_xyz(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix R = Rz(az) Ry(ay) Rx(ax) (radians)."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def sample_grid(shape: Shape, resolution: int, half_extent: float, block: int = 8) -> np.ndarray:
    """Implicit values on a ``resolution``³ grid over ``[-half_extent, half_extent]³`` (index order x, y, z).

    Narrow band: the grid is split into ``block``³ blocks and only blocks that can contain the
    surface are evaluated densely. A block whose centre value exceeds its half-diagonal plus one cell
    (the implicit is 1-Lipschitz up to ``shape.lipschitz``) holds no surface, nor does any grid edge
    touching it, so it is filled with its centre value: right sign, no spurious zero crossing.
    """
    axis = np.linspace(-half_extent, half_extent, resolution)
    cell = axis[1] - axis[0]
    nb = -(-resolution // block)
    values = np.empty((nb * block,) * 3)
    starts = np.arange(nb) * block
    centers_idx = np.minimum(starts + (block - 1) / 2.0, resolution - 1)
    centers = -half_extent + centers_idx * cell
    bc = np.stack(np.meshgrid(centers, centers, centers, indexing="ij"), axis=-1).reshape(-1, 3)
    center_values = shape.sdf(bc)
    reach = (np.sqrt(3.0) * (block - 1) / 2.0 + 1.5) * cell * shape.lipschitz
    near = np.abs(center_values) <= reach
    offsets = np.stack(np.meshgrid(*(np.arange(block),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    block_ids = np.stack(np.unravel_index(np.arange(nb**3), (nb, nb, nb)), axis=-1)
    for bid, value in zip(block_ids[~near], center_values[~near], strict=True):
        i, j, k = bid * block
        values[i : i + block, j : j + block, k : k + block] = value
    near_ids = block_ids[near]
    chunk = max(1, (1 << 20) // block**3)
    for begin in range(0, len(near_ids), chunk):
        ids = near_ids[begin : begin + chunk]
        index = (ids[:, None, :] * block + offsets[None]).reshape(-1, 3)
        points = -half_extent + index * cell
        values[index[:, 0], index[:, 1], index[:, 2]] = shape.sdf(points)
    return values[:resolution, :resolution, :resolution]


def extract_mesh(shape: Shape, resolution: int = 256, newton_steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Watertight triangle mesh of a shape's zero level set in the canonical frame.

    Marching cubes (PyMCubes) on a narrow-band grid, then every vertex is moved onto the exact surface
    with Newton steps on the analytic implicit. Faces are oriented outwards.

    Returns:
        vertices (V, 3) float64 and faces (F, 3) int64.
    """
    import mcubes

    half_extent = shape.bounding_radius * 1.05 + 4.0 / resolution
    values = sample_grid(shape, resolution, half_extent)
    vertices, faces = mcubes.marching_cubes(values, 0.0)
    if len(faces) == 0:
        raise RuntimeError(f"{shape.name}: marching cubes found no surface at resolution {resolution}")
    vertices = vertices * (2.0 * half_extent / (resolution - 1)) - half_extent
    vertices = shape.project(vertices, steps=newton_steps)
    faces = np.asarray(faces, dtype=np.int64)
    # PyMCubes orients triangles towards increasing values; flip so normals point outwards (+f).
    tri = vertices[faces]
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if signed_volume < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


#: Shape name -> class; every class builds with no arguments.
SHAPES: dict[str, type[Shape]] = {
    "sphere": Sphere,
    "torus": Torus,
    "blob": Blob,
    "dimpled_cube": DimpledCube,
}


def get_shape(name: str) -> Shape:
    """Builds a registered shape with its default parameters."""
    try:
        return SHAPES[name]()
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; choose one of {sorted(SHAPES)}") from None
