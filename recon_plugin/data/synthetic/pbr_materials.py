"""Procedural planar PBR materials with exact maps, for ``recon-synth pbr``.

Every family builds a height field and per-texel albedo (sRGB-encoded, as glTF base colour), roughness
(perceptual, linear in [0, 1]), and metallic (linear in [0, 1]); the tangent-space normal map is derived
from the height field. UV convention: u grows to the right along image columns, v grows *up* (image row 0
is v = 1), and the tangent frame is (+u, +v, +z out of the surface), so normals follow the OpenGL
("green up") convention of glTF.

All functions are vectorised NumPy; a material is a deterministic function of (family, size, seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FAMILIES", "MaterialMaps", "make_material", "normal_from_height"]


@dataclass
class MaterialMaps:
    """Exact maps of one material (all (S, S[, 3]) float32)."""

    family: str
    albedo: np.ndarray
    """sRGB-encoded base colour in [0, 1], (S, S, 3)."""
    roughness: np.ndarray
    """Perceptual roughness in [0, 1] (GGX alpha = roughness**2), (S, S)."""
    metallic: np.ndarray
    """Metalness in [0, 1], (S, S)."""
    normal: np.ndarray
    """Unit tangent-space normals, OpenGL convention (+y = up in the image), (S, S, 3)."""


def _value_noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1]: a random lattice of ``cells`` (rows, cols) upsampled bicubically to (size, size)."""
    lattice = rng.random((cells[0] + 3, cells[1] + 3)).astype(np.float32)
    # Upsample with a margin so the crop avoids the lattice border, where cubic interpolation overshoots most.
    width = size + size * 3 // max(cells[1], 1)
    height = size + size * 3 // max(cells[0], 1)
    big = cv2.resize(lattice, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:size, :size], 0.0, 1.0)


