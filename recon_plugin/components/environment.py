"""Environment maps as equirectangular (latitude-longitude) images of linear HDR radiance.

Convention (every function here and every file we write uses it):
- world z is up; an environment map is a (H, W, 3) tensor of linear radiance, row 0 at the zenith (+z),
  row H - 1 at the nadir; H = W / 2 for a full sphere of square texels.
- ``uv`` in [0, 1]^2: u = 0.5 - atan2(y, x) / (2 pi) (wraps), v = acos(z) / pi. The image centre looks along
  +x and +y is to its left, i.e. the map is seen from inside the sphere, not mirrored.
- pixel (i, j) covers v in [i / H, (i + 1) / H], u in [j / W, (j + 1) / W]; its value is the radiance at the
  texel centre.
Callers with a y-up world (NeRO's synthetic data) rotate their directions before a lookup.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recon_plugin.components.shading import ALPHA_FLOOR

EnvironmentKind = Literal["outdoor", "studio"]


def direction_to_equirect_uv(directions: Tensor) -> Tensor:
    """Unit directions (..., 3) -> equirect coordinates (..., 2) in [0, 1] (see the module convention)."""
    x, y, z = directions.unbind(-1)
    u = torch.remainder(0.5 - torch.atan2(y, x) / (2.0 * math.pi), 1.0)
    v = torch.acos(z.clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], dim=-1)


def equirect_uv_to_direction(uv: Tensor) -> Tensor:
    """Equirect coordinates (..., 2) -> unit directions (..., 3); inverse of :func:`direction_to_equirect_uv`."""
    phi = (0.5 - uv[..., 0]) * (2.0 * math.pi)
    theta = uv[..., 1] * math.pi
    sin_theta = torch.sin(theta)
    return torch.stack([sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), torch.cos(theta)], dim=-1)


def equirect_pixel_directions(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Directions (H, W, 3) through the texel centres."""
    v = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)  # (H, W, 2)
    return equirect_uv_to_direction(uv).to(dtype)


def equirect_solid_angles(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Exact solid angle (H, W) of every texel: (2 pi / W)(cos theta_top - cos theta_bottom); sums to 4 pi."""
    edges = torch.cos(torch.arange(height + 1, dtype=torch.float64) * (math.pi / height))
    rows = (edges[:-1] - edges[1:]) * (2.0 * math.pi / width)
    return rows[:, None].expand(height, width).to(dtype).contiguous()


def _check_environment(env: Tensor, name: str = "env") -> None:
    if env.ndim != 3 or env.shape[-1] != 3 or env.shape[0] < 1 or env.shape[1] < 1:
        raise ValueError(f"{name} must be an equirect image of shape (H, W, 3), got {tuple(env.shape)}")


def sample_equirect(env: Tensor, directions: Tensor) -> Tensor:
    """Bilinear radiance lookup (..., 3) of ``env`` (H, W, 3) along unit ``directions`` (..., 3).

    Wraps around in u (longitude). Within half a texel of a pole, where no texel centre lies beyond, the lookup
    blends towards the mean of the first (last) row: every direction's value is then continuous and the pole
    itself has one value whatever longitude atan2 returns there (clamping to the first row made straight up
    depend on the direction's tiny x/y components). Differentiable w.r.t. ``env`` (a learned map) and, away
    from the poles, w.r.t. the directions. Returns the env's dtype.
    """
    _check_environment(env)
    height, width = env.shape[:2]
    uv = direction_to_equirect_uv(directions.to(env.dtype))
    x = uv[..., 0] * width - 0.5
    unclamped_y = uv[..., 1] * height - 0.5  # in [-0.5, height - 0.5]
    y = unclamped_y.clamp(0.0, height - 1.0)
    x0 = torch.floor(x)
    y0 = torch.floor(y).clamp(max=height - 2.0) if height > 1 else torch.zeros_like(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0 = x0.long()
    y0 = y0.long()
    x0w = torch.remainder(x0, width)
    x1w = torch.remainder(x0 + 1, width)
    y1 = (y0 + 1).clamp(max=height - 1)
    top = env[y0, x0w] * (1.0 - fx) + env[y0, x1w] * fx
    bottom = env[y1, x0w] * (1.0 - fx) + env[y1, x1w] * fx
    value = top * (1.0 - fy) + bottom * fy
    # Weight of the pole's value: 0 at the first/last texel row's centre, 1 at the pole half a texel beyond.
    to_zenith = (-2.0 * unclamped_y).clamp(0.0, 1.0)[..., None]
    to_nadir = (2.0 * (unclamped_y - (height - 1.0))).clamp(0.0, 1.0)[..., None]
    value = value * (1.0 - to_zenith - to_nadir) + env[0].mean(0) * to_zenith + env[-1].mean(0) * to_nadir
    return value


def _smooth_disc(cos_angle: Tensor, radius: float, edge: float) -> Tensor:
    """Coverage in [0, 1] of a disc of angular ``radius`` with an edge blurred over ``edge`` radians (about one
    texel), so a light's integrated power does not depend on where its centre falls on the pixel grid."""
    angle = torch.acos(cos_angle.clamp(-1.0, 1.0))
    return ((radius + 0.5 * edge - angle) / edge).clamp(0.0, 1.0)


def _random_direction(generator: torch.Generator, min_elevation_deg: float, max_elevation_deg: float) -> Tensor:
    values = torch.rand(2, generator=generator, dtype=torch.float64)
    azimuth = 2.0 * math.pi * values[0]
    elevation = math.radians(min_elevation_deg + (max_elevation_deg - min_elevation_deg) * float(values[1]))
    return torch.tensor(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)],
        dtype=torch.float64,
    )


