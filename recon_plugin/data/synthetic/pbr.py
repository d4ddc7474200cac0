"""``recon-synth pbr``: three-view renders of procedural planar materials, in NeuroPBR's folder layout.

Output folder::

    input/clean/sample_0000/{0,1,2}.png     three views of one material, 8-bit sRGB-encoded
    input/dirty/sample_0000/{0,1,2}.png     the same views with shadows, smudges and scratches (some samples)
    input/render_metadata.json              per sample: material, environment, exposure, each view's camera
    output/<material>/albedo.png            8-bit sRGB-encoded base colour (glTF convention)
    output/<material>/roughness.png         8-bit grey, perceptual roughness (GGX alpha = roughness^2)
    output/<material>/metallic.png          8-bit grey
    output/<material>/normal.png            16-bit RGB, tangent space, OpenGL convention, encoded (n + 1) / 2

Geometry: the material covers the plane z = 0, [-0.5, 0.5]^2, u along +x, v along +y (image row 0 at v = 1).
Each view's camera looks at the origin from a random direction within 40 degrees of the zenith, at a random
distance. The views are stored *registered to the map's UV space*: pixel (i, j) of every view is the radiance
leaving texel (i, j) towards that view's camera (perspective view directions, so highlights move between
views), which is the image a calibrated camera gives after rectification by the plane's homography. The
cameras are recorded so a user can re-project them.

Shading: split-sum image-based lighting from ``components/shading.py`` and ``components/environment.py``
under a procedural HDR environment (outdoor sky or studio) with a directional key light added to the map (a
small bright disc at 20-50 degrees elevation carrying 75-90 % of the light on a surface facing up), so that
bumps in the normal map show as shading, as they do in a real capture of a flat material under a key light.
Each sample turns its environment about the vertical so that the key light comes from within 30 degrees of
the top of the map (``light_azimuth_spread_deg``, default 60; 360 lets it come from any side, which leaves
normals unlearnable, see DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG); render_metadata.json records the light as the
sample sees it. The diffuse term is scaled by one minus the specular lobe's directional albedo, so a white
Lambertian-like dielectric under uniform light reflects exactly the incident radiance.
Linear radiance is clamped to [0, 1] and sRGB-encoded (no tone curve). Dirt lives on the surface (UV space),
so a sample's three views share it.

The folder is assembled beside the target and renamed into place at the end; nothing half-written is left
under the requested name.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from recon_plugin.components.environment import (
    add_key_light,
    equirect_irradiance,
    equirect_pixel_directions,
    prefilter_equirect_diffuse,
    prefilter_equirect_ggx,
    procedural_environment,
    sample_equirect,
    sample_prefiltered,
)
from recon_plugin.components.shading import (
    base_reflectance,
    linear_to_srgb,
    reflect,
    shade_split_sum,
    split_sum_lookup,
    srgb_to_linear,
)
from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.data.synthetic.output import staged_output
from recon_plugin.data.synthetic.pbr_materials import FAMILIES, MaterialMaps, make_material

__all__ = [
    "DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG",
    "GENERATOR_VERSION",
    "MAP_NAMES",
    "PrefilteredEnvironment",
    "SampleLighting",
    "draw_sample",
    "make_environment",
    "map_directions",
    "normal_signal_levels",
    "prefilter_environment",
    "quantise_material",
    "render_views",
    "uv_plane_points",
    "write_pbr_dataset",
]

GENERATOR_VERSION = 3
"""3: the key light's azimuth spread over DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG around the top of the map (version 2 turned
it to any side; version 1 had soft lighting only)."""
DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG = 60.0
"""One light from an unknown side leaves the sign of a tilt ambiguous in the shading (a bump lit from the left looks
like a dent lit from the right), so a network cannot learn normals from it: on version-2 data (any side)
pbr-fusion-lightweight's held-out normal error stayed at the flat baseline's 7.18 deg after 400 steps; with
the light within 30 deg of one side it fell to 6.00 (6.14 with the light always exactly at that side). Like the
flash of single-image material capture, the light's side is a capture convention the user follows."""
MAP_NAMES = ("albedo", "roughness", "metallic", "normal")
ROUGHNESS_LEVELS = (0.0, 0.2, 0.35, 0.5, 0.75, 1.0)
"""Prefiltered levels of the environment; roughness in between is interpolated linearly."""
MAX_ZENITH_DEG = 40.0
CAMERA_DISTANCE = (1.5, 2.5)
VERTICAL_FOV_DEG = 55.0
KEY_LIGHT_ELEVATION_DEG = (20.0, 50.0)
KEY_LIGHT_CENTRE_AZIMUTH_DEG = 90.0
"""Azimuth (from +u towards +v) around which the samples' key lights are spread: the top of the map image."""
KEY_LIGHT_SHARE = (0.75, 0.9)
"""Share of the irradiance on a surface facing up that the key light carries (the rest: sky, room, lamps)."""
KEY_LIGHT_RADIUS_DEG = 2.5


