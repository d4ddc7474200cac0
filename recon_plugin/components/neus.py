"""NeuS volume rendering of an SDF: learned variance, SDF -> alpha, surface-seeking ray sampling.

Sampling works in three passes so that the expensive evaluation (with gradients, for normals and
the eikonal term) happens only at a few samples near the surface:

1. empty-space skipping: a cached low-resolution SDF volume, refreshed every few steps, is read
   along the ray (trilinear lookups, no network) to find the stretch where the surface can be;
2. placement: the real network, without gradients, on that stretch, then NeuS's hierarchical
   importance up-sampling;
3. render samples: drawn from the resulting weight distribution and evaluated with gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LearnedVariance(nn.Module):
    """The NeuS sharpness s = exp(10 v), kept above a floor that a schedule may raise.

    The logistic density of the SDF has scale 1/s. With normal maps as targets, a blurry rendering
    fits almost as well as a sharp one (the composited normal barely changes), so a learned s grows
    very slowly and the mask term then inflates the surface; raising the floor over the run
    removes that bias. The floor is a buffer, so a reloaded model renders as sharply as it trained.
    """

    def __init__(self, init_value: float = 0.3) -> None:
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(init_value))
        self.register_buffer("floor", torch.tensor(0.0))

    def inv_s(self) -> Tensor:
        return torch.maximum(torch.exp(self.variance * 10.0), self.floor).clamp(1e-6, 1e6)

    def set_floor(self, value: float) -> None:
        self.floor.fill_(float(value))


def intersect_unit_sphere(origins: Tensor, directions: Tensor, radius: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays with a sphere at the origin; ``hit`` is False for misses.

    Directions must be unit length. Rays starting inside the sphere enter at distance 0.
    """
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = torch.sqrt(disc.clamp(min=0.0))
    near = (-b - root).clamp(min=0.0)
    far = (-b + root).clamp(min=0.0)
    hit = hit & (far > near)
    far = torch.where(hit, far, near)
    return near, far, hit


def neus_alpha(sdf: Tensor, cos_view: Tensor, deltas: Tensor, inv_s: Tensor, cos_anneal_ratio: float) -> Tensor:
    """Discrete opacity of each ray section from the SDF and its directional derivative (NeuS eq. 13).

    Args:
        sdf: SDF at the section midpoints (..., S).
        cos_view: dot product of ray direction and SDF gradient at the midpoints (..., S).
        deltas: section lengths (..., S).
        inv_s: NeuS sharpness.
        cos_anneal_ratio: 0 -> the slope is relaxed to (cos + 1) / 2 (more gradient early), 1 -> exact.
    """
    iter_cos = -(F.relu(-cos_view * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + F.relu(-cos_view) * cos_anneal_ratio)
    prev_sdf = sdf - iter_cos * deltas * 0.5
    next_sdf = sdf + iter_cos * deltas * 0.5
    prev_cdf = torch.sigmoid(prev_sdf * inv_s)
    next_cdf = torch.sigmoid(next_sdf * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def alpha_to_weights(alpha: Tensor) -> Tensor:
    """Compositing weights w_i = alpha_i * prod_{j<i} (1 - alpha_j) along the last axis."""
    transmittance = torch.cumprod(
        torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1] + 1e-7], dim=-1), dim=-1
    )
    return alpha * transmittance


