"""First-hit ray casting against a triangle mesh, for torch tensors of rays (NeRO stage II's fixed geometry).

The BVH and the traversal are open3d's ``open3d.t.geometry.RaycastingScene`` (Embree underneath), a maintained
library: no CUDA build of ours. It runs on the CPU; rays on a CUDA device are copied to the CPU, cast, and the
results copied back to the rays' device (the casting itself is CPU work either way). The results carry no
gradient: the mesh is fixed geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

_INVALID_ID = 4294967295  # open3d's RaycastingScene.INVALID_ID (uint32 max)


@dataclass
class RayHits:
    """First intersections of N rays; entries of missed rays are zeros (distance +inf, triangle -1).

    Attributes:
        hit: (N,) bool, whether the ray meets the mesh.
        distance: (N,) distance along the ray in units of the direction's length (+inf on a miss).
        triangle: (N,) int64 index of the hit face (-1 on a miss).
        barycentric: (N, 3) weights of the face's three vertices at the hit point.
        face_normal: (N, 3) unit geometric normal of the hit face, oriented by the winding (counter-clockwise
            seen from the front).
        normal: (N, 3) unit shading normal: the area-weighted vertex normals interpolated with the barycentrics.
        position: (N, 3) hit point, origin + distance * direction.
    """

    hit: Tensor
    distance: Tensor
    triangle: Tensor
    barycentric: Tensor
    face_normal: Tensor
    normal: Tensor
    position: Tensor


class MeshRayCaster:
    """A triangle mesh (vertices (V, 3), faces (F, 3)) ready for ray queries.

    Args:
        vertices: (V, 3) positions (numpy or torch); stored as float32.
        faces: (F, 3) vertex indices.
        num_threads: threads for open3d's traversal (0: open3d picks; default: torch's intra-op thread count,
            so the caster respects ``torch.set_num_threads`` like the rest of a run).
    """

    def __init__(
        self,
        vertices: Tensor | np.ndarray,
        faces: Tensor | np.ndarray,
        num_threads: int | None = None,
        vertex_normals: Tensor | np.ndarray | None = None,
    ) -> None:
        import open3d as o3d

        vertices = np.ascontiguousarray(_numpy(vertices), dtype=np.float32)
        faces_array = _numpy(faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
            raise ValueError(f"MeshRayCaster: vertices must be a non-empty (V, 3) array, got {vertices.shape}")
        if faces_array.ndim != 2 or faces_array.shape[1] != 3 or len(faces_array) == 0:
            raise ValueError(f"MeshRayCaster: faces must be a non-empty (F, 3) array, got {faces_array.shape}")
        if faces_array.min() < 0 or faces_array.max() >= len(vertices):
            raise ValueError(
                f"MeshRayCaster: face indices must lie in [0, {len(vertices) - 1}], "
                f"got [{faces_array.min()}, {faces_array.max()}]"
            )
        if not np.isfinite(vertices).all():
            raise ValueError("MeshRayCaster: vertices hold non-finite values")
        faces_array = np.ascontiguousarray(faces_array, dtype=np.uint32)
        self.num_threads = torch.get_num_threads() if num_threads is None else num_threads
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(faces_array))
        self.vertices = torch.from_numpy(vertices)
        self.faces = torch.from_numpy(faces_array.astype(np.int64))
        if vertex_normals is None:
            self.vertex_normals = area_weighted_vertex_normals(self.vertices, self.faces)
        else:
            normals = torch.as_tensor(_numpy(vertex_normals), dtype=torch.float32)
            if normals.shape != self.vertices.shape or not bool(torch.isfinite(normals).all()):
                raise ValueError(
                    f"MeshRayCaster: vertex_normals must be finite and shaped like the vertices {tuple(vertices.shape)}"
                    f", got {tuple(normals.shape)}"
                )
            self.vertex_normals = torch.nn.functional.normalize(normals, dim=-1)

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @torch.no_grad()
    def cast(self, origins: Tensor, directions: Tensor, chunk: int = 1 << 20) -> RayHits:
        """First hits of rays (..., 3) + (..., 3); returns :class:`RayHits` with the rays' leading shape flattened
        to N, on the rays' device and in float32. Directions need not be unit (distances are in their units)."""
        if origins.shape != directions.shape or origins.shape[-1] != 3:
            raise ValueError(
                f"cast: origins and directions must both be (..., 3), got {tuple(origins.shape)} and "
                f"{tuple(directions.shape)}"
            )
        import open3d as o3d

        device = origins.device
        rays = torch.cat([origins.reshape(-1, 3), directions.reshape(-1, 3)], dim=-1).detach()
        rays = rays.to("cpu", torch.float32).contiguous()
        distances, triangles, uvs = [], [], []
        for start in range(0, rays.shape[0], chunk):
            result = self.scene.cast_rays(o3d.core.Tensor.from_numpy(rays[start : start + chunk].numpy()),
                                          nthreads=self.num_threads)  # fmt: skip
            distances.append(torch.from_numpy(result["t_hit"].numpy()))
            triangles.append(torch.from_numpy(result["primitive_ids"].numpy().astype(np.int64)))
            uvs.append(torch.from_numpy(result["primitive_uvs"].numpy()))
        if rays.shape[0] == 0:
            distance = torch.zeros(0)
            triangle = torch.zeros(0, dtype=torch.int64)
            uv = torch.zeros(0, 2)
        else:
            distance, triangle, uv = torch.cat(distances), torch.cat(triangles), torch.cat(uvs)
        hit = (triangle != _INVALID_ID) & torch.isfinite(distance)
        triangle = torch.where(hit, triangle, torch.full_like(triangle, -1))
        # open3d's (u, v) weight the second and third vertex: p = (1 - u - v) v0 + u v1 + v v2
        barycentric = torch.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], dim=-1)
        barycentric = torch.where(hit[:, None], barycentric, torch.zeros_like(barycentric))
        corners = self.faces[triangle.clamp(min=0)]  # (N, 3)
        positions = self.vertices[corners]  # (N, 3 corners, 3)
        face_normal = torch.linalg.cross(positions[:, 1] - positions[:, 0], positions[:, 2] - positions[:, 0])
        face_normal = torch.nn.functional.normalize(face_normal, dim=-1)
        normal = (self.vertex_normals[corners] * barycentric[..., None]).sum(1)
        normal = torch.nn.functional.normalize(normal, dim=-1)
        zeros = torch.zeros_like(normal)
        face_normal = torch.where(hit[:, None], face_normal, zeros)
        normal = torch.where(hit[:, None], normal, zeros)
        position = rays[:, :3] + torch.where(hit, distance, torch.zeros_like(distance))[:, None] * rays[:, 3:]
        position = torch.where(hit[:, None], position, zeros)

        def back(value: Tensor) -> Tensor:
            return value.to(device)

        return RayHits(
            hit=back(hit),
            distance=back(distance),
            triangle=back(triangle),
            barycentric=back(barycentric),
            face_normal=back(face_normal),
            normal=back(normal),
            position=back(position),
        )