def _turn_about_z(directions: torch.Tensor, angle: float) -> torch.Tensor:
    """``directions`` (..., 3) rotated by ``angle`` radians about world z (counter-clockwise seen from above)."""
    c, s = math.cos(angle), math.sin(angle)
    x, y, z = directions.unbind(-1)
    return torch.stack([c * x - s * y, s * x + c * y, z], dim=-1)


_MAP_FROM_WORLD = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
"""World (z up) -> frame of the stored equirect maps: world z lies on the maps' equator (+x), world y at their
zenith. A plane's normals stay near world z, and near an equirect pole the grid degenerates (a lookup within
half a texel of the pole returns the first row's value at the direction's azimuth, so a flat normal would be
shaded as if tilted by that half-row angle towards the map's azimuth 0, and the shading would jump as a
small tilt crosses the pole); on the equator the lookups are regular."""


def map_directions(directions: torch.Tensor, rotation_deg: float = 0.0) -> torch.Tensor:
    """World directions (..., 3) -> lookup directions into a :class:`PrefilteredEnvironment` turned by
    ``rotation_deg`` about world z (counter-clockwise seen from above): turned back, then into the map frame."""
    return _turn_about_z(directions, -math.radians(rotation_deg)) @ _MAP_FROM_WORLD.T.to(directions.dtype)


@dataclass
class PrefilteredEnvironment:
    """An environment ready for split-sum shading, its maps in the map frame (see ``_MAP_FROM_WORLD``;
    :func:`prefilter_environment` builds one from a world-frame equirect, :func:`map_directions` looks up)."""

    diffuse: torch.Tensor
    """Cosine-weighted mean radiance (h, 2h, 3) (irradiance / pi)."""
    specular: torch.Tensor
    """GGX-prefiltered radiance (len(ROUGHNESS_LEVELS), h, 2h, 3)."""
    description: dict


def prefilter_environment(
    env: torch.Tensor, description: dict, key_light: dict | None = None
) -> PrefilteredEnvironment:
    """A world-frame equirect (H, 2H, 3) (z up), plus an optional key light (``direction``, world frame, and
    ``irradiance_facing``, ``angular_radius_deg``; see :func:`add_key_light`), resampled into the map frame
    and prefiltered for split-sum shading. The key light is added in the map frame after resampling, so the
    prefiltered maps carry exactly the irradiance asked for."""
    height = env.shape[0]
    lookup = equirect_pixel_directions(height, 2 * height) @ _MAP_FROM_WORLD  # map texel -> world direction
    env = sample_equirect(env, lookup)
    description = dict(description)
    if key_light is not None:
        direction = torch.tensor(key_light["direction"], dtype=torch.float32) @ _MAP_FROM_WORLD.T
        env = add_key_light(env, direction.tolist(), key_light["irradiance_facing"], key_light["angular_radius_deg"])
        description["key_light"] = key_light
    return PrefilteredEnvironment(
        diffuse=prefilter_equirect_diffuse(env, height=32),
        specular=prefilter_equirect_ggx(env, list(ROUGHNESS_LEVELS), height=32),
        description=description,
    )


