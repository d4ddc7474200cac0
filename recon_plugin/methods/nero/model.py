"""nero-shape: the geometry of glossy objects from ordinary photos (NeRO stage I).

A NeuS SDF inside the unit sphere, rendered with split-sum shading whose specular light is looked up along
the reflected direction (see :mod:`recon_plugin.methods.nero.shading`); normals are the SDF gradient with
its graph, so reflections in the images pull on the surface. An outer NeRF++ field renders everything
outside the unit sphere behind the object. The occlusion field that blends the near-field (indirect) and
distant (direct) light is fitted, from a fraction of the run on, to opacities marched through the SDF
along the reflected rays.

Every step-dependent schedule is a fraction of ``--max-num-iterations``; NeRO's own values (300k steps)
are given next to each option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor, nn

from recon_plugin.components.background import BackgroundField, BackgroundFieldConfig
from recon_plugin.components.neus import SurfaceSamples
from recon_plugin.components.sdf_field import ReconSDFFieldConfig
from recon_plugin.components.sdf_model import SampledRays, SDFModel, SDFModelConfig
from recon_plugin.components.sdf_visibility import sdf_ray_opacity
from recon_plugin.components.shading import linear_to_srgb
from recon_plugin.methods.nero.shading import NeroShadingSizes, PlainColourShading, SplitSumShading

# NeRO's schedule, in steps of its 300k-step run; our defaults are these fractions of the run.
_NERO_STEPS = 300_000.0

#: Per-sample shading outputs composited into images (split-sum shading only).
MATERIAL_OUTPUTS = ("albedo", "roughness", "metallic", "diffuse", "specular", "occlusion")


@dataclass
class NeroShapeModelConfig(SDFModelConfig):
    """nero-shape model options (sampling, sharpness and schedule options: :class:`SDFModelConfig`). Fractions
    refer to the run length (``--max-num-iterations``)."""

    _target: Type = field(default_factory=lambda: NeroShapeModel)
    eval_num_rays_per_chunk: int = 1024
    shading: Literal["split-sum", "plain"] = "split-sum"
    """"split-sum": NeRO's reflection-aware shading; "plain": NeuS's view-dependent colour head (the ablation),
    same SDF, sampler and losses (no occlusion term)."""
    shading_sizes: NeroShadingSizes = field(default_factory=NeroShadingSizes)
    sdf_field: ReconSDFFieldConfig = field(default_factory=lambda: ReconSDFFieldConfig(max_resolution=64))
    """The shared SDF field with its finest grid level at 64 (rnb-sdf: 128): a 128-pixel view of the object puts
    about one pixel on a 64-voxel cell, and every training step reads and writes the whole grid (its gradient is
    dense), which at 128 takes a third of a CPU step."""
    background_field: BackgroundFieldConfig = field(
        default_factory=lambda: BackgroundFieldConfig(view_dependent=True, num_samples=16, hidden_dim=64)
    )
    """NeRO: 32 samples, 8 x 256. 16 samples on 4 x 64 keep the background under a tenth of a CPU step; it only
    needs to explain what is behind the object."""

    # Sampling
    num_network_coarse_samples: int = 16
    """Network samples on the stretch near the surface that the SDF cache finds (rnb-sdf: 32), before the two
    up-sampling rounds of 16."""

    # NeuS sharpness
    freeze_variance_fraction: float = 15_000 / _NERO_STEPS
    """inv_s is not trained before this fraction of the run (NeRO: 15k of 300k steps)."""
    sharpness_floor_end: float = 400.0
    """inv_s is kept above a floor growing geometrically from start to end over this fraction (not in NeRO,
    whose 300k steps let the learned value grow; short runs need the push)."""
    cos_anneal_fraction: float = 50_000 / _NERO_STEPS
    """NeuS's cos-anneal ramp (NeRO: 50k of 300k steps)."""

    # Occlusion field
    occlusion_start_fraction: float = 20_000 / _NERO_STEPS
    """The occlusion loss starts at this fraction of the run (NeRO: step 20k of 300k)."""
    occlusion_max_points: int = 256
    """Surface samples per step whose reflected ray is marched (NeRO: 2048)."""
    occlusion_march_samples: int = 32
    occlusion_march_importance: int = 16
    """Uniform and importance samples per marched ray (NeRO: 64 + 16)."""
    occlusion_surface_band: float = 0.01
    """Only samples with |sdf| below this are surface points whose reflected ray is marched."""
    occlusion_from_colour: bool = False
    """Let the colour loss train the occlusion field too (NeRO). Off: only the ray-marched target fits it. On, in a
    short run the colour loss drives the occlusion to ~0.97 before its loss starts (default glossy scene, step
    200), so the position-dependent near-field light carries the reflections while the coarse shape forms. Turning
    it off did not remove the split-sum head's dents (bench/nero_shape/dents.md)."""

    # Losses
    rgb_loss_mult: float = 1.0
    charbonnier_eps: float = 1e-3
    num_eikonal_points: int = 256
    """Extra uniform points in the unit sphere for the eikonal term (training only)."""
    occlusion_loss_mult: float = 1.0
    init_sdf_loss_mult: float = 1.0
    init_sdf_fraction: float = 0.01
    """The SDF-initialisation regulariser fades out (cosine) over this fraction of the run (NeRO: 1k of 300k)."""
    num_init_sdf_points: int = 512
    background_light_loss_mult: float = 0.1
    """Weight of the distant light's fit to the background: where a training ray leaves the object's opacity
    unused, the pixel shows the environment along the ray, which is what the distant light at roughness 0 must
    return in that direction (both are "at infinity"). Without it the distant light only learns from reflections
    and, in a short run, the ground below the horizon stays at its initial grey, so its reflection on metal is
    painted into the albedo at a virtual depth (bench/nero_shape/dents.md). 0 is NeRO's behaviour."""
    mask_loss_mult: float = 0.0
    """BCE between accumulation and the data's foreground mask (off: NeRO needs no masks)."""


