"""The model scaffolding every NeuS-SDF method shares (rnb-sdf, nero-shape).

An SDF model here is: the SDF field, its learned NeuS sharpness and the cached SDF volume that guides the
sampler; step schedules that follow ``--max-num-iterations`` (coarse-to-fine grid levels, a rising sharpness
floor, cos-anneal, cache refresh); NeuS sampling near the surface; the geometry every method composites the
same way (accumulation, depth). A method subclass adds its heads and implements :meth:`SDFModel.shade`, the
per-sample shading and compositing, and ``get_loss_dict``; the eikonal and mask terms are shared helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor, nn

from recon_plugin.components.image_metrics import ImageMetrics
from recon_plugin.components.neus import (
    LearnedVariance,
    SDFGridCache,
    SurfaceSamples,
    cos_anneal_ratio,
    intersect_unit_sphere,
    sample_surface,
    scatter_rays,
)
from recon_plugin.components.schedules import run_length_callbacks
from recon_plugin.components.sdf_field import ReconSDFFieldConfig
from recon_plugin.engine import adam_warmup_cosine


@dataclass
class SDFModelConfig(ModelConfig):
    """Options every SDF model shares. Fractions refer to the run length (``--max-num-iterations``)."""

    _target: Type = field(default_factory=lambda: SDFModel)
    enable_collider: bool = False
    """Rays are clipped to the unit sphere by the sampler itself."""
    sdf_field: ReconSDFFieldConfig = field(default_factory=ReconSDFFieldConfig)

    # Sampling (components/neus.py sample_surface)
    num_coarse_samples: int = 64
    """Samples per ray read from the cached SDF volume to find the stretch near the surface."""
    num_network_coarse_samples: int = 32
    """Samples per ray in that stretch evaluated by the network (no gradients) to place the render samples."""
    num_upsample_samples: int = 16
    upsample_rounds: int = 2
    num_render_samples: int = 24
    """Samples per ray evaluated with gradients (the costly ones)."""
    cache_resolution: int = 64
    """Resolution of the cached SDF volume that places the coarse samples."""
    cache_refresh_every: int = 20
    coarse_to_fine_start_levels: int = 2
    coarse_to_fine_fraction: float = 0.3
    """Hash-grid levels are switched on one by one until this fraction of the run."""

    # NeuS sharpness
    init_variance: float = 0.3
    """inv_s = exp(10 v) starts at exp(3) ~ 20."""
    sharpness_floor_start: float = 20.0
    sharpness_floor_end: float = 1000.0
    sharpness_floor_fraction: float = 0.6
    """The NeuS sharpness is kept above a floor growing geometrically from start to end over this fraction."""
    cos_anneal_fraction: float = 0.0
    """Fraction of the run over which NeuS's cos-anneal ramps to 1 (0: exact from the start)."""

    # Regularisers
    eikonal_loss_mult: float = 0.1
    num_eikonal_points: int = 512
    """Extra uniform points in the unit sphere for the eikonal term (training only)."""
    mask_loss_mult: float = 1.0
    """BCE between accumulation and the data's foreground mask, when the batch has one."""
    surface_smoothness_loss_mult: float = 0.0
    """Weight of the surface-smoothness term: the squared difference between the SDF normal at a ray's surface
    point and at a point ``surface_smoothness_radius`` away (a curvature penalty on the surface itself, where
    the volume-point curvature term rarely lands)."""
    surface_smoothness_radius: float = 0.01
    """Distance, in the normalised frame (unit sphere), between the two points the smoothness term compares."""
    surface_smoothness_points: int = 1024
    """At most this many surface points per step for the smoothness term."""


def sdf_optimizers(warmup_fraction: float) -> Dict[str, Dict[str, Any]]:
    """The trainer's ``optimizers`` for :meth:`SDFModel.get_param_groups`: the SDF grid at 10x the networks' rate,
    every group warming up over ``warmup_fraction`` of the run, then decaying to 0.05x."""
    return {
        "fields": adam_warmup_cosine(1e-3, warmup_fraction),
        "grid": adam_warmup_cosine(1e-2, warmup_fraction),
        "variance": adam_warmup_cosine(1e-3, warmup_fraction),
    }