def make_environment(index: int, seed: int, key_light: bool = True) -> PrefilteredEnvironment:
    """Environment ``index`` of a dataset: outdoor and studio kinds alternate, exposure is set per sample.

    With ``key_light`` (the default) a small bright disc is added at azimuth 0 and an elevation drawn in
    KEY_LIGHT_ELEVATION_DEG, carrying a share drawn in KEY_LIGHT_SHARE of the irradiance on a surface facing
    up. Without it the procedural skies and studios light a plane so softly that a bumpy normal map changes
    the 8-bit views by only a few levels (see :func:`normal_signal_levels`); a directional key light, as in a
    real capture of a flat material, makes the bumps visible as shading. Samples turn the environment about
    the vertical (``render_views``'s ``rotation_deg``), so the light's azimuth varies per sample.
    """
    kind = "outdoor" if index % 2 == 0 else "studio"
    env_seed = int(np.random.default_rng([seed, 7919, index]).integers(2**31))
    env = procedural_environment(kind, 64, 128, seed=env_seed)
    description: dict = {"index": index, "kind": kind, "seed": env_seed}
    if not key_light:
        return prefilter_environment(env, description)
    rng = np.random.default_rng([seed, 6563, index])
    elevation = math.radians(rng.uniform(*KEY_LIGHT_ELEVATION_DEG))
    share = rng.uniform(*KEY_LIGHT_SHARE)
    tint = np.array([1.0, 0.95, 0.88]) * rng.uniform(0.9, 1.0, 3)  # warm to neutral white
    sky_up = float(equirect_irradiance(env, (0.0, 0.0, 1.0)).mean())
    # share = key / (key + sky) on a surface facing up, where the key light casts facing * sin(elevation).
    facing = sky_up * share / (1.0 - share) / math.sin(elevation)
    light = {
        "direction": [math.cos(elevation), 0.0, math.sin(elevation)],
        "elevation_deg": math.degrees(elevation),
        "angular_radius_deg": KEY_LIGHT_RADIUS_DEG,
        "irradiance_facing": (facing * tint / tint.mean()).tolist(),
        "share_of_upward_irradiance": float(share),
    }
    return prefilter_environment(env, description, light)


def uniform_environment(radiance: Sequence[float], height: int = 8) -> PrefilteredEnvironment:
    """A constant environment (every prefiltered level equals the radiance), for checks and tests."""
    value = torch.tensor(radiance, dtype=torch.float32)
    return PrefilteredEnvironment(
        diffuse=value.expand(height, 2 * height, 3).clone(),
        specular=value.expand(len(ROUGHNESS_LEVELS), height, 2 * height, 3).clone(),
        description={"kind": "uniform", "radiance": list(map(float, radiance))},
    )


def quantise_material(material: MaterialMaps) -> MaterialMaps:
    """The maps exactly as they read back from their PNG files (8-bit maps, 16-bit normals renormalised)."""
    normal = np.round(encode_normals(material.normal) * 65535.0) / 65535.0 * 2.0 - 1.0
    return MaterialMaps(
        family=material.family,
        albedo=np.round(material.albedo * 255.0) / 255.0,
        roughness=np.round(material.roughness * 255.0) / 255.0,
        metallic=np.round(material.metallic * 255.0) / 255.0,
        normal=normal / np.linalg.norm(normal, axis=-1, keepdims=True),
    )