def procedural_environment(
    kind: EnvironmentKind = "outdoor", height: int = 128, width: int = 256, seed: int = 0
) -> Tensor:
    """A seedable HDR equirect (H, W, 3) float32 of linear radiance, for synthetic scenes and relighting.

    ``"outdoor"``: blue sky fading to a bright horizon, a darker brown ground, a small very bright sun and two
    dimmer small lights. ``"studio"``: a dim grey room with a floor and four small very bright coloured lights at
    different heights. The two kinds light an object very differently (direction, colour, contrast), which is
    what a relighting check needs. The seed moves the lights and jitters their colours; the same arguments
    always give the same map. Lights are a few degrees wide with radiance in the tens, so they appear as
    sharp highlights on glossy surfaces while the sky still dominates diffuse lighting.
    """
    if kind not in ("outdoor", "studio"):
        raise ValueError(f"procedural_environment kind must be 'outdoor' or 'studio', got {kind!r}")
    if height < 4 or width < 8:
        raise ValueError(f"procedural_environment needs height >= 4 and width >= 8, got {height} x {width}")
    generator = torch.Generator().manual_seed(seed)
    directions = equirect_pixel_directions(height, width, torch.float64)
    z = directions[..., 2:]
    texel = math.pi / height
    above = ((z / math.sin(texel)) * 0.5 + 0.5).clamp(0.0, 1.0)  # anti-aliased horizon
    if kind == "outdoor":
        zenith = torch.tensor([0.12, 0.28, 0.85], dtype=torch.float64)
        horizon = torch.tensor([0.95, 0.95, 1.0], dtype=torch.float64)
        ground = torch.tensor([0.30, 0.24, 0.17], dtype=torch.float64)
        elevation = z.clamp(min=0.0)
        sky = horizon + (zenith - horizon) * torch.sqrt(elevation)
        floor = ground * (0.6 + 0.4 * (-z).clamp(min=0.0))
        env = sky * above + floor * (1.0 - above)
        lights = [(_random_direction(generator, 25.0, 60.0), 3.0, torch.tensor([60.0, 55.0, 45.0]))]
        for _ in range(2):
            tint = 0.7 + 0.3 * torch.rand(3, generator=generator, dtype=torch.float64)
            lights.append((_random_direction(generator, 5.0, 40.0), 2.0, 15.0 * tint))
    else:
        wall = torch.tensor([0.18, 0.18, 0.2], dtype=torch.float64)
        floor_colour = torch.tensor([0.08, 0.07, 0.06], dtype=torch.float64)
        env = wall * (0.4 + 0.6 * z.clamp(min=0.0)) * above + floor_colour * (1.0 - above)
        palette = [(1.0, 0.75, 0.5), (0.55, 0.7, 1.0), (1.0, 1.0, 1.0), (0.9, 0.5, 0.8)]
        lights = []
        for index, colour in enumerate(palette):
            jitter = 0.85 + 0.15 * torch.rand(3, generator=generator, dtype=torch.float64)
            direction = _random_direction(generator, -10.0 + 20.0 * index, 15.0 + 20.0 * index)
            lights.append((direction, 4.0, 30.0 * torch.tensor(colour, dtype=torch.float64) * jitter))
    for direction, radius_deg, radiance in lights:
        coverage = _smooth_disc((directions * direction).sum(-1, keepdim=True), math.radians(radius_deg), texel)
        env = env + coverage * radiance.to(torch.float64)
    return env.float()


