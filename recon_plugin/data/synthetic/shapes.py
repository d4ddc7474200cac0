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
    "Bowl",
    "DimpledCube",
    "Figure",
    "Shape",
    "Sphere",
    "Torus",
    "TrefoilKnot",
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


def _capsule_sdf(points: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact SDF of a capsule (segment ``a``-``b`` swept by a ball) and its gradient."""
    axis = b - a
    along = np.clip((points - a) @ axis / float(axis @ axis), 0.0, 1.0)
    offset = points - a - along[:, None] * axis
    norm = np.sqrt(np.einsum("ij,ij->i", offset, offset))
    return norm - radius, offset / np.maximum(norm, _EPS)[:, None]


class TrefoilKnot(Shape):
    """A tube of radius ``tube_radius`` around a trefoil knot: thin, self-occluding, with tight gaps.

    Centre curve ``c(s) = scale · (sin s + 2 sin 2s, cos s - 2 cos 2s, -sin 3s)``. Near the surface the
    SDF is exact: ``|p - c(s*)| - r`` with ``s*`` the parameter of the closest curve point, found from
    the nearest of ``samples`` curve points (k-d tree) and refined by Newton steps on
    ``(c(s) - p) · c'(s) = 0``; the gradient ``(p - c(s*)) / |p - c(s*)|`` is exact by the envelope
    theorem. If the refined distance is below half the closest approach of distinct strands (~0.29 at
    the defaults), no other strand can hold a closer point, so the value is trusted within
    :attr:`exact_reach` of the curve (checked against a dense brute-force search in the tests).
    Farther out the value is ``|p - nearest sample| - δ - r`` with ``δ`` half the longest arc between
    samples: a 1-Lipschitz lower bound of the distance, all that sphere tracing and the narrow-band grid
    need, and much cheaper than a global closest-point search.
    """

    name = "knot"
    #: Closest approach of two points of the unit trefoil more than 0.8 apart in s (measured densely).
    _UNIT_STRAND_GAP = 1.21

    def __init__(self, tube_radius: float = 0.075, curve_scale: float = 0.24, samples: int = 256) -> None:
        from scipy.spatial import cKDTree

        self.tube_radius = float(tube_radius)
        self.curve_scale = float(curve_scale)
        self._params = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
        self._step = 2.0 * np.pi / samples
        self._tree = cKDTree(self._curve(self._params)[0])
        # Longest arc between consecutive samples, from a 32x finer polyline (+1 % for the chords).
        fine = self._curve(np.linspace(0.0, 2.0 * np.pi, 32 * samples + 1))[0]
        arcs = np.add.reduceat(np.linalg.norm(np.diff(fine, axis=0), axis=1), np.arange(0, 32 * samples, 32))
        self._half_arc = 0.505 * float(arcs.max())
        self.exact_reach = 0.475 * self._UNIT_STRAND_GAP * self.curve_scale
        if self.tube_radius >= self.exact_reach:
            raise ValueError(f"knot tube radius {tube_radius} is too thick for curve scale {curve_scale}")

    def _curve(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Curve points, first and second derivatives at parameters ``s`` (each (N, 3))."""
        angles = np.asarray(s)[..., None] * np.array([1.0, 2.0, 3.0])
        (sin1, sin2, sin3), (cos1, cos2, cos3) = np.moveaxis(np.sin(angles), -1, 0), np.moveaxis(np.cos(angles), -1, 0)
        point = np.stack([sin1 + 2 * sin2, cos1 - 2 * cos2, -sin3], axis=-1)
        first = np.stack([cos1 + 4 * cos2, -sin1 + 4 * sin2, -3 * cos3], axis=-1)
        second = np.stack([-sin1 - 8 * sin2, -cos1 + 8 * cos2, 9 * sin3], axis=-1)
        return self.curve_scale * point, self.curve_scale * first, self.curve_scale * second

    @property
    def bounding_radius(self) -> float:
        # max |c(s)| of the unit trefoil is 3 (at s = pi/2 + k 2pi/3).
        return 3.0 * self.curve_scale + self.tube_radius

    def _refine(self, points: np.ndarray, s: np.ndarray, steps: int = 5) -> np.ndarray:
        """Newton steps on ``(c(s) - p) · c'(s) = 0`` from parameters ``s`` next to the closest point."""
        for _ in range(steps):
            curve, first, second = self._curve(s)
            diff = curve - points
            slope = np.einsum("ij,ij->i", diff, first)
            curvature = np.einsum("ij,ij->i", first, first) + np.einsum("ij,ij->i", diff, second)
            # Newton only where the squared distance is convex in s; steps stay within one sample spacing.
            step = np.where(curvature > 0.0, -slope / np.where(curvature > 0.0, curvature, 1.0), 0.0)
            s = s + np.clip(step, -self._step, self._step)
        return s

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points)
        sample_distance, index = self._tree.query(p)
        offset = p - self._tree.data[index]
        distance = sample_distance - self._half_arc
        near = np.flatnonzero(sample_distance < self.exact_reach + self._half_arc)
        refined = p[near] - self._curve(self._refine(p[near], self._params[index[near]]))[0]
        refined_norm = np.sqrt(np.einsum("ij,ij->i", refined, refined))
        near, refined, refined_norm = (a[refined_norm < self.exact_reach] for a in (near, refined, refined_norm))
        offset[near] = refined
        distance[near] = refined_norm
        norm = np.sqrt(np.einsum("ij,ij->i", offset, offset))
        return distance - self.tube_radius, offset / np.maximum(norm, _EPS)[:, None]