@dataclass
class SampledRays:
    """A ray batch after NeuS sampling, with the geometry every SDF model composites the same way."""

    origins: Tensor
    """(R, 3)."""
    directions: Tensor
    """(R, 3) unit directions."""
    samples: SurfaceSamples
    """Render samples of the rays that meet the unit sphere."""
    accumulation: Tensor = field(init=False)
    """(R, 1) opacity of the object."""
    depth: Tensor = field(init=False)
    """(R, 1) distance along the ray to the object; empty rays end at the far side of the sphere around the scene
    box, so ``ns-export tsdf`` carves everything else (a background field too) as free space."""

    def __post_init__(self) -> None:
        self.accumulation = self.composite(torch.ones_like(self.samples.t_mid[..., None]))
        _, box_far, _ = intersect_unit_sphere(self.origins, self.directions, radius=math.sqrt(3.0))
        self.depth = self.composite(self.samples.t_mid[..., None]) + (1.0 - self.accumulation) * box_far[:, None]

    @property
    def num_rays(self) -> int:
        return self.origins.shape[0]

    def composite(self, values: Tensor) -> Tensor:
        """Per-sample values (H, S, C) composited with the NeuS weights into every ray of the batch (R, C)."""
        return scatter_rays(self.samples.composite(values), self.samples.ray_index, self.num_rays)