def uv_plane_points(size: int) -> torch.Tensor:
    """World positions (size, size, 3) of the texel centres on the plane z = 0, image row 0 at v = 1 (y = +0.5)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    x = coords[None, :].expand(size, size)
    y = -coords[:, None].expand(size, size)
    return torch.stack([x, y, torch.zeros_like(x)], dim=-1)


def random_cameras(rng: np.random.Generator, count: int = 3) -> list[dict]:
    """Cameras looking at the origin from within MAX_ZENITH_DEG of the zenith (world z up), OpenGL-style records."""
    cameras = []
    for _ in range(count):
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        zenith = math.radians(rng.uniform(0.0, MAX_ZENITH_DEG))
        distance = rng.uniform(*CAMERA_DISTANCE)
        position = distance * np.array(
            [math.sin(zenith) * math.cos(azimuth), math.sin(zenith) * math.sin(azimuth), math.cos(zenith)]
        )
        cameras.append(
            {
                "position": position.tolist(),
                "look_at": [0.0, 0.0, 0.0],
                "up": [0.0, 1.0, 0.0],
                "vertical_fov_deg": VERTICAL_FOV_DEG,
                "azimuth_deg": math.degrees(azimuth),
                "zenith_deg": math.degrees(zenith),
            }
        )
    return cameras


def render_views(
    material: MaterialMaps,
    environment: PrefilteredEnvironment,
    camera_positions: torch.Tensor,
    exposure: float = 1.0,
    rotation_deg: float = 0.0,
) -> torch.Tensor:
    """Linear radiance (V, S, S, 3) leaving each texel towards each camera (V, 3), views registered to UV space;
    ``exposure`` scales the environment and ``rotation_deg`` turns it about world z (counter-clockwise seen
    from above), which is exact for prefiltered maps: lookups are made along the directions turned back."""
    size = material.albedo.shape[0]
    albedo = srgb_to_linear(torch.from_numpy(material.albedo).float())
    roughness = torch.from_numpy(material.roughness).float()[..., None]
    metallic = torch.from_numpy(material.metallic).float()[..., None]
    normal = torch.from_numpy(material.normal).float()  # tangent frame = world frame on this plane
    points = uv_plane_points(size)
    view = camera_positions.float()[:, None, None, :] - points[None]
    view = view / view.norm(dim=-1, keepdim=True)
    n_dot_v = (view * normal).sum(-1, keepdim=True).clamp(min=1e-4, max=1.0)
    diffuse_light = sample_equirect(environment.diffuse, map_directions(normal, rotation_deg))[None] * exposure
    specular_light = sample_prefiltered(
        environment.specular,
        list(ROUGHNESS_LEVELS),
        map_directions(reflect(view, normal), rotation_deg),
        roughness.expand(len(view), -1, -1, -1),
    )
    specular_light = specular_light * exposure
    diffuse, specular = shade_split_sum(albedo, roughness, metallic, n_dot_v, diffuse_light, specular_light)
    # Energy compensation: light reflected by the specular lobe is not also available to the diffuse layer.
    scale, bias = split_sum_lookup(n_dot_v, roughness)
    diffuse = diffuse * (1.0 - (base_reflectance(albedo, metallic) * scale + bias)).clamp(min=0.0)
    return diffuse + specular


@dataclass
class SampleLighting:
    """How one sample is lit and seen: drawn by :func:`draw_sample`, consumed by :func:`render_views`."""

    environment_index: int
    rotation_deg: float
    """The environment's turn about world z."""
    exposure: float
    cameras: list[dict]

    def camera_positions(self) -> torch.Tensor:
        return torch.tensor([c["position"] for c in self.cameras])

    def key_light(self, environment: PrefilteredEnvironment) -> dict | None:
        """The environment's key light as this sample sees it (world direction after the turn, scaled by the
        exposure), or None for an environment without one."""
        light = environment.description.get("key_light")
        if light is None:
            return None
        direction = _turn_about_z(torch.tensor(light["direction"]), math.radians(self.rotation_deg))
        return {
            "direction": direction.tolist(),
            "elevation_deg": light["elevation_deg"],
            "azimuth_deg": math.degrees(math.atan2(float(direction[1]), float(direction[0]))) % 360.0,
            "angular_radius_deg": light["angular_radius_deg"],
            "irradiance_facing": [v * self.exposure for v in light["irradiance_facing"]],
            "share_of_upward_irradiance": light["share_of_upward_irradiance"],
        }


