"""Reading NeuroPBR's dataset layout into memory, split by material.

Layout (written by ``recon-synth pbr``)::

    input/render_metadata.json          {"samples": {"sample_0000": {"material": NAME, ...}, ...}}
    input/{clean,dirty}/sample_XXXX/{0,1,2}.png
    output/<material>/{albedo,roughness,metallic,normal}.png

Value conventions (predictions use the same ranges, see bug 1 of the reference note):
views and albedo are the stored sRGB-encoded values in [0, 1]; roughness and metallic are channel 0 in [0, 1];
normals are decoded from (n + 1) / 2 to unit vectors in [-1, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from recon_plugin.data.image_io import ImageReadError, decode_normals, read_image

MAP_NAMES = ("albedo", "roughness", "metallic", "normal")
VARIANTS = ("clean", "dirty")
Curriculum = Literal[0, 1, 2]


class PbrDatasetError(ValueError):
    """The dataset folder does not follow the layout, or a split is impossible."""


@dataclass(frozen=True)
class SampleRecord:
    """One three-view input of one material."""

    name: str
    variant: str
    material: str
    views: tuple[Path, Path, Path]


def scan_dataset(root: Path, curriculum: Curriculum = 0) -> tuple[List[SampleRecord], List[str]]:
    """Lists the samples of ``root`` under the render curriculum and the materials they show.

    Curriculum: 0 = clean renders only, 1 = every render folder on disk (clean and dirty copies both count),
    2 = dirty renders only.

    Raises:
        PbrDatasetError: metadata missing or malformed, a sample folder lacks views, a material lacks maps.
    """
    root = Path(root)
    metadata_path = root / "input" / "render_metadata.json"
    if not metadata_path.is_file():
        raise PbrDatasetError(f"{metadata_path}: not found (expected NeuroPBR's layout, e.g. from recon-synth pbr)")
    try:
        samples = json.loads(metadata_path.read_text())["samples"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise PbrDatasetError(f"{metadata_path}: malformed ({err})") from None
    if curriculum not in (0, 1, 2):
        raise PbrDatasetError(f"render curriculum must be 0, 1 or 2, got {curriculum}")
    variants = {0: ("clean",), 1: VARIANTS, 2: ("dirty",)}[curriculum]
    records: List[SampleRecord] = []
    for name in sorted(samples):
        material = samples[name].get("material") if isinstance(samples[name], dict) else None
        if not isinstance(material, str):
            raise PbrDatasetError(f"{metadata_path}: sample {name} has no material name")
        for variant in variants:
            folder = root / "input" / variant / name
            if not folder.is_dir():
                continue
            views = tuple(folder / f"{view}.png" for view in range(3))
            missing = [str(p) for p in views if not p.is_file()]
            if missing:
                raise PbrDatasetError(f"{folder}: missing views {', '.join(missing)}")
            records.append(SampleRecord(name, variant, material, views))  # type: ignore[arg-type]
    if not records:
        raise PbrDatasetError(f"{root}: no samples under input/{' or input/'.join(variants)} (curriculum {curriculum})")
    materials = sorted({r.material for r in records})
    for material in materials:
        for map_name in MAP_NAMES:
            path = root / "output" / material / f"{map_name}.png"
            if not path.is_file():
                raise PbrDatasetError(f"{path}: missing target map of material {material}")
    return records, materials


def split_materials(materials: Sequence[str], eval_fraction: float, seed: int) -> tuple[List[str], List[str]]:
    """Seeded split of the material names into (train, eval); no material is on both sides.

    Raises:
        PbrDatasetError: fewer than two materials, or a fraction outside (0, 1).
    """
    if not 0.0 < eval_fraction < 1.0:
        raise PbrDatasetError(f"eval fraction must be in (0, 1), got {eval_fraction}")
    materials = sorted(set(materials))
    if len(materials) < 2:
        raise PbrDatasetError(f"a split by material needs at least 2 materials, found {len(materials)}")
    order = np.random.default_rng(seed).permutation(len(materials))
    count = min(len(materials) - 1, max(1, int(round(eval_fraction * len(materials)))))
    eval_set = sorted(materials[i] for i in order[:count])
    train_set = sorted(materials[i] for i in order[count:])
    return train_set, eval_set


def _resize(image: np.ndarray, resolution: int, path: Path) -> np.ndarray:
    if image.shape[0] != image.shape[1]:
        raise PbrDatasetError(f"{path}: images must be square, got {image.shape[1]}x{image.shape[0]}")
    if image.shape[0] == resolution:
        return image
    interpolation = cv2.INTER_AREA if image.shape[0] > resolution else cv2.INTER_LINEAR
    return cv2.resize(image, (resolution, resolution), interpolation=interpolation)


def load_views(paths: Sequence[Path], resolution: int) -> Tensor:
    """Three RGB views as uint8 (3, 3, R, R), resized to ``resolution``."""
    views = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageReadError as err:
            raise PbrDatasetError(str(err)) from None
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = _resize(image[..., :3], resolution, path)
        views.append(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(views))


def load_maps(folder: Path, resolution: int) -> Dict[str, Tensor]:
    """Target maps of one material, channel-first float32 in the model's ranges (see the module docstring)."""
    maps: Dict[str, Tensor] = {}
    for name in MAP_NAMES:
        path = folder / f"{name}.png"
        try:
            image = read_image(path)
        except ImageReadError as err:
            raise PbrDatasetError(str(err)) from None
        image = _resize(image, resolution, path)
        if name in ("roughness", "metallic"):
            image = image[..., 0:1] if image.ndim == 3 else image[..., None]
        elif image.ndim != 3:
            raise PbrDatasetError(f"{path}: expected an RGB image")
        if name == "normal":
            normal = decode_normals(image)
            length = np.linalg.norm(normal, axis=-1, keepdims=True)
            if np.any(length < 0.5):
                raise PbrDatasetError(f"{path}: not a (n + 1) / 2 encoded unit normal map")
            image = normal / length
        elif name == "albedo":
            image = image[..., :3]
        maps[name] = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    return maps


