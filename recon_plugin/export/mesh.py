"""Marching cubes on an SDF field, on CPU or GPU, with a sparse fine pass near the surface.

The SDF is first evaluated on a coarse lattice; only the coarse cells the surface can pass
through (|f| below the cell's half-diagonal times a safety factor, f being ~1-Lipschitz) are then
evaluated at full resolution. This makes a 512^3 extraction practical on a CPU.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import mcubes
import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor

from recon_plugin.data.transforms import normalized_to_world


def _lattice(resolution: int, bound: float, device: torch.device) -> Tensor:
    return torch.linspace(-bound, bound, resolution, device=device)


@torch.no_grad()
def sample_sdf_volume(
    sdf_fn: Callable[[Tensor], Tensor],
    resolution: int,
    bound: float = 1.0,
    coarse_resolution: int = 64,
    chunk: int = 131072,
    device: torch.device | str = "cpu",
    safety: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """SDF on a resolution^3 lattice over [-bound, bound]^3, indexed [x, y, z].

    Voxels far from the surface hold the trilinearly upsampled coarse values (right sign, no zero
    crossing); voxels near it hold exact network values.
    """
    device = torch.device(device)

    def evaluate(points: Tensor) -> Tensor:
        return torch.cat([sdf_fn(points[i : i + chunk]).reshape(-1) for i in range(0, points.shape[0], chunk)])

    coarse_resolution = min(coarse_resolution, resolution)
    axis = _lattice(coarse_resolution, bound, device)
    coarse_points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    coarse = evaluate(coarse_points).reshape(coarse_resolution, coarse_resolution, coarse_resolution)
    if coarse_resolution == resolution:
        return coarse.cpu().numpy()

    volume = F.interpolate(coarse[None, None], size=(resolution,) * 3, mode="trilinear", align_corners=True)[0, 0]
    coarse_cell = 2.0 * bound / (coarse_resolution - 1)
    threshold = safety * coarse_cell * np.sqrt(3.0) / 2.0
    corner_min = coarse.abs()
    # A coarse cell is active when any of its 8 corners is near the surface.
    near = corner_min < threshold
    near_cells = near[:-1, :-1, :-1] | near[1:, :-1, :-1] | near[:-1, 1:, :-1] | near[:-1, :-1, 1:]
    near_cells |= near[1:, 1:, :-1] | near[1:, :-1, 1:] | near[:-1, 1:, 1:] | near[1:, 1:, 1:]
    # Sign changes between corners also mark a cell (guards against a badly scaled SDF).
    sign = coarse > 0
    mixed = sign[:-1, :-1, :-1] ^ sign[1:, 1:, 1:]
    mixed |= sign[1:, :-1, :-1] ^ sign[:-1, 1:, 1:]
    mixed |= sign[:-1, 1:, :-1] ^ sign[1:, :-1, 1:]
    mixed |= sign[:-1, :-1, 1:] ^ sign[1:, 1:, :-1]
    active_cells = (near_cells | mixed).nonzero()

    fine_axis = _lattice(resolution, bound, device)
    scale = (resolution - 1) / (coarse_resolution - 1)
    # Fine index range covered by each active coarse cell.
    starts = torch.floor(active_cells.float() * scale).long()
    stops = torch.clamp(torch.ceil((active_cells.float() + 1.0) * scale).long() + 1, max=resolution)
    fine_mask = torch.zeros((resolution,) * 3, dtype=torch.bool, device=device)
    for (x0, y0, z0), (x1, y1, z1) in zip(starts.tolist(), stops.tolist(), strict=True):
        fine_mask[x0:x1, y0:y1, z0:z1] = True
    fine_index = fine_mask.nonzero()
    if log is not None:
        log(
            f"  {len(active_cells)} of {(coarse_resolution - 1) ** 3} coarse cells near the surface; "
            f"evaluating {len(fine_index):,} of {resolution**3:,} voxels exactly"
        )
    for i in range(0, fine_index.shape[0], chunk * 4):
        index = fine_index[i : i + chunk * 4]
        points = fine_axis[index]
        volume[index[:, 0], index[:, 1], index[:, 2]] = evaluate(points)
    return volume.cpu().numpy()


def marching_cubes_mesh(volume: np.ndarray, bound: float = 1.0) -> trimesh.Trimesh:
    """Zero level set of an SDF lattice (negative inside), outward-facing triangles, in lattice units -> coordinates."""
    vertices, faces = mcubes.marching_cubes(volume.astype(np.float64), 0.0)
    if len(faces) == 0:
        raise ValueError("the SDF has no zero crossing inside the extraction box: nothing to mesh")
    resolution = volume.shape[0]
    vertices = vertices * (2.0 * bound / (resolution - 1)) - bound
    # PyMCubes orients faces towards increasing values; our SDF grows outwards, so the faces
    # already point out. Keep the check explicit: a closed outward mesh has positive volume.
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces[:, ::-1], process=False)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh


def keep_largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Drops floaters: keeps the connected component with the most faces."""
    components = mesh.split(only_watertight=False)
    if len(components) <= 1:
        return mesh
    return max(components, key=lambda part: len(part.faces))


