"""Trainer and pipeline shared by the plugin's methods.

- :class:`ReconTrainer` makes every learning-rate schedule follow ``--max-num-iterations``;
  :func:`recon_trainer_config` is the trainer skeleton the ray-based methods' configs fill in.
- :class:`ReconPipeline` is nerfstudio's VanillaPipeline, made usable for multi-process training
  on CPUs too: nerfstudio wraps the model with ``DDP(device_ids=[rank])``, which only accepts GPU
  modules; on CPU we wrap with ``device_ids=None`` (gloo backend). It also loads checkpoints
  strictly: nerfstudio falls back to a partial load without a word when the keys differ.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Mapping, Type

import torch
import torch.distributed as dist
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch.nn.parallel import DistributedDataParallel as DDP

from recon_plugin.components.schedules import WarmupCosineSchedulerConfig


def default_device_type() -> str:
    """CUDA when present, so `ns-train METHOD --data DIR` works as typed on a CPU-only machine."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam with torch's fused kernel: about 10x faster steps on CPU for the multi-million-entry grids."""

    fused: bool = True


@dataclass
class ReconTrainerConfig(TrainerConfig):
    """TrainerConfig whose schedules follow the run length."""

    _target: Type = field(default_factory=lambda: ReconTrainer)


def adam_warmup_cosine(lr: float, warmup_fraction: float, min_factor: float = 0.05) -> Dict[str, Any]:
    """An ``optimizers`` entry: fused Adam, linear warm-up over ``warmup_fraction`` of the run, then cosine decay
    to ``min_factor`` times ``lr`` at its end."""
    return {
        "optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": WarmupCosineSchedulerConfig(warmup_fraction=warmup_fraction, min_factor=min_factor),
    }


def recon_trainer_config(
    method_name: str,
    pipeline: VanillaPipelineConfig,
    optimizers: Dict[str, Dict[str, Any]],
    viewer_rays_per_chunk: int,
) -> ReconTrainerConfig:
    """The trainer skeleton of a ray-based method: 3000 steps, an eval batch every 500, an eval image and a save
    (latest checkpoint only) every 1000, full precision, this machine's device, the viewer."""
    return ReconTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=1000000,
        steps_per_save=1000,
        max_num_iterations=3000,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=pipeline,
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=viewer_rays_per_chunk),
        vis="viewer",
    )


class ReconTrainer(Trainer):
    """nerfstudio's trainer; schedulers with ``max_steps=None`` get ``max_num_iterations``."""

    config: ReconTrainerConfig

    def setup_optimizers(self) -> Optimizers:
        for optimizer_config in self.config.optimizers.values():
            scheduler = optimizer_config.get("scheduler")
            if scheduler is not None and getattr(scheduler, "max_steps", 0) is None:
                scheduler.max_steps = self.config.max_num_iterations
        return super().setup_optimizers()


@dataclass
class ReconPipelineConfig(VanillaPipelineConfig):
    """VanillaPipelineConfig with CPU-capable distributed training."""

    _target: Type = field(default_factory=lambda: ReconPipeline)


class ReconPipeline(VanillaPipeline):
    """VanillaPipeline whose DDP wrapping works for CPU (gloo) as well as GPU (nccl) processes."""

    def __init__(
        self,
        config: ReconPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: torch.cuda.amp.GradScaler | None = None,
    ) -> None:
        super().__init__(
            config, device, test_mode=test_mode, world_size=1, local_rank=local_rank, grad_scaler=grad_scaler
        )
        self.world_size = world_size
        if world_size > 1:
            on_gpu = torch.device(device).type == "cuda"
            self._model = typing.cast(
                Model,
                DDP(self._model, device_ids=[local_rank] if on_gpu else None, find_unused_parameters=True),
            )
            dist.barrier()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool | None = None) -> None:
        """Loads a pipeline checkpoint; keys that do not match the model raise a RuntimeError naming them.

        nerfstudio's ``Pipeline.load_state_dict`` retries with ``strict=False`` when the model's keys
        differ, so a checkpoint of another configuration loads as a partly random model without a word.
        Here ``strict`` defaults to True; only an explicit ``strict=False`` (a caller that loads part of a
        model on purpose) keeps nerfstudio's lenient behaviour. nerfstudio itself drops no model keys:
        it strips the ``_model.`` prefix and DDP's ``module.``, and non-persistent buffers are never saved,
        so nothing needs an exception. The error comes after the matching tensors were copied: a pipeline
        that raised is not usable.
        """
        if strict is False:
            super().load_state_dict(state_dict, strict=False)
            return
        model_state = {key[len("_model.") :]: value for key, value in state_dict.items() if key.startswith("_model.")}
        if model_state and all(key.startswith("module.") for key in model_state):  # saved from a DDP-wrapped model
            model_state = {key[len("module.") :]: value for key, value in model_state.items()}
        rest = {key: value for key, value in state_dict.items() if not key.startswith("_model.")}
        incompatible = self.model.load_state_dict(model_state, strict=False)
        missing = [f"_model.{key}" for key in incompatible.missing_keys]
        unexpected = [f"_model.{key}" for key in incompatible.unexpected_keys]
        # The rest of the pipeline (the datamanager) holds no state today; check it all the same.
        for name, child in self.named_children():
            if name == "_model":
                continue
            child_state = {key[len(name) + 1 :]: value for key, value in rest.items() if key.startswith(name + ".")}
            child_incompatible = child.load_state_dict(child_state, strict=False)
            missing += [f"{name}.{key}" for key in child_incompatible.missing_keys]
            unexpected += [f"{name}.{key}" for key in child_incompatible.unexpected_keys]
        children = {name for name, _ in self.named_children()}
        unexpected += [key for key in rest if key.split(".", 1)[0] not in children]
        if missing or unexpected:
            raise RuntimeError(
                f"the checkpoint does not match the {type(self.model).__name__} built from this config "
                f"(was it trained with another configuration?): missing keys {missing}, unexpected keys {unexpected}"
            )
