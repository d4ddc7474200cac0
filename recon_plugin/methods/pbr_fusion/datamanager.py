"""A nerfstudio DataManager that yields three-view samples instead of rays.

``next_train(step)`` returns (views (B, 3, 3, R, R), batch of target maps). Which samples a step sees is a pure
function of (seed, step, draw), so a run resumed from a checkpoint sees exactly the batches the uninterrupted
run would have seen. In a multi-process run the rank is part of that key, so processes see different batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Tuple, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.nn import Parameter

from recon_plugin.methods.pbr_fusion.data import PbrDatasetError, PbrSampleSet, scan_dataset, split_materials


@dataclass
class PbrDataManagerConfig(DataManagerConfig):
    """Three-view samples of NeuroPBR's layout (``recon-synth pbr``), split by material."""

    _target: Type = field(default_factory=lambda: PbrDataManager)
    resolution: int = 256
    """Side of the square views and maps the model sees (files are resized to it); the model's output has
    this size too. Must be a multiple of 16 x the encoder stride."""
    render_curriculum: Literal[0, 1, 2] = 0
    """0: clean renders, 1: clean and dirty folders as on disk, 2: dirty renders only."""
    eval_fraction: float = 0.1
    """Fraction of the materials held out for evaluation (at least one)."""
    split_seed: int = 42
    train_batch_size: int = 4
    eval_batch_size: int = 4
    eval_curriculum: Literal[0, 1, 2] | None = None
    """Render curriculum of the held-out samples (default: the training one)."""
    sampling_seed: int = 0


class PbrDataManager(DataManager):
    """Holds the train and eval sample sets in memory and serves batches by step."""

    config: PbrDataManagerConfig
    train_dataset: PbrSampleSet  # type: ignore[assignment]
    eval_dataset: PbrSampleSet  # type: ignore[assignment]

    def __init__(
        self,
        config: PbrDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.local_rank = local_rank  # each process of a multi-process run draws its own batches
        resolution = config.resolution
        if test_mode == "inference":
            # Inference (recon-pbr-infer) needs no data; statistics come from the checkpoint.
            self.train_dataset = PbrSampleSet([], None, resolution)
            self.eval_dataset = PbrSampleSet([], None, resolution)
        else:
            if config.data is None:
                raise PbrDatasetError("no dataset given: pass --data DIR (a folder written by recon-synth pbr)")
            root = Path(config.data)
            records, materials = scan_dataset(root, config.render_curriculum)
            train_materials, eval_materials = split_materials(materials, config.eval_fraction, config.split_seed)
            eval_records = records
            if config.eval_curriculum is not None and config.eval_curriculum != config.render_curriculum:
                eval_records, _ = scan_dataset(root, config.eval_curriculum)
            train_set = set(train_materials)
            eval_set = set(eval_materials)
            self.train_dataset = PbrSampleSet([r for r in records if r.material in train_set], root, resolution)
            self.eval_dataset = PbrSampleSet([r for r in eval_records if r.material in eval_set], root, resolution)
            if not len(self.eval_dataset):
                raise PbrDatasetError(f"{root}: the held-out materials {eval_materials} have no samples")
            CONSOLE.print(
                f"pbr-fusion data: {len(self.train_dataset)} train samples of {len(train_materials)} materials, "
                f"{len(self.eval_dataset)} eval samples of {len(eval_materials)} held-out materials"
            )
        super().__init__()

    # Data is loaded in __init__; nothing to set up per split.
    def setup_train(self) -> None:
        pass

    def setup_eval(self) -> None:
        pass

    def _indices(self, count: int, size: int, step: int, draw: int) -> Tensor:
        key = (self.config.sampling_seed, step, draw, self.local_rank)
        generator = torch.Generator().manual_seed(hash(key) % (2**62))
        return torch.randint(count, (size,), generator=generator)

    def next_train(self, step: int, draw: int = 0) -> Tuple[Tensor, Dict[str, Tensor]]:  # type: ignore[override]
        """Batch of ``step`` (``draw`` > 0: extra batches of the same step, for the discriminator)."""
        self.train_count += 1
        indices = self._indices(len(self.train_dataset), self.config.train_batch_size, step, draw)
        return self.train_dataset.batch(indices, self.device)

    def next_eval(self, step: int) -> Tuple[Tensor, Dict[str, Tensor]]:  # type: ignore[override]
        self.eval_count += 1
        indices = self._indices(len(self.eval_dataset), self.config.eval_batch_size, step, -1)
        return self.eval_dataset.batch(indices, self.device)

    def next_eval_image(self, step: int) -> Tuple[Tensor, Dict[str, Tensor]]:  # type: ignore[override]
        """One held-out sample (cycling with the step)."""
        index = torch.tensor([step % len(self.eval_dataset)])
        return self.eval_dataset.batch(index, self.device)

    def iter_eval_samples(self) -> Iterator[Tuple[Tensor, Dict[str, Tensor]]]:
        """Every held-out sample once, in order (for ns-eval)."""
        for index in range(len(self.eval_dataset)):
            yield self.eval_dataset.batch(torch.tensor([index]), self.device)

    def get_train_rays_per_batch(self) -> int:
        """Pixels per batch (nerfstudio's throughput figure counts rays)."""
        return self.config.train_batch_size * 3 * self.config.resolution**2

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_batch_size * 3 * self.config.resolution**2

    def get_datapath(self) -> Path:
        assert self.config.data is not None
        return Path(self.config.data)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {}