class Figure(Shape):
    """A standing figure: torso, neck and head with thin arms and legs (capsules, smooth unions).

    Forearms and shins have radius 0.04, ~5 % of the bounding radius; armpits, the crotch, the bent
    elbows and the neck make concave folds. Each part is an exact capsule (or sphere) SDF; the parts
    are joined by the polynomial smooth minimum, so the implicit is an exact distance away from the
    joints and a 1-Lipschitz lower bound of it inside the narrow blend bands (width ``k``).
    """

    name = "figure"

    def __init__(self) -> None:
        # (start, end, radius); z is up, the figure faces +y. Left/right limbs are not mirror images,
        # so no view is degenerate.
        self.body = [
            ((0.0, 0.0, -0.16), (0.0, 0.0, 0.18), 0.13),  # torso
            ((-0.11, 0.0, 0.22), (0.11, 0.0, 0.22), 0.09),  # shoulders
            ((-0.07, 0.0, -0.2), (0.07, 0.0, -0.2), 0.09),  # hips
            ((0.0, 0.0, 0.3), (0.0, 0.01, 0.42), 0.05),  # neck
        ]
        self.head_center, self.head_radius = np.array([0.0, 0.02, 0.52]), 0.11
        self.limbs = [
            ((0.17, 0.0, 0.24), (0.33, 0.06, 0.04), 0.05),  # right upper arm
            ((0.33, 0.06, 0.04), (0.38, 0.26, -0.08), 0.04),  # right forearm, bent forward
            ((-0.17, 0.0, 0.24), (-0.36, -0.02, 0.06), 0.05),  # left upper arm
            ((-0.36, -0.02, 0.06), (-0.5, 0.0, -0.14), 0.04),  # left forearm
            ((0.08, 0.0, -0.26), (0.13, 0.05, -0.5), 0.06),  # right thigh
            ((0.13, 0.05, -0.5), (0.15, -0.02, -0.73), 0.04),  # right shin
            ((-0.08, 0.0, -0.26), (-0.16, -0.03, -0.5), 0.06),  # left thigh
            ((-0.16, -0.03, -0.5), (-0.2, 0.02, -0.73), 0.04),  # left shin
        ]
        self.body_k = 0.04
        self.limb_k = 0.02

    @property
    def bounding_radius(self) -> float:
        parts = [np.linalg.norm(self.head_center) + self.head_radius]
        for a, b, r in self.body + self.limbs:
            parts += [np.linalg.norm(a) + r, np.linalg.norm(b) + r]
        return float(max(parts) + max(self.body_k, self.limb_k) / 4.0)

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points)
        value, grad = _sphere_sdf(p, self.head_center, self.head_radius)
        for a, b, r in self.body:
            part, part_grad = _capsule_sdf(p, np.asarray(a), np.asarray(b), r)
            value, grad = smooth_min(value, grad, part, part_grad, self.body_k)
        for a, b, r in self.limbs:
            part, part_grad = _capsule_sdf(p, np.asarray(a), np.asarray(b), r)
            value, grad = smooth_min(value, grad, part, part_grad, self.limb_k)
        return value, grad