def upsample_weights(t: Tensor, sdf: Tensor, inv_s: float, entering_only: bool = False) -> Tensor:
    """NeuS weights of the sections between consecutive samples, from SDF values alone (no gradients).

    The slope of each section is estimated from its endpoints (and its predecessor, for robustness
    at the entry of a surface), as in NeuS's hierarchical up-sampling.

    ``entering_only`` gives sections where the SDF rises no opacity. Without it, a rising section inside the
    object (sdf * inv_s << 0) gets alpha ~ 1 from the 1e-5 terms: harmless for placing samples, but an
    opacity measured from a point just inside the surface would count its own exit as a hit.
    """
    deltas = t[..., 1:] - t[..., :-1]
    mid_sdf = (sdf[..., 1:] + sdf[..., :-1]) * 0.5
    own_cos = (sdf[..., 1:] - sdf[..., :-1]) / (deltas + 1e-5)
    prev_cos = torch.cat([torch.zeros_like(own_cos[..., :1]), own_cos[..., :-1]], dim=-1)
    cos_val = torch.minimum(prev_cos, own_cos).clamp(-1e3, 0.0)
    prev_sdf = mid_sdf - cos_val * deltas * 0.5
    next_sdf = mid_sdf + cos_val * deltas * 0.5
    prev_cdf = torch.sigmoid(prev_sdf * inv_s)
    next_cdf = torch.sigmoid(next_sdf * inv_s)
    alpha = (prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)
    if entering_only:
        alpha = torch.where(own_cos < 0.0, alpha, torch.zeros_like(alpha))
    return alpha_to_weights(alpha)


def sample_pdf(bins: Tensor, weights: Tensor, num_samples: int, deterministic: bool) -> Tensor:
    """Inverse-CDF sampling of ``num_samples`` sorted positions from piecewise-constant weights.

    Args:
        bins: (R, B + 1) bin edges.
        weights: (R, B) non-negative weights of the bins.
        deterministic: evenly spaced quantiles (evaluation) instead of stratified random ones.
    """
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1).clamp(max=1.0)
    steps = (torch.arange(num_samples, device=bins.device, dtype=bins.dtype) + 0.5) / num_samples
    if deterministic:
        u = steps.expand(cdf.shape[0], num_samples).contiguous()
    else:
        u = steps + (torch.rand(cdf.shape[0], num_samples, device=bins.device) - 0.5) / num_samples
    index = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
    below = (index - 1).clamp(min=0)
    above = index.clamp(max=cdf.shape[-1] - 1)
    cdf_below, cdf_above = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
    bins_below, bins_above = torch.gather(bins, -1, below), torch.gather(bins, -1, above)
    span = torch.where(cdf_above - cdf_below < 1e-5, torch.ones_like(cdf_above), cdf_above - cdf_below)
    return bins_below + (u - cdf_below) / span * (bins_above - bins_below)


