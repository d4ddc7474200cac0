"""Exports of a nero-material run: a textured glTF asset, per-vertex materials and the learned environment.

Files written to the output folder (all in the world units and frame of the training data):

- ``model.glb``: the mesh, decimated to at most ``max_faces`` triangles (quadric error; the texture carries the
  material detail, and xatlas's unwrap time grows faster than the face count: about 40 s per 100k faces on one
  CPU core, a stage-I mesh of 1.2 M faces sat more than 30 minutes in it), with a glTF 2.0 metallic-roughness
  material. UV atlas from xatlas; the base colour
  texture is the albedo sRGB-encoded (as glTF requires); the metallic-roughness texture holds perceptual
  roughness (GGX alpha = roughness^2, glTF's own convention) in G and metallic in B.
- ``materials.ply``: the full-resolution mesh with per-vertex float columns ``albedo_r/g/b`` (linear), ``roughness``
  (perceptual), ``metallic``, plus 8-bit sRGB ``red/green/blue`` of the albedo for ordinary viewers.
- ``environment.exr`` / ``environment.hdr``: the distant light as a linear equirect (world z up, see
  :mod:`recon_plugin.components.environment`), and ``environment.png``, an sRGB preview clipped at 1.
- ``materials.json``: what was written and the conventions above.

Texels are filled by rasterising the atlas (each texel centre located in its UV triangle by a ray cast with the
shared :class:`MeshRayCaster`), mapping it to its surface point and querying the material field there; empty
texels take their nearest filled neighbour, so bilinear filtering does not bleed black across chart seams.
Everything is written to a hidden folder first and moved into place at the end: an interrupted export leaves
no half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from recon_plugin.components.environment import equirect_pixel_directions, write_environment
from recon_plugin.components.raycast import MeshRayCaster, area_weighted_vertex_normals
from recon_plugin.components.shading import linear_to_srgb
from recon_plugin.data.image_io import write_png
from recon_plugin.data.transforms import normalized_to_world
from recon_plugin.export.gltf import metallic_roughness_texture, write_glb
from recon_plugin.export.mesh import decimate


@torch.no_grad()
def query_materials(model, points: np.ndarray, chunk: int = 65536) -> Dict[str, np.ndarray]:
    """The material field at (N, 3) points of the model's normalised frame: albedo (N, 3) linear, roughness
    (N,) perceptual and metallic (N,), float32."""
    device = next(model.parameters()).device
    parts: Dict[str, list] = {"albedo": [], "roughness": [], "metallic": []}
    tensor = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    for start in range(0, tensor.shape[0], chunk):
        values = model.material(tensor[start : start + chunk].to(device))
        for name in parts:
            parts[name].append(values[name].float().cpu())
    out = {name: torch.cat(values).numpy() if values else np.zeros((0, 3)) for name, values in parts.items()}
    out["roughness"] = out["roughness"].reshape(-1)
    out["metallic"] = out["metallic"].reshape(-1)
    return out


def unwrap(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas UV atlas: (source vertex index (V',), faces (F, 3) into the new vertices, uvs (V', 2) in [0, 1])."""
    import xatlas

    mapping, new_faces, uvs = xatlas.parametrize(
        np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32)
    )
    return mapping.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float32)