def draw_sample(
    rng: np.random.Generator,
    environments: Sequence[PrefilteredEnvironment],
    light_azimuth_spread_deg: float = DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG,
) -> SampleLighting:
    """One sample's environment, its turn about the vertical, exposure and three cameras. The turn puts the key
    light (azimuth 0 unturned) at an azimuth uniform within ``light_azimuth_spread_deg`` centred on the map's
    +v axis, the top of the map image."""
    env_index = int(rng.integers(len(environments)))
    rotation = (KEY_LIGHT_CENTRE_AZIMUTH_DEG + float(rng.uniform(-0.5, 0.5)) * light_azimuth_spread_deg) % 360.0
    cameras = random_cameras(rng)
    # Exposure: the light a white diffuse surface facing up would reflect, drawn in [0.45, 0.8] (the turn about
    # the vertical does not change it).
    up = map_directions(torch.tensor([0.0, 0.0, 1.0]))
    up_light = float(sample_equirect(environments[env_index].diffuse, up).mean())
    exposure = float(rng.uniform(0.45, 0.8) / max(up_light, 1e-6))
    return SampleLighting(env_index, rotation, exposure, cameras)


def normal_signal_levels(
    material: MaterialMaps, environment: PrefilteredEnvironment, lighting: SampleLighting
) -> float:
    """How much of the normal map the stored views show: the mean absolute difference, in 8-bit levels, between
    the views of ``material`` and those of the same material with a flat normal map."""
    flat = MaterialMaps(
        family=material.family,
        albedo=material.albedo,
        roughness=material.roughness,
        metallic=material.metallic,
        normal=np.broadcast_to(np.array([0.0, 0.0, 1.0], np.float32), material.normal.shape).copy(),
    )
    positions = lighting.camera_positions()
    images = [
        encode_render(render_views(m, environment, positions, lighting.exposure, lighting.rotation_deg))
        for m in (material, flat)
    ]
    return float(np.abs(np.round(images[0] * 255.0) - np.round(images[1] * 255.0)).mean())


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    lattice = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(lattice, (size, size), interpolation=cv2.INTER_CUBIC)