class PbrSampleSet:
    """The samples of one split, held in memory (views as uint8, maps once per material).

    Also carries what nerfstudio's pipeline reads from a dataset (``scene_box``, ``metadata``, ``len``).
    """

    def __init__(self, records: Sequence[SampleRecord], root: Path | None, resolution: int) -> None:
        from nerfstudio.data.scene_box import SceneBox

        self.scene_box = SceneBox(aabb=torch.tensor([[-0.5, -0.5, -0.1], [0.5, 0.5, 0.1]]))
        self.records = list(records)
        self.resolution = resolution
        self.materials = sorted({r.material for r in self.records})
        material_index = {m: i for i, m in enumerate(self.materials)}
        self.material_index = torch.tensor([material_index[r.material] for r in self.records], dtype=torch.long)
        views = [load_views(r.views, resolution) for r in self.records]
        self.views = torch.stack(views) if views else torch.zeros((0, 3, 3, resolution, resolution), dtype=torch.uint8)
        self.maps: Dict[str, Tensor] = {}
        if self.materials:
            assert root is not None
            per_material = [load_maps(Path(root) / "output" / m, resolution) for m in self.materials]
            self.maps = {k: torch.stack([m[k] for m in per_material]) for k in MAP_NAMES}
        self.metadata: Dict[str, float] = {}
        if self.materials:
            self.metadata = {
                "mean_roughness": float(self.maps["roughness"].mean()),
                "mean_metallic": float(self.maps["metallic"].mean()),
            }

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, indices: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Dict[str, Tensor]]:
        """Views (B, 3 views, 3, R, R) float in [0, 1] and the target maps (B, C, R, R) of ``indices``."""
        indices = indices.long().cpu()
        views = self.views[indices].to(device).float() / 255.0
        materials = self.material_index[indices]
        batch = {name: maps[materials].to(device) for name, maps in self.maps.items()}
        batch["sample_index"] = indices.to(device)
        return views, batch