def rasterise_atlas(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For every texel centre of a size x size texture (row 0 at v = 0, glTF's top), the UV triangle holding it
    ((size, size) int64, -1 where none does) and its barycentrics ((size, size, 3))."""
    flat = np.concatenate([uvs, np.zeros((len(uvs), 1), np.float32)], axis=1)
    caster = MeshRayCaster(flat, faces)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(centres, centres, indexing="xy")  # v grows down the rows
    origins = torch.from_numpy(np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3))
    directions = torch.tensor([[0.0, 0.0, -1.0]]).expand_as(origins).contiguous()
    hits = caster.cast(origins, directions)
    return hits.triangle.numpy().reshape(size, size), hits.barycentric.numpy().reshape(size, size, 3)


def fill_empty_texels(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Each texel outside ``covered`` (H, W) takes the value of its nearest covered texel."""
    if covered.all() or not covered.any():
        return image
    _, (rows, columns) = ndimage.distance_transform_edt(~covered, return_indices=True)
    return image[rows, columns]


@torch.no_grad()
def bake_environment(model, transform: np.ndarray, height: int) -> Tensor:
    """The model's distant light as a (height, 2 height, 3) equirect in the WORLD frame (z up): a world direction d
    is looked up along R d, R the dataparser rotation, the frame the model works in."""
    device = next(model.parameters()).device
    world = equirect_pixel_directions(height, 2 * height).reshape(-1, 3)
    rotation = torch.as_tensor(np.asarray(transform)[:3, :3], dtype=torch.float32)
    model_frame = torch.nn.functional.normalize(world @ rotation.T, dim=-1)
    radiance = [model.environment_radiance(part.to(device)).float().cpu() for part in model_frame.split(65536)]
    return torch.cat(radiance).reshape(height, 2 * height, 3)


def write_vertex_ply(
    path: Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, materials: Dict[str, np.ndarray]
) -> None:
    """Binary little-endian PLY with per-vertex position, normal, sRGB 8-bit colour and float material columns."""
    albedo = materials["albedo"]
    srgb = np.round(linear_to_srgb(torch.from_numpy(albedo)).numpy() * 255.0).astype(np.uint8)
    vertex_type = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
         ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("albedo_r", "<f4"), ("albedo_g", "<f4"),
         ("albedo_b", "<f4"), ("roughness", "<f4"), ("metallic", "<f4")]
    )  # fmt: skip
    records = np.empty(len(vertices), dtype=vertex_type)
    for index, axis in enumerate("xyz"):
        records[axis] = vertices[:, index]
        records["n" + axis] = normals[:, index]
    for index, channel in enumerate(("red", "green", "blue")):
        records[channel] = srgb[:, index]
        records["albedo_" + "rgb"[index]] = albedo[:, index]
    records["roughness"] = materials["roughness"]
    records["metallic"] = materials["metallic"]
    face_type = np.dtype([("count", "u1"), ("indices", "<i4", (3,))])
    face_records = np.empty(len(faces), dtype=face_type)
    face_records["count"] = 3
    face_records["indices"] = faces
    properties = "\n".join(
        f"property {'uchar' if vertex_type[name] == np.uint8 else 'float'} {name}" for name in vertex_type.names
    )
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        "comment recon_plugin nero-material: albedo_* linear RGB, red/green/blue its sRGB encoding, roughness "
        "perceptual (GGX alpha = roughness^2), metallic in [0, 1]; world units\n"
        f"element vertex {len(vertices)}\n{properties}\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(records.tobytes())
        handle.write(face_records.tobytes())


