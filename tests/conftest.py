"""Session fixtures shared by test modules: a tiny `recon-synth glossy` scene and the `ns-train nero-shape` run
on it (nero-shape's end-to-end tests read that run; nero-material's train from it and from the scene)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import BIN, run


@pytest.fixture(scope="session")
def tiny_glossy_scene(tmp_path_factory) -> Path:
    """A 6-view, 24 px glossy scene (GlossySynthetic layout, gt_mesh.ply, gt_materials.npz, relight/): tests only
    read it."""
    root = tmp_path_factory.mktemp("glossy_scene")
    scene = root / "scene"
    run(
        [str(BIN / "recon-synth"), "glossy", str(scene), "--views", "6", "--size", "24", "--samples", "8",
         "--mesh-resolution", "48"],
        cwd=root,
    )  # fmt: skip
    return scene


@pytest.fixture(scope="session")
def nero_shape_run(tiny_glossy_scene, tmp_path_factory) -> dict:
    """``ns-train nero-shape`` on the tiny scene with its defaults apart from the run length and the cadence."""
    root = tmp_path_factory.mktemp("nero_shape_e2e")
    iterations, eval_every, save_every = 12, 5, 10
    run(
        [
            str(BIN / "ns-train"), "nero-shape",
            "--data", str(tiny_glossy_scene),
            "--output-dir", str(root / "runs"),
            "--timestamp", "e2e",
            "--max-num-iterations", str(iterations),
            # The default cadence (eval batch 500, eval image 1000, save 1000) lies past the end of a 12-step
            # run; shortened so that an eval batch, an eval image and a save all happen.
            "--steps-per-eval-batch", str(eval_every),
            "--steps-per-eval-image", str(save_every),
            "--steps-per-save", str(save_every),
            # tensorboard instead of the viewer: evaluation only runs with a logger, and the test reads it.
            "--vis", "tensorboard",
        ],
        cwd=root,
    )  # fmt: skip
    config = next((root / "runs").glob("*/nero-shape/e2e/config.yml"))
    return {
        "root": root,
        "scene": tiny_glossy_scene,
        "config": config,
        "iterations": iterations,
        "eval_every": eval_every,
    }
