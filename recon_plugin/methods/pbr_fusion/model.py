"""pbr-fusion: three views of a planar material -> albedo, roughness, metallic and normal maps (NeuroPBR).

The "ray bundle" of this model is the views tensor (B, 3, 3, H, W) in [0, 1]; the batch carries the target
maps in the prediction ranges (sRGB-encoded albedo, roughness and metallic in [0, 1], unit normals).
Loss: weighted L1 over the maps + (1 - SSIM) on albedo + (1 - cos) on normals, plus an optional GAN term
(hinge or BCE) from a PatchGAN that the trainer updates with its own optimiser (see trainer.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn
from torchmetrics.functional.image import structural_similarity_index_measure

from recon_plugin.components.image_metrics import angular_error_degrees
from recon_plugin.methods.pbr_fusion.networks import (
    EncoderName,
    PatchDiscriminator,
    PbrFusionNetwork,
    mirror_maps,
)

MAPS = ("albedo", "roughness", "metallic", "normal")


@dataclass
class PbrFusionModelConfig(ModelConfig):
    """pbr-fusion model and loss options (presets in config.py)."""

    _target: Type = field(default_factory=lambda: PbrFusionModel)
    enable_collider: bool = False
    encoder: EncoderName = "resnet18"
    encoder_stride: int = 2
    """1 keeps the stem at full resolution (finer skips, 4x the cost), 2 is torchvision's stem."""
    pretrained_weights: Path | None = None
    """A local torchvision ResNet state dict for the encoder (nothing is downloaded)."""
    transformer_dim: int = 256
    transformer_depth: int = 2
    transformer_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    decoder_channels: Tuple[int, int, int, int] = (256, 128, 64, 32)
    """Output channels of the decoder blocks at H/8s, H/4s, H/2s, H/s."""

    l1_weight: float = 1.0
    albedo_weight: float = 1.0
    roughness_weight: float = 1.0
    metallic_weight: float = 1.0
    normal_map_weight: float = 1.0
    """Per-map weights inside the L1 term."""
    ssim_weight: float = 0.3
    normal_weight: float = 0.5
    """Weight of mean(1 - cos) between predicted and target normals."""

    use_gan: bool = True
    gan_loss: Literal["hinge", "bce"] = "hinge"
    gan_weight: float = 0.05
    gan_start_step: int = 500
    discriminator_steps_per_generator_step: int = 1
    discriminator_channels: int = 64
    discriminator_layers: int = 3
    discriminator_conditional: bool = True
    """Show the input views to the discriminator too (pix2pix-style)."""
    mirror_at_test: bool = True
    """At evaluation and inference, also predict the maps of the left/right mirrored views, mirror them back and
    average the two predictions (test-time augmentation, twice the inference cost). Valid because the capture
    convention (key light at the top of the map, cameras at any azimuth) is symmetric under that mirror."""


