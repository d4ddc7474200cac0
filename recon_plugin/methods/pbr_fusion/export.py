"""Writing predicted maps as PNGs and as a glTF 2.0 binary (.glb) textured plane.

glTF metallic-roughness material: baseColorTexture = albedo (sRGB, as predicted), metallicRoughnessTexture with
roughness in G and metallic in B (R = 255, unused), normalTexture = tangent-space normals encoded (n + 1) / 2.
The plane spans [-0.5, 0.5]^2 in x/y facing +z; texture (0, 0) is its top-left corner (-0.5, +0.5), the vertex
tangent is +x with handedness +1, so the bitangent is +y = up the image: the OpenGL ("green up") convention
that glTF and our maps share.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Dict

import cv2
import numpy as np

from recon_plugin.data.image_io import encode_normals, write_png

_FLOAT = 5126
_UINT16 = 5123
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963


def _png_bytes(image: np.ndarray) -> bytes:
    """8-bit PNG bytes of an RGB image in [0, 1]."""
    encoded = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(encoded[..., ::-1]))
    if not ok:
        raise OSError("could not encode a PNG texture")
    return data.tobytes()


def metallic_roughness_texture(roughness: np.ndarray, metallic: np.ndarray) -> np.ndarray:
    """glTF packing (H, W, 3): R unused (1), G roughness, B metallic."""
    return np.stack([np.ones_like(roughness), roughness, metallic], axis=-1)


def write_material_glb(path: Path, albedo: np.ndarray, roughness: np.ndarray, metallic: np.ndarray,
                       normal: np.ndarray) -> None:  # fmt: skip
    """Writes a textured unit plane with the maps as its material. albedo (H, W, 3) sRGB-encoded in [0, 1],
    roughness/metallic (H, W) in [0, 1], normal (H, W, 3) unit tangent-space vectors."""
    positions = np.array([[-0.5, 0.5, 0.0], [-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0]], np.float32)
    normals = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (4, 1))
    tangents = np.tile(np.array([1.0, 0.0, 0.0, 1.0], np.float32), (4, 1))
    texcoords = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3], np.uint16)
    images = [
        _png_bytes(albedo),
        _png_bytes(metallic_roughness_texture(roughness, metallic)),
        _png_bytes(encode_normals(normal)),
    ]

    blob = bytearray()
    views: list[dict] = []

    def add_view(data: bytes, target: int | None = None) -> int:
        while len(blob) % 4:
            blob.append(0)
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        blob.extend(data)
        views.append(view)
        return len(views) - 1

    accessors = []
    for array, kind in ((positions, "VEC3"), (normals, "VEC3"), (tangents, "VEC4"), (texcoords, "VEC2")):
        accessor = {"bufferView": add_view(array.tobytes(), _ARRAY_BUFFER), "componentType": _FLOAT,
                    "count": len(array), "type": kind}  # fmt: skip
        if array is positions:
            accessor["min"] = positions.min(0).tolist()
            accessor["max"] = positions.max(0).tolist()
        accessors.append(accessor)
    accessors.append({"bufferView": add_view(indices.tobytes(), _ELEMENT_ARRAY_BUFFER), "componentType": _UINT16,
                      "count": len(indices), "type": "SCALAR"})  # fmt: skip
    image_entries = [{"bufferView": add_view(data), "mimeType": "image/png"} for data in images]
    while len(blob) % 4:
        blob.append(0)

    document = {
        "asset": {"version": "2.0", "generator": "recon-pbr-infer (recon_plugin)"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "material_plane"}],
        "meshes": [
            {
                "primitives": [
                    {
                        "attributes": {"POSITION": 0, "NORMAL": 1, "TANGENT": 2, "TEXCOORD_0": 3},
                        "indices": 4,
                        "material": 0,
                    }
                ]
            }
        ],
        "materials": [
            {
                "name": "predicted",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicRoughnessTexture": {"index": 1},
                    "metallicFactor": 1.0,
                    "roughnessFactor": 1.0,
                },
                "normalTexture": {"index": 2},
            }
        ],
        "samplers": [{"magFilter": 9729, "minFilter": 9729, "wrapS": 10497, "wrapT": 10497}],
        "textures": [{"sampler": 0, "source": i} for i in range(3)],
        "images": image_entries,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(struct.pack("<4sII", b"glTF", 2, total))
        handle.write(struct.pack("<I4s", len(text), b"JSON") + text)
        handle.write(struct.pack("<I4s", len(blob), b"BIN\x00") + bytes(blob))
    os.replace(tmp, path)


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
