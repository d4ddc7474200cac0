"""Per-sample colour of nero-shape: NeRO's split-sum shading, or the plain NeuS colour head (the ablation).

Both take what the SDF field gives at a sample (geometry features, position, unit normal) and the
direction towards the camera, and return sRGB colour in [0, 1]. Only the split-sum head makes the
colour a function of the reflected direction, so that a reflection seen in the images is evidence for
the normal, and through the normal (autograd with ``create_graph``) for the SDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recon_plugin.components.encodings import IntegratedDirectionalEncoding
from recon_plugin.components.light_fields import (
    DirectionalLightField,
    OcclusionField,
    PositionalLightField,
    make_mlp,
)
from recon_plugin.components.shading import linear_to_srgb, reflect, shade_split_sum


@dataclass
class NeroShadingSizes:
    """Widths of the shading MLPs (NeRO: 256 wide, 3 hidden layers; smaller keeps CPU runs practical)."""

    hidden_dim: int = 64
    num_layers: int = 2
    ide_levels: int = 4
    """IDE degrees 1, 2, 4, ..., 2^(levels - 1). NeRO uses 5 (up to degree 16); 4 (up to degree 8) costs a third
    of it per sample on a CPU."""
    light_exp_max: float | None = 0.0
    """Cap of the light fields' exp activation (NeRO stage I: exp(0) = 1, enough for 8-bit images)."""


class SplitSumShading(nn.Module):
    """NeRO stage I shading of one sample (all inputs (N, .)).

    Materials (metallic m, roughness rho, albedo a) come from one MLP on the SDF features with sigmoid outputs.
    With v towards the camera and t = reflect(v, n):
    L_spec = s(x, t) L_ind(x, t, rho) + (1 - s) L_dir(t, rho), L_diff = L_dir(n, 1),
    colour = sRGB((1 - m) a L_diff + (F0 A + B) L_spec), F0 = mix(0.04, a, m), (A, B) from the split-sum LUT.

    ``occlusion_from_colour``: whether the colour loss trains the occlusion field s as well (NeRO). Off, s enters
    the colour as a constant and only its ray-marched target fits it; the colour loss then cannot raise s to let
    the position-dependent near-field light L_ind explain reflections instead of the normal.
    """

    def __init__(self, feature_dim: int, sizes: NeroShadingSizes, occlusion_from_colour: bool = False) -> None:
        super().__init__()
        self.occlusion_from_colour = occlusion_from_colour
        # On the SDF features alone (NeRO adds xyz; our features come from a positional hash grid already), so
        # the mesh exporter, which passes (features, normals), can colour vertices with the albedo.
        self.materials = make_mlp(feature_dim, sizes.hidden_dim, sizes.num_layers, 5)
        self.ide = IntegratedDirectionalEncoding(sizes.ide_levels)
        # The diffuse query uses roughness 1, where degree l is attenuated by exp(-l (l + 1) / 2): below 1e-15
        # from degree 8 on. Those columns are left zero instead of evaluating degree-8/16 harmonics.
        self.diffuse_ide = IntegratedDirectionalEncoding(min(3, sizes.ide_levels))
        self.direct_light = DirectionalLightField(
            self.ide.output_dim, sizes.hidden_dim, sizes.num_layers, exp_max=sizes.light_exp_max
        )
        self.indirect_light = PositionalLightField(
            self.ide.output_dim, hidden_dim=sizes.hidden_dim, num_layers=sizes.num_layers, exp_max=sizes.light_exp_max
        )
        self.occlusion = OcclusionField(hidden_dim=sizes.hidden_dim, num_layers=sizes.num_layers)

    def material_values(self, features: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(metallic (N, 1), roughness (N, 1), albedo (N, 3)), each in [0, 1]."""
        raw = torch.sigmoid(self.materials(features))
        return raw[:, :1], raw[:, 1:2], raw[:, 2:]

    def albedo(self, features: Tensor, normals: Tensor) -> Tensor:
        """Albedo (N, 3); the signature of recon-extract-mesh's ``albedo_head`` (normals unused)."""
        return self.material_values(features)[2]

    def distant_radiance(self, directions: Tensor) -> Tensor:
        """The distant light L_dir(d, 0) (N, 3), linear: what a mirror facing d reflects, or the environment seen
        along d."""
        return self.direct_light(self.ide(directions, torch.zeros_like(directions[..., :1])))

    def forward(self, features: Tensor, positions: Tensor, normals: Tensor, view: Tensor) -> Dict[str, Tensor]:
        """Returns ``rgb`` (sRGB, [0, 1]), linear ``diffuse`` and ``specular``, ``albedo``, ``roughness``,
        ``metallic``, ``occlusion`` and the ``reflection`` direction, each (N, 3) or (N, 1)."""
        metallic, roughness, albedo = self.material_values(features)
        n_dot_v = (normals * view).sum(-1, keepdim=True)
        reflection = reflect(view, normals)
        occlusion = self.occlusion(positions, reflection)
        blend = occlusion if self.occlusion_from_colour else occlusion.detach()
        reflection_ide = self.ide(reflection, roughness)  # shared by both lights
        direct = self.direct_light(reflection_ide)
        indirect = self.indirect_light(positions, reflection_ide)
        specular_light = blend * indirect + (1.0 - blend) * direct
        diffuse_ide = self.diffuse_ide(normals, torch.ones_like(roughness))
        diffuse_ide = F.pad(diffuse_ide, (0, self.ide.output_dim - diffuse_ide.shape[-1]))
        diffuse_light = self.direct_light(diffuse_ide)
        diffuse, specular = shade_split_sum(
            albedo, roughness, metallic, n_dot_v.clamp(0.0, 1.0), diffuse_light, specular_light
        )
        return {
            "rgb": linear_to_srgb(diffuse + specular),
            "diffuse": diffuse,
            "specular": specular,
            "albedo": albedo,
            "roughness": roughness,
            "metallic": metallic,
            "occlusion": occlusion,
            "reflection": reflection,
        }


class PlainColourShading(nn.Module):
    """The ablation: NeuS's view-dependent colour head, sigmoid(MLP([features, x, n, v])), directly in sRGB."""

    def __init__(self, feature_dim: int, sizes: NeroShadingSizes) -> None:
        super().__init__()
        self.mlp = make_mlp(feature_dim + 9, sizes.hidden_dim, sizes.num_layers, 3)

    def forward(self, features: Tensor, positions: Tensor, normals: Tensor, view: Tensor) -> Dict[str, Tensor]:
        return {"rgb": torch.sigmoid(self.mlp(torch.cat([features, positions, normals, view], dim=-1)))}
