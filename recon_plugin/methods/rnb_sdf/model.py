"""rnb-sdf: an SDF surface from multi-view normal and reflectance maps (RNb-NeuS / RNb-NeuS2).

Each input pixel (normal n, albedo rho) is turned into three "images" under virtual directional
lights, rho * (n . l_j). The model renders the same quantity with NeuS weights:
sum_s w_s rho(x_s) (grad f(x_s) . l_j). The prediction is linear in the lights, so the model
composites one matrix per ray, sum_s w_s rho(x_s) grad f(x_s)^T (channels x 3), and the loss
applies whichever lights the schedule asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor, nn

from recon_plugin.components.background import BackgroundField, BackgroundFieldConfig
from recon_plugin.components.image_metrics import angular_error_degrees
from recon_plugin.components.neus import scatter_rays
from recon_plugin.components.sdf_field import AlbedoHead, ReconSDFFieldConfig
from recon_plugin.components.sdf_model import SampledRays, SDFModel, SDFModelConfig
from recon_plugin.components.shading import (
    OPTIMAL_SLANT_DEG,
    fixed_triplet_world,
    identity_lights,
    optimal_triplet,
    rgb_plus,
)


@dataclass
class RnbSDFModelConfig(SDFModelConfig):
    """rnb-sdf model options (sampling, sharpness and schedule options: :class:`SDFModelConfig`). Fractions refer
    to the run length (``--max-num-iterations``)."""

    _target: Type = field(default_factory=lambda: RnbSDFModel)
    eval_num_rays_per_chunk: int = 2048
    sdf_field: ReconSDFFieldConfig = field(default_factory=lambda: ReconSDFFieldConfig(interpolation="smoothstep"))
    """The SDF field. Smoothstep interpolation (C1): trilinear grids crease the surface along the cell faces of
    the coarse levels, where the normal the maps supervise jumps (DiLiGenT-MV cow, 1000 steps: a median jump of
    4-11 degrees across the level-0 faces, 10-30 across the centre planes, where two levels' faces meet, against
    0.5-1.5 inside the cells)."""
    surface_smoothness_loss_mult: float = 0.1
    """Weight of the surface-smoothness term (SDF base): the normal maps of different views disagree by a few
    degrees (photometric-stereo estimates), and a hash grid fits each view's bumps where an MLP would average
    them. Synthetic figure, 20 views at 384 px with photometric-stereo noise and bias, 1000 steps: Chamfer 0.162 %
    without, 0.095 % at 0.1, 0.138 % at 1.0."""
    cos_anneal_fraction: float = 0.0
    """Fraction of the run over which NeuS's cos-anneal ramps to 1 (0: exact from the start, as RNb-NeuS with masks)."""

    use_background_field: bool | None = None
    """Model everything outside the unit sphere with an outer NeRF++ field. None (auto): on when the data has no
    silhouette (no mask, no normal-map alpha, no zero-coded background), i.e. when the maps' background holds a
    backdrop's normals that the object's SDF must not absorb; off otherwise, as in RNb-NeuS, whose data is black
    outside the object."""
    background_field: BackgroundFieldConfig = field(
        default_factory=lambda: BackgroundFieldConfig(view_dependent=False, predict_normal=True)
    )

    # RnB shading
    light_mode: Literal["fixed", "optimal", "fixed-then-optimal", "supernormal"] = "fixed-then-optimal"
    light_switch_fraction: float = 2.0 / 3.0
    """fixed-then-optimal: fraction of the run trained with the fixed camera triplet."""
    fixed_slant_deg: float = OPTIMAL_SLANT_DEG
    """Slant of the fixed triplet (RNb-NeuS v1 used 30 degrees, v2 54.74)."""
    clamp_fixed_lights: bool = False
    """While the fixed triplet is used, shade with max(0, n . l) in target and prediction (self-shadowing, per
    sample), as RNb-NeuS v1's warm-up (with fixed-slant-deg 30). Unclamped, an orthonormal fixed triplet and the
    optimal one give the same L2 loss, so the light schedule only matters with clamping or another slant."""
    lights_per_ray: Literal[1, 3] = 3
    """3: every light for every ray (v1); 1: one random light per ray (v2)."""
    rgb_plus: bool = True
    """Append RNb-NeuS2's fourth channel so dark reflectance still constrains the geometry."""
    loss_type: Literal["l1", "l2"] = "l1"
    use_albedo: bool = True
    """False (or data without albedo/): reflectance fixed to 1, the loss becomes pure normal consistency."""
    per_view_gain: bool = True
    """Learn a per-view, per-channel reflectance gain (geometric mean 1) absorbing inconsistent albedo scales."""

    # Losses
    rnb_loss_mult: float = 1.0
    mask_loss_mult: float = 1.0
    """RNb-NeuS uses 0.1 over 300k steps; in runs of a few thousand steps 0.1 lets the surface drift
    outwards (blob scene, 300 steps: Chamfer 10.9% of the radius with 0.1, 3.5% with 1.0)."""
    curvature_loss_mult: float = 0.0
    num_eikonal_points: int = 512
    """Extra uniform points in the unit sphere for the eikonal (and curvature) term."""


