"""End to end: `ns-train rnb-sdf` on a small synthetic scene, then every tool a user runs on the result.

One short training run (module fixture) feeds: mesh extraction in world units, the improvement over
the initial sphere, checkpoint reload through nerfstudio's eval_setup under torch's weights_only
default, ns-export tsdf, and the viewer's outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from recon_plugin.data.synthetic.rnb import write_rnb_scene
from recon_plugin.data.transforms import load_dataparser_transform, normalized_to_world
from recon_plugin.eval.mesh_metrics import evaluate_mesh_files, evaluate_meshes, load_mesh

BIN = Path(sys.executable).parent
ITERATIONS = 300
ENV = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"} | {"PYTHONWARNINGS": "ignore"}


def run(command: list[str], cwd: Path | None = None, timeout: int = 1500) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rnb_e2e")
    scene = root / "scene"
    write_rnb_scene(scene, shape="blob", views=12, size=64, mesh_resolution=128, log=None)
    # Run from another directory than the data and outputs: paths must not depend on the cwd.
    workdir = root / "work"
    workdir.mkdir()
    run(
        [
            str(BIN / "ns-train"), "rnb-sdf",
            "--data", str(scene),
            "--output-dir", str(root / "runs"),
            "--timestamp", "e2e",
            "--max-num-iterations", str(ITERATIONS),
            "--vis", "tensorboard",
            "--steps-per-eval-image", "100000",
            "--steps-per-eval-batch", "100000",
            "--pipeline.datamanager.train-num-rays-per-batch", "512",
        ],
        cwd=workdir,
    )  # fmt: skip
    config = next((root / "runs").glob("*/rnb-sdf/e2e/config.yml"))
    return {"root": root, "scene": scene, "config": config}


def test_extracted_mesh_is_in_world_units_and_better_than_the_initial_sphere(trained):
    mesh_path = trained["root"] / "mesh.ply"
    run(
        [
            str(BIN / "recon-extract-mesh"),
            "--load-config",
            str(trained["config"]),
            "--output-path",
            str(mesh_path),
            "--resolution",
            "128",
        ],
        cwd=trained["root"] / "work",
    )
    gt_path = trained["scene"] / "gt_mesh.ply"
    metrics = evaluate_mesh_files(mesh_path, gt_path, num_samples=50000)

    # The network starts as a sphere of radius 0.5 in the normalised frame; map it to world units.
    transform, scale = load_dataparser_transform(trained["config"])
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    sphere.vertices = normalized_to_world(sphere.vertices, transform, scale)
    initial = evaluate_meshes(sphere, load_mesh(gt_path), scale=metrics["scale"], num_samples=50000)

    assert metrics["chamfer_rel"] < 0.25 * initial["chamfer_rel"], (metrics["chamfer_rel"], initial["chamfer_rel"])
    assert metrics["chamfer_rel"] < 0.02
    mesh = load_mesh(mesh_path)
    gt = load_mesh(gt_path)
    assert np.linalg.norm(mesh.centroid - gt.centroid) < 0.05 * metrics["scale"]
    assert mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)  # albedo colours


def test_checkpoint_reloads_through_eval_setup_with_weights_only_default(trained):
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6)
    script = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from nerfstudio.utils.eval_utils import eval_setup\n"
        "config, pipeline, path, step = eval_setup(Path(sys.argv[1]))\n"
        "assert step == int(sys.argv[2]) - 1, step\n"
        "print(type(pipeline.model).__name__)\n"
    )
    # Stock nerfstudio code path, run from the folder nerfstudio expects (its paths are cwd-relative).
    cwd = trained["config"].parents[3]
    relative = trained["config"].relative_to(cwd)
    result = run([sys.executable, "-c", script, str(relative), str(ITERATIONS)], cwd=cwd)
    assert "RnbSDFModel" in result.stdout


def test_numpy_scalars_in_checkpoints_need_and_get_the_allowlist(tmp_path):
    """What nerfstudio's own schedulers leave in a checkpoint (a NumPy float learning rate)."""
    path = tmp_path / "step-000000001.ckpt"
    torch.save({"schedulers": {"fields": {"_last_lr": [np.float64(1e-3)]}}, "step": 1}, path)
    load = f"import torch; torch.load({str(path)!r})"
    bare = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=ENV)
    assert bare.returncode != 0 and "weights_only" in bare.stderr.lower().replace(" ", "_")
    run([sys.executable, "-c", "import recon_plugin; " + load])


def test_ns_export_tsdf_gives_a_mesh_of_the_object(trained):
    out = trained["root"] / "tsdf"
    cwd = trained["config"].parents[3]
    run(
        [
            str(BIN / "ns-export"),
            "tsdf",
            "--load-config",
            str(trained["config"].relative_to(cwd)),
            "--output-dir",
            str(out),
            "--resolution",
            "96",
            "--downscale-factor",
            "1",
            "--texture-method",
            "tsdf",
            "--target-num-faces",
            "None",
        ],
        cwd=cwd,
    )
    mesh_path = next(out.glob("*.ply"))
    metrics = evaluate_mesh_files(
        mesh_path,
        trained["scene"] / "gt_mesh.ply",
        transform=trained["config"].parent / "dataparser_transforms.json",
        num_samples=50000,
    )
    assert metrics["chamfer_rel"] < 0.05, json.dumps(metrics)


def test_viewer_outputs(trained):
    from recon_plugin.export.loading import load_pipeline

    _, pipeline, _, _ = load_pipeline(trained["config"], test_mode="test")
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    with torch.no_grad():
        outputs = pipeline.model.get_outputs_for_camera(camera)
    assert list(outputs)[0] == "rgb"
    for name, channels in {"rgb": 3, "depth": 1, "accumulation": 1, "normal": 3, "albedo": 3}.items():
        assert outputs[name].shape == (64, 64, channels), name
    assert all(value.shape[-1] in (1, 3) for value in outputs.values())
    # Depth is the distance along the ray: on the object it matches the ground-truth hit distance scale.
    accumulation = outputs["accumulation"][..., 0]
    assert float(accumulation.max()) > 0.9 and float(accumulation.min()) < 0.1


def test_render_queue_streams_an_rnb_sdf_run(trained):
    """The progressive render queue loads an rnb-sdf run through eval_setup and serves the ladder in order."""
    from recon_plugin.renderer import RenderQueue, ResolutionLadder

    ladder = ResolutionLadder.from_sizes([(16, 9), (32, 18)])
    with RenderQueue.from_config(trained["config"], ladder=ladder) as queue:
        c2w = np.eye(4)
        c2w[:3, 3] = [0.0, 0.0, 2.5]  # 2.5 units from the centre of the normalised frame, looking down -Z
        request = queue.update_camera_matrix(c2w)
        frames = []
        while len(frames) < 2:
            frame = queue.get_frame(timeout=60.0)
            assert frame is not None, "no frame within 60 s"
            frames.append(frame)
    assert [f.level for f in frames] == [0, 1] and all(f.request_id == request for f in frames)
    assert frames[1].image.shape == (18, 32, 3)
    # The object is in view: the centre of the image is lit, the corners are background.
    image = frames[1].image
    assert image[7:11, 14:18].mean() > 0.05 and image[0, 0].max() < 0.05
