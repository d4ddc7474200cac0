"""Trainer and pipeline of pbr-fusion: nerfstudio's loop with a separate discriminator step.

Per iteration (when the GAN is active): ``discriminator_steps_per_generator_step`` discriminator steps on fresh
batches of the same step (generator output under no_grad, only the "discriminator" optimiser steps), then one
generator step with the discriminator frozen (every other optimiser steps, with its gradient clipping).
Mixed precision on CUDA uses bfloat16 where supported (no gradient scaling needed), else float16 with one
GradScaler per network (both saved in the checkpoint). Each iteration seeds torch's RNG from (machine seed, step),
so a resumed run continues exactly like the uninterrupted one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Type

import torch
import torchvision.utils as vutils
from nerfstudio.utils.rich_utils import CONSOLE

from recon_plugin.engine import ReconPipeline, ReconPipelineConfig, ReconTrainer, ReconTrainerConfig
from recon_plugin.methods.pbr_fusion.datamanager import PbrDataManager
from recon_plugin.methods.pbr_fusion.model import PbrFusionModel

DISCRIMINATOR_GROUP = "discriminator"


@dataclass
class PbrFusionPipelineConfig(ReconPipelineConfig):
    """Pipeline whose evaluation loops over held-out samples rather than cameras."""

    _target: Type = field(default_factory=lambda: PbrFusionPipeline)


class PbrFusionPipeline(ReconPipeline):
    """ReconPipeline with sample-based evaluation and the discriminator's loss."""

    datamanager: PbrDataManager

    @property
    def pbr_model(self) -> PbrFusionModel:
        return self.model  # type: ignore[return-value]

    def get_discriminator_loss_dict(self, step: int, draw: int) -> Dict[str, torch.Tensor]:
        """The discriminator's loss on batch ``draw`` of ``step`` (generator output detached)."""
        views, batch = self.datamanager.next_train(step, draw=draw)
        with torch.no_grad(), self.pbr_model.generator_statistics_frozen():
            outputs = self.pbr_model.get_outputs(views)
        return self.pbr_model.discriminator_loss(outputs, batch, views)

    def get_eval_image_metrics_and_images(self, step: int):
        self.eval()
        views, batch = self.datamanager.next_eval_image(step)
        outputs = self.model.get_outputs_for_camera(views)
        metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
        metrics["num_rays"] = int(views[0].numel() // 3)
        self.train()
        return metrics, images

    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> Dict[str, float]:
        """Mean (and std) of every per-sample metric over the held-out samples; comparison images saved to
        ``output_path`` when given."""
        self.eval()
        rows: List[Dict[str, float]] = []
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        for index, (views, batch) in enumerate(self.datamanager.iter_eval_samples()):
            outputs = self.model.get_outputs_for_camera(views)
            metrics, images = self.model.get_image_metrics_and_images(outputs, batch)
            rows.append(metrics)
            if output_path is not None:
                for key, image in images.items():
                    vutils.save_image(image.permute(2, 0, 1).cpu(), output_path / f"eval_{key}_{index:04d}.png")
        self.train()
        result: Dict[str, float] = {}
        for key in rows[0]:
            values = torch.tensor([row[key] for row in rows], dtype=torch.float64)
            result[key] = float(values.mean())
            if get_std:
                result[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        return result


class GeneratorGradScaler(torch.amp.GradScaler):
    """The generator's gradient scaler, carrying the discriminator's scaler in its state dict, so nerfstudio's
    checkpoint (which saves one scaler) saves and restores both and an fp16 GAN run resumes with its scales."""

    def __init__(self, device: str, enabled: bool, discriminator: torch.amp.GradScaler) -> None:
        super().__init__(device, enabled=enabled)
        self.discriminator = discriminator

    def state_dict(self) -> Dict:
        state = super().state_dict()
        if state:  # a disabled scaler has no state
            state["discriminator"] = self.discriminator.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict) -> None:
        state = dict(state_dict)
        discriminator = state.pop("discriminator", None)
        super().load_state_dict(state)
        if discriminator:
            self.discriminator.load_state_dict(discriminator)


@dataclass
class PbrFusionTrainerConfig(ReconTrainerConfig):
    """ReconTrainerConfig for pbr-fusion (GAN step, per-step seeding, no 3-D viewer)."""

    _target: Type = field(default_factory=lambda: PbrFusionTrainer)
    max_train_minutes: float | None = None
    """Stop (and save) once training has taken this long, even before --max-num-iterations; the learning-rate
    schedule still follows --max-num-iterations."""


class PbrFusionTrainer(ReconTrainer):
    """nerfstudio's trainer with a discriminator step before each generator step."""

    config: PbrFusionTrainerConfig

    def __init__(self, config: PbrFusionTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        on_cuda = self.device.split(":")[0] == "cuda"
        self.amp_dtype = torch.float16
        if on_cuda and self.mixed_precision and torch.cuda.is_bf16_supported():
            self.amp_dtype = torch.bfloat16
        fp16 = on_cuda and self.mixed_precision and self.amp_dtype == torch.float16
        # Separate scalers: D's and G's losses have unrelated magnitudes (bug 7 of the original).
        self.discriminator_grad_scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.grad_scaler = GeneratorGradScaler("cuda", fp16, self.discriminator_grad_scaler)
        self._train_started: float | None = None

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        if self.config.is_viewer_enabled() or self.config.is_viewer_legacy_enabled():
            fallback = {"viewer+wandb": "wandb", "viewer+tensorboard": "tensorboard"}.get(
                self.config.vis, "tensorboard"
            )
            CONSOLE.print(
                f"[yellow]pbr-fusion maps images to images and has no 3-D scene for the viewer; logging to {fallback}"
            )
            self.config.vis = fallback  # type: ignore[assignment]
        super().setup(test_mode)

    def _autocast(self):
        # CUDA only: on a CPU, float16 autocast ran the GAN steps ~15 % slower than float32, and without a
        # gradient scaler (CUDA-only) the small normal-map gradients can underflow in float16.
        on_cuda = self.device.split(":")[0] == "cuda"
        return torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=self.amp_dtype,
                              enabled=self.mixed_precision and on_cuda)  # fmt: skip

    def generator_groups(self) -> List[str]:
        return [g for g in self.optimizers.parameters if g != DISCRIMINATOR_GROUP]

    def discriminator_iteration(self, step: int, draw: int = 1) -> Dict[str, torch.Tensor]:
        """One discriminator update on batch ``draw`` of ``step``; touches only the discriminator's parameters."""
        pipeline: PbrFusionPipeline = self.pipeline  # type: ignore[assignment]
        self.optimizers.zero_grad_some([DISCRIMINATOR_GROUP])
        with self._autocast():
            loss_dict = pipeline.get_discriminator_loss_dict(step, draw)
        self.discriminator_grad_scaler.scale(loss_dict["discriminator_loss"]).backward()
        self.optimizers.optimizer_scaler_step_some(self.discriminator_grad_scaler, [DISCRIMINATOR_GROUP])
        self.discriminator_grad_scaler.update()
        return {k: v.detach() for k, v in loss_dict.items()}

    def generator_iteration(self, step: int):
        """One generator update; the discriminator is frozen and its optimiser does not step."""
        model: PbrFusionModel = self.pipeline.model  # type: ignore[assignment]
        groups = self.generator_groups()
        self.optimizers.zero_grad_some(groups)
        with model.discriminator_frozen():
            with self._autocast():
                _, loss_dict, metrics_dict = self.pipeline.get_train_loss_dict(step=step)
                loss = functools.reduce(torch.add, loss_dict.values())
            self.grad_scaler.scale(loss).backward()
        self.optimizers.optimizer_scaler_step_some(self.grad_scaler, groups)
        return loss, loss_dict, metrics_dict

    def train_iteration(self, step: int):
        model: PbrFusionModel = self.pipeline.model  # type: ignore[assignment]
        if self._train_started is None:
            self._train_started = time.perf_counter()
        torch.manual_seed(self.config.machine.seed * 1_000_003 + step)
        model.update_to_step(step)
        d_metrics: Dict[str, torch.Tensor] = {}
        if model.gan_active(step) and DISCRIMINATOR_GROUP in self.optimizers.optimizers:
            for draw in range(1, model.config.discriminator_steps_per_generator_step + 1):
                d_metrics = self.discriminator_iteration(step, draw)
        loss, loss_dict, metrics_dict = self.generator_iteration(step)
        metrics_dict.update(d_metrics)
        scale = self.grad_scaler.get_scale()
        self.grad_scaler.update()
        if scale <= self.grad_scaler.get_scale():  # no skipped (overflowing) step: advance the schedules
            self.optimizers.scheduler_step_all(step)
        limit = self.config.max_train_minutes
        if limit is not None and time.perf_counter() - self._train_started > 60.0 * limit:
            CONSOLE.print(f"pbr-fusion: --max-train-minutes {limit} reached after step {step}; stopping")
            self.stop_training = True
        return loss, loss_dict, metrics_dict