def equirect_irradiance(env: Tensor, normal: Sequence[float]) -> Tensor:
    """Irradiance (3,) that ``env`` (H, W, 3) casts on a surface facing the unit ``normal``: the integral of
    L(l) (n.l)+ over the sphere, by quadrature over the texels (exact solid angles)."""
    _check_environment(env)
    n = torch.nn.functional.normalize(torch.as_tensor(normal, dtype=torch.float64), dim=0)
    directions = equirect_pixel_directions(env.shape[0], env.shape[1], torch.float64)
    weights = (directions @ n).clamp(min=0.0) * equirect_solid_angles(env.shape[0], env.shape[1], torch.float64)
    return (weights[..., None] * env.to(torch.float64)).sum((0, 1)).to(env.dtype)


def add_key_light(
    env: Tensor, direction: Sequence[float], irradiance: Sequence[float], angular_radius_deg: float = 2.5
) -> Tensor:
    """``env`` plus a small bright disc (a sun or studio key light) around the unit ``direction``, whose
    radiance is set so that it alone casts ``irradiance`` (3,) on a surface facing it.

    The disc is part of the map, so every prefiltered level (diffuse and GGX) sees it: a key light added here
    shades diffuse and specular terms consistently. Its edge is blurred over one texel (see ``_smooth_disc``).
    """
    _check_environment(env)
    if not 0.0 < angular_radius_deg < 90.0:
        raise ValueError(f"key light angular_radius_deg must be in (0, 90), got {angular_radius_deg}")
    power = torch.as_tensor(irradiance, dtype=torch.float64).reshape(-1)
    if power.numel() != 3 or bool((power < 0).any()) or not bool(torch.isfinite(power).all()):
        raise ValueError(f"key light irradiance must be 3 finite values >= 0, got {power.tolist()}")
    axis = torch.as_tensor(direction, dtype=torch.float64)
    if axis.shape != (3,) or float(axis.norm()) < 1e-9:
        raise ValueError(f"key light direction must be a non-zero 3-vector, got {axis.tolist()}")
    axis = axis / axis.norm()
    height, width = env.shape[:2]
    directions = equirect_pixel_directions(height, width, torch.float64)
    cosine = directions @ axis
    coverage = _smooth_disc(cosine, math.radians(angular_radius_deg), math.pi / height)
    # Normalise on the texel grid itself, so the quadrature of the map returns the requested irradiance.
    cast = float((coverage * cosine.clamp(min=0.0) * equirect_solid_angles(height, width, torch.float64)).sum())
    if cast <= 0.0:
        raise ValueError(f"key light of radius {angular_radius_deg} deg covers no texel of a {height}-row map")
    return (env.to(torch.float64) + coverage[..., None] * (power / cast)).to(env.dtype)


def _downsample_equirect(env: Tensor, height: int) -> Tensor:
    """Solid-angle-weighted box filter of ``env`` to ``height`` rows (a power-of-two reduction)."""
    while env.shape[0] >= 2 * height and env.shape[0] % 2 == 0 and env.shape[1] % 2 == 0:
        weights = equirect_solid_angles(env.shape[0], env.shape[1], env.dtype)[None, None]
        pooled = torch.nn.functional.avg_pool2d(env.permute(2, 0, 1)[None] * weights, 2)
        env = (pooled / torch.nn.functional.avg_pool2d(weights, 2))[0].permute(1, 2, 0)
    return env