class Bowl(Shape):
    """A thin-walled bowl, tilted so cameras above and below see into it: a concave cavity.

    The wall is a spherical cap (radius ``radius``, cut at height ``cut`` above its centre, so the
    rim curls slightly inwards) thickened by ``thickness`` on both sides, with a round rim. Exact
    SDF in the bowl's frame, with ρ = |(x, y)|: where the point's direction lies within the cap's
    angular span the distance is ``||p| - R|``, elsewhere it is the distance to the rim circle. A foot
    ring (a torus, smooth-unioned with blend width ``foot_k``) adds a concave crease underneath; away
    from that narrow band the implicit is the exact distance.
    """

    name = "bowl"

    def __init__(
        self, radius: float = 0.66, cut: float = 0.12, thickness: float = 0.04, tilt_deg: float = 35.0
    ) -> None:
        if not 0.0 <= abs(cut) < radius:
            raise ValueError("the bowl's cut height must lie inside its sphere")
        self.radius = float(radius)
        self.cut = float(cut)
        self.thickness = float(thickness)
        self.rim_radius = float(np.sqrt(radius * radius - cut * cut))
        self.foot = Torus(major_radius=0.25, minor_radius=0.035)
        self.foot_offset = np.array([0.0, 0.0, -radius])
        self.foot_k = 0.03
        #: canonical -> bowl frame: rotation about x.
        self.rotation = _rotation_xyz(np.radians(tilt_deg), 0.0, 0.0)

    @property
    def bounding_radius(self) -> float:
        foot_reach = np.hypot(self.foot.major_radius, self.radius) + self.foot.minor_radius
        return float(max(self.radius + self.thickness, foot_reach) + self.foot_k / 4.0)

    def sdf_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _as_points(points) @ self.rotation  # rows: R^T p, the point in the bowl's frame
        rho = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
        radial = p[:, :2] / np.maximum(rho, _EPS)[:, None]
        length = np.sqrt(rho * rho + p[:, 2] ** 2)
        on_cap = self.cut * rho > self.rim_radius * p[:, 2]
        # Cap: distance to the sphere, gradient ± the radial direction.
        sign = np.where(length >= self.radius, 1.0, -1.0)
        cap_grad = sign[:, None] * p / np.maximum(length, _EPS)[:, None]
        # Rim: distance to the circle (rim_radius, cut) in the (ρ, z) half-plane.
        d_rho, d_z = rho - self.rim_radius, p[:, 2] - self.cut
        rim_len = np.sqrt(d_rho * d_rho + d_z * d_z)
        inv = 1.0 / np.maximum(rim_len, _EPS)
        rim_grad = np.concatenate([(d_rho * inv)[:, None] * radial, (d_z * inv)[:, None]], axis=1)
        distance = np.where(on_cap, np.abs(length - self.radius), rim_len)
        grad = np.where(on_cap[:, None], cap_grad, rim_grad)
        foot, foot_grad = self.foot.sdf_and_gradient(p - self.foot_offset)
        value, grad = smooth_min(distance - self.thickness, grad, foot, foot_grad, self.foot_k)
        return value, grad @ self.rotation.T


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
    "knot": TrefoilKnot,
    "figure": Figure,
    "bowl": Bowl,
}


def get_shape(name: str) -> Shape:
    """Builds a registered shape with its default parameters."""
    try:
        return SHAPES[name]()
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; choose one of {sorted(SHAPES)}") from None
