"""`ns-train nero-material`: method registration (entry point ``nerfstudio.method_configs``)."""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from recon_plugin.components.schedules import WarmupCosineSchedulerConfig
from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.engine import FusedAdamOptimizerConfig, ReconTrainerConfig
from recon_plugin.methods.nero.material import NeroMaterialModelConfig
from recon_plugin.methods.nero.material_data import NeroMaterialDataManagerConfig, NeroMaterialPipelineConfig
from recon_plugin.methods.rnb_sdf.config import default_device_type


def nero_material_config() -> ReconTrainerConfig:
    """The nero-material training configuration (a fresh object each call)."""

    def schedule() -> WarmupCosineSchedulerConfig:
        # NeRO stage II: linear warm-up over 1k of 100k steps, cosine to 0.05x at the end.
        return WarmupCosineSchedulerConfig(warmup_fraction=1_000 / 100_000, min_factor=0.05)

    return ReconTrainerConfig(
        method_name="nero-material",
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=1000000,
        steps_per_save=1000,
        max_num_iterations=3000,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=NeroMaterialPipelineConfig(
            datamanager=NeroMaterialDataManagerConfig(
                dataparser=NeroDataParserConfig(),
                train_num_rays_per_batch=512,
                eval_num_rays_per_batch=512,
            ),
            model=NeroMaterialModelConfig(),
        ),
        optimizers={
            "fields": {"optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": schedule()},
            "grid": {"optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": schedule()},
        },
        viewer=ViewerConfig(num_rays_per_chunk=512),
        vis="viewer",
    )


nero_material_method = MethodSpecification(
    config=nero_material_config(),
    description="NeRO stage II: albedo, roughness, metallic and the environment light on a fixed mesh "
    "(Monte-Carlo Cook-Torrance, ray-traced secondary rays)",
)
