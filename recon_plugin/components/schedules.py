"""Learning-rate and training-progress schedules that follow the run's length.

Schedules here return Python floats, never NumPy scalars, so the optimizer and scheduler state in
checkpoints loads under torch's ``weights_only`` unpickler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Protocol, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer, lr_scheduler


class StepScheduled(Protocol):
    """A model whose schedules are fractions of the run: it reads ``total_steps`` and is told each step."""

    total_steps: int

    def set_step(self, step: int) -> None: ...


def run_length_callbacks(
    model: StepScheduled, training_callback_attributes: TrainingCallbackAttributes
) -> List[TrainingCallback]:
    """Sets ``model.total_steps`` to the trainer's ``--max-num-iterations`` and returns the callback that calls
    ``model.set_step(step)`` before every training iteration (a model's ``get_training_callbacks``)."""
    trainer = training_callback_attributes.trainer
    if trainer is not None:
        model.total_steps = int(trainer.config.max_num_iterations)
    return [
        TrainingCallback(
            where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
            update_every_num_iters=1,
            func=model.set_step,
        )
    ]


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_factor: float) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_factor`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return float((step + 1) / warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return float(min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class WarmupCosineSchedulerConfig(SchedulerConfig):
    """Linear warm-up then cosine decay, over ``max_steps`` (the trainer's run length when None)."""

    _target: Type = field(default_factory=lambda: WarmupCosineScheduler)
    warmup_fraction: float = 0.02
    """Fraction of the run spent warming up."""
    min_factor: float = 0.05
    """Final learning rate as a fraction of the initial one."""
    max_steps: int | None = None
    """Length of the schedule; None follows ``--max-num-iterations`` (filled in by ReconTrainer)."""


class WarmupCosineScheduler(Scheduler):
    """Scheduler for :class:`WarmupCosineSchedulerConfig`."""

    config: WarmupCosineSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        if self.config.max_steps is None:
            raise ValueError(
                "WarmupCosineSchedulerConfig.max_steps is None: run through ReconTrainer (the method's trainer), "
                "which sets it from --max-num-iterations, or set it explicitly"
            )
        total = int(self.config.max_steps)
        warmup = int(round(self.config.warmup_fraction * total))
        min_factor = float(self.config.min_factor)
        return lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total, warmup, min_factor))