def _numpy(array: Tensor | np.ndarray) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, Tensor) else np.asarray(array)


def smoothed_vertex_normals(vertices: Tensor | np.ndarray, faces: Tensor | np.ndarray, iterations: int) -> Tensor:
    """Unit vertex normals (V, 3) of a copy of the mesh smoothed by ``iterations`` of Taubin's filter (lambda 0.5,
    mu -0.53: no shrinkage). A reconstructed surface carries bumps a few marching-cubes cells wide that barely
    move it (Chamfer) but break a glossy highlight into speckles; these normals shade the original positions.

    Taubin's filter has no notion of a boundary: a small open patch or an isolated component collapses. Where the
    smoothed normal vanishes or turns more than 60 degrees from the mesh's own, the mesh's own is kept."""
    import trimesh

    vertices_np = np.asarray(_numpy(vertices), dtype=np.float64)
    faces_np = np.asarray(_numpy(faces), dtype=np.int64)
    faces_t = torch.as_tensor(faces_np)
    own = area_weighted_vertex_normals(torch.as_tensor(vertices_np, dtype=torch.float32), faces_t)
    if iterations <= 0:
        return own
    mesh = trimesh.Trimesh(vertices_np, faces_np, process=False)
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=iterations)
    smoothed = area_weighted_vertex_normals(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32), faces_t)
    agrees = (smoothed * own).sum(-1, keepdim=True) > 0.5
    return torch.where(agrees, smoothed, own)


def area_weighted_vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit vertex normals: the sum of the adjacent faces' cross products (area-weighted normals)."""
    corners = vertices[faces]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = torch.zeros_like(vertices)
    normals.index_add_(0, faces.reshape(-1), cross.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(normals, dim=-1)
