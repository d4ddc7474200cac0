"""`ns-train rnb-sdf`: method registration (entry point ``nerfstudio.method_configs``)."""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.plugins.types import MethodSpecification

from recon_plugin.components.schedules import WarmupCosineSchedulerConfig
from recon_plugin.data.rnb_dataparser import RnbDataParserConfig
from recon_plugin.data.rnb_dataset import RnbDataset
from recon_plugin.engine import FusedAdamOptimizerConfig, ReconPipelineConfig, ReconTrainerConfig
from recon_plugin.methods.rnb_sdf.model import RnbSDFModelConfig


def default_device_type() -> str:
    """CUDA when present, so `ns-train rnb-sdf --data DIR` works as typed on a CPU-only machine."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def rnb_sdf_config() -> ReconTrainerConfig:
    """The rnb-sdf training configuration (a fresh object each call)."""
    return ReconTrainerConfig(
        method_name="rnb-sdf",
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=1000000,
        steps_per_save=1000,
        max_num_iterations=3000,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=ReconPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                _target=VanillaDataManager[RnbDataset],
                dataparser=RnbDataParserConfig(),
                train_num_rays_per_batch=1024,
                eval_num_rays_per_batch=1024,
            ),
            model=RnbSDFModelConfig(),
        ),
        optimizers={
            "fields": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": WarmupCosineSchedulerConfig(warmup_fraction=0.02, min_factor=0.05),
            },
            "grid": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": WarmupCosineSchedulerConfig(warmup_fraction=0.02, min_factor=0.05),
            },
            "variance": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": WarmupCosineSchedulerConfig(warmup_fraction=0.02, min_factor=0.05),
            },
            "view_gains": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": None,
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=2048),
        vis="viewer",
    )


rnb_sdf_method = MethodSpecification(
    config=rnb_sdf_config(),
    description="RNb-NeuS(2): SDF surface from multi-view normal + reflectance maps (photometric stereo output)",
)