def make_dirt(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Surface dirt shared by a sample's views: (light scale (S, S), overlay alpha (S, S), overlay colour (S, S, 3)).

    Cast shadows (p 0.75) darken the incident light by up to 70 %; smudges (p 0.6, alpha <= 0.15) and thin
    scratches (p 0.6) are blended over the shaded radiance.
    """
    light = np.ones((size, size), np.float32)
    alpha = np.zeros((size, size), np.float32)
    colour = np.zeros((size, size, 3), np.float32)
    record: dict = {"shadow": False, "smudge": False, "scratches": 0}
    if rng.random() < 0.75:
        occluder = _noise(rng, size, 3) + 0.5 * _noise(rng, size, 7)
        edge = np.quantile(occluder, rng.uniform(0.4, 0.8))
        softness = rng.uniform(0.02, 0.15)
        shadow = np.clip((occluder - edge) / softness, 0.0, 1.0)
        strength = rng.uniform(0.3, 0.7)
        light = 1.0 - strength * shadow
        record["shadow"] = True
        record["shadow_strength"] = float(strength)
    if rng.random() < 0.6:
        smudge = np.clip(_noise(rng, size, 5) * 1.6 - 0.6, 0.0, 1.0) * rng.uniform(0.05, 0.15)
        tone = rng.uniform(0.3, 0.7)
        colour[:] = np.array([tone, tone * 0.95, tone * 0.9], np.float32)
        alpha = smudge.astype(np.float32)
        record["smudge"] = True
    if rng.random() < 0.6:
        count = int(rng.integers(3, 25))
        lines = np.zeros((size, size), np.float32)
        for _ in range(count):
            p0 = rng.uniform(0, size, 2)
            angle = rng.uniform(0, math.pi)
            p1 = p0 + rng.uniform(0.05, 0.4) * size * np.array([math.cos(angle), math.sin(angle)])
            cv2.line(lines, tuple(int(c) for c in p0), tuple(int(c) for c in p1), float(rng.uniform(0.3, 0.6)), 1)
        scratch = np.clip(cv2.GaussianBlur(lines, (3, 3), 0.5), 0.0, 1.0)
        colour = colour * (1.0 - scratch[..., None]) + 0.85 * scratch[..., None]
        alpha = np.maximum(alpha, scratch)
        record["scratches"] = count
    return light, alpha, colour, record


def encode_render(radiance: torch.Tensor) -> np.ndarray:
    """Linear radiance -> sRGB-encoded values in [0, 1] (clamped, no tone curve), as stored in the PNGs."""
    return linear_to_srgb(radiance.clamp(0.0, 1.0)).numpy()


# ------------------------------------------------------------------------------------------------ worker side
_WORKER: dict = {}


def _material_name(index: int, family: str) -> str:
    return f"{family}_{index:04d}"


def _material(index: int, families: Sequence[str], size: int, seed: int) -> tuple[str, MaterialMaps]:
    family = families[index % len(families)]
    material_seed = int(np.random.default_rng([seed, 104729, index]).integers(2**31))
    return _material_name(index, family), quantise_material(make_material(family, size, material_seed))


def _write_material_task(args: tuple) -> str:
    root, index, families, size, seed = args
    torch.set_num_threads(1)
    name, material = _material(index, families, size, seed)
    folder = Path(root) / "output" / name
    write_png(folder / "albedo.png", material.albedo, bit_depth=8)
    write_png(folder / "roughness.png", material.roughness, bit_depth=8)
    write_png(folder / "metallic.png", material.metallic, bit_depth=8)
    write_png(folder / "normal.png", encode_normals(material.normal), bit_depth=16)
    return name


def _environment_task(args: tuple) -> PrefilteredEnvironment:
    torch.set_num_threads(1)
    return make_environment(*args)


def _init_render_worker(environments: list[PrefilteredEnvironment]) -> None:
    torch.set_num_threads(1)
    _WORKER["environments"] = environments
    _WORKER["cache"] = {}


def _render_sample_task(args: tuple) -> tuple[str, dict]:
    root, sample, material_index, families, size, seed, dirty_fraction, light_azimuth_spread_deg = args
    cache = _WORKER["cache"]
    if material_index not in cache:
        cache.clear()  # samples arrive grouped by material
        cache[material_index] = _material(material_index, families, size, seed)
    name, material = cache[material_index]
    rng = np.random.default_rng([seed, 15485863, sample])
    environments = _WORKER["environments"]
    lighting = draw_sample(rng, environments, light_azimuth_spread_deg)
    environment = environments[lighting.environment_index]
    sample_name = f"sample_{sample:04d}"
    clean = render_views(material, environment, lighting.camera_positions(), lighting.exposure, lighting.rotation_deg)
    for view, image in enumerate(clean):
        write_png(Path(root) / "input" / "clean" / sample_name / f"{view}.png", encode_render(image), bit_depth=8)
    record = {
        "material": name,
        "family": material.family,
        "environment": environment.description,
        "environment_rotation_deg": lighting.rotation_deg,
        "exposure": lighting.exposure,
        "key_light": lighting.key_light(environment),
        "cameras": lighting.cameras,
        "variants": ["clean"],
    }
    if rng.random() < dirty_fraction:
        light, alpha, colour, dirt = make_dirt(rng, size)
        # Cast shadows scale the incident light, hence the reflected radiance: no second render needed.
        dirty = clean * torch.from_numpy(light)[None, ..., None]
        overlay = torch.from_numpy(colour)[None]
        a = torch.from_numpy(alpha)[None, ..., None]
        dirty = dirty * (1.0 - a) + overlay * a
        for view, image in enumerate(dirty):
            write_png(Path(root) / "input" / "dirty" / sample_name / f"{view}.png", encode_render(image), bit_depth=8)
        record["variants"].append("dirty")
        record["dirt"] = dirt
    return sample_name, record


def write_pbr_dataset(
    out: Path,
    materials: int,
    samples_per_material: int = 4,
    size: int = 256,
    seed: int = 0,
    dirty_fraction: float = 0.5,
    families: Sequence[str] = FAMILIES,
    environments: int = 8,
    workers: int | None = None,
    overwrite: bool = False,
    light_azimuth_spread_deg: float = DEFAULT_LIGHT_AZIMUTH_SPREAD_DEG,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Writes a dataset of ``materials`` x ``samples_per_material`` three-view samples; returns timing figures.

    Raises:
        ValueError: a parameter is out of range or a family is unknown.
        FileExistsError: ``out`` is not empty and ``overwrite`` is off.
    """
    if materials < 1:
        raise ValueError(f"--materials must be >= 1, got {materials}")
    if samples_per_material < 1:
        raise ValueError(f"--samples-per-material must be >= 1, got {samples_per_material}")
    if size < 16:
        raise ValueError(f"--size must be >= 16, got {size}")
    if not 0.0 <= dirty_fraction <= 1.0:
        raise ValueError(f"--dirty-fraction must be in [0, 1], got {dirty_fraction}")
    if environments < 1:
        raise ValueError(f"--environments must be >= 1, got {environments}")
    if not 0.0 <= light_azimuth_spread_deg <= 360.0:
        raise ValueError(f"--light-azimuth-spread-deg must be in [0, 360], got {light_azimuth_spread_deg}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown material families {unknown}; expected some of {', '.join(FAMILIES)}")
    workers = max(1, workers if workers is not None else min(4, os.cpu_count() or 1))
    families = tuple(families)
    start = time.perf_counter()
    context = multiprocessing.get_context("fork")
    with staged_output(out, overwrite) as tmp:
        with context.Pool(workers) as pool:
            names = pool.map(_write_material_task, [(tmp, i, families, size, seed) for i in range(materials)])
            envs = pool.map(_environment_task, [(i, seed) for i in range(environments)])
        setup_seconds = time.perf_counter() - start
        tasks = [
            (tmp, m * samples_per_material + k, m, families, size, seed, dirty_fraction, light_azimuth_spread_deg)
            for m in range(materials)
            for k in range(samples_per_material)
        ]
        render_start = time.perf_counter()
        samples: dict[str, dict] = {}
        with context.Pool(workers, initializer=_init_render_worker, initargs=(envs,)) as pool:
            for done, (name, record) in enumerate(pool.imap(_render_sample_task, tasks, chunksize=4), start=1):
                samples[name] = record
                if log is not None and (done % 100 == 0 or done == len(tasks)):
                    log(f"recon-synth pbr: {done}/{len(tasks)} samples")
        render_seconds = time.perf_counter() - render_start
        metadata = {
            "generator": "recon-synth pbr",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "size": size,
            "light_azimuth_spread_deg": light_azimuth_spread_deg,
            "views_per_sample": 3,
            "conventions": {
                "renders": "8-bit sRGB-encoded linear radiance clamped to [0, 1], no tone curve",
                "albedo": "8-bit sRGB-encoded base colour",
                "roughness": "perceptual roughness, GGX alpha = roughness^2",
                "normal": "16-bit tangent space, OpenGL (+y up the image), encoded (n + 1) / 2",
                "plane": "z = 0, [-0.5, 0.5]^2, u along +x, v along +y, image row 0 at v = 1, world z up",
                "views": "registered to UV space: pixel (i, j) is texel (i, j) seen from the view's camera",
                "lighting": "split-sum GGX image-based lighting; environment (with its key light) turned about "
                "world z by environment_rotation_deg, then scaled by exposure; key_light is in world frame",
            },
            "materials": {name: {"family": name.rsplit("_", 1)[0]} for name in names},
            "samples": samples,
        }
        (tmp / "input").mkdir(exist_ok=True)
        (tmp / "input" / "render_metadata.json").write_text(json.dumps(metadata, indent=1))
    total = time.perf_counter() - start
    figures = {
        "samples": len(tasks),
        "workers": workers,
        "setup_seconds": setup_seconds,
        "render_seconds": render_seconds,
        "samples_per_second": len(tasks) / max(render_seconds, 1e-9),
        "total_seconds": total,
    }
    if log is not None:
        log(
            f"recon-synth pbr: wrote {materials} materials, {len(tasks)} samples to {out} in {total:.1f} s "
            f"({figures['samples_per_second']:.2f} samples/s rendering on {workers} workers)"
        )
    return figures