class NeroShapeModel(SDFModel):
    """NeuS SDF + NeRO split-sum shading (or the plain colour head) + outer NeRF++ background."""

    config: NeroShapeModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        feature_dim = self.config.sdf_field.geo_feature_dim
        self.split_sum = self.config.shading == "split-sum"
        if self.split_sum:
            self.shading = SplitSumShading(
                feature_dim, self.config.shading_sizes, occlusion_from_colour=self.config.occlusion_from_colour
            )
        else:
            self.shading = PlainColourShading(feature_dim, self.config.shading_sizes)
        self.background: BackgroundField = self.config.background_field.setup()

    def head_modules(self) -> List[nn.Module]:
        return [self.shading, self.background]

    @property
    def albedo_head(self) -> Callable[[Tensor, Tensor], Tensor] | None:
        """(features, normals) -> albedo, read by recon-extract-mesh for vertex colours (split-sum shading only)."""
        return self.shading.albedo if isinstance(self.shading, SplitSumShading) else None

    # ------------------------------------------------------------------ training schedule
    def occlusion_active(self) -> bool:
        return self.split_sum and self.step >= self.fraction_step(self.config.occlusion_start_fraction)

    def init_sdf_weight(self) -> float:
        """Cosine fade 1 -> 0 of the SDF-initialisation regulariser; 0 once it has faded."""
        end = self.fraction_step(self.config.init_sdf_fraction)
        if self.step >= end:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * self.step / end))

    def inv_s(self) -> Tensor:
        inv_s = self.variance.inv_s()
        if self.step < self.fraction_step(self.config.freeze_variance_fraction):
            inv_s = inv_s.detach()
        return inv_s

    # ------------------------------------------------------------------ rendering
    def shade(self, ray_bundle: RayBundle, rays: SampledRays) -> Dict[str, Tensor]:
        """Split-sum (or plain) shading of the samples, composited over the background field."""
        samples, origins, directions = rays.samples, rays.origins, rays.directions
        hits, per_ray = samples.weights.shape
        normals = samples.normals
        view = -directions[samples.ray_index][:, None, :].expand(hits, per_ray, 3)
        shaded = self.shading(
            samples.features.flatten(0, 1),
            samples.points.reshape(-1, 3),
            normals.reshape(-1, 3),
            view.reshape(-1, 3),
        )
        shaded = {name: value.unflatten(0, (hits, per_ray)) for name, value in shaded.items()}
        background = self.background.render(origins, directions, deterministic=not self.training)
        # The background is seen through whatever the object leaves transparent; leftover light is black.
        bg_weights = background["weights"] * (1.0 - rays.accumulation)
        background_rgb = (bg_weights[..., None] * background["colour"]).sum(1)
        object_rgb = rays.composite(shaded["rgb"])
        normal = rays.composite(normals)
        outputs: Dict[str, Tensor] = {
            "rgb": object_rgb + background_rgb,
            "accumulation": rays.accumulation,
            "depth": rays.depth,
            "normal": normal,
            # nerfstudio's name and encoding for displayable normals (unit, mapped to [0, 1]); its point-cloud
            # and Poisson exporters read them from here.
            "normals": (F.normalize(normal, dim=-1) + 1.0) * 0.5,
            "object_rgb": object_rgb,
            "background_accumulation": bg_weights.sum(-1, keepdim=True),
        }
        if self.split_sum:
            for name in MATERIAL_OUTPUTS:
                outputs[name] = rays.composite(shaded[name])
            # Linear radiance terms, shown in sRGB like the image.
            outputs["diffuse"] = linear_to_srgb(outputs["diffuse"])
            outputs["specular"] = linear_to_srgb(outputs["specular"])
        terms = self._loss_terms(rays, shaded, directions)
        if self.split_sum and self.config.background_light_loss_mult > 0:
            terms["background_light"] = linear_to_srgb(self.shading.distant_radiance(directions))
            terms["background_share"] = (1.0 - rays.accumulation).detach().clamp(0.0, 1.0)
        outputs["loss_terms"] = terms  # type: ignore[assignment]
        return outputs

    # ------------------------------------------------------------------ loss inputs
    def _loss_terms(self, rays: SampledRays, shaded: Dict[str, Tensor], directions: Tensor) -> Dict[str, Tensor]:
        """What the losses need besides the images. A nested dict: nerfstudio's image rendering skips it."""
        samples = rays.samples
        terms: Dict[str, Tensor] = {}
        volume_gradient, smoothness = self.regulariser_gradients(rays)
        terms["eikonal_gradient"] = torch.cat([samples.gradient.reshape(-1, 3), volume_gradient], dim=0)
        if smoothness is not None:
            terms["surface_smoothness_loss"] = smoothness
        if self.init_sdf_weight() > 0.0:
            terms["init_sdf_violation"] = self._init_sdf_violation()
        if self.occlusion_active():
            predicted, target = self._occlusion_pair(samples, shaded, directions)
            terms["occlusion_predicted"], terms["occlusion_target"] = predicted, target
        return terms

    def _init_sdf_violation(self) -> Tensor:
        """NeRO's early SDF regulariser, per term: the centre must stay inside (sdf < |x| - 0.1 for |x| < 0.1)
        and the sphere's border outside (sdf > |x| - 1.05 for |x| > 1.05); each hinge averaged over its
        violators. Returns (2,): the two terms."""
        count = self.config.num_init_sdf_points
        generator_device = self.device
        # Radii uniform in [0, 1.2] (not in volume) so both the centre and the border get points.
        radius = torch.rand(count, 1, device=generator_device) * 1.2
        points = F.normalize(torch.randn(count, 3, device=generator_device), dim=-1) * radius
        sdf = self.field.get_sdf(points)
        norm = radius
        inner = F.relu(sdf - (norm - 0.1))[norm < 0.1]
        outer = F.relu((norm - 1.05) - sdf)[norm > 1.05]

        def mean_of_violators(values: Tensor) -> Tensor:
            return values.sum() / (values > 0).sum().clamp(min=1)

        return torch.stack([mean_of_violators(inner), mean_of_violators(outer)])

    def _occlusion_pair(
        self, samples: SurfaceSamples, shaded: Dict[str, Tensor], directions: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """Occlusion predicted at surface samples along their reflected rays, and its ray-marched target."""
        ray_dirs = directions[samples.ray_index][:, None, :].expand_as(samples.points)
        front = (samples.gradient * ray_dirs).sum(-1) < 0.0
        near_surface = samples.sdf.abs() < self.config.occlusion_surface_band
        inside = samples.points.norm(dim=-1) < 0.999
        index = (front & near_surface & inside).reshape(-1).nonzero().squeeze(-1)
        limit = self.config.occlusion_max_points
        if index.numel() > limit:
            # Random in training; the first ones in eval, so eval losses do not depend on the RNG.
            pick = torch.randperm(index.numel(), device=index.device)[:limit] if self.training else slice(0, limit)
            index = index[pick]
        points = samples.points.reshape(-1, 3)[index].detach()
        reflection = shaded["reflection"].reshape(-1, 3)[index].detach()
        # Unclamped: fitted on both sides of [0, 1], it cannot get stuck at 0 where the clamp has no gradient.
        predicted = self.shading.occlusion(points, reflection, clamp=False).reshape(-1)
        target = sdf_ray_opacity(
            lambda x: self.field.get_sdf(x),
            points,
            F.normalize(reflection, dim=-1),
            inv_s=float(self.variance.inv_s().detach()),
            num_samples=self.config.occlusion_march_samples,
            num_importance=self.config.occlusion_march_importance,
        )
        return predicted, target

    # ------------------------------------------------------------------ losses and metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """The training losses; in eval mode the same terms on the eval rays (nerfstudio's eval-batch step)."""
        terms = outputs["loss_terms"]
        device = outputs["rgb"].device
        image = batch["image"].to(device)[..., :3]
        squared = ((outputs["rgb"] - image) ** 2).sum(-1)
        loss_dict: Dict[str, Tensor] = {
            "rgb_loss": self.config.rgb_loss_mult * torch.sqrt(squared + self.config.charbonnier_eps).mean()
        }
        loss_dict.update(self.regulariser_losses(outputs, batch))
        if "init_sdf_violation" in terms:
            weight = self.config.init_sdf_loss_mult * self.init_sdf_weight()
            loss_dict["init_sdf_loss"] = weight * terms["init_sdf_violation"].sum()
        if "occlusion_target" in terms:
            predicted, target = terms["occlusion_predicted"], terms["occlusion_target"]
            occlusion = (predicted - target).abs().mean() if predicted.numel() else predicted.sum()
            loss_dict["occlusion_loss"] = self.config.occlusion_loss_mult * occlusion
        if "background_light" in terms:
            share = terms["background_share"]
            error = (terms["background_light"] - image).abs().sum(-1, keepdim=True)
            loss_dict["background_light_loss"] = (
                self.config.background_light_loss_mult * (share * error).sum() / share.sum().clamp(min=1.0)
            )
        return loss_dict

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        metrics = super().get_metrics_dict(outputs, batch)
        terms = outputs["loss_terms"]
        if "occlusion_target" in terms and terms["occlusion_target"].numel():
            metrics["occlusion_target_mean"] = terms["occlusion_target"].mean()
        return metrics

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        images["normals"] = outputs["normals"]
        if self.split_sum:
            albedo = outputs["albedo"]
            images["materials"] = torch.cat(
                [
                    albedo,
                    outputs["roughness"].expand_as(albedo),
                    outputs["metallic"].expand_as(albedo),
                    outputs["specular"],
                    outputs["occlusion"].expand_as(albedo),
                ],
                dim=1,
            )
        return metrics, images