def decimate(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation (open3d) to at most ``max_faces`` triangles; the mesh as it is when already
    within the budget. Returns float64 vertices and int64 faces."""
    if len(faces) <= max_faces:
        return np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)), o3d.utility.Vector3iVector(np.asarray(faces))
    )
    simplified = mesh.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    simplified.remove_unreferenced_vertices()
    simplified.remove_degenerate_triangles()
    return np.asarray(simplified.vertices, np.float64), np.asarray(simplified.triangles, np.int64)


def write_mesh_atomic(mesh: trimesh.Trimesh, path: Path) -> None:
    """Writes next to the target and renames, so an interrupted export leaves no truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    mesh.export(tmp)
    os.replace(tmp, path)


def extract_mesh_from_model(
    model: torch.nn.Module,
    resolution: int = 512,
    bound: float = 1.0,
    transform: np.ndarray | None = None,
    scale: float = 1.0,
    largest_component: bool = True,
    vertex_colors: bool = True,
    log: Callable[[str], None] | None = print,
) -> trimesh.Trimesh:
    """Mesh of an SDF model (``model.field`` with ``get_sdf``/``get_sdf_and_gradient``; optional
    ``model.albedo_head``), mapped back to world units with the dataparser transform."""
    start = time.time()
    device = next(model.parameters()).device
    field = model.field
    volume = sample_sdf_volume(lambda p: field.get_sdf(p), resolution, bound=bound, device=device, log=log)
    if log is not None:
        log(f"  SDF sampled in {time.time() - start:.1f} s")
    mesh = marching_cubes_mesh(volume, bound)
    if largest_component:
        mesh = keep_largest_component(mesh)
    albedo_head = getattr(model, "albedo_head", None)
    if vertex_colors and albedo_head is not None:
        colors = []
        vertices = torch.from_numpy(np.asarray(mesh.vertices)).float().to(device)
        for i in range(0, vertices.shape[0], 65536):
            _, features, gradient = field.get_sdf_and_gradient(vertices[i : i + 65536], create_graph=False)
            with torch.no_grad():
                colors.append(albedo_head(features, F.normalize(gradient, dim=-1)).cpu())
        rgb = (torch.cat(colors).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    if transform is not None:
        mesh.vertices = normalized_to_world(np.asarray(mesh.vertices), transform, scale)
    if log is not None:
        log(f"  mesh: {len(mesh.vertices):,} vertices, {len(mesh.faces):,} faces ({time.time() - start:.1f} s)")
    return mesh


def extract_world_mesh(pipeline, resolution: int = 512, **options) -> trimesh.Trimesh:
    """:func:`extract_mesh_from_model` of a trained pipeline, in the world units of its input data
    (the run's dataparser transform undone). ``options`` go to :func:`extract_mesh_from_model`."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    return extract_mesh_from_model(
        pipeline.model,
        resolution=resolution,
        transform=outputs.dataparser_transform.cpu().numpy(),
        scale=float(outputs.dataparser_scale),
        **options,
    )
