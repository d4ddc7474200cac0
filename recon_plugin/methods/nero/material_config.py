"""`ns-train nero-material`: method registration (entry point ``nerfstudio.method_configs``)."""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.engine import ReconTrainerConfig, adam_warmup_cosine, recon_trainer_config
from recon_plugin.methods.nero.material import NeroMaterialModelConfig
from recon_plugin.methods.nero.material_data import NeroMaterialDataManagerConfig, NeroMaterialPipelineConfig


def nero_material_config() -> ReconTrainerConfig:
    """The nero-material training configuration (a fresh object each call)."""

    pipeline = NeroMaterialPipelineConfig(
        datamanager=NeroMaterialDataManagerConfig(
            dataparser=NeroDataParserConfig(),
            train_num_rays_per_batch=512,
            eval_num_rays_per_batch=512,
        ),
        model=NeroMaterialModelConfig(),
    )
    # NeRO stage II: linear warm-up over 1k of 100k steps, cosine to 0.05x at the end.
    warmup = 1_000 / 100_000
    optimizers = {"fields": adam_warmup_cosine(1e-3, warmup), "grid": adam_warmup_cosine(1e-2, warmup)}
    return recon_trainer_config("nero-material", pipeline, optimizers, viewer_rays_per_chunk=512)


nero_material_method = MethodSpecification(
    config=nero_material_config(),
    description="NeRO stage II: albedo, roughness, metallic and the environment light on a fixed mesh "
    "(Monte-Carlo Cook-Torrance, ray-traced secondary rays)",
)
