"""Outer background field for everything outside the unit sphere (NeRF++'s inverted-sphere model).

The foreground SDF lives inside the unit sphere. Points beyond it are reparametrised as
(x / r, 1 / r) with r = |x| > 1, a bounded 4-D coordinate, and rendered as a plain density field
sampled uniformly in inverse distance. The foreground composite and the background composite
combine by the foreground's remaining transmittance: C = C_fg + (1 - acc_fg) * C_bg.

Shared by rnb-sdf (off by default, as in RNb-NeuS) and NeRO's shape stage (on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Type

import torch
import torch.nn.functional as F
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from recon_plugin.components.encodings import FrequencyEncoding
from recon_plugin.components.neus import alpha_to_weights, intersect_unit_sphere


@dataclass
class BackgroundFieldConfig(InstantiateConfig):
    """Options of the outer (r > 1) field."""

    _target: Type = field(default_factory=lambda: BackgroundField)
    num_layers: int = 4
    """Hidden layers (NeRF++ used 8 x 256; 4 x 128 keeps CPU runs practical)."""
    hidden_dim: int = 128
    num_position_frequencies: int = 10
    num_direction_frequencies: int = 4
    view_dependent: bool = True
    """Colour depends on the viewing direction (off for reflectance, which is view-independent)."""
    predict_normal: bool = False
    """Also predict a unit normal per point (rnb-sdf shades the background like the foreground)."""
    num_samples: int = 32
    """Samples per ray, uniform in inverse distance between the unit sphere and ``max_distance``."""
    max_distance: float = 1000.0
    """Farthest sample, in the normalised scene units (the unit sphere has radius 1)."""


def contract_inverted_sphere(points: Tensor) -> Tensor:
    """(x / r, 1 / r) for r = max(|x|, 1): a bounded 4-D coordinate, continuous across the unit sphere."""
    radius = points.norm(dim=-1, keepdim=True).clamp(min=1.0)
    return torch.cat([points / radius, 1.0 / radius], dim=-1)


def background_sample_distances(
    origins: Tensor,
    directions: Tensor,
    num_samples: int,
    max_distance: float,
    deterministic: bool,
) -> Tensor:
    """Bin boundaries (R, num_samples + 1) along each ray from where it leaves the unit sphere.

    Rays that never enter the sphere start at their closest approach to the origin (or at the
    camera when it is already past it). Boundaries are uniform in 1 / t, as NeRF++ samples.
    """
    # For a miss intersect_unit_sphere's exit distance is the closest approach (or 0 behind the camera).
    _, leave, _ = intersect_unit_sphere(origins, directions)
    start_disparity = 1.0 / leave.clamp(min=1e-3)
    end_disparity = torch.full_like(start_disparity, 1.0 / max_distance)
    steps = torch.linspace(0.0, 1.0, num_samples + 1, device=origins.device)
    steps = steps.expand(origins.shape[0], -1)
    if not deterministic:
        # One random offset per bin keeps the bins ordered while covering the interval over time.
        jitter = (torch.rand(origins.shape[0], num_samples, device=origins.device) - 0.5) / num_samples
        steps = torch.cat([steps[:, :1], (steps[:, 1:-1] + jitter[:, 1:]).clamp(0.0, 1.0), steps[:, -1:]], dim=1)
        steps = steps.sort(dim=1).values
    disparity = start_disparity[:, None] + (end_disparity - start_disparity)[:, None] * steps
    return 1.0 / disparity


class BackgroundField(nn.Module):
    """Density + colour (and optionally a normal) of the scene outside the unit sphere."""

    def __init__(self, config: BackgroundFieldConfig) -> None:
        super().__init__()
        self.config = config
        self.position_encoding = FrequencyEncoding(4, config.num_position_frequencies)
        self.direction_encoding = FrequencyEncoding(3, config.num_direction_frequencies)
        layers: list[nn.Module] = []
        in_dim = self.position_encoding.output_dim
        for _ in range(config.num_layers):
            layers += [nn.Linear(in_dim, config.hidden_dim), nn.ReLU()]
            in_dim = config.hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.density_head = nn.Linear(config.hidden_dim, 1)
        colour_in = config.hidden_dim + (self.direction_encoding.output_dim if config.view_dependent else 0)
        self.colour_head = nn.Sequential(
            nn.Linear(colour_in, config.hidden_dim // 2), nn.ReLU(), nn.Linear(config.hidden_dim // 2, 3)
        )
        self.normal_head = nn.Linear(config.hidden_dim, 3) if config.predict_normal else None

    def forward(self, points: Tensor, directions: Tensor) -> Dict[str, Tensor]:
        """``density`` (..., 1), ``colour`` (..., 3) in [0, 1] and, when configured, unit ``normal`` (..., 3)."""
        hidden = self.trunk(self.position_encoding(contract_inverted_sphere(points)))
        outputs = {"density": F.softplus(self.density_head(hidden) - 1.0)}
        colour_in = hidden
        if self.config.view_dependent:
            colour_in = torch.cat([hidden, self.direction_encoding(directions)], dim=-1)
        outputs["colour"] = torch.sigmoid(self.colour_head(colour_in))
        if self.normal_head is not None:
            outputs["normal"] = F.normalize(self.normal_head(hidden), dim=-1)
        return outputs

    def render(self, origins: Tensor, directions: Tensor, deterministic: bool) -> Dict[str, Tensor]:
        """Per-sample field values and compositing weights along each ray's outer segment.

        Returns ``weights`` (R, S), ``t`` (R, S) sample distances and the field outputs at those
        samples, shaped (R, S, C), so a caller can composite any function of them.
        """
        boundaries = background_sample_distances(
            origins, directions, self.config.num_samples, self.config.max_distance, deterministic
        )
        t_mid = 0.5 * (boundaries[:, 1:] + boundaries[:, :-1])
        deltas = boundaries[:, 1:] - boundaries[:, :-1]
        points = origins[:, None, :] + directions[:, None, :] * t_mid[..., None]
        ray_dirs = directions[:, None, :].expand_as(points)
        values = self.forward(points.reshape(-1, 3), ray_dirs.reshape(-1, 3))
        values = {name: value.reshape(*t_mid.shape, -1) for name, value in values.items()}
        alpha = 1.0 - torch.exp(-values["density"][..., 0] * deltas)
        values["weights"] = alpha_to_weights(alpha)
        values["t"] = t_mid
        return values
