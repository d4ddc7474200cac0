"""The map between the user's world frame and the normalised (unit-sphere) frame the models work in.

nerfstudio stores it as ``dataparser_transform`` (3x4, ``[R | t]``) and ``dataparser_scale`` (s):
a world point x maps to ``s * (R @ x + t)``. The trainer writes both to
``dataparser_transforms.json`` next to the run's ``config.yml``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def world_to_normalized(points: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Maps (N, 3) world points into the normalised frame."""
    transform = np.asarray(transform, dtype=np.float64)
    return scale * (np.asarray(points, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3])


def normalized_to_world(points: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Maps (N, 3) points of the normalised frame back to the world units of the input data."""
    transform = np.asarray(transform, dtype=np.float64)
    rotation, translation = transform[:3, :3], transform[:3, 3]
    return (np.asarray(points, dtype=np.float64) / scale - translation) @ np.linalg.inv(rotation).T


def load_dataparser_transform(path: Path | str) -> tuple[np.ndarray, float]:
    """Reads ``dataparser_transforms.json`` (or the run folder / config.yml that holds it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "dataparser_transforms.json"
    elif path.name.endswith(".yml"):
        path = path.parent / "dataparser_transforms.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataparser_transforms.json (written by ns-train next to config.yml)")
    data = json.loads(path.read_text())
    try:
        transform = np.asarray(data["transform"], dtype=np.float64)
        scale = float(data["scale"])
    except KeyError as err:
        raise ValueError(f"{path}: missing key {err}; expected 'transform' (3x4) and 'scale'") from err
    if transform.shape != (3, 4):
        raise ValueError(f"{path}: 'transform' has shape {transform.shape}, expected (3, 4)")
    return transform, scale
