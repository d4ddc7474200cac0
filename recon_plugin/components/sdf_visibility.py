"""Visibility through an SDF: how much of a ray leaving a point is blocked by the surface (no gradients).

Used as the target of NeRO's occlusion field: from a surface point, march along the reflected direction to
where the ray leaves the unit sphere and accumulate NeuS opacity. The NeuS weights come from SDF values alone
(:func:`recon_plugin.components.neus.upsample_weights` with ``entering_only``), so only sections where the SDF
decreases along the ray (entering the object) add opacity; leaving the start surface adds none, even from a point
slightly inside it at a high sharpness.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from recon_plugin.components.neus import intersect_unit_sphere, sample_pdf, upsample_weights


@torch.no_grad()
def sdf_ray_opacity(
    sdf_fn: Callable[[Tensor], Tensor],
    origins: Tensor,
    directions: Tensor,
    inv_s: float,
    num_samples: int = 32,
    num_importance: int = 16,
    start: float = 0.0,
) -> Tensor:
    """Opacity in [0, 1] (N,) accumulated along each ray from ``origins + start * directions`` to the unit sphere.

    Args:
        sdf_fn: points (M, 3) -> SDF (M,) or (M, 1), negative inside.
        origins: (N, 3) ray starts, inside the unit sphere.
        directions: (N, 3) unit directions.
        inv_s: NeuS sharpness of the opacity (higher: a crossing counts as fully opaque over a shorter distance).
        num_samples: uniform samples along each ray; num_importance: extra samples placed by the first weights.
        start: distance skipped at the start (0 for surface points: their own surface adds no opacity).
    """
    if num_samples < 2:
        raise ValueError(f"sdf_ray_opacity needs num_samples >= 2, got {num_samples}")
    count = origins.shape[0]
    if count == 0:
        return origins.new_zeros(0)
    _, far, _ = intersect_unit_sphere(origins, directions)
    near = torch.full_like(far, start)
    far = torch.maximum(far, near + 1e-4)
    steps = torch.linspace(0.0, 1.0, num_samples, device=origins.device, dtype=origins.dtype)
    t = near[:, None] + (far - near)[:, None] * steps

    def query(distances: Tensor) -> Tensor:
        points = origins[:, None, :] + directions[:, None, :] * distances[..., None]
        return sdf_fn(points.reshape(-1, 3)).reshape(distances.shape)

    sdf = query(t)
    weights = upsample_weights(t, sdf, inv_s, entering_only=True)
    if num_importance > 0:
        new_t = sample_pdf(t, weights, num_importance, deterministic=True)
        t, order = torch.sort(torch.cat([t, new_t], dim=-1), dim=-1)
        sdf = torch.gather(torch.cat([sdf, query(new_t)], dim=-1), -1, order)
        weights = upsample_weights(t, sdf, inv_s, entering_only=True)
    return weights.sum(-1).clamp(0.0, 1.0)
