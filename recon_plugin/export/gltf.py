"""glTF 2.0 binary (.glb) writing: one triangle mesh with a metallic-roughness material, textures embedded as PNG.

Texture conventions are glTF's: the base colour texture holds sRGB-encoded colour; the metallic-roughness texture
is linear data with roughness (perceptual, GGX alpha = roughness^2) in G and metallic in B (R unused, 1); a normal
texture holds tangent-space normals encoded (n + 1) / 2. Texture coordinate (0, 0) is the image's top-left
corner. Used by recon-pbr-infer (a textured plane) and recon-export-materials (an unwrapped mesh).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import cv2
import numpy as np

_FLOAT = 5126
_UINT16 = 5123
_UINT32 = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_LINEAR = 9729
_REPEAT = 10497


def png_bytes(image: np.ndarray) -> bytes:
    """8-bit PNG bytes of an RGB image (H, W, 3) with values in [0, 1]."""
    encoded = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(encoded[..., ::-1]))
    if not ok:
        raise OSError("could not encode a PNG texture")
    return data.tobytes()


def metallic_roughness_texture(roughness: np.ndarray, metallic: np.ndarray) -> np.ndarray:
    """glTF packing (H, W, 3): R unused (1), G roughness, B metallic."""
    return np.stack([np.ones_like(roughness), roughness, metallic], axis=-1)


def write_glb(
    path: Path | str,
    positions: np.ndarray,
    faces: np.ndarray,
    *,
    normals: np.ndarray | None = None,
    tangents: np.ndarray | None = None,
    texcoords: np.ndarray | None = None,
    base_color: np.ndarray | None = None,
    metallic_roughness: np.ndarray | None = None,
    normal_map: np.ndarray | None = None,
    generator: str = "recon_plugin",
    node_name: str = "object",
    material_name: str = "material",
) -> Path:
    """Writes one mesh (positions (V, 3), faces (F, 3); optional per-vertex normals (V, 3), tangents (V, 4),
    texcoords (V, 2)) with a metallic-roughness material whose textures are the given images (H, W, 3) in
    [0, 1]: ``base_color`` sRGB-encoded, ``metallic_roughness`` from :func:`metallic_roughness_texture`,
    ``normal_map`` encoded tangent-space normals. Textures need ``texcoords``. The file appears atomically."""
    positions = np.ascontiguousarray(positions, dtype=np.float32)
    faces = np.asarray(faces)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) == 0:
        raise ValueError(f"{path}: positions must be a non-empty (V, 3) array, got {positions.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"{path}: faces must be a non-empty (F, 3) array, got {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(positions):
        raise ValueError(f"{path}: face indices out of range for {len(positions)} vertices")
    if not np.isfinite(positions).all():
        raise ValueError(f"{path}: positions hold non-finite values")
    textured = {"base": base_color, "metallic_roughness": metallic_roughness, "normal": normal_map}
    if any(image is not None for image in textured.values()) and texcoords is None:
        raise ValueError(f"{path}: textures need per-vertex texcoords")
    small = len(positions) < 65536
    indices = np.ascontiguousarray(faces.reshape(-1), dtype=np.uint16 if small else np.uint32)

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

    accessors: list[dict] = []
    attributes: dict[str, int] = {}
    vertex_arrays = (("POSITION", positions, "VEC3"), ("NORMAL", normals, "VEC3"), ("TANGENT", tangents, "VEC4"),
                     ("TEXCOORD_0", texcoords, "VEC2"))  # fmt: skip
    for name, array, kind in vertex_arrays:
        if array is None:
            continue
        array = np.ascontiguousarray(array, dtype=np.float32)
        if len(array) != len(positions):
            raise ValueError(f"{path}: {name} has {len(array)} entries for {len(positions)} vertices")
        accessor = {"bufferView": add_view(array.tobytes(), _ARRAY_BUFFER), "componentType": _FLOAT,
                    "count": len(array), "type": kind}  # fmt: skip
        if name == "POSITION":  # required by the spec for positions
            accessor["min"] = array.min(0).tolist()
            accessor["max"] = array.max(0).tolist()
        attributes[name] = len(accessors)
        accessors.append(accessor)
    index_type = _UINT16 if small else _UINT32
    accessors.append({"bufferView": add_view(indices.tobytes(), _ELEMENT_ARRAY_BUFFER), "componentType": index_type,
                      "count": len(indices), "type": "SCALAR"})  # fmt: skip

    images, textures = [], []
    texture_index: dict[str, int] = {}
    for key, image in textured.items():
        if image is None:
            continue
        images.append({"bufferView": add_view(png_bytes(image)), "mimeType": "image/png"})
        textures.append({"sampler": 0, "source": len(images) - 1})
        texture_index[key] = len(textures) - 1
    while len(blob) % 4:
        blob.append(0)

    pbr: dict = {"metallicFactor": 1.0, "roughnessFactor": 1.0}
    if "base" in texture_index:
        pbr["baseColorTexture"] = {"index": texture_index["base"]}
    if "metallic_roughness" in texture_index:
        pbr["metallicRoughnessTexture"] = {"index": texture_index["metallic_roughness"]}
    material: dict = {"name": material_name, "pbrMetallicRoughness": pbr}
    if "normal" in texture_index:
        material["normalTexture"] = {"index": texture_index["normal"]}
    document: dict = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": node_name}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": len(accessors) - 1, "material": 0}]}],
        "materials": [material],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    if textures:
        document["samplers"] = [{"magFilter": _LINEAR, "minFilter": _LINEAR, "wrapS": _REPEAT, "wrapT": _REPEAT}]
        document["textures"] = textures
        document["images"] = images
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<4sII", b"glTF", 2, total))
            handle.write(struct.pack("<I4s", len(text), b"JSON") + text)
            handle.write(struct.pack("<I4s", len(blob), b"BIN\x00") + bytes(blob))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_glb_json(path: Path | str) -> tuple[dict, bytes]:
    """The JSON document and the binary chunk of a .glb file (for tests and inspection)."""
    data = Path(path).read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2:
        raise ValueError(f"{path}: not a glTF 2.0 binary")
    json_length, _ = struct.unpack_from("<I4s", data, 12)
    document = json.loads(data[20 : 20 + json_length])
    offset = 20 + json_length
    bin_length, _ = struct.unpack_from("<I4s", data, offset)
    return document, data[offset + 8 : offset + 8 + bin_length]
