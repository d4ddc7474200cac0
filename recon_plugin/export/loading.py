"""Loading a trained run from its config.yml, wherever the current directory is."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import Pipeline

import recon_plugin  # noqa: F401  (registers the checkpoint safe globals)


def _recorded_data(config: TrainerConfig) -> Path | None:
    datamanager = config.pipeline.datamanager
    data = getattr(datamanager, "data", None) or getattr(getattr(datamanager, "dataparser", None), "data", None)
    return Path(data) if data is not None else None


def load_pipeline(
    config_path: Path | str,
    data: Path | str | None = None,
    test_mode: Literal["test", "val", "inference"] = "inference",
) -> tuple[TrainerConfig, Pipeline, Path, int]:
    """nerfstudio's ``eval_setup`` for a run that may have moved.

    The checkpoint is looked up next to ``config_path`` first (nerfstudio resolves it relative to the
    current directory), and ``data`` replaces the recorded training-data folder, which nerfstudio's
    dataparser reads even for rendering. Errors name the missing file or folder.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path).expanduser().resolve()
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: config file not found (the config.yml written by ns-train)")
    new_data = Path(data).expanduser().resolve() if data is not None else None
    if new_data is not None and not new_data.exists():
        raise FileNotFoundError(f"data folder {new_data} does not exist")

    def update(config: TrainerConfig) -> TrainerConfig:
        beside = config_path.parent / "nerfstudio_models"
        if any(beside.glob("step-*.ckpt")):
            config.relative_model_dir = beside  # an absolute path wins in base_dir / relative_model_dir
        elif not any(config.get_checkpoint_dir().glob("step-*.ckpt")):
            raise FileNotFoundError(
                f"{config_path}: no step-*.ckpt checkpoint in {beside} or {config.get_checkpoint_dir()}"
            )
        if new_data is not None:
            config.data = new_data
            config.pipeline.datamanager.data = new_data
            if hasattr(config.pipeline.datamanager, "dataparser"):
                config.pipeline.datamanager.dataparser.data = new_data
        else:
            recorded = _recorded_data(config)
            if recorded is not None and not recorded.exists():
                raise FileNotFoundError(
                    f"{config_path}: the training data {recorded} does not exist (relative to {Path.cwd()}); "
                    "nerfstudio's dataparser reads it even for rendering: pass the folder's new location"
                )
        return config

    return eval_setup(config_path, test_mode=test_mode, update_config_callback=update)
