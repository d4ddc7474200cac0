"""`ns-train nero-shape`: method registration (entry point ``nerfstudio.method_configs``)."""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.plugins.types import MethodSpecification

from recon_plugin.components.schedules import WarmupCosineSchedulerConfig
from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.data.nero_dataset import NeroDataset
from recon_plugin.engine import FusedAdamOptimizerConfig, ReconPipelineConfig, ReconTrainerConfig
from recon_plugin.methods.nero.model import NeroShapeModelConfig
from recon_plugin.methods.rnb_sdf.config import default_device_type


def nero_shape_config() -> ReconTrainerConfig:
    """The nero-shape training configuration (a fresh object each call)."""

    def schedule() -> WarmupCosineSchedulerConfig:
        # NeRO: linear warm-up over 5k of 300k steps, cosine to 0.05x at the end.
        return WarmupCosineSchedulerConfig(warmup_fraction=5_000 / 300_000, min_factor=0.05)

    return ReconTrainerConfig(
        method_name="nero-shape",
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
                _target=VanillaDataManager[NeroDataset],
                dataparser=NeroDataParserConfig(),
                train_num_rays_per_batch=512,
                eval_num_rays_per_batch=512,
            ),
            model=NeroShapeModelConfig(),
        ),
        optimizers={
            "fields": {"optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": schedule()},
            "grid": {"optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": schedule()},
            "variance": {"optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": schedule()},
        },
        viewer=ViewerConfig(num_rays_per_chunk=1024),
        vis="viewer",
    )


nero_shape_method = MethodSpecification(
    config=nero_shape_config(),
    description="NeRO stage I: SDF geometry of glossy objects from photos (split-sum shading, occlusion-aware light)",
)