def _fbm(
    rng: np.random.Generator, size: int, base_cells: int = 4, octaves: int = 4, stretch: float = 1.0
) -> np.ndarray:
    """Fractal sum of value noise in [0, 1]; ``stretch`` > 1 elongates features along u (brushed look)."""
    total = np.zeros((size, size), np.float32)
    weight_sum = 0.0
    for octave in range(octaves):
        cells = base_cells * 2**octave
        weight = 0.5**octave
        total += weight * _value_noise(rng, size, (max(1, int(cells * stretch)), max(1, cells)))
        weight_sum += weight
    return total / weight_sum


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre coordinates (u, v_down) in [0, 1), v_down growing along image rows."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="xy")


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _jitter_colour(rng: np.random.Generator, base: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(base * (1.0 + amount * rng.uniform(-1.0, 1.0, 3)), 0.0, 1.0)


def _cells(u: np.ndarray, v: np.ndarray, cols: int, rows: int, offset_odd_rows: bool) -> tuple[np.ndarray, ...]:
    """Cell index and distance to the nearest cell edge (in cell-height units) of a brick/tile grid."""
    row = np.floor(v * rows)
    shift = np.where(offset_odd_rows & (row % 2 == 1), 0.5, 0.0)
    x = u * cols + shift
    col = np.floor(x)
    fx = x - col
    fy = v * rows - row
    aspect = rows / cols
    edge = np.minimum(np.minimum(fx, 1.0 - fx) / aspect, np.minimum(fy, 1.0 - fy))
    return row, col % cols, edge


def _per_cell(rng: np.random.Generator, row: np.ndarray, col: np.ndarray, count: int) -> np.ndarray:
    """One random number per cell, looked up per texel."""
    table = rng.random((count, count)).astype(np.float32)
    return table[row.astype(int) % count, col.astype(int) % count]


def _tiles_or_bricks(rng: np.random.Generator, size: int, bricks: bool) -> tuple[np.ndarray, ...]:
    u, v = _grid(size)
    cols = int(rng.integers(2, 5)) if bricks else int(rng.integers(2, 7))
    rows = cols * 2 if bricks else cols
    row, col, edge = _cells(u, v, cols, rows, offset_odd_rows=bricks)
    grout = rng.uniform(0.04, 0.1)
    inside = _smoothstep(grout, grout + 0.06, edge)
    noise = _fbm(rng, size, base_cells=8)
    cell_rand = _per_cell(rng, row, col, 64)
    if bricks:
        base = np.array([rng.uniform(0.45, 0.7), rng.uniform(0.18, 0.35), rng.uniform(0.1, 0.25)], np.float32)
        grout_colour = np.full(3, rng.uniform(0.5, 0.75), np.float32)
    else:
        base = rng.uniform(0.15, 0.9, 3).astype(np.float32)
        grout_colour = np.full(3, rng.uniform(0.2, 0.6), np.float32)
    cell_colour = base[None, None] * (0.8 + 0.4 * cell_rand[..., None]) * (0.85 + 0.3 * noise[..., None])
    albedo = inside[..., None] * cell_colour + (1.0 - inside[..., None]) * grout_colour
    rough_cell = rng.uniform(0.15, 0.5) if not bricks else rng.uniform(0.6, 0.85)
    roughness = inside * (rough_cell + 0.15 * (noise - 0.5)) + (1.0 - inside) * rng.uniform(0.8, 0.95)
    height = 0.02 * inside + 0.006 * noise * inside
    return albedo, roughness, np.zeros_like(roughness), height


def _planks(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    u, v = _grid(size)
    planks = int(rng.integers(3, 7))
    x = u * planks
    plank = np.floor(x)
    fx = x - plank
    # Planks end at staggered lengths along v.
    ends = _per_cell(rng, np.zeros_like(plank), plank, 64)
    fy = (v + ends) % 1.0
    edge = np.minimum(np.minimum(fx, 1.0 - fx) / planks * 4.0, np.minimum(fy, 1.0 - fy))
    inside = _smoothstep(0.005, 0.02, edge)
    warp = _fbm(rng, size, base_cells=3, octaves=3)
    grain = 0.5 + 0.5 * np.sin((x * rng.uniform(6.0, 14.0) + 3.0 * warp) * 2.0 * np.pi)
    dark = np.array([rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.2), rng.uniform(0.04, 0.1)], np.float32)
    light = np.array([rng.uniform(0.5, 0.75), rng.uniform(0.32, 0.5), rng.uniform(0.15, 0.3)], np.float32)
    tint = 0.85 + 0.3 * _per_cell(rng, np.zeros_like(plank), plank, 64)
    albedo = (dark + (light - dark) * grain[..., None]) * tint[..., None] * inside[..., None]
    albedo += (1.0 - inside[..., None]) * dark * 0.4
    roughness = rng.uniform(0.35, 0.65) + 0.15 * (grain - 0.5)
    height = 0.012 * inside + 0.003 * grain
    return albedo, roughness, np.zeros_like(roughness), height


_METALS = (
    np.array([0.97, 0.96, 0.91], np.float32),  # silver
    np.array([1.0, 0.78, 0.34], np.float32),  # gold
    np.array([0.96, 0.64, 0.54], np.float32),  # copper
    np.array([0.77, 0.78, 0.78], np.float32),  # iron / steel
    np.array([0.91, 0.92, 0.92], np.float32),  # aluminium
)


def _scratches(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Thin random line segments in [0, 1] (antialiased by a small blur)."""
    canvas = np.zeros((size, size), np.float32)
    for _ in range(count):
        p0 = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.1, 0.5) * size
        p1 = p0 + length * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(canvas, tuple(int(c) for c in p0), tuple(int(c) for c in p1), float(rng.uniform(0.5, 1.0)), 1)
    return cv2.GaussianBlur(canvas, (3, 3), 0.6)


def _brushed_metal(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    base = _jitter_colour(rng, _METALS[int(rng.integers(len(_METALS)))], 0.05)
    brushed = _fbm(rng, size, base_cells=2, octaves=5, stretch=24.0)
    scratches = _scratches(rng, size, int(rng.integers(0, 40)))
    albedo = base[None, None] * (0.9 + 0.1 * brushed[..., None]) * (1.0 - 0.25 * scratches[..., None])
    roughness = rng.uniform(0.15, 0.45) + 0.15 * (brushed - 0.5) + 0.3 * scratches
    height = 0.006 * brushed - 0.01 * scratches
    return albedo, roughness, np.ones_like(roughness), height


def _painted_metal(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    paint = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    metal = _jitter_colour(rng, _METALS[3], 0.05)
    rust_colour = np.array([rng.uniform(0.35, 0.55), rng.uniform(0.15, 0.25), rng.uniform(0.05, 0.1)], np.float32)
    rust_noise = _fbm(rng, size, base_cells=4, octaves=5)
    chip_noise = _fbm(rng, size, base_cells=6, octaves=4)
    rust = _smoothstep(0.55, 0.62, rust_noise + rng.uniform(-0.1, 0.1))
    chipped = _smoothstep(0.64, 0.68, chip_noise) * (1.0 - rust)
    painted = (1.0 - rust) * (1.0 - chipped)
    detail = _fbm(rng, size, base_cells=16, octaves=3)
    albedo = (
        painted[..., None] * paint * (0.9 + 0.2 * detail[..., None])
        + rust[..., None] * rust_colour * (0.7 + 0.6 * detail[..., None])
        + chipped[..., None] * metal
    )
    roughness = painted * rng.uniform(0.25, 0.55) + rust * (0.8 + 0.15 * detail) + chipped * rng.uniform(0.25, 0.4)
    metallic = chipped
    height = 0.012 * painted + 0.02 * rust * detail
    return albedo, roughness, metallic, height


def _weave(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    u, v = _grid(size)
    threads = int(rng.integers(8, 24))
    x, y = u * threads, v * threads
    over = (np.floor(x) + np.floor(y)) % 2 == 0
    across = np.abs(np.sin(np.pi * y))  # warp thread profile
    along = np.abs(np.sin(np.pi * x))  # weft thread profile
    height = 0.006 * np.where(over, across, along)
    warp_colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    weft_colour = _jitter_colour(rng, warp_colour, 0.4) if rng.random() < 0.5 else rng.uniform(0.1, 0.9, 3)
    fibre = _fbm(rng, size, base_cells=32, octaves=2)
    profile = 0.75 + 0.35 * np.where(over, across, along)
    albedo = np.where(over[..., None], warp_colour, weft_colour) * profile[..., None]
    albedo *= 0.9 + 0.2 * fibre[..., None]
    roughness = rng.uniform(0.75, 0.98) + 0.05 * (fibre - 0.5)
    return albedo.astype(np.float32), roughness, np.zeros_like(roughness), height


def _stone(rng: np.random.Generator, size: int) -> tuple[np.ndarray, ...]:
    shape = _fbm(rng, size, base_cells=3, octaves=6)
    detail = _fbm(rng, size, base_cells=16, octaves=3)
    veins = np.abs(_fbm(rng, size, base_cells=4, octaves=4) - 0.5)
    crack = 1.0 - _smoothstep(0.0, 0.02, veins)
    base = np.array([rng.uniform(0.35, 0.7)] * 3, np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    albedo = base * (0.7 + 0.5 * shape[..., None]) * (0.9 + 0.2 * detail[..., None]) * (1.0 - 0.6 * crack[..., None])
    roughness = rng.uniform(0.55, 0.85) + 0.2 * (detail - 0.5) + 0.1 * crack
    height = 0.06 * shape + 0.01 * detail - 0.01 * crack
    return albedo, roughness, np.zeros_like(roughness), height


_BUILDERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, ...]]] = {
    "tiles": lambda rng, size: _tiles_or_bricks(rng, size, bricks=False),
    "bricks": lambda rng, size: _tiles_or_bricks(rng, size, bricks=True),
    "planks": _planks,
    "brushed_metal": _brushed_metal,
    "painted_metal": _painted_metal,
    "weave": _weave,
    "stone": _stone,
}

FAMILIES: tuple[str, ...] = tuple(_BUILDERS)
"""Material families, in the order ``recon-synth pbr`` cycles through them."""


def normal_from_height(height: np.ndarray) -> np.ndarray:
    """Unit tangent-space normals of a height field (heights in units of the map's width), OpenGL convention.

    The surface is z = h(u, v) with v growing up the image, so n ~ (-dh/du, -dh/dv, 1) and dh/dv = -dh/drow.
    """
    size = height.shape[1]
    d_row, d_col = np.gradient(height.astype(np.float64), 1.0 / size)
    normal = np.stack([-d_col, d_row, np.ones_like(d_col)], axis=-1)
    return (normal / np.linalg.norm(normal, axis=-1, keepdims=True)).astype(np.float32)


def make_material(family: str, size: int, seed: int) -> MaterialMaps:
    """Builds one material of ``family`` at ``size`` x ``size`` texels, deterministically from ``seed``."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown material family {family!r}; expected one of {', '.join(FAMILIES)}")
    if size < 16:
        raise ValueError(f"material size must be at least 16 texels, got {size}")
    rng = np.random.default_rng(seed)
    albedo, roughness, metallic, height = _BUILDERS[family](rng, size)
    return MaterialMaps(
        family=family,
        albedo=np.clip(albedo, 0.0, 1.0).astype(np.float32),
        roughness=np.clip(roughness, 0.02, 1.0).astype(np.float32),
        metallic=np.clip(metallic, 0.0, 1.0).astype(np.float32),
        normal=normal_from_height(height),
    )