class SDFModel(Model):
    """NeuS SDF model without shading; subclasses implement :meth:`shade` and ``get_loss_dict``."""

    config: SDFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        # nerfstudio passes the run's device: it picks the hash-grid backend (never tinycudann on a CPU run).
        self.field = self.config.sdf_field.setup(device=self.kwargs.get("device"))
        self.variance = LearnedVariance(self.config.init_variance)
        self.sdf_cache = SDFGridCache(self.config.cache_resolution, bound=1.0)
        self.renderer_rgb = RGBRenderer(background_color="black")  # read by nerfstudio's get_rgba_image
        self.image_metrics = ImageMetrics()
        self.step = 0
        self.total_steps = 30000

    def head_modules(self) -> List[nn.Module]:
        """The method's own networks, trained in the "fields" parameter group after the SDF network."""
        return []

    # ------------------------------------------------------------------ training schedule
    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        grid_params = list(self.field.grid.parameters()) if self.field.grid is not None else []
        grid_ids = {id(p) for p in grid_params}
        network = [p for p in self.field.parameters() if id(p) not in grid_ids]
        for module in self.head_modules():
            network += list(module.parameters())
        groups = {"fields": network, "variance": list(self.variance.parameters())}
        if grid_params:
            groups["grid"] = grid_params
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        return run_length_callbacks(self, training_callback_attributes)

    def fraction_step(self, fraction: float) -> int:
        """The step at ``fraction`` of the run."""
        return int(fraction * self.total_steps)

    def set_step(self, step: int) -> None:
        """Advances the step-dependent schedules: grid levels, sharpness floor, SDF cache (cos-anneal and any
        method schedule read ``self.step``)."""
        self.step = step
        num_levels = self.config.sdf_field.num_levels
        ramp_steps = max(1, self.fraction_step(self.config.coarse_to_fine_fraction))
        start = min(self.config.coarse_to_fine_start_levels, num_levels)
        active = start + (num_levels - start) * min(1.0, step / ramp_steps)
        self.field.set_active_levels(int(math.ceil(active)) if step > 0 else start)
        progress = min(1.0, step / max(1, self.fraction_step(self.config.sharpness_floor_fraction)))
        start_s, end_s = self.config.sharpness_floor_start, self.config.sharpness_floor_end
        self.variance.set_floor(start_s * (end_s / start_s) ** progress)
        if step % self.config.cache_refresh_every == 0 or not bool(self.sdf_cache.initialised):
            self.refresh_sdf_cache()

    def refresh_sdf_cache(self) -> None:
        self.sdf_cache.refresh(lambda points: self.field.get_sdf(points))

    def inv_s(self) -> Tensor:
        """The NeuS sharpness the renderer uses (a subclass may hold it fixed early in the run)."""
        return self.variance.inv_s()

    # ------------------------------------------------------------------ rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:  # type: ignore[override]
        if self.training:
            return self.shade(ray_bundle, self.sample(ray_bundle))
        # nerfstudio's eval-batch step runs the model with autograd on; nothing in eval needs a graph
        # (the SDF gradient itself is computed under enable_grad inside the field).
        with torch.no_grad():
            return self.shade(ray_bundle, self.sample(ray_bundle))

    def sample(self, ray_bundle: RayBundle) -> SampledRays:
        """NeuS samples near the surface along every ray, with the object's accumulation and depth."""
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        if not bool(self.sdf_cache.initialised):
            self.refresh_sdf_cache()
        samples = sample_surface(
            lambda points, create_graph: self.field.get_sdf_and_gradient(points, create_graph=create_graph),
            lambda points: self.field.get_sdf(points),
            self.sdf_cache,
            self.inv_s(),
            origins,
            directions,
            cos_anneal=cos_anneal_ratio(self.step, self.fraction_step(self.config.cos_anneal_fraction)),
            training=self.training,
            num_coarse=self.config.num_coarse_samples,
            num_network_coarse=self.config.num_network_coarse_samples,
            num_upsample=self.config.num_upsample_samples,
            upsample_rounds=self.config.upsample_rounds,
            num_render=self.config.num_render_samples,
        )
        return SampledRays(origins, directions, samples)

    def shade(self, ray_bundle: RayBundle, rays: SampledRays) -> Dict[str, Tensor]:
        """The method's step: shade the samples, composite, and return the outputs (``rgb`` first, then
        ``accumulation``, ``depth``, ...; loss inputs under ``loss_terms``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement shade()")

    def regulariser_gradients(self, rays: SampledRays, with_neighbours: bool = False) -> tuple[Tensor, Tensor | None]:
        """One gradient pass for the regularisers: SDF gradients at ``num_eikonal_points`` uniform points in the unit
        sphere (the eikonal term over the whole volume; ``with_neighbours`` appends a point 0.01 away from each, for
        terms comparing neighbouring gradients), and the surface-smoothness loss (None when off), whose points join
        the same pass: each pass back-propagates twice through the dense grid, about 0.1 s a step on a CPU.

        The smoothness loss is the squared difference of unit normals at each mostly opaque ray's surface point (its
        render sample of highest weight; the normal the shading used, its graph kept) and at a random neighbour
        ``surface_smoothness_radius`` away, averaged over at most ``surface_smoothness_points`` rays.

        In eval (nerfstudio's eval-batch losses) there are no volume points, and the neighbours' directions come from a
        fixed seed, so the eval losses do not depend on the random state.
        """
        config = self.config
        empty = torch.zeros(0, 3, device=self.device)
        points = [empty]
        count = config.num_eikonal_points
        if count > 0 and self.training:
            directions = F.normalize(torch.randn(count, 3, device=self.device), dim=-1)
            volume = directions * torch.rand(count, 1, device=self.device) ** (1.0 / 3.0)
            if with_neighbours:
                volume = torch.cat([volume, volume + F.normalize(torch.randn_like(volume), dim=-1) * 0.01])
            points.append(volume)
        num_volume = sum(len(part) for part in points)
        surface_normals = self._surface_normals_and_neighbours(rays, points)
        if sum(len(part) for part in points) == 0:
            return empty, None
        _, _, gradient = self.field.get_sdf_and_gradient(torch.cat(points), create_graph=self.training)
        smoothness = None
        if surface_normals is not None:
            neighbour = F.normalize(gradient[num_volume:], dim=-1)
            difference = (surface_normals - neighbour).pow(2).sum(dim=-1)
            smoothness = config.surface_smoothness_loss_mult * difference.mean()
        return gradient[:num_volume], smoothness

    def _surface_normals_and_neighbours(self, rays: SampledRays, points: List[Tensor]) -> Tensor | None:
        """For the smoothness term: appends the neighbour points to ``points``, returns the surface normals."""
        config = self.config
        samples = rays.samples
        if config.surface_smoothness_loss_mult <= 0 or samples.weights.numel() == 0:
            return None
        weights = samples.weights.detach()
        best = weights.argmax(dim=1)
        rows = torch.arange(weights.shape[0], device=weights.device)
        opaque = weights.sum(dim=1) > 0.5
        rows, best = rows[opaque], best[opaque]
        if rows.numel() == 0:
            return None
        generator = None if self.training else torch.Generator(device=rows.device).manual_seed(0)
        if rows.numel() > config.surface_smoothness_points:
            order = torch.randperm(rows.numel(), device=rows.device, generator=generator)
            keep = order[: config.surface_smoothness_points]
            rows, best = rows[keep], best[keep]
        surface = samples.points[rows, best].detach()
        offsets = torch.randn(surface.shape, device=surface.device, generator=generator)
        offsets = F.normalize(offsets, dim=-1) * config.surface_smoothness_radius
        points.append(surface + offsets)
        return F.normalize(samples.gradient[rows, best], dim=-1)

    # ------------------------------------------------------------------ losses and metrics
    def regulariser_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The losses every SDF method adds to its own: eikonal (on ``loss_terms["eikonal_gradient"]``), mask (when
        the batch has ``fg_mask``) and surface smoothness (when ``regulariser_gradients`` computed it)."""
        terms = outputs["loss_terms"]
        losses = {"eikonal_loss": self.eikonal_loss(terms["eikonal_gradient"])}
        mask_loss = self.mask_loss(outputs, batch)
        if mask_loss is not None:
            losses["mask_loss"] = mask_loss
        if "surface_smoothness_loss" in terms:
            losses["surface_smoothness_loss"] = terms["surface_smoothness_loss"]
        return losses

    def eikonal_loss(self, gradient: Tensor) -> Tensor:
        """Weighted mean of (|grad f| - 1)^2 over the given SDF gradients (N, 3)."""
        return self.config.eikonal_loss_mult * ((gradient.norm(dim=-1) - 1.0) ** 2).mean()

    def mask_loss(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Tensor | None:
        """Weighted BCE between the object's accumulation and the batch's ``fg_mask``; None without either."""
        if "fg_mask" not in batch or self.config.mask_loss_mult <= 0:
            return None
        accumulation = outputs["accumulation"].float()
        # Clamp the value (log(0) guard) but keep the gradient: a plain clamp returns zero gradient exactly where the
        # term matters most, on an opaque surface (accumulation > 0.999) outside the silhouette, which then can
        # never be carved away (e.g. the start sphere sticking out of a bowl's opening).
        accumulation = accumulation - (accumulation - accumulation.clamp(1e-3, 1.0 - 1e-3)).detach()
        # binary_cross_entropy refuses to run under CUDA autocast (--mixed-precision): keep it in float32.
        with torch.autocast(device_type=accumulation.device.type, enabled=False):
            return self.config.mask_loss_mult * F.binary_cross_entropy(
                accumulation, batch["fg_mask"].to(accumulation.device).float()
            )

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        image = batch["image"].to(outputs["rgb"].device)[..., :3]
        return {
            "psnr": -10.0 * torch.log10(((outputs["rgb"].detach() - image) ** 2).mean().clamp(min=1e-10)),
            "inv_s": self.variance.inv_s().detach(),
        }

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR/SSIM (LPIPS when available) of the image, and the image, depth and accumulation panels."""
        image = batch["image"].to(outputs["rgb"].device)[..., :3]
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
        }
        return self.image_metrics(rgb, image), images
