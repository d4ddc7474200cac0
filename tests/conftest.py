"""Session fixtures shared by test modules: a tiny `recon-synth glossy` scene and the `ns-train nero-shape` run
on it (nero-shape's end-to-end tests read that run; nero-material's train from it and from the scene), and the tiny
nerfacto run the render queue and server tests load."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import BIN, build_once, run, session_dir
from conftest_renderer import train_tiny_nerfacto

#: The modules that take longest (a minute or more each on 2 cores; `make test` prints the slowest tests), longest
#: first. `make test` runs the suite on two pytest-xdist workers that take whole modules in collection order
#: (--dist loadfile, so module fixtures are built once); starting the long ones first lets the two workers finish
#: together instead of one waiting on a long module handed out last.
LONGEST_MODULES_FIRST = (
    "test_rnb_sdf_e2e.py",
    "test_real_runs_nero.py",
    "test_nero_shape.py",
    "test_real_runs_rnb.py",
    "test_nero_material.py",
    "test_renderer_server.py",
    "test_pbr_fusion.py",
    "test_eval.py",
    "test_synthetic.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Puts the longest modules first; the sort is stable, so tests keep their order within a module."""
    rank = {name: position for position, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_glossy_scene(tmp_path_factory) -> Path:
    """A 6-view, 24 px glossy scene (GlossySynthetic layout, gt_mesh.ply, gt_materials.npz, relight/): tests only
    read it. Written once for all workers of the session."""

    def write(root: Path) -> None:
        run([str(BIN / "recon-synth"), "glossy", str(root / "scene"), "--views", "6", "--size", "24", "--samples", "8",
             "--mesh-resolution", "48"], cwd=root)  # fmt: skip

    return build_once(session_dir(tmp_path_factory) / "glossy_scene", write) / "scene"


@pytest.fixture(scope="session")
def nero_shape_run(tiny_glossy_scene, tmp_path_factory) -> dict:
    """``ns-train nero-shape`` on the tiny scene with its defaults apart from the run length and the cadence; trained
    once for all workers of the session."""
    iterations, eval_every, save_every = 12, 5, 10

    def train(root: Path) -> None:
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

    root = build_once(session_dir(tmp_path_factory) / "nero_shape_e2e", train)
    config = next((root / "runs").glob("*/nero-shape/e2e/config.yml"))
    return {
        "root": root,
        "scene": tiny_glossy_scene,
        "config": config,
        "iterations": iterations,
        "eval_every": eval_every,
    }


@pytest.fixture(scope="session")
def nerfacto_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yml of the tiny stock-nerfacto run (trained once per session for all its workers)."""
    return train_tiny_nerfacto(session_dir(tmp_path_factory) / "renderer_nerfacto")
