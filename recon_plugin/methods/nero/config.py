"""`ns-train nero-shape`: method registration (entry point ``nerfstudio.method_configs``)."""

from __future__ import annotations

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.plugins.types import MethodSpecification

from recon_plugin.components.sdf_model import sdf_optimizers
from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.data.nero_dataset import NeroDataset
from recon_plugin.engine import ReconPipelineConfig, ReconTrainerConfig, recon_trainer_config
from recon_plugin.methods.nero.model import NeroShapeModelConfig


def nero_shape_config() -> ReconTrainerConfig:
    """The nero-shape training configuration (a fresh object each call)."""
    pipeline = ReconPipelineConfig(
        datamanager=VanillaDataManagerConfig(
            _target=VanillaDataManager[NeroDataset],
            dataparser=NeroDataParserConfig(),
            train_num_rays_per_batch=512,
            eval_num_rays_per_batch=512,
        ),
        model=NeroShapeModelConfig(),
    )
    # NeRO: linear warm-up over 5k of 300k steps, cosine to 0.05x at the end.
    optimizers = sdf_optimizers(warmup_fraction=5_000 / 300_000)
    return recon_trainer_config("nero-shape", pipeline, optimizers, viewer_rays_per_chunk=1024)


nero_shape_method = MethodSpecification(
    config=nero_shape_config(),
    description="NeRO stage I: SDF geometry of glossy objects from photos (split-sum shading, occlusion-aware light)",
)
