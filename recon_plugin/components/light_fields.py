"""Learned incident-light fields for split-sum shading (NeRO): environment, near-field light, occlusion.

All three are small MLPs on encodings that keep their gradients: the directions they read come from
SDF normals, so the colour loss reaches the surface through them (see NeRO stage I).

- :class:`DirectionalLightField`: distant light L(d, rho), an MLP on the integrated directional encoding
  (Ref-NeRF's IDE) of a direction d blurred by a lobe of width rho (the pre-filtered environment of the
  split-sum approximation).
- :class:`PositionalLightField`: light that also depends on where it is received (interreflections), an MLP
  on [PE(x), IDE(d, rho)].
- :class:`OcclusionField`: the probability in [0, 1] that a ray leaving x along d meets the object again.

Radiance heads use an exp activation (positive, multiplicative updates), optionally capped: with 8-bit
images NeRO's shape stage caps it at exp(0) = 1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recon_plugin.components.encodings import FrequencyEncoding


def make_mlp(in_dim: int, hidden_dim: int, num_layers: int, out_dim: int) -> nn.Sequential:
    """``num_layers`` hidden ReLU layers of width ``hidden_dim``, then a linear output layer."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [nn.Linear(in_dim, hidden_dim), nn.ReLU()]
        in_dim = hidden_dim
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _init_output_bias(mlp: nn.Sequential, value: float) -> None:
    last = mlp[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.mul_(0.1)  # start near the bias so the initial light is what ``value`` says
        last.bias.fill_(value)


class DirectionalLightField(nn.Module):
    """Distant incident radiance L(d, rho) (..., 3) >= 0 around direction d, pre-filtered by a lobe of width rho.

    It reads the integrated directional encoding IDE(d, rho) (:class:`IntegratedDirectionalEncoding`), computed
    by the caller so that several light fields can share one encoding of the same direction.

    Args:
        encoding_dim: width of the IDE it reads.
        hidden_dim, num_layers: MLP size.
        exp_max: cap on the exp activation's argument (None: uncapped, for HDR targets).
        init_radiance: radiance the field starts at (everywhere).
    """

    def __init__(
        self,
        encoding_dim: int,
        hidden_dim: int = 64,
        num_layers: int = 2,
        exp_max: float | None = 0.0,
        init_radiance: float = 0.5,
    ) -> None:
        super().__init__()
        self.mlp = make_mlp(encoding_dim, hidden_dim, num_layers, 3)
        _init_output_bias(self.mlp, math.log(init_radiance))
        self.exp_max = exp_max

    def forward(self, direction_encoding: Tensor) -> Tensor:
        """IDE (..., encoding_dim) -> radiance (..., 3)."""
        raw = self.mlp(direction_encoding)
        return torch.exp(raw if self.exp_max is None else raw.clamp(max=self.exp_max))


class PositionalLightField(nn.Module):
    """Incident radiance that depends on the receiving point x as well as on the direction (..., 3) >= 0:
    an MLP on [PE(x), IDE(d, rho)]."""

    def __init__(
        self,
        encoding_dim: int,
        position_frequencies: int = 8,
        hidden_dim: int = 64,
        num_layers: int = 2,
        exp_max: float | None = 0.0,
        init_radiance: float = 0.5,
    ) -> None:
        super().__init__()
        self.position_encoding = FrequencyEncoding(3, position_frequencies)
        self.mlp = make_mlp(self.position_encoding.output_dim + encoding_dim, hidden_dim, num_layers, 3)
        _init_output_bias(self.mlp, math.log(init_radiance))
        self.exp_max = exp_max

    def forward(self, positions: Tensor, direction_encoding: Tensor) -> Tensor:
        raw = self.mlp(torch.cat([self.position_encoding(positions), direction_encoding], dim=-1))
        return torch.exp(raw if self.exp_max is None else raw.clamp(max=self.exp_max))


class OcclusionField(nn.Module):
    """Probability (..., 1) in [0, 1] that the ray from x along d is blocked by the object.

    Its inputs are detached: it is fitted to ray-marched targets and must not move the geometry. The output
    is clamp(raw / 2 + 1/2, 0, 1) with raw starting near ``init_raw`` (-0.95: about 2.5 % occluded), so it
    starts almost unoccluded and still has gradient on both sides.
    """

    def __init__(
        self,
        position_frequencies: int = 8,
        direction_frequencies: int = 6,
        hidden_dim: int = 64,
        num_layers: int = 2,
        init_raw: float = -0.95,
    ) -> None:
        super().__init__()
        self.position_encoding = FrequencyEncoding(3, position_frequencies)
        self.direction_encoding = FrequencyEncoding(3, direction_frequencies)
        in_dim = self.position_encoding.output_dim + self.direction_encoding.output_dim
        self.mlp = make_mlp(in_dim, hidden_dim, num_layers, 1)
        _init_output_bias(self.mlp, init_raw)

    def forward(self, positions: Tensor, directions: Tensor, clamp: bool = True) -> Tensor:
        """Occlusion probability of the rays (positions, directions) (..., 3) -> (..., 1).

        ``clamp=False`` returns the value before clamping to [0, 1], for fitting it: the clamp has no gradient
        outside [0, 1], so a loss on the clamped value leaves a field that overshot below 0 stuck at 0 for good.
        """
        encoded = torch.cat(
            [self.position_encoding(positions.detach()), self.direction_encoding(directions.detach())], dim=-1
        )
        probability = self.mlp(encoded) * 0.5 + 0.5
        return probability.clamp(0.0, 1.0) if clamp else probability