class RnbSDFModel(SDFModel):
    """NeuS SDF trained with RnB shading of normal + reflectance maps."""

    config: RnbSDFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        metadata = self.kwargs.get("metadata") or {}
        self.has_albedo = self.config.use_albedo and metadata.get("rnb_albedo_filenames") is not None
        self.albedo_head: AlbedoHead | None = (
            AlbedoHead(self.config.sdf_field.geo_feature_dim) if self.has_albedo else None
        )
        use_background = self.config.use_background_field
        if use_background is None:
            use_background = "rnb_silhouette_source" in metadata and metadata["rnb_silhouette_source"] is None
        self.background: BackgroundField | None = self.config.background_field.setup() if use_background else None
        rotations = metadata.get("rnb_camera_rotations")
        if rotations is None:
            rotations = torch.eye(3).expand(max(self.num_train_data, 1), 3, 3)
        self.register_buffer("camera_rotations", torch.as_tensor(rotations).float().clone(), persistent=False)
        self.view_log_gain: nn.Parameter | None = None
        if self.has_albedo and self.config.per_view_gain:
            self.view_log_gain = nn.Parameter(torch.zeros(self.num_train_data, 3))

    def head_modules(self) -> List[nn.Module]:
        return [module for module in (self.albedo_head, self.background) if module is not None]

    # ------------------------------------------------------------------ training schedule
    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        groups = super().get_param_groups()
        if self.view_log_gain is not None:
            groups["view_gains"] = [self.view_log_gain]
        return groups

    def current_light_mode(self) -> str:
        if self.config.light_mode != "fixed-then-optimal":
            return self.config.light_mode
        return "fixed" if self.step < self.config.light_switch_fraction * self.total_steps else "optimal"

    def view_gains(self, camera_indices: Tensor) -> Tensor | None:
        if self.view_log_gain is None:
            return None
        log_gain = self.view_log_gain - self.view_log_gain.mean(dim=0, keepdim=True)
        return torch.exp(log_gain)[camera_indices.clamp(0, log_gain.shape[0] - 1)]

    # ------------------------------------------------------------------ rendering
    def shade(self, ray_bundle: RayBundle, rays: SampledRays) -> Dict[str, Tensor]:
        """Headlight-shaded albedo for display; the RnB loss itself reads ``loss_terms``."""
        samples, origins, directions = rays.samples, rays.origins, rays.directions
        hit_directions = directions[samples.ray_index]
        normals = samples.normals
        if self.albedo_head is not None:
            albedo = self.albedo_head(samples.features.flatten(0, 1), normals.flatten(0, 1)).reshape(normals.shape)
        else:
            albedo = torch.ones_like(normals)
        headlight = (-(normals * hit_directions[:, None, :]).sum(-1, keepdim=True)).clamp(min=0.0)
        outputs: Dict[str, Tensor] = {
            "rgb": rays.composite(albedo * headlight),
            "accumulation": rays.accumulation,
            "depth": rays.depth,
            "normal": rays.composite(normals),
            "albedo": rays.composite(albedo),
        }
        background = None
        if self.background is not None:
            background = self.background.render(origins, directions, deterministic=not self.training)
            # The background is seen through whatever the object leaves transparent.
            background["weights"] = background["weights"] * (1.0 - rays.accumulation)
            bg_weights, bg_albedo, bg_normal = background["weights"], background["colour"], background["normal"]
            bg_headlight = (-(bg_normal * directions[:, None, :]).sum(-1, keepdim=True)).clamp(min=0.0)
            outputs["rgb"] = outputs["rgb"] + (bg_weights[..., None] * bg_albedo * bg_headlight).sum(1)
            outputs["normal"] = outputs["normal"] + (bg_weights[..., None] * bg_normal).sum(1)
            outputs["albedo"] = outputs["albedo"] + (bg_weights[..., None] * bg_albedo).sum(1)
            outputs["background_accumulation"] = bg_weights.sum(-1, keepdim=True)
        # nerfstudio's name and encoding for displayable normals (unit, mapped to [0, 1]); its point-cloud
        # and Poisson exporters read them from here.
        outputs["normals"] = (F.normalize(outputs["normal"], dim=-1) + 1.0) * 0.5
        outputs["loss_terms"] = self._loss_terms(ray_bundle, rays, albedo, background)  # type: ignore
        return outputs

    def _loss_terms(
        self,
        ray_bundle: RayBundle,
        rays: SampledRays,
        albedo: Tensor,
        background: Dict[str, Tensor] | None,
    ) -> Dict[str, Tensor]:
        """What the losses need besides the images. A nested dict: nerfstudio's image rendering skips it."""
        samples, num_rays = rays.samples, rays.num_rays
        device = albedo.device
        terms: Dict[str, Tensor] = {}
        if self.training:
            if ray_bundle.camera_indices is not None:
                camera_indices = ray_bundle.camera_indices.reshape(-1).long()
            else:
                camera_indices = torch.zeros(num_rays, dtype=torch.long, device=device)
            terms["camera_indices"] = camera_indices
            gains = self.view_gains(camera_indices)
        else:
            # Eval views need not be training views: no per-view gains (and no extra eikonal volume points).
            camera_indices, gains = None, None
        # Curvature compares each volume point's gradient with a close neighbour's.
        eikonal_extra, smoothness = self.regulariser_gradients(
            rays, with_neighbours=self.config.curvature_loss_mult > 0
        )
        hit_gains = gains[samples.ray_index] if gains is not None else None
        shading_albedo = self._shading_albedo(albedo, hit_gains)
        # sum_s w_s rho_c(x_s) grad f(x_s): the RnB prediction for any light l is this matrix times l.
        albedo_gradient = torch.einsum("rs,rsc,rsx->rcx", samples.weights, shading_albedo, samples.gradient)
        terms["albedo_gradient"] = scatter_rays(albedo_gradient, samples.ray_index, num_rays)
        if background is not None:
            terms["albedo_gradient"] = terms["albedo_gradient"] + torch.einsum(
                "rs,rsc,rsx->rcx",
                background["weights"],
                self._shading_albedo(background["colour"], gains),
                background["normal"],
            )
        if camera_indices is not None and self.config.clamp_fixed_lights and self.current_light_mode() == "fixed":
            # Self-shadowing (RNb-NeuS v1's warm-up): max(0, grad f . l) per sample, so the prediction is no longer
            # linear in the lights and is composited per light here.
            lights = self.rnb_lights(None, camera_indices[samples.ray_index])
            cosine = torch.einsum("rsx,rlx->rsl", samples.gradient, lights).clamp(min=0.0)
            clamped = torch.einsum("rs,rsc,rsl->rlc", samples.weights, shading_albedo, cosine)
            terms["clamped_prediction"] = scatter_rays(clamped, samples.ray_index, num_rays)
            if background is not None:
                bg_cosine = torch.einsum("rsx,rlx->rsl", background["normal"], self.rnb_lights(None, camera_indices))
                terms["clamped_prediction"] = terms["clamped_prediction"] + torch.einsum(
                    "rs,rsc,rsl->rlc",
                    background["weights"],
                    self._shading_albedo(background["colour"], gains),
                    bg_cosine.clamp(min=0.0),
                )
        terms["eikonal_gradient"] = torch.cat([samples.gradient.reshape(-1, 3), eikonal_extra], dim=0)
        if smoothness is not None:
            terms["surface_smoothness_loss"] = smoothness
        return terms

    def get_rgba_image(self, outputs: Dict[str, Tensor], output_name: str = "rgb") -> Tensor:
        """RGBA whose alpha is the object's accumulation (nerfstudio's default alpha is 1 for a black background),
        so ``ns-export pointcloud``/``poisson`` keep the object's pixels only, not the empty rays' far points."""
        accumulation = outputs["accumulation"]
        colour = outputs[output_name] / accumulation.clamp(min=1e-10)  # rgb is composited over black
        return torch.cat([colour.clamp(0.0, 1.0), accumulation], dim=-1)

    def _shading_albedo(self, albedo: Tensor, gains: Tensor | None) -> Tensor:
        """Reflectance as the loss sees it: times the view's gain, with RGB+'s fourth channel."""
        if gains is not None:
            albedo = albedo * gains[:, None, :]
        if self.config.rgb_plus:
            albedo = rgb_plus(albedo, self.config.loss_type)
        return albedo

    # ------------------------------------------------------------------ losses and metrics
    def rnb_lights(self, target_normals: Tensor | None, camera_indices: Tensor | None) -> Tensor:
        """World-frame lights (R, 3, 3) for the current schedule.

        The fixed triplet is tied to a training view's camera; eval rays (``camera_indices`` None) may
        come from other views, so they are scored under the per-pixel optimal triplet instead.
        """
        mode = self.current_light_mode()
        if mode == "optimal" or (mode == "fixed" and camera_indices is None):
            assert target_normals is not None
            return optimal_triplet(target_normals)
        if mode == "supernormal":
            assert target_normals is not None
            return identity_lights(target_normals.shape[:-1], target_normals.device)
        assert camera_indices is not None
        rotations = self.camera_rotations[camera_indices.clamp(0, self.camera_rotations.shape[0] - 1)]
        return fixed_triplet_world(self.config.fixed_slant_deg, rotations)

    def rnb_terms(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Prediction, target (R, lights, channels) and per-ray weight of the RnB photometric loss."""
        terms = outputs["loss_terms"]
        device = terms["albedo_gradient"].device
        normals = F.normalize(batch["normal"].to(device), dim=-1)
        if self.has_albedo:
            target_albedo = batch["albedo"].to(device)
        else:
            target_albedo = torch.ones_like(normals)
        if self.config.rgb_plus:
            target_albedo = rgb_plus(target_albedo, self.config.loss_type)
        lights = self.rnb_lights(normals, terms.get("camera_indices"))
        # No clamping of n . l (as RNb-NeuS2 by default): the prediction is unclamped, and clamping only
        # the target would pull grazing normals towards the light instead of towards the data.
        cosine = (lights * normals[:, None, :]).sum(-1)
        if "clamped_prediction" in terms:
            cosine = cosine.clamp(min=0.0)
            prediction = terms["clamped_prediction"]
        else:
            prediction = torch.einsum("rcx,rlx->rlc", terms["albedo_gradient"], lights)
        target = cosine[..., None] * target_albedo[:, None, :]
        if "fg_mask" in batch:
            weight = batch["fg_mask"].to(device).reshape(-1)
        elif "valid_normal" in batch:
            weight = batch["valid_normal"].to(device).reshape(-1)
        else:
            weight = torch.ones(normals.shape[0], device=device)
        if "normal_weight" in batch:
            weight = weight * batch["normal_weight"].to(device).reshape(-1)
        return prediction, target, weight

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """The training losses; in eval mode the same terms on the eval rays (nerfstudio's eval-batch step)."""
        loss_dict: Dict[str, Tensor] = {}
        prediction, target, weight = self.rnb_terms(outputs, batch)
        error = (prediction - target).abs() if self.config.loss_type == "l1" else (prediction - target) ** 2
        if self.config.lights_per_ray == 1 and self.training:
            choice = torch.randint(0, 3, (error.shape[0],), device=error.device)
            error = error[torch.arange(error.shape[0], device=error.device), choice][:, None, :]
        per_ray = error.mean(dim=(1, 2))
        rnb_loss = (per_ray * weight).sum() / weight.sum().clamp(min=1.0)
        if self.config.rgb_plus:
            rnb_loss = rnb_loss * 0.5
        loss_dict["rnb_loss"] = self.config.rnb_loss_mult * rnb_loss

        loss_dict.update(self.regulariser_losses(outputs, batch))
        eikonal = outputs["loss_terms"]["eikonal_gradient"]
        if self.config.curvature_loss_mult > 0 and self.training:
            count = self.config.num_eikonal_points
            pairs = eikonal[-2 * count :]
            normals = F.normalize(pairs, dim=-1)
            loss_dict["curvature_loss"] = (
                self.config.curvature_loss_mult * (normals[:count] - normals[count:]).norm(dim=-1).mean()
            )
        return loss_dict

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        metrics = super().get_metrics_dict(outputs, batch)
        device = outputs["rgb"].device
        mask = batch.get("fg_mask", batch.get("valid_normal"))
        normal_error = angular_error_degrees(outputs["normal"].detach(), batch["normal"].to(device))
        if mask is not None:
            mask = mask.to(device).reshape(-1) > 0.5
            normal_error = normal_error[mask]
        if normal_error.numel():
            metrics["normal_error_deg"] = normal_error.mean()
        if self.view_log_gain is not None:
            metrics["view_gain_spread"] = self.view_log_gain.detach().std()
        return metrics

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        device = outputs["rgb"].device
        mask = batch.get("fg_mask", batch.get("valid_normal"))
        error = angular_error_degrees(outputs["normal"], batch["normal"].to(device))
        if mask is not None:
            error = error[mask.to(device)[..., 0] > 0.5]
        if error.numel():
            metrics["normal_error_deg"] = float(error.mean())
        images["normal"] = torch.cat([(batch["normal"].to(device) + 1.0) * 0.5, outputs["normals"]], dim=1)
        return metrics, images