def export_materials(
    pipeline,
    output_dir: Path | str,
    texture_size: int = 1024,
    environment_height: int = 128,
    max_faces: int = 100_000,
    log: Callable[[str], None] | None = print,
) -> Dict[str, Path]:
    """Writes the files listed in the module docstring for a trained nero-material ``pipeline``; returns them.
    ``log`` receives a line as each stage starts and ends (None: silent)."""
    say = log or (lambda _message: None)
    if texture_size < 8:
        raise ValueError(f"texture size must be >= 8, got {texture_size}")
    if max_faces < 4:
        raise ValueError(f"max faces must be >= 4, got {max_faces}")
    if environment_height < 2:
        raise ValueError(f"environment height must be >= 2, got {environment_height}")
    model = pipeline.model
    if not hasattr(model, "material") or getattr(model, "caster", None) is None:
        raise ValueError(f"{type(model).__name__} has no material field on a mesh: not a nero-material run")
    outputs = pipeline.datamanager.train_dataparser_outputs
    transform = outputs.dataparser_transform.double().cpu().numpy()
    scale = float(outputs.dataparser_scale)
    start = time.perf_counter()
    vertices = model.caster.vertices.numpy().astype(np.float64)
    faces = model.caster.faces.numpy()
    normals = model.caster.vertex_normals.numpy().astype(np.float64)
    world_vertices = normalized_to_world(vertices, transform, scale)
    # Normals of the normalised frame s (R x + t) map back with R^-1 (a rotation: its transpose).
    world_normals = normals @ np.linalg.inv(transform[:3, :3]).T
    world_normals /= np.linalg.norm(world_normals, axis=-1, keepdims=True).clip(min=1e-12)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / f".export-materials-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()

    def elapsed() -> str:
        return f"{time.perf_counter() - start:.1f} s"

    try:
        say(f"  per-vertex materials of {len(vertices):,} vertices, {len(faces):,} faces")
        vertex_materials = query_materials(model, vertices)
        write_vertex_ply(staging / "materials.ply", world_vertices, faces, world_normals, vertex_materials)
        say(f"  materials.ply written ({elapsed()})")

        if len(faces) > max_faces:
            say(f"  decimating {len(faces):,} faces to {max_faces:,} for the textured model (--max-faces)")
            glb_vertices, glb_faces = decimate(vertices, faces, max_faces)
            say(f"  decimated to {len(glb_faces):,} faces ({elapsed()})")
            glb_normals = area_weighted_vertex_normals(
                torch.as_tensor(glb_vertices, dtype=torch.float32), torch.as_tensor(glb_faces)
            ).numpy()
            glb_world_normals = glb_normals @ np.linalg.inv(transform[:3, :3]).T
            glb_world_normals /= np.linalg.norm(glb_world_normals, axis=-1, keepdims=True).clip(min=1e-12)
        else:
            glb_vertices, glb_faces, glb_world_normals = vertices, faces, world_normals
        glb_world_vertices = normalized_to_world(glb_vertices, transform, scale)
        say(f"  UV atlas (xatlas) of {len(glb_faces):,} faces; about 40 s per 100k faces on one core")
        mapping, atlas_faces, uvs = unwrap(glb_world_vertices, glb_faces)
        say(f"  UV atlas: {len(uvs):,} vertices, {len(atlas_faces):,} faces ({elapsed()})")
        triangle, barycentric = rasterise_atlas(uvs, atlas_faces, texture_size)
        covered = triangle >= 0
        corners = glb_vertices[mapping][atlas_faces[triangle[covered]]]  # (T, 3 corners, 3), normalised frame
        points = (barycentric[covered][..., None] * corners).sum(1)
        say(f"  baking {texture_size}x{texture_size} textures: {int(covered.sum()):,} texels in charts")
        texel_materials = query_materials(model, points)
        albedo = np.zeros((texture_size, texture_size, 3), np.float32)
        roughness = np.zeros((texture_size, texture_size), np.float32)
        metallic = np.zeros((texture_size, texture_size), np.float32)
        albedo[covered] = texel_materials["albedo"]
        roughness[covered] = texel_materials["roughness"]
        metallic[covered] = texel_materials["metallic"]
        albedo, roughness, metallic = (fill_empty_texels(image, covered) for image in (albedo, roughness, metallic))
        base_color = linear_to_srgb(torch.from_numpy(albedo)).numpy()
        write_glb(
            staging / "model.glb",
            glb_world_vertices[mapping],
            atlas_faces,
            normals=glb_world_normals[mapping],
            texcoords=uvs,
            base_color=base_color,
            metallic_roughness=metallic_roughness_texture(roughness, metallic),
            generator="recon-export-materials (recon_plugin)",
            node_name="nero_material",
            material_name="nero_material",
        )
        say(f"  model.glb: {len(atlas_faces):,} faces, {covered.mean():.0%} of the texels in charts ({elapsed()})")

        environment = bake_environment(model, transform, environment_height)
        write_environment(staging / "environment.exr", environment)
        write_environment(staging / "environment.hdr", environment)
        write_png(staging / "environment.png", linear_to_srgb(environment).numpy(), bit_depth=8)
        summary = {
            "generator": "recon-export-materials (recon_plugin)",
            "files": {
                "model.glb": "glTF 2.0 metallic-roughness; baseColorTexture = sRGB-encoded albedo, "
                "metallicRoughnessTexture G = perceptual roughness (GGX alpha = roughness^2), B = metallic",
                "materials.ply": "per-vertex albedo_r/g/b (linear), roughness (perceptual), metallic; red/green/blue = "
                "sRGB albedo",
                "environment.exr": "learned distant light, linear equirect, world z up (environment.hdr: same, RGBE)",
                "environment.png": "sRGB preview of the environment, radiance clipped at 1",
            },
            "units": "world units of the training data",
            "texture_size": texture_size,
            "environment_size": [environment_height, 2 * environment_height],
            "vertices": len(vertices),
            "faces": len(faces),
            "model_glb_faces": len(atlas_faces),
            "texel_coverage": float(covered.mean()),
        }
        (staging / "materials.json").write_text(json.dumps(summary, indent=2) + "\n")
        written = {}
        for file in sorted(staging.iterdir()):
            target = output_dir / file.name
            os.replace(file, target)
            written[file.name] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"  done in {time.perf_counter() - start:.1f} s")
    return written