class SDFGridCache(nn.Module):
    """A low-resolution copy of the SDF on a cube, read by trilinear interpolation.

    It guides the coarse sampling (no network evaluation) and is refreshed during training.
    """

    def __init__(self, resolution: int = 64, bound: float = 1.0) -> None:
        super().__init__()
        self.resolution = resolution
        self.bound = bound
        axis = torch.linspace(-bound, bound, resolution)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)  # (x, y, z, 3)
        init = grid.norm(dim=-1) - 0.5
        # grid_sample wants (N, C, D, H, W) with D indexed by z and W by x.
        self.register_buffer("volume", init.permute(2, 1, 0)[None, None].contiguous())
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def refresh(self, sdf_fn: Callable[[Tensor], Tensor], chunk: int = 65536) -> None:
        """Re-evaluates ``sdf_fn`` (points (N, 3) -> (N,) or (N, 1)) at every voxel."""
        device = self.volume.device
        axis = torch.linspace(-self.bound, self.bound, self.resolution, device=device)
        zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)
        values = torch.cat([sdf_fn(points[i : i + chunk]).reshape(-1) for i in range(0, points.shape[0], chunk)])
        self.volume.copy_(values.reshape(1, 1, self.resolution, self.resolution, self.resolution))
        self.initialised.fill_(True)

    def query(self, points: Tensor) -> Tensor:
        """SDF at (..., 3) points (clamped to the cube's border)."""
        shape = points.shape[:-1]
        grid = (points / self.bound).reshape(1, -1, 1, 1, 3)
        values = F.grid_sample(self.volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return values.reshape(shape)

    @property
    def voxel_size(self) -> float:
        return 2.0 * self.bound / (self.resolution - 1)


def surface_sample_distances(
    origins: Tensor,
    directions: Tensor,
    near: Tensor,
    far: Tensor,
    cache: SDFGridCache,
    network_sdf: Callable[[Tensor], Tensor],
    inv_s: float,
    num_coarse: int = 64,
    num_upsample: int = 16,
    upsample_rounds: int = 2,
    num_render: int = 24,
    deterministic: bool = False,
    num_network_coarse: int = 32,
    cache_margin: float = 0.08,
) -> Tensor:
    """Section boundaries (R, num_render + 1) along each ray, concentrated where the surface is.

    The cached volume only skips empty space: along each ray it finds the stretch from the first
    point within ``cache_margin`` (+ a voxel) of the surface to the first point clearly inside.
    Every value used to place samples after that comes from ``network_sdf`` (the real SDF, without
    gradients), so a stale cache cannot mix outdated values into the distribution. The final
    weights use the current sharpness ``inv_s`` (capped by what the up-sampled spacing resolves).
    """
    num_rays = origins.shape[0]
    device = origins.device
    steps = torch.linspace(0.0, 1.0, num_coarse, device=device)
    t = near[:, None] + (far - near)[:, None] * steps
    cached = cache.query(origins[:, None, :] + directions[:, None, :] * t[..., None])
    margin = cache_margin + cache.voxel_size
    index = torch.arange(num_coarse, device=device).expand(num_rays, num_coarse)
    close = cached < margin
    first_close = torch.where(close, index, num_coarse).min(dim=-1).values
    deep = (cached < -margin) & (index > first_close[:, None])
    first_deep = torch.where(deep, index, num_coarse - 1).min(dim=-1).values
    lost = first_close >= num_coarse  # nowhere near a surface: sample the whole chord
    start_index = torch.where(lost, torch.zeros_like(first_close), (first_close - 1).clamp(min=0))
    end_index = torch.where(
        lost, torch.full_like(first_deep, num_coarse - 1), (first_deep + 1).clamp(max=num_coarse - 1)
    )
    t_start = torch.gather(t, 1, start_index[:, None])[:, 0]
    t_end = torch.maximum(torch.gather(t, 1, end_index[:, None])[:, 0], t_start + 1e-4)

    fractions = torch.linspace(0.0, 1.0, num_network_coarse, device=device)
    if not deterministic:
        jitter = (torch.rand(num_rays, num_network_coarse, device=device) - 0.5) / (num_network_coarse - 1)
        fractions = (fractions + jitter).clamp(0.0, 1.0).sort(dim=-1).values
    t = t_start[:, None] + (t_end - t_start)[:, None] * fractions
    sdf = network_sdf((origins[:, None, :] + directions[:, None, :] * t[..., None]).reshape(-1, 3))
    sdf = sdf.reshape(num_rays, num_network_coarse)

    for round_index in range(upsample_rounds):
        round_inv_s = 64.0 * 2.0**round_index
        weights = upsample_weights(t, sdf, round_inv_s)
        new_t = sample_pdf(t, weights, num_upsample, deterministic=True).detach()
        new_points = origins[:, None, :] + directions[:, None, :] * new_t[..., None]
        new_sdf = network_sdf(new_points.reshape(-1, 3)).reshape(num_rays, num_upsample)
        t, order = torch.sort(torch.cat([t, new_t], dim=-1), dim=-1)
        sdf = torch.gather(torch.cat([sdf, new_sdf], dim=-1), -1, order)

    resolvable = 64.0 * 2.0**upsample_rounds
    weights = upsample_weights(t, sdf, min(max(inv_s, 1.0), resolvable))
    boundaries = sample_pdf(t, weights, num_render + 1, deterministic=deterministic)
    boundaries = torch.maximum(boundaries, near[:, None])
    boundaries = torch.minimum(boundaries, far[:, None])
    return boundaries.sort(dim=-1).values.detach()


def cos_anneal_ratio(step: int, anneal_steps: int) -> float:
    """NeuS's cos-anneal ramp from 0 to 1 over ``anneal_steps`` (1 immediately when 0)."""
    if anneal_steps <= 0:
        return 1.0
    return min(1.0, step / anneal_steps)


@dataclass
class SurfaceSamples:
    """Render samples of the rays that meet the unit sphere (``ray_index`` into the full batch), with the SDF
    field's values there: what every SDF method composites after its own per-sample shading."""

    ray_index: Tensor
    """(H,) indices of the rays that hit the unit sphere."""
    t_mid: Tensor
    """(H, S) distances of the samples along their rays."""
    points: Tensor
    """(H, S, 3)."""
    sdf: Tensor
    features: Tensor
    """(H, S, F) geometry features for the shading heads."""
    gradient: Tensor
    """(H, S, 3) SDF gradient (with its graph when trained, so shading and eikonal losses shape the surface)."""
    weights: Tensor
    """(H, S) NeuS compositing weights."""

    @property
    def normals(self) -> Tensor:
        return self.gradient / self.gradient.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    def composite(self, values: Tensor) -> Tensor:
        """sum_s w_s values_s: (H, S, C) -> (H, C)."""
        return (self.weights[..., None] * values).sum(1)


def sample_surface(
    field: Callable[[Tensor, bool], tuple[Tensor, Tensor, Tensor]],
    network_sdf: Callable[[Tensor], Tensor],
    cache: SDFGridCache,
    inv_s: Tensor,
    origins: Tensor,
    directions: Tensor,
    *,
    cos_anneal: float,
    training: bool,
    num_coarse: int,
    num_network_coarse: int,
    num_upsample: int,
    upsample_rounds: int,
    num_render: int,
) -> SurfaceSamples:
    """Samples near the surface along every ray that meets the unit sphere and evaluates the SDF field there.

    ``field(points, create_graph)`` returns (sdf, features, gradient) as ``ReconSDFField.get_sdf_and_gradient``.
    Rays that miss the sphere cost nothing: they carry no sample and composite to zero (see :func:`scatter_rays`).
    """
    near, far, hit = intersect_unit_sphere(origins, directions)
    ray_index = hit.nonzero().squeeze(-1)
    origins, directions, near, far = origins[ray_index], directions[ray_index], near[ray_index], far[ray_index]
    num_rays = origins.shape[0]
    with torch.no_grad():
        boundaries = surface_sample_distances(
            origins,
            directions,
            near,
            far,
            cache,
            network_sdf,
            inv_s=float(inv_s.detach()),
            num_coarse=num_coarse,
            num_network_coarse=num_network_coarse,
            num_upsample=num_upsample,
            upsample_rounds=upsample_rounds,
            num_render=num_render,
            deterministic=not training,
        )
    t_mid = (boundaries[:, 1:] + boundaries[:, :-1]) * 0.5
    deltas = boundaries[:, 1:] - boundaries[:, :-1]
    points = origins[:, None, :] + directions[:, None, :] * t_mid[..., None]
    sdf, features, gradient = field(points.reshape(-1, 3), training)
    sdf = sdf.reshape(num_rays, num_render)
    gradient = gradient.reshape(num_rays, num_render, 3)
    cos_view = (gradient * directions[:, None, :]).sum(-1)
    alpha = neus_alpha(sdf, cos_view, deltas, inv_s, cos_anneal if training else 1.0)
    return SurfaceSamples(
        ray_index=ray_index,
        t_mid=t_mid,
        points=points,
        sdf=sdf,
        features=features.reshape(num_rays, num_render, features.shape[-1]),  # -1 is ambiguous when no ray hits
        gradient=gradient,
        weights=alpha_to_weights(alpha),
    )


def scatter_rays(values: Tensor, ray_index: Tensor, num_rays: int) -> Tensor:
    """Per-ray values of the rays in ``ray_index`` placed into a zero tensor for the whole batch (differentiable)."""
    full = values.new_zeros((num_rays, *values.shape[1:]))
    return full.index_copy(0, ray_index, values)
