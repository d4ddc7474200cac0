"""Textured backdrops behind a synthetic object, for training without masks.

Real photometric-stereo maps without masks hold the estimated normals and reflectance of whatever is
behind the object. A backdrop here is exact geometry in world units, kept outside the object's
normalisation sphere (the ball that ``scale_mat`` maps to the unit sphere), so that a method's
unit-sphere SDF never has to explain it:

- ``plane``: a round floor (a table top) below the object, normal +z, seen from above. Cameras must
  stay above it, so scenes with a floor use an elevation band that starts a little below the horizon.
  Its finite radius keeps far, aliased checker tiles out of the images; beyond it, pixels stay empty.
- ``box``: the inner faces of a cube around the object and the cameras (a room), normals pointing
  inwards; every background pixel sees a wall.

The object is never behind the backdrop: the floor lies below both the object and the cameras, and the
box encloses both, so a ray meets the backdrop only after it has missed the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recon_plugin.data.synthetic.scene import albedo_canonical

__all__ = ["BACKDROP_KINDS", "PLANE_MIN_ELEVATION_DEG", "Backdrop", "make_backdrop"]

BackdropKind = Literal["plane", "box"]
BACKDROP_KINDS: tuple[str, ...] = ("none", "plane", "box")
#: Distance of the floor below the object centre, in normalisation-sphere radii.
PLANE_DISTANCE = 1.2
#: Radius of the floor disc, in normalisation-sphere radii.
PLANE_RADIUS = 5.0
#: Half-size of the room, in normalisation-sphere radii (cameras sit at ~2.7).
BOX_HALF_SIZE = 3.5
#: Lowest camera elevation over a floor: cameras stay above it and see it at a useful angle.
PLANE_MIN_ELEVATION_DEG = -15.0
#: Checker tiles per normalisation-sphere radius.
TILES_PER_RADIUS = 2.0


@dataclass(frozen=True)
class Backdrop:
    """A floor or a room around the world point ``center`` (the object's centre)."""

    kind: BackdropKind
    center: np.ndarray
    """(3,) world centre of the object."""
    extent: float
    """Floor: its distance below ``center``. Box: its half-size. World units."""
    floor_radius: float
    """Floor: radius of the disc around the point below ``center``. World units."""
    tile: float
    """Checker tile size, world units."""

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """First hit of (N, 3) world rays with unit ``dirs``.

        Returns flat arrays: ``hit`` (N,) bool, ``distance`` (N,), ``position`` (N, 3), ``normal``
        (N, 3) unit world normals facing the ray; zeros where missed.
        """
        o = np.asarray(origins, dtype=np.float64) - self.center
        d = np.asarray(dirs, dtype=np.float64)
        n = len(o)
        normal = np.zeros((n, 3))
        if self.kind == "plane":
            # Floor z = -extent, seen from above only: rays from above going down.
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (-self.extent - o[:, 2]) / d[:, 2]
            hit = (o[:, 2] > -self.extent) & (d[:, 2] < 0.0)
            hit &= np.hypot(o[:, 0] + t * d[:, 0], o[:, 1] + t * d[:, 1]) <= self.floor_radius
            normal[:, 2] = 1.0
        elif self.kind == "box":
            inside = np.all(np.abs(o) < self.extent, axis=1)
            if not inside.all():
                raise ValueError("box backdrop: a ray starts outside the box")
            with np.errstate(divide="ignore", invalid="ignore"):
                exits = np.where(d != 0.0, (np.sign(d) * self.extent - o) / d, np.inf)
            axis = np.argmin(exits, axis=1)
            t = exits[np.arange(n), axis]
            hit = np.isfinite(t)
            normal[np.arange(n), axis] = -np.sign(d[np.arange(n), axis])
        else:
            raise ValueError(f"unknown backdrop kind {self.kind!r}")
        t = np.where(hit, t, 0.0)
        position = np.where(hit[:, None], self.center + o + t[:, None] * d, 0.0)
        return {"hit": hit, "distance": t, "position": position, "normal": np.where(hit[:, None], normal, 0.0)}

    def albedo(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """RGB albedo (N, 3) at backdrop points with their normals: a checkerboard on each face over a
        smooth colour wash, so that every view of the backdrop has texture."""
        local = (np.asarray(points, dtype=np.float64) - self.center) / self.tile
        # Checker in the two coordinates of the face's plane (the normal is axis-aligned).
        axis = np.argmax(np.abs(normals), axis=1)
        in_plane = np.stack(
            [local[np.arange(len(local)), (axis + 1) % 3], local[np.arange(len(local)), (axis + 2) % 3]]
        )
        checker = (np.floor(in_plane).sum(axis=0) % 2.0)[:, None]
        wash = albedo_canonical(local * 0.37 + 5.0)
        return np.clip(wash * (0.45 + 0.55 * checker), 0.0, 1.0)

    def min_distance(self) -> float:
        """Smallest distance from ``center`` to the backdrop (world units)."""
        return self.extent

    def to_json(self, sphere_radius: float) -> dict:
        """Description for scene.json; ``sphere_radius`` is the normalisation sphere's radius (world)."""
        return {
            "kind": self.kind,
            "center": self.center.tolist(),
            "extent": self.extent,
            "extent_meaning": "distance of the floor below the centre" if self.kind == "plane" else "half-size",
            "tile": self.tile,
            **({"floor_radius": self.floor_radius} if self.kind == "plane" else {}),
            "min_distance_in_normalised_units": self.min_distance() / sphere_radius,
        }


def make_backdrop(kind: str, center: np.ndarray, sphere_radius: float) -> Backdrop | None:
    """The backdrop ``kind`` ("none", "plane" or "box") around an object whose normalisation sphere has
    radius ``sphere_radius`` (world units) at ``center``; None for "none".

    Raises:
        ValueError: unknown kind.
    """
    if kind not in BACKDROP_KINDS:
        raise ValueError(f"unknown backdrop {kind!r}; choose one of {list(BACKDROP_KINDS)}")
    if kind == "none":
        return None
    extent = (PLANE_DISTANCE if kind == "plane" else BOX_HALF_SIZE) * sphere_radius
    backdrop = Backdrop(
        kind=kind,  # type: ignore[arg-type]
        center=np.asarray(center, dtype=np.float64),
        extent=float(extent),
        floor_radius=float(PLANE_RADIUS * sphere_radius),
        tile=float(sphere_radius / TILES_PER_RADIUS),
    )
    # The normalisation sphere must hold the object only.
    assert backdrop.min_distance() > sphere_radius
    return backdrop
