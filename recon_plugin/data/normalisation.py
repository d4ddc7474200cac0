"""Scene normalisation: the similarity that puts the object inside the unit sphere and the cameras outside it.

A normalisation is a sphere in world units (centre c, radius s, optional rotation R): world points map
to ``R^T (x - c) / s``. Sources, as in RNb-NeuS2's scaling modes:

- ``scale-mat``: the unit sphere -> world matrix stored with the cameras (IDR ``scale_mat_0``, RNb-NeuS2 ``n2w``);
- ``silhouettes``: the visual hull carved from the masks on a coarse grid, and its enclosing sphere plus a margin;
- ``cameras``: the point closest to all optical axes, and the largest sphere around it that every view sees whole;
- ``point-cloud``: the bounding sphere of a point cloud (.ply) of the object, plus a margin;
- ``none``: the identity (the input is already normalised).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from recon_plugin.data.errors import RnbDataError

#: Views may have this fraction of silhouette pixels whose rays miss the unit sphere (mask noise, stray pixels).
MAX_OUTSIDE_FRACTION = 0.01


@dataclass
class SceneNormalisation:
    """A sphere in world units that becomes the unit sphere."""

    mode: str
    """Which source decided it: scale-mat, silhouettes, cameras, point-cloud or none."""
    centre: np.ndarray
    radius: float
    rotation: np.ndarray
    """(3, 3) world axes of the normalised frame (identity except for a rotated scale_mat)."""
    detail: str = ""

    @property
    def transform(self) -> np.ndarray:
        """(3, 4) ``[R^T | -R^T c]``: nerfstudio's ``dataparser_transform`` (applied before ``scale``)."""
        return np.concatenate([self.rotation.T, (-self.rotation.T @ self.centre)[:, None]], axis=1)

    @property
    def scale(self) -> float:
        """nerfstudio's ``dataparser_scale``: world units -> normalised units."""
        return 1.0 / self.radius

    def points_to_normalised(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> normalised frame."""
        return (np.asarray(points, dtype=np.float64) - self.centre) @ self.rotation / self.radius

    def poses_to_normalised(self, poses: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses -> camera-to-normalised (rotation and centre; axes unchanged)."""
        out = np.array(poses, dtype=np.float64, copy=True)
        out[:, :3, :3] = self.rotation.T @ out[:, :3, :3]
        out[:, :3, 3] = self.points_to_normalised(out[:, :3, 3])
        return out


def from_similarity(scale: float, rotation: np.ndarray, translation: np.ndarray, name: str) -> SceneNormalisation:
    """The normalisation stored with the cameras, ``[s R | t]`` (unit sphere -> world)."""
    return SceneNormalisation("scale-mat", translation, scale, rotation, f"from {name}, radius {scale:.6g}")


def identity_normalisation() -> SceneNormalisation:
    """The input is already normalised."""
    return SceneNormalisation("none", np.zeros(3), 1.0, np.eye(3), "identity: the input is taken as normalised")


def closest_point_to_lines(origins: np.ndarray, directions: np.ndarray, where: str) -> np.ndarray:
    """Least-squares point nearest to lines ``o_i + t d_i``; fails when the lines are (nearly) parallel."""
    directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    system = projectors.sum(0)
    eigenvalues = np.linalg.eigvalsh(system)
    if eigenvalues[0] < 1e-6 * max(eigenvalues[-1], 1e-12):
        raise RnbDataError(f"{where}: the viewing rays are parallel, so they meet nowhere; cannot place the object")
    return np.linalg.solve(system, (projectors @ origins[:, :, None]).sum(0)[:, 0])


def sphere_from_cameras(intrinsics: np.ndarray, poses: np.ndarray, size: tuple[int, int], where: str):
    """Centre: the point closest to all optical axes. Radius: the largest sphere there that fits every view's
    narrower field of view, which bounds any object that each view sees whole."""
    centre = closest_point_to_lines(poses[:, :3, 3], poses[:, :3, 2], where)
    depth = np.einsum("vi,vi->v", centre - poses[:, :3, 3], poses[:, :3, 2])
    if np.any(depth <= 0):
        view = int(np.argmin(depth))
        raise RnbDataError(f"{where}: view {view} faces away from the point its optical axes converge to")
    width, height = size
    half_angle = np.arctan(np.minimum(width / (2 * intrinsics[:, 0, 0]), height / (2 * intrinsics[:, 1, 1])))
    distances = np.linalg.norm(poses[:, :3, 3] - centre, axis=-1)
    radius = float(np.min(distances * np.sin(half_angle)))
    detail = f"optical axes meet at {np.round(centre, 6).tolist()}, radius {radius:.6g} (narrowest view)"
    return SceneNormalisation("cameras", centre, radius, np.eye(3), detail)


def _carve(intrinsics: np.ndarray, poses: np.ndarray, masks: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Points that every view sees inside its silhouette (an object seen whole in every view)."""
    keep = np.ones(len(points), dtype=bool)
    for view, mask in enumerate(masks):
        candidates = np.nonzero(keep)[0]
        local = (points[candidates] - poses[view, :3, 3]) @ poses[view, :3, :3]
        pixels = local @ intrinsics[view].T
        in_front = pixels[:, 2] > 1e-9
        # Pixel (row, col) covers [col, col + 1) x [row, row + 1), centre at +0.5 (nerfstudio's convention).
        col = np.floor(pixels[:, 0] / np.where(in_front, pixels[:, 2], 1.0))
        row = np.floor(pixels[:, 1] / np.where(in_front, pixels[:, 2], 1.0))
        inside = in_front & (col >= 0) & (row >= 0) & (col < mask.shape[1]) & (row < mask.shape[0])
        hit = np.zeros(len(candidates), dtype=bool)
        hit[inside] = mask[row[inside].astype(np.int64), col[inside].astype(np.int64)]
        keep[candidates[~hit]] = False
    return keep


def _silhouette_rays(
    intrinsics: np.ndarray, poses: np.ndarray, masks: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(origin, unit directions (N, 3)) of the rays through every silhouette pixel's centre, per view."""
    rays = []
    for view, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        pixels = np.stack([cols + 0.5, rows + 0.5, np.ones(rows.size)], axis=-1)
        directions = pixels @ np.linalg.inv(intrinsics[view]).T @ poses[view, :3, :3].T
        rays.append((poses[view, :3, 3], directions / np.linalg.norm(directions, axis=-1, keepdims=True)))
    return rays


def _ray_distances(centre: np.ndarray, origin: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Distance from ``centre`` to each ray (to the origin when the centre is behind it)."""
    offset = centre - origin
    along = np.maximum(directions @ offset, 0.0)
    return np.linalg.norm(offset[None] - along[:, None] * directions, axis=-1)


def visual_hull(
    intrinsics: np.ndarray, poses: np.ndarray, masks: list[np.ndarray], resolution: int, where: str
) -> tuple[np.ndarray, float] | None:
    """Voxel centres (N, 3) of the visual hull on a ``resolution``³ grid and the voxel size; None when the
    silhouettes do not bound it (views too few or too similar, so the hull reaches the search box).

    The search box starts around the point where the rays through the silhouette centroids meet, as large as
    the nearest camera allows, then shrinks to the carved voxels for two finer passes.
    """
    centre = _centroid_meeting_point(intrinsics, poses, masks, where)
    half = 0.95 * float(np.min(np.linalg.norm(poses[:, :3, 3] - centre, axis=-1)))
    low, high = centre - half, centre + half
    for attempt in range(3):
        axes = [np.linspace(low[i], high[i], resolution) for i in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        occupied = _carve(intrinsics, poses, masks, grid).reshape(resolution, resolution, resolution)
        if not occupied.any():
            raise RnbDataError(
                f"{where}: the silhouettes carve an empty visual hull: masks and cameras disagree "
                "(wrong poses, or masks of different views do not show the same object)"
            )
        indices = np.argwhere(occupied)
        if attempt == 0 and (indices.min() == 0 or indices.max() == resolution - 1):
            return None
        step = (high - low) / (resolution - 1)
        low, high = low + (indices.min(0) - 1) * step, low + (indices.max(0) + 1) * step
    return grid[occupied.reshape(-1)], float(np.max(step))


def _centroid_meeting_point(intrinsics: np.ndarray, poses: np.ndarray, masks: list[np.ndarray], where: str):
    origins, directions = [], []
    for view, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        pixel = np.array([cols.mean() + 0.5, rows.mean() + 0.5, 1.0])
        origins.append(poses[view, :3, 3])
        directions.append(poses[view, :3, :3] @ np.linalg.solve(intrinsics[view], pixel))
    if len(origins) < 2:
        raise RnbDataError(f"{where}: placing the object from silhouettes needs them in at least two views")
    return closest_point_to_lines(np.array(origins), np.array(directions), where)


def sphere_from_silhouettes(
    intrinsics: np.ndarray, poses: np.ndarray, masks: list[np.ndarray], margin: float, resolution: int, where: str
) -> SceneNormalisation:
    """The visual hull's bounding-box centre and the radius that encloses every hull voxel, times 1 + margin.

    When the silhouettes do not bound the hull (e.g. a few nearly parallel views), falls back to the smallest
    sphere around the point where the silhouette centroids' rays meet that every silhouette ray touches.
    """
    hull = visual_hull(intrinsics, poses, masks, resolution, where)
    if hull is not None:
        points, voxel = hull
        centre = (points.min(0) + points.max(0)) / 2
        radius = (float(np.max(np.linalg.norm(points - centre, axis=-1))) + voxel * np.sqrt(3) / 2) * (1 + margin)
        detail = f"visual hull of {len(points)} voxels, centre {np.round(centre, 6).tolist()}, radius {radius:.6g}"
        return SceneNormalisation("silhouettes", centre, radius, np.eye(3), detail)
    centre = _centroid_meeting_point(intrinsics, poses, masks, where)
    reach = max(
        float(_ray_distances(centre, origin, directions).max())
        for origin, directions in _silhouette_rays(intrinsics, poses, masks)
        if len(directions)
    )
    radius = reach * (1 + margin)
    detail = (
        f"the silhouettes do not bound the object in depth (views too few or too similar), so the sphere is the "
        f"smallest around the silhouette centroids' meeting point {np.round(centre, 6).tolist()} that every "
        f"silhouette ray touches: radius {radius:.6g}"
    )
    return SceneNormalisation("silhouettes", centre, radius, np.eye(3), detail)


def read_point_cloud(path: Path) -> np.ndarray:
    """(N, 3) vertices of a .ply (point cloud or mesh)."""
    import trimesh

    if not path.is_file():
        raise RnbDataError(f"{path}: point cloud file not found")
    try:
        geometry = trimesh.load(path, process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise RnbDataError(f"{path}: not a readable point cloud ({err})") from err
    points = np.asarray(getattr(geometry, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if points.ndim != 2 or len(points) == 0:
        raise RnbDataError(f"{path}: holds no points")
    if not np.all(np.isfinite(points)):
        raise RnbDataError(f"{path}: contains NaN or infinite coordinates")
    return points


def sphere_from_points(points: np.ndarray, margin: float, where: str) -> SceneNormalisation:
    """Bounding-box centre of the points and the radius that encloses them all, times 1 + margin."""
    centre = (points.min(0) + points.max(0)) / 2
    radius = float(np.max(np.linalg.norm(points - centre, axis=-1))) * (1 + margin)
    if radius <= 0:
        raise RnbDataError(f"{where}: the point cloud has no extent (all points coincide)")
    detail = f"{len(points)} points from {where}, centre {np.round(centre, 6).tolist()}, radius {radius:.6g}"
    return SceneNormalisation("point-cloud", centre, radius, np.eye(3), detail)


def check_normalisation(
    normalisation: SceneNormalisation,
    intrinsics: np.ndarray,
    poses: np.ndarray,
    view_files: list[Path],
    masks: list[np.ndarray] | None,
) -> None:
    """Cameras must lie outside the unit sphere, and (nearly) every silhouette pixel's ray must meet it.

    Raises:
        RnbDataError: naming the view and the normalisation mode. A silhouette outside a stored ("scale-mat")
            or absent ("none") normalisation only warns: masks may be loose boxes around the object.
    """
    hint = "; pick another --normalisation (scale-mat, silhouettes, cameras, point-cloud)"
    normalised = normalisation.poses_to_normalised(poses)
    distances = np.linalg.norm(normalised[:, :3, 3], axis=-1)
    for view in np.nonzero(distances <= 1.0)[0]:
        raise RnbDataError(
            f"{view_files[view]}: this view's camera lies inside the unit sphere (distance {distances[view]:.3g}) "
            f"after the {normalisation.mode} normalisation{hint}"
        )
    if masks is None:
        return
    normalised_masks_rays = _silhouette_rays(intrinsics, normalised, masks)
    for view, (origin, directions) in enumerate(normalised_masks_rays):
        if len(directions) == 0:
            continue
        outside = float(np.mean(_ray_distances(np.zeros(3), origin, directions) > 1.0))
        if outside > MAX_OUTSIDE_FRACTION:
            message = (
                f"{view_files[view]}: {outside:.0%} of the silhouette's rays miss the unit sphere after the "
                f"{normalisation.mode} normalisation: the object is not inside it"
            )
            if normalisation.mode in ("scale-mat", "none"):
                # The user's own normalisation: say it looks wrong, but it may hold for masks that are not tight.
                CONSOLE.print(f"[yellow]{message}; if the stored one is wrong, try --normalisation silhouettes")
            else:
                raise RnbDataError(message + hint)
