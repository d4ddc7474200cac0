"""nero-material: materials and lighting on a fixed mesh (NeRO stage II).

The geometry is the stage-I mesh (or any mesh in world units), held by a :class:`MeshRayCaster`. A ray is traced
to its first hit; there a material field (hash grid + MLP) gives albedo, roughness and metallic, and the
metallic-roughness Cook-Torrance BRDF of :mod:`recon_plugin.components.shading` is integrated by Monte Carlo
(cosine-weighted and GGX-lobe samples, balance heuristic: :func:`shade_monte_carlo`). Every sample direction is
traced against the mesh: a miss reads the environment light (an MLP on the direction's IDE, or an equirect
texture), a hit reads the indirect light field at the hit point. Occlusion is therefore exact (ray traced), not
learned. No volume rendering, no SDF.

Regularisers (NeRO): material smoothness along the surface, an early hinge keeping roughness and metallic away
from the sigmoid's flat ends, and the neutral-light prior on the albedo-versus-light colour ambiguity. Not in
NeRO: a background term fits the distant light to the photo's pixels that miss the mesh (they show that light
itself), which measures the light's colour where the prior could only assume it grey. Every step-dependent
schedule is a fraction of ``--max-num-iterations``.

Frames: the model works in the dataparser's normalised frame (the object in the unit sphere); the mesh is
mapped there by :mod:`recon_plugin.methods.nero.material_data`. Roughness is perceptual roughness (GGX alpha =
roughness^2, glTF's convention); albedo and radiance are linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor, nn

from recon_plugin.components.encodings import HashGridEncoding, IntegratedDirectionalEncoding
from recon_plugin.components.environment import sample_equirect
from recon_plugin.components.image_metrics import ImageMetrics
from recon_plugin.components.light_fields import DirectionalLightField, PositionalLightField, make_mlp
from recon_plugin.components.neus import intersect_unit_sphere
from recon_plugin.components.raycast import MeshRayCaster, RayHits, smoothed_vertex_normals
from recon_plugin.components.schedules import run_length_callbacks
from recon_plugin.components.shading import linear_to_srgb, orthonormal_tangents, reflect, shade_monte_carlo

# NeRO's stage-II schedule, in steps of its 100k-step run; our defaults are these fractions of the run.
_NERO_STEPS = 100_000.0

#: Per-ray outputs besides rgb/depth/accumulation (zero where a ray misses the mesh).
MATERIAL_OUTPUTS = ("albedo", "roughness", "metallic", "diffuse", "specular")


@dataclass
class NeroMaterialModelConfig(ModelConfig):
    """nero-material model options. Fractions refer to the run length (``--max-num-iterations``)."""

    _target: Type = field(default_factory=lambda: NeroMaterialModel)
    enable_collider: bool = False
    """Rays are traced against the mesh; nothing to clip."""
    eval_num_rays_per_chunk: int = 512

    # Geometry (exactly one of the two)
    shape_config: Path | None = None
    """config.yml of a nero-shape run: its mesh is extracted (cached next to that run) and used as the geometry."""
    mesh_path: Path | None = None
    """A mesh file (.ply, .obj, ...) in the world units of the training data, used instead of a nero-shape run."""
    mesh_resolution: int = 512
    """Marching-cubes resolution when the mesh is extracted from --shape-config (NeRO: 512)."""
    shading_normal_smoothing: int = 150
    """Taubin iterations on a copy of the mesh whose vertex normals shade it (positions, hence silhouettes and
    occlusion, stay the mesh's): removes the few-cell bumps of an extracted surface that scatter glossy highlights.
    Counted in mesh edges, i.e. tuned for the 512 extraction; 0 shades with the mesh's own normals."""

    # Material field
    num_levels: int = 12
    features_per_level: int = 2
    log2_hashmap_size: int = 17
    base_resolution: int = 16
    max_resolution: int = 1024
    hidden_dim: int = 64
    num_layers: int = 2

    # Lights
    environment: Literal["mlp", "equirect"] = "mlp"
    """Distant light: "mlp" (NeRO's direction MLP on the IDE) or "equirect" (a learned texture, world z up)."""
    environment_height: int = 64
    """Rows of the learned equirect environment (columns = 2 x rows)."""
    ide_levels: int = 5
    """IDE degrees 1, 2, 4, ..., 2^(levels - 1) (NeRO: 5, up to degree 16)."""
    light_hidden_dim: int = 64
    light_num_layers: int = 3
    light_exp_max: float = 5.0
    """Cap of the light fields' exp activation (NeRO stage II: exp(5), HDR light)."""
    init_radiance: float = 0.5

    # Monte Carlo
    num_diffuse_samples: int = 32
    """Cosine-weighted directions per pixel (NeRO: 512)."""
    num_specular_samples: int = 32
    """GGX-lobe directions per pixel (NeRO: 256)."""
    ray_offset: float = 1e-3
    """Secondary rays start this far along the normal (normalised units), so they do not hit their own triangle."""

    # Losses
    rgb_loss_mult: float = 1.0
    charbonnier_eps: float = 1e-3
    smoothness_loss_mult: float = 0.005
    smoothness_perturbation: float = 0.05
    """Std of the tangential offset compared by the smoothness term (normalised units; NeRO 0.05)."""
    range_loss_mult: float = 1.0
    range_fraction: float = 2_000 / _NERO_STEPS
    """The roughness/metallic range hinge applies until this fraction of the run (NeRO: 2k of 100k steps)."""
    range_min: float = 0.02
    range_max: float = 0.98
    neutral_light_loss_mult: float = 0.1
    background_light_loss_mult: float = 1.0
    """Weight of the background term: rays that miss the mesh see the distant light itself, so the photo's
    background pixels supervise the environment directly (saturated pixels only from below). It measures the
    light's colour, which shading alone leaves ambiguous with the albedo's. The datamanager's
    ``background_rays_per_batch`` sets how many such rays a batch holds."""


def background_error(radiance: Tensor, pixel: Tensor) -> Tensor:
    """sRGB error (N, 3) of linear environment ``radiance`` against 8-bit background pixels in [0, 1].

    The radiance is sRGB-encoded without the clip at 1, so light above the display range still gets a gradient;
    a saturated pixel (the sun, a lamp) only says "at least this bright" and counts only from below."""
    encoded = linear_to_srgb(radiance, clip=False)
    saturated = pixel >= 254.5 / 255.0
    return torch.where(saturated, F.relu(pixel - encoded), encoded - pixel)


class MaterialField(nn.Module):
    """Albedo (3, linear), perceptual roughness (1) and metallic (1), each in [0, 1], at points of the unit sphere."""

    def __init__(self, config: NeroMaterialModelConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.grid = HashGridEncoding(
            num_levels=config.num_levels,
            features_per_level=config.features_per_level,
            log2_hashmap_size=config.log2_hashmap_size,
            base_resolution=config.base_resolution,
            max_resolution=config.max_resolution,
            device=device,
        )
        self.mlp = make_mlp(self.grid.output_dim + 3, config.hidden_dim, config.num_layers, 5)

    def forward(self, positions: Tensor) -> Dict[str, Tensor]:
        """positions (N, 3) in the normalised frame -> {"albedo" (N, 3), "roughness" (N, 1), "metallic" (N, 1)}."""
        grid_input = ((positions + 1.0) * 0.5).clamp(0.0, 1.0)
        raw = torch.sigmoid(self.mlp(torch.cat([self.grid(grid_input), positions], dim=-1)))
        return {"albedo": raw[:, :3], "roughness": raw[:, 3:4], "metallic": raw[:, 4:5]}


class EquirectEnvironment(nn.Module):
    """A learned equirect environment (H, 2H, 3), stored as log radiance, read bilinearly along directions."""

    def __init__(self, height: int, init_radiance: float, exp_max: float) -> None:
        super().__init__()
        self.log_radiance = nn.Parameter(torch.full((height, 2 * height, 3), math.log(init_radiance)))
        self.exp_max = exp_max

    def forward(self, directions: Tensor) -> Tensor:
        return torch.exp(sample_equirect(self.log_radiance, directions).clamp(max=self.exp_max))


class NeroMaterialModel(Model):
    """Material field + environment / indirect light fields, Monte-Carlo shaded on a ray-traced mesh."""

    config: NeroMaterialModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self.material = MaterialField(self.config, device=self.kwargs.get("device"))
        self.ide = IntegratedDirectionalEncoding(self.config.ide_levels)
        if self.config.environment == "mlp":
            self.environment: nn.Module = DirectionalLightField(
                self.ide.output_dim,
                self.config.light_hidden_dim,
                self.config.light_num_layers,
                exp_max=self.config.light_exp_max,
                init_radiance=self.config.init_radiance,
            )
        else:
            self.environment = EquirectEnvironment(
                self.config.environment_height, self.config.init_radiance, self.config.light_exp_max
            )
        self.indirect = PositionalLightField(
            self.ide.output_dim,
            hidden_dim=self.config.light_hidden_dim,
            num_layers=self.config.light_num_layers,
            exp_max=self.config.light_exp_max,
            init_radiance=self.config.init_radiance,
        )
        self.renderer_rgb = RGBRenderer(background_color="black")  # read by nerfstudio's get_rgba_image
        self.image_metrics = ImageMetrics()
        self.caster: MeshRayCaster | None = None
        self.step = 0
        self.total_steps = 30000

    def set_mesh(self, vertices: Tensor, faces: Tensor) -> None:
        """The fixed geometry, vertices (V, 3) in the normalised frame and faces (F, 3), outward winding."""
        normals = smoothed_vertex_normals(vertices, faces, self.config.shading_normal_smoothing)
        self.caster = MeshRayCaster(vertices, faces, vertex_normals=normals)

    # ------------------------------------------------------------------ training schedule
    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        grid = list(self.material.grid.parameters())
        grid_ids = {id(p) for p in grid}
        fields = [p for p in self.parameters() if id(p) not in grid_ids]
        return {"fields": fields, "grid": grid}

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        return run_length_callbacks(self, training_callback_attributes)

    def set_step(self, step: int) -> None:
        self.step = step

    def range_active(self) -> bool:
        return self.step < int(self.config.range_fraction * self.total_steps)

    # ------------------------------------------------------------------ lights
    def environment_radiance(self, directions: Tensor) -> Tensor:
        """Distant light (..., 3) arriving from unit ``directions`` (..., 3) of the normalised frame."""
        if isinstance(self.environment, EquirectEnvironment):
            return self.environment(directions)
        return self.environment(self.ide(directions, torch.zeros_like(directions[..., :1])))

    def incident_radiance(self, origins: Tensor, normals: Tensor, directions: Tensor) -> Tensor:
        """Radiance (N, S, 3) arriving at surface points (N, 3) from directions (N, S, 3): secondary rays are
        traced against the mesh; a miss reads the environment, a hit the indirect light leaving the hit point
        towards the origin."""
        assert self.caster is not None
        count, samples = directions.shape[:2]
        start = (origins + self.config.ray_offset * normals)[:, None, :].expand(count, samples, 3)
        flat = directions.reshape(-1, 3)
        hits = self.caster.cast(start.reshape(-1, 3), flat)
        hit_index = hits.hit.nonzero().squeeze(-1)
        miss_index = (~hits.hit).nonzero().squeeze(-1)
        radiance = flat.new_zeros(flat.shape)
        if miss_index.numel():
            radiance = radiance.index_copy(0, miss_index, self.environment_radiance(flat[miss_index]))
        if hit_index.numel():
            # Light leaving the hit point back along -d, encoded like NeRO by its mirror direction there.
            outgoing = reflect(-flat[hit_index], hits.normal[hit_index])
            encoding = self.ide(outgoing, torch.zeros_like(outgoing[:, :1]))
            radiance = radiance.index_copy(0, hit_index, self.indirect(hits.position[hit_index], encoding))
        return radiance.reshape(count, samples, 3)

    # ------------------------------------------------------------------ rendering
    def surface_hits(self, origins: Tensor, directions: Tensor) -> Tuple[RayHits, Tensor, Tensor, Tensor]:
        """First hits of unit-direction rays (N, 3) on the mesh: (all hits, indices of the rays that hit,
        their hit points, their shading normals facing the camera)."""
        if self.caster is None:
            raise RuntimeError(
                "nero-material has no mesh: set --pipeline.model.shape-config (a nero-shape run's config.yml) or "
                "--pipeline.model.mesh-path (a mesh in world units); the pipeline loads it at setup"
            )
        primary = self.caster.cast(origins, directions)
        index = primary.hit.nonzero().squeeze(-1)
        view = -directions[index]
        # Interpolated normals can turn away from the camera at silhouettes; the face normal does not (on a
        # closed outward mesh), and an inside hit of an open mesh gets its face normal flipped towards the view.
        face = primary.face_normal[index]
        face = torch.where((face * view).sum(-1, keepdim=True) < 0, -face, face)
        smooth = primary.normal[index]
        normals = torch.where((smooth * view).sum(-1, keepdim=True) > 1e-3, smooth, face)
        return primary, index, primary.position[index], normals

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:  # type: ignore[override]
        if self.training:
            return self._render(ray_bundle, generator=None)
        # A fixed stream in eval: the same view renders the same way, and eval losses do not depend on the RNG.
        generator = torch.Generator(device=ray_bundle.origins.device).manual_seed(0)
        with torch.no_grad():
            return self._render(ray_bundle, generator=generator)

    def _render(self, ray_bundle: RayBundle, generator: torch.Generator | None) -> Dict[str, Tensor]:
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = F.normalize(ray_bundle.directions.reshape(-1, 3), dim=-1)
        num_rays = origins.shape[0]
        primary, index, positions, normals = self.surface_hits(origins, directions)
        view = -directions[index]

        materials = self.material(positions)
        captured: Dict[str, Tensor] = {}

        def radiance(sample_directions: Tensor) -> Tensor:
            light = self.incident_radiance(positions, normals, sample_directions)
            captured["light"] = light
            return light

        diffuse, specular = shade_monte_carlo(
            normals,
            view,
            materials["albedo"],
            materials["roughness"],
            materials["metallic"],
            radiance,
            num_diffuse=self.config.num_diffuse_samples,
            num_specular=self.config.num_specular_samples,
            generator=generator,
        )
        object_rgb = linear_to_srgb(diffuse + specular)

        def scatter(values: Tensor, background: Tensor | None = None) -> Tensor:
            full = background if background is not None else values.new_zeros(num_rays, values.shape[-1])
            return full.index_copy(0, index, values)

        # Pixels that miss the mesh show the learned environment, as the photos show the real one.
        environment = self.environment_radiance(directions)
        background = linear_to_srgb(environment)
        _, box_far, _ = intersect_unit_sphere(origins, directions, radius=math.sqrt(3.0))
        hit = primary.hit[:, None].to(directions.dtype)
        # Distance along the ray to the mesh; misses end at the far side of the sphere around the scene box.
        depth = torch.where(primary.hit, primary.distance, box_far)[:, None]
        normal = scatter(normals)
        outputs: Dict[str, Tensor] = {
            "rgb": scatter(object_rgb, background),
            "accumulation": hit,
            "depth": depth,
            "normal": normal,
            "normals": torch.where(hit > 0, (normal + 1.0) * 0.5, torch.zeros_like(normal)),
            "albedo": scatter(materials["albedo"]),
            "roughness": scatter(materials["roughness"]),
            "metallic": scatter(materials["metallic"]),
            # Linear radiance terms, shown in sRGB like the image.
            "diffuse": scatter(linear_to_srgb(diffuse)),
            "specular": scatter(linear_to_srgb(specular)),
        }
        terms: Dict[str, Tensor] = {
            "hit": primary.hit,
            "object_rgb": object_rgb,
            "background_radiance": environment[~primary.hit],
        }
        if self.config.num_diffuse_samples > 0 and "light" in captured:
            # Cosine-distributed samples: their mean is the diffuse light (irradiance / pi) the prior keeps grey.
            terms["diffuse_light"] = captured["light"][:, : self.config.num_diffuse_samples].mean(1)
        if self.training and self.config.smoothness_loss_mult > 0 and index.numel():
            terms["smoothness"] = self._smoothness(positions, normals, materials)
        if self.range_active():
            terms["range_violation"] = self._range_violation(materials)
        outputs["loss_terms"] = terms  # type: ignore[assignment]
        return outputs

    def _smoothness(self, positions: Tensor, normals: Tensor, materials: Dict[str, Tensor]) -> Tensor:
        """Per-point |change| of the materials under a Gaussian step along the surface (NeRO's reg_mat)."""
        t1, t2 = orthonormal_tangents(normals)
        steps = torch.randn(positions.shape[0], 2, device=positions.device) * self.config.smoothness_perturbation
        moved = self.material(positions + steps[:, :1] * t1 + steps[:, 1:] * t2)
        return sum((moved[name] - materials[name]).abs().sum(-1) for name in ("albedo", "roughness", "metallic"))

    def _range_violation(self, materials: Dict[str, Tensor]) -> Tensor:
        """Hinge (N,) keeping roughness and metallic inside [range_min, range_max] early in the run."""
        low, high = self.config.range_min, self.config.range_max
        values = torch.cat([materials["roughness"], materials["metallic"]], dim=-1)
        return (F.relu(low - values) + F.relu(values - high)).sum(-1)

    # ------------------------------------------------------------------ losses and metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """The training losses on the rays that hit the mesh; in eval mode the same terms on eval rays."""
        terms = outputs["loss_terms"]
        hit = terms["hit"]
        device = outputs["rgb"].device
        image = batch["image"].to(device)[..., :3][hit]
        squared = ((terms["object_rgb"] - image) ** 2).sum(-1)
        charbonnier = torch.sqrt(squared + self.config.charbonnier_eps)
        loss_dict: Dict[str, Tensor] = {
            "rgb_loss": self.config.rgb_loss_mult * (charbonnier.mean() if hit.any() else charbonnier.sum())
        }
        if "smoothness" in terms:
            loss_dict["smoothness_loss"] = self.config.smoothness_loss_mult * terms["smoothness"].mean()
        if "range_violation" in terms and terms["range_violation"].numel():
            loss_dict["range_loss"] = self.config.range_loss_mult * terms["range_violation"].mean()
        if self.config.background_light_loss_mult > 0 and terms["background_radiance"].numel():
            error = background_error(terms["background_radiance"], batch["image"].to(device)[..., :3][~hit])
            charbonnier = torch.sqrt((error**2).sum(-1) + self.config.charbonnier_eps)
            loss_dict["background_light_loss"] = self.config.background_light_loss_mult * charbonnier.mean()
        if "diffuse_light" in terms and terms["diffuse_light"].numel():
            light = terms["diffuse_light"]
            neutral = (light - light.mean(-1, keepdim=True)).abs().sum(-1).mean()
            loss_dict["neutral_light_loss"] = self.config.neutral_light_loss_mult * neutral
        return loss_dict

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        terms = outputs["loss_terms"]
        hit = terms["hit"]
        image = batch["image"].to(outputs["rgb"].device)[..., :3][hit]
        mse = ((terms["object_rgb"].detach() - image) ** 2).mean().clamp(min=1e-10)
        return {"psnr": -10.0 * torch.log10(mse), "hit_fraction": hit.float().mean()}

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR over the pixels on the object (the only ones the model explains); SSIM/LPIPS of the image with
        the background taken from the photo, so they too measure the object alone."""
        device = outputs["rgb"].device
        image = batch["image"].to(device)[..., :3]
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        on_object = outputs["accumulation"] > 0.5
        composite = torch.where(on_object, rgb, image)
        metrics = self.image_metrics(composite, image)
        if bool(on_object.any()):
            mse = ((rgb - image) ** 2)[on_object[..., 0]].mean().clamp(min=1e-10)
            metrics["psnr"] = float(-10.0 * torch.log10(mse))
        metrics["object_fraction"] = float(on_object.float().mean())
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "materials": torch.cat(
                [
                    outputs["albedo"],
                    outputs["roughness"].expand_as(rgb),
                    outputs["metallic"].expand_as(rgb),
                    outputs["diffuse"],
                    outputs["specular"],
                ],
                dim=1,
            ),
            "normals": outputs["normals"],
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images