def _convolve_equirect(env: Tensor, height: int, lobe, chunk: int = 4_000_000) -> Tensor:
    """Normalised convolution of ``env`` with a lobe: out(r) = sum_l L(l) w(r, l) dl / sum_l w(r, l) dl, where
    ``lobe`` maps cos(r, l) (rows, N) to weights; output is (height, 2 height, 3), computed in the env's dtype."""
    dtype = env.dtype
    source_dirs = equirect_pixel_directions(env.shape[0], env.shape[1], dtype).reshape(-1, 3).to(env.device)
    solid = equirect_solid_angles(env.shape[0], env.shape[1], dtype).reshape(-1).to(env.device)
    radiance = env.reshape(-1, 3)
    targets = equirect_pixel_directions(height, 2 * height, dtype).reshape(-1, 3).to(env.device)
    rows = max(1, chunk // source_dirs.shape[0])
    out = []
    for start in range(0, targets.shape[0], rows):
        weights = lobe(targets[start : start + rows] @ source_dirs.T) * solid
        out.append((weights @ radiance) / weights.sum(-1, keepdim=True).clamp(min=torch.finfo(dtype).tiny))
    return torch.cat(out).reshape(height, 2 * height, 3)


def prefilter_equirect_ggx(
    env: Tensor, roughness_levels: Tensor | list[float], height: int = 64, texels_per_lobe: float = 3.0
) -> Tensor:
    """GGX-prefiltered radiance (L, height, 2 height, 3), one map per roughness level, for split-sum shading.

    Level k at direction r is the integral of L(l) D(h) (r.l)+ over the sphere divided by the integral of
    D(h) (r.l)+, with n = v = r (the usual split-sum assumption) and h = normalize(r + l): the average the UE4
    importance sampler computes, done here by quadrature over the texels. The source is first box-filtered to
    the coarsest power-of-two resolution with ``texels_per_lobe`` texels across the lobe's half width (2 alpha,
    where D falls to a quarter of its peak), never below ``height`` (or 32) rows, which bounds the cost: with
    the defaults the result is within ~2 % of a 4x finer quadrature, and a 64-row level of a 256 x 512 map takes
    a few CPU seconds (up to ~10 s for roughness ~0.2). A lobe narrower than an output texel (roughness below
    ~sqrt(pi / (2 height))) gives the box-filtered map itself. Prefilter once per environment and keep the result.
    """
    _check_environment(env)
    levels = torch.as_tensor(roughness_levels, dtype=torch.float64).reshape(-1)
    if levels.numel() == 0 or bool(((levels < 0) | (levels > 1)).any()):
        raise ValueError(f"roughness_levels must be a non-empty list of values in [0, 1], got {levels.tolist()}")
    if height < 2:
        raise ValueError(f"prefilter height must be >= 2, got {height}")
    if texels_per_lobe <= 0:
        raise ValueError(f"texels_per_lobe must be positive, got {texels_per_lobe}")
    maps = []
    for roughness in levels.tolist():
        alpha = max(roughness * roughness, ALPHA_FLOOR)
        lobe_width = 2.0 * math.atan(alpha)  # angle of r.l where D(h) falls to a quarter of its peak
        if lobe_width < math.pi / height:
            maps.append(_resample_equirect(env, height))
            continue
        rows = max(height, 32, int(2 ** math.ceil(math.log2(texels_per_lobe * math.pi / lobe_width))))
        source = _downsample_equirect(env, rows)
        a2 = alpha * alpha

        def lobe(cosine: Tensor, a2: float = a2) -> Tensor:
            # D(h) with cos^2(n, h) = (1 + r.l) / 2 for h = normalize(r + l), n = r.
            cos2 = (0.5 * (1.0 + cosine)).clamp(0.0, 1.0)
            return cosine.clamp(min=0.0) * a2 / (cos2 * a2 + (1.0 - cos2)) ** 2

        maps.append(_convolve_equirect(source, height, lobe))
    return torch.stack(maps)


def _resample_equirect(env: Tensor, height: int) -> Tensor:
    """``env`` at (height, 2 height): box-filtered while at least twice as large, then bilinear at texel centres."""
    source = _downsample_equirect(env, height)
    if source.shape[:2] == (height, 2 * height):
        return source
    return sample_equirect(source, equirect_pixel_directions(height, 2 * height, env.dtype))


def prefilter_equirect_diffuse(env: Tensor, height: int = 32) -> Tensor:
    """Cosine-weighted mean radiance (height, 2 height, 3): at normal n, integral of L(l) (n.l)+ dl / pi, i.e. the
    irradiance over pi that a white Lambertian surface reflects (the split-sum diffuse light)."""
    _check_environment(env)
    source = _downsample_equirect(env, max(height, 32))
    return _convolve_equirect(source, height, lambda cosine: cosine.clamp(min=0.0))


def sample_prefiltered(
    prefiltered: Tensor, roughness_levels: Tensor | list[float], directions: Tensor, roughness: Tensor
) -> Tensor:
    """Radiance (..., 3) from a :func:`prefilter_equirect_ggx` stack along ``directions`` (..., 3), linearly
    interpolated between the two levels around ``roughness`` (..., 1) (clamped to the levels' range)."""
    levels = torch.as_tensor(roughness_levels, dtype=prefiltered.dtype, device=prefiltered.device).reshape(-1)
    if prefiltered.ndim != 4 or prefiltered.shape[0] != levels.numel():
        raise ValueError(
            f"prefiltered must be (L, H, W, 3) with L = len(roughness_levels) = {levels.numel()}, "
            f"got {tuple(prefiltered.shape)}"
        )
    per_level = torch.stack([sample_equirect(level_map, directions) for level_map in prefiltered])  # (L, ..., 3)
    if levels.numel() == 1:
        return per_level[0]
    rough = roughness.to(prefiltered.dtype).clamp(float(levels[0]), float(levels[-1]))[..., 0]
    upper = torch.searchsorted(levels, rough.detach().contiguous()).clamp(1, levels.numel() - 1)
    lower = upper - 1
    weight = ((rough - levels[lower]) / (levels[upper] - levels[lower]))[..., None]
    gather = lambda index: torch.gather(per_level, 0, index[None, ..., None].expand(1, *index.shape, 3))[0]  # noqa: E731
    return gather(lower) * (1.0 - weight) + gather(upper) * weight


_HDR_SUFFIXES = (".hdr", ".exr")


class EnvironmentSampler:
    """Importance sampling of the small bright lights of an equirect environment.

    Texels brighter than ``contrast`` times the median luminance, grown by one texel (the bilinear lookup
    spreads a light into its neighbours), are drawn in proportion to their neighbourhood's peak luminance x
    solid angle; a direction is then uniform in solid angle inside the texel (uniform in longitude and in
    cos(theta)), so the density is P(texel) / solid_angle(texel). Texels outside the lights have density 0: the
    cosine and GGX strategies cover them, which keeps the multiple-importance estimator unbiased.
    ``empty`` is True when the map has no such lights (e.g. a uniform environment).

    ``rotation`` (3, 3), when given, maps world directions into the caller's frame (d_frame = R d_world):
    :meth:`sample` returns and :meth:`pdf` takes directions of that frame (the density is rotation invariant).
    """

    def __init__(self, env: Tensor, contrast: float = 4.0, rotation: Tensor | None = None) -> None:
        height, width = env.shape[:2]
        self.rotation = None if rotation is None else torch.as_tensor(rotation, dtype=torch.float32)[:3, :3]
        self.height, self.width = height, width
        luminance = (env.double() * torch.tensor([0.2126, 0.7152, 0.0722], dtype=torch.float64)).sum(-1)
        bright = (luminance > contrast * float(luminance.median())).double()
        # 3x3 neighbourhood maximum, wrapping in longitude and clamping at the poles.
        padded = F.pad(
            torch.cat([luminance[:, -1:], luminance, luminance[:, :1]], 1)[None], (0, 0, 1, 1), mode="replicate"
        )[0]
        peak = F.max_pool2d(padded[None, None], 3, stride=1)[0, 0]
        padded = F.pad(torch.cat([bright[:, -1:], bright, bright[:, :1]], 1)[None], (0, 0, 1, 1), mode="replicate")[0]
        near_light = F.max_pool2d(padded[None, None], 3, stride=1)[0, 0]
        solid = equirect_solid_angles(height, width, torch.float64)
        power = (peak * near_light * solid).reshape(-1)
        self.empty = bool(power.sum() <= 0)
        self.probability = power / power.sum().clamp(min=1e-300)
        self.cdf = torch.cumsum(self.probability, 0)
        self.cdf[-1] = 1.0
        self.density = (self.probability / solid.reshape(-1)).float()

    def sample(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Directions (..., 3) and densities (..., 1) per solid angle from uniform numbers ``u`` (..., 3)."""
        cdf = self.cdf.to(u.device)
        texel = torch.searchsorted(cdf, u[..., 0].double().contiguous()).clamp(max=cdf.numel() - 1)
        row, col = texel // self.width, texel % self.width
        cos_top = torch.cos(row.double() * (math.pi / self.height))
        cos_bottom = torch.cos((row.double() + 1.0) * (math.pi / self.height))
        cos_theta = cos_top + (cos_bottom - cos_top) * u[..., 2].double()
        uv = torch.stack([(col.double() + u[..., 1].double()) / self.width, torch.acos(cos_theta) / math.pi], -1)
        directions = equirect_uv_to_direction(uv).to(u.dtype)
        if self.rotation is not None:
            directions = directions @ self.rotation.to(directions).T
        return directions, self.density.to(u.device)[texel][..., None].to(u.dtype)

    def pdf(self, directions: Tensor) -> Tensor:
        """Density (..., 1) per solid angle of :meth:`sample` at unit ``directions`` (..., 3)."""
        if self.rotation is not None:
            directions = directions @ self.rotation.to(directions)
        uv = direction_to_equirect_uv(directions)
        col = (uv[..., 0] * self.width).long().clamp(0, self.width - 1)
        row = (uv[..., 1] * self.height).long().clamp(0, self.height - 1)
        return self.density.to(directions.device)[row * self.width + col][..., None].to(directions.dtype)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in _HDR_SUFFIXES:
        raise ValueError(f"{path}: environment maps must be .hdr (Radiance RGBE) or .exr files")


def _cv2():
    # OpenCV reads the variable when it first decodes an EXR; setting it here (only if the user did not decide
    # otherwise) enables OpenEXR, which the opencv-python wheels ship but switch off by default.
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    import cv2

    return cv2


def read_environment(path: str | Path) -> Tensor:
    """Reads an equirect ``.hdr`` or ``.exr`` file to a (H, W, 3) float32 tensor of linear RGB radiance."""
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: environment map not found")
    cv2 = _cv2()
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: cannot decode the environment map (corrupt file or unsupported encoding)")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: expected an RGB(A) image, got {image.shape[-1]} channels")
    rgb = np.ascontiguousarray(image[..., 2::-1], dtype=np.float32)  # BGR(A) -> RGB
    if not np.isfinite(rgb).all():
        raise ValueError(f"{path}: environment map holds non-finite values")
    if rgb.shape[1] != 2 * rgb.shape[0]:
        raise ValueError(f"{path}: an equirect map must be twice as wide as high, got {rgb.shape[1]} x {rgb.shape[0]}")
    return torch.from_numpy(rgb)


def write_environment(path: str | Path, env: Tensor) -> Path:
    """Writes a (H, W, 3) linear-radiance equirect to ``path`` (.hdr: Radiance RGBE, ~1 % precision; .exr:
    32-bit float). The file appears atomically (written next to it, then renamed): never half-written."""
    path = Path(path)
    _check_suffix(path)
    _check_environment(env)
    if env.shape[1] != 2 * env.shape[0]:
        raise ValueError(f"{path}: an equirect map must be twice as wide as high, got {env.shape[1]} x {env.shape[0]}")
    image = env.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(image).all() or (image < 0).any():
        raise ValueError(f"{path}: refusing to write an environment map with negative or non-finite radiance")
    cv2 = _cv2()
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not cv2.imwrite(str(temporary), np.ascontiguousarray(image[..., ::-1])):
            raise OSError(f"{path}: OpenCV could not write the environment map")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
