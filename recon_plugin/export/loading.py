"""Loading a trained run from its config.yml, wherever the current directory is."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import Pipeline

import recon_plugin  # noqa: F401  (registers the checkpoint safe globals)


def load_pipeline(
    config_path: Path,
    data: Path | None = None,
    test_mode: Literal["test", "val", "inference"] = "inference",
) -> tuple[TrainerConfig, Pipeline, Path, int]:
    """``eval_setup`` with the checkpoint looked up next to ``config_path`` (not relative to the
    current directory, as nerfstudio does) and an optional new location of the training data."""
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: config file not found (the config.yml written by ns-train)")
    checkpoint_dir = (config_path.parent / "nerfstudio_models").resolve()
    if not checkpoint_dir.is_dir() or not any(checkpoint_dir.glob("step-*.ckpt")):
        raise FileNotFoundError(f"{checkpoint_dir}: no step-*.ckpt checkpoint next to {config_path}")

    def update(config: TrainerConfig) -> TrainerConfig:
        config.relative_model_dir = checkpoint_dir  # an absolute path wins in base_dir / relative_model_dir
        if data is not None:
            config.data = data
            config.pipeline.datamanager.data = data
            config.pipeline.datamanager.dataparser.data = data
        return config

    return eval_setup(config_path, test_mode=test_mode, update_config_callback=update)