class PbrFusionModel(Model):
    """Generator (and optional discriminator) of pbr-fusion under nerfstudio's Model API."""

    config: PbrFusionModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        c = self.config
        self.generator = PbrFusionNetwork(
            encoder=c.encoder,
            encoder_stride=c.encoder_stride,
            transformer_dim=c.transformer_dim,
            transformer_depth=c.transformer_depth,
            transformer_heads=c.transformer_heads,
            mlp_ratio=c.mlp_ratio,
            dropout=c.dropout,
            decoder_channels=c.decoder_channels,
            pretrained_weights=c.pretrained_weights,
        )
        self.discriminator: PatchDiscriminator | None = None
        if c.use_gan:
            condition = 9 if c.discriminator_conditional else 0
            self.discriminator = PatchDiscriminator(condition, c.discriminator_channels, c.discriminator_layers)
        metadata = self.kwargs.get("metadata") or {}
        # Baseline statistics of the training materials; saved with the checkpoint for inference-time use.
        self.register_buffer("mean_roughness", torch.tensor(float(metadata.get("mean_roughness", 0.5))))
        self.register_buffer("mean_metallic", torch.tensor(float(metadata.get("mean_metallic", 0.0))))
        self.generator.initialise_material_priors(float(self.mean_roughness), float(self.mean_metallic))
        self.step = 0

    # ------------------------------------------------------------------------------------------ parameters
    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        groups = {"generator": list(self.generator.parameters())}
        if self.discriminator is not None:
            groups["discriminator"] = list(self.discriminator.parameters())
        return groups

    def gan_active(self, step: int) -> bool:
        """Whether the adversarial terms run at ``step``."""
        return self.discriminator is not None and self.config.gan_weight > 0 and step >= self.config.gan_start_step

    @contextlib.contextmanager
    def discriminator_frozen(self) -> Iterator[None]:
        """No gradients reach the discriminator inside (the generator's step)."""
        if self.discriminator is None:
            yield
            return
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(self.discriminator.parameters(), flags, strict=True):
                p.requires_grad_(flag)

    @contextlib.contextmanager
    def generator_statistics_frozen(self) -> Iterator[None]:
        """The generator's BatchNorm layers normalise with batch statistics as in training but leave their
        running statistics alone inside (the discriminator's step runs the generator only to make fakes; those
        batches must not shift the statistics evaluation uses, nor make a run depend on the GAN's draws)."""
        norms = [m for m in self.generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        counts = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None for m in norms]
        for m in norms:
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
        try:
            yield
        finally:
            for m, momentum, count in zip(norms, momenta, counts, strict=True):
                m.momentum = momentum
                if count is not None:
                    m.num_batches_tracked.copy_(count)

    def update_to_step(self, step: int) -> None:
        self.step = step

    # ------------------------------------------------------------------------------------------ forward
    def get_outputs(self, ray_bundle) -> Dict[str, Tensor]:  # type: ignore[override]
        """``ray_bundle`` is the views tensor (B, 3, 3, H, W) in [0, 1]."""
        views = ray_bundle
        outputs = self.generator(views)
        outputs["views"] = views
        return outputs

    def forward(self, ray_bundle) -> Dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(ray_bundle)

    @torch.no_grad()
    def get_outputs_for_camera(self, camera, obb_box=None) -> Dict[str, Tensor]:  # type: ignore[override]
        """Full-resolution prediction for one sample's views (1, 3, 3, H, W) (the 'camera' of the eval loop),
        averaged with the prediction for the mirrored views when ``mirror_at_test``."""
        outputs = self.get_outputs(camera)
        if not self.config.mirror_at_test:
            return outputs
        mirrored = mirror_maps(self.generator(camera.flip(-1)))
        for name in MAPS:
            outputs[name] = 0.5 * (outputs[name] + mirrored[name])
        outputs["normal"] = F.normalize(outputs["normal"], dim=1, eps=1e-6)
        return outputs

    def baseline(self, views: Tensor) -> Dict[str, Tensor]:
        """The floor every figure must beat: mean view as albedo, flat normal, training-set mean roughness and
        metallic."""
        batch, _, _, height, width = views.shape
        flat = torch.zeros(batch, 3, height, width, device=views.device)
        flat[:, 2] = 1.0
        return {
            "albedo": views.mean(1),
            "roughness": self.mean_roughness.expand(batch, 1, height, width).to(views.device),
            "metallic": self.mean_metallic.expand(batch, 1, height, width).to(views.device),
            "normal": flat,
        }

    # ------------------------------------------------------------------------------------------ losses
    @staticmethod
    def check_shapes(outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> None:
        """Prediction and target must have the same size (bug 2 of the original: never compare mismatched sizes)."""
        for name in MAPS:
            if outputs[name].shape != batch[name].shape:
                raise ValueError(
                    f"{name}: prediction {tuple(outputs[name].shape)} != target {tuple(batch[name].shape)}"
                )

    def reconstruction_losses(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """L1 (weighted over maps), 1 - SSIM on albedo, 1 - cos on normals."""
        self.check_shapes(outputs, batch)
        c = self.config
        weights = {
            "albedo": c.albedo_weight,
            "roughness": c.roughness_weight,
            "metallic": c.metallic_weight,
            "normal": c.normal_map_weight,
        }
        l1 = sum(w * (outputs[k].float() - batch[k]).abs().mean() for k, w in weights.items())
        losses = {"l1_loss": c.l1_weight * l1}
        if c.ssim_weight > 0:
            ssim = structural_similarity_index_measure(outputs["albedo"].float(), batch["albedo"], data_range=1.0)
            losses["ssim_loss"] = c.ssim_weight * (1.0 - ssim)  # type: ignore[operator]
        if c.normal_weight > 0:
            cosine = (outputs["normal"].float() * batch["normal"]).sum(1)
            losses["normal_loss"] = c.normal_weight * (1.0 - cosine).mean()
        return losses

    def _discriminate(self, maps: Dict[str, Tensor], views: Tensor) -> Tensor:
        assert self.discriminator is not None
        return self.discriminator(maps, views if self.config.discriminator_conditional else None)

    def generator_adversarial_loss(self, outputs: Dict[str, Tensor]) -> Tensor:
        logits = self._discriminate(outputs, outputs["views"])
        if self.config.gan_loss == "hinge":
            return -logits.mean()
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))

    def discriminator_loss(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], views: Tensor
    ) -> Dict[str, Tensor]:
        """D's loss on real (targets) vs fake (detached predictions) maps of the same views."""
        fake = {k: outputs[k].detach() for k in MAPS}
        real = {k: batch[k] for k in MAPS}
        real_logits = self._discriminate(real, views)
        fake_logits = self._discriminate(fake, views)
        if self.config.gan_loss == "hinge":
            loss = F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
        else:
            loss = F.binary_cross_entropy_with_logits(
                real_logits, torch.ones_like(real_logits)
            ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return {"discriminator_loss": loss, "d_real_logit": real_logits.mean().detach()}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        losses = self.reconstruction_losses(outputs, batch)
        if self.training and self.gan_active(self.step):
            losses["gan_loss"] = self.config.gan_weight * self.generator_adversarial_loss(outputs)
        return losses

    # ------------------------------------------------------------------------------------------ metrics
    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        with torch.no_grad():
            mse = ((outputs["albedo"].float() - batch["albedo"]) ** 2).mean().clamp(min=1e-10)
            error = angular_error_degrees(outputs["normal"].float().movedim(1, -1), batch["normal"].movedim(1, -1))
        return {"albedo_psnr": -10.0 * torch.log10(mse), "normal_error_deg": error.mean()}

    @staticmethod
    def map_metrics(outputs: Dict[str, Tensor], batch: Dict[str, Tensor], prefix: str = "") -> Dict[str, float]:
        """Per-map PSNR / SSIM / MAE / RMSE (normals compared in their (n + 1) / 2 encoding) and the normal
        angular error mean / median / p90 in degrees, for one sample (batch size 1) or averaged over a batch."""
        metrics: Dict[str, float] = {}
        for name in MAPS:
            predicted = outputs[name].float().clamp(-1.0, 1.0)
            target = batch[name].float()
            if name == "normal":
                predicted, target = (predicted + 1.0) * 0.5, (target + 1.0) * 0.5
            predicted = predicted.clamp(0.0, 1.0)
            mse = ((predicted - target) ** 2).mean()
            metrics[f"{prefix}{name}_psnr"] = float(-10.0 * torch.log10(mse.clamp(min=1e-10)))
            metrics[f"{prefix}{name}_ssim"] = float(
                structural_similarity_index_measure(predicted, target, data_range=1.0)
            )
            metrics[f"{prefix}{name}_mae"] = float((predicted - target).abs().mean())
            metrics[f"{prefix}{name}_rmse"] = float(mse.sqrt())
        error = angular_error_degrees(outputs["normal"].float().movedim(1, -1), batch["normal"].float().movedim(1, -1))
        error = error.reshape(-1)
        metrics[f"{prefix}normal_angle_mean"] = float(error.mean())
        metrics[f"{prefix}normal_angle_median"] = float(error.median())
        metrics[f"{prefix}normal_angle_p90"] = float(torch.quantile(error, 0.9))
        return metrics

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Metrics of the prediction and of the baseline (``baseline_*``), and comparison images
        (views | prediction | target per map, (H, W', 3) in [0, 1])."""
        self.check_shapes(outputs, batch)
        views = outputs["views"]
        metrics = self.map_metrics(outputs, batch)
        metrics.update(self.map_metrics(self.baseline(views), batch, prefix="baseline_"))

        def rgb(x: Tensor, name: str) -> Tensor:
            image = x[0].float()
            if name == "normal":
                image = (image + 1.0) * 0.5
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            return image.clamp(0.0, 1.0).permute(1, 2, 0)

        images = {"views": torch.cat([views[0, v].permute(1, 2, 0) for v in range(views.shape[1])], dim=1)}
        for name in MAPS:
            images[name] = torch.cat([rgb(outputs[name], name), rgb(batch[name], name)], dim=1)
        return metrics, images
