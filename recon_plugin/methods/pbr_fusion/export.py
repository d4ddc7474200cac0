"""Writing predicted maps as PNGs and as a glTF 2.0 binary (.glb) textured plane.

glTF metallic-roughness material (written by :mod:`recon_plugin.export.gltf`): baseColorTexture = albedo
(sRGB, as predicted), metallicRoughnessTexture with roughness in G and metallic in B (R = 255, unused),
normalTexture = tangent-space normals encoded (n + 1) / 2.
The plane spans [-0.5, 0.5]^2 in x/y facing +z; texture (0, 0) is its top-left corner (-0.5, +0.5), the vertex
tangent is +x with handedness +1, so the bitangent is +y = up the image: the OpenGL ("green up") convention
that glTF and our maps share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.export.gltf import metallic_roughness_texture, write_glb


def write_material_glb(path: Path, albedo: np.ndarray, roughness: np.ndarray, metallic: np.ndarray,
                       normal: np.ndarray) -> None:  # fmt: skip
    """Writes a textured unit plane with the maps as its material. albedo (H, W, 3) sRGB-encoded in [0, 1],
    roughness/metallic (H, W) in [0, 1], normal (H, W, 3) unit tangent-space vectors."""
    write_glb(
        path,
        positions=np.array([[-0.5, 0.5, 0.0], [-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0]], np.float32),
        faces=np.array([[0, 1, 2], [0, 2, 3]]),
        normals=np.tile(np.array([0.0, 0.0, 1.0], np.float32), (4, 1)),
        tangents=np.tile(np.array([1.0, 0.0, 0.0, 1.0], np.float32), (4, 1)),
        texcoords=np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], np.float32),
        base_color=albedo,
        metallic_roughness=metallic_roughness_texture(roughness, metallic),
        normal_map=encode_normals(normal),
        generator="recon-pbr-infer (recon_plugin)",
        node_name="material_plane",
        material_name="predicted",
    )


def write_maps(out: Path, maps: Dict[str, np.ndarray]) -> Dict[str, Path]:
    """albedo.png (8-bit sRGB), roughness.png and metallic.png (8-bit grey), normal.png (16-bit, (n + 1) / 2),
    material.glb; returns the written paths."""
    out = Path(out)
    paths = {name: out / f"{name}.png" for name in ("albedo", "roughness", "metallic", "normal")}
    write_png(paths["albedo"], maps["albedo"], bit_depth=8)
    write_png(paths["roughness"], maps["roughness"], bit_depth=8)
    write_png(paths["metallic"], maps["metallic"], bit_depth=8)
    write_png(paths["normal"], encode_normals(maps["normal"]), bit_depth=16)
    paths["glb"] = out / "material.glb"
    write_material_glb(paths["glb"], maps["albedo"], maps["roughness"], maps["metallic"], maps["normal"])
    return paths
