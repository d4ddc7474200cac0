"""End to end: `ns-train rnb-sdf` as a user types it on a small synthetic scene, then every command a user runs on
the result: recon-extract-mesh, eval_setup reload, ns-export tsdf / poisson / pointcloud, ns-eval, ns-render,
ns-viewer in headless Chromium, recon-render-server, and the render queue.

The run keeps the method's defaults except the run length and the eval/save cadence, shortened so that the eval
batch, the eval image and a checkpoint save all happen inside a short run (each default step, 500/1000/1000,
is past the end of a 300-step test run).
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from browser import CHROMIUM, CHROMIUM_MISSING, headless_chromium
from cli_helpers import BIN, ENV, run

from recon_plugin.data.synthetic.rnb import write_rnb_scene
from recon_plugin.data.transforms import load_dataparser_transform, normalized_to_world
from recon_plugin.eval.mesh_metrics import evaluate_mesh_files, evaluate_meshes, load_mesh, point_to_mesh_distance

ITERATIONS = 250
EVAL_EVERY = 100
SAVE_EVERY = 200
SIZE = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rnb_e2e")
    scene = root / "scene"
    write_rnb_scene(scene, shape="blob", views=12, size=SIZE, mesh_resolution=128, log=None)
    # Run from another directory than the data and outputs: paths must not depend on the cwd.
    workdir = root / "work"
    workdir.mkdir()
    result = run(
        [
            str(BIN / "ns-train"), "rnb-sdf",
            "--data", str(scene),
            "--output-dir", str(root / "runs"),
            "--timestamp", "e2e",
            "--max-num-iterations", str(ITERATIONS),
            # shorter cadence than the defaults so every eval path and a save run inside the short test run
            "--steps-per-eval-batch", str(EVAL_EVERY),
            "--steps-per-eval-image", str(SAVE_EVERY),
            "--steps-per-save", str(SAVE_EVERY),
            # the default viewer stays on; tensorboard is added so the test can read what the eval steps wrote,
            # and the viewer quits when training ends instead of serving until Ctrl-C (what a user would do)
            "--vis", "viewer+tensorboard",
            "--viewer.quit-on-train-completion", "True",
        ],
        cwd=workdir,
    )  # fmt: skip
    config = next((root / "runs").glob("*/rnb-sdf/e2e/config.yml"))
    return {"root": root, "scene": scene, "config": config, "log": result.stdout + result.stderr}


def nerfstudio_cwd(trained: dict) -> tuple[Path, Path]:
    """nerfstudio resolves paths relative to the folder a run was trained from: (that folder, config path in it)."""
    cwd = trained["config"].parents[3]
    return cwd, trained["config"].relative_to(cwd)


def test_training_with_defaults_runs_its_eval_steps_and_saves(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["config"].parent)).Reload()
    tags = set(events.Tags()["scalars"])

    def values(tag: str) -> dict[int, float]:
        assert tag in tags, f"{tag} not written; scalars: {sorted(tags)}"
        return {event.step: event.value for event in events.Scalars(tag)}

    eval_steps = list(range(EVAL_EVERY, ITERATIONS, EVAL_EVERY))
    for tag in ("Eval Loss", "Eval Loss Dict/rnb_loss", "Eval Loss Dict/eikonal_loss", "Eval Loss Dict/mask_loss"):
        written = values(tag)
        assert sorted(written) == eval_steps, (tag, written)
        assert all(math.isfinite(v) for v in written.values()), (tag, written)
    psnr = values("Eval Images Metrics/psnr")
    normal_error = values("Eval Images Metrics/normal_error_deg")
    assert set(psnr) == set(normal_error) == {SAVE_EVERY}
    assert math.isfinite(psnr[SAVE_EVERY]) and normal_error[SAVE_EVERY] < 25.0, (psnr, normal_error)
    checkpoints = sorted((trained["config"].parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in checkpoints] == [f"step-{ITERATIONS - 1:09d}.ckpt"]  # save_only_latest_checkpoint


def test_eval_batch_losses_are_the_training_terms_without_gradients(trained):
    from recon_plugin.export.loading import load_pipeline

    _, pipeline, _, _ = load_pipeline(trained["config"], test_mode="val")
    pipeline.train()
    _, train_losses, _ = pipeline.get_train_loss_dict(step=ITERATIONS)
    _, eval_losses, eval_metrics = pipeline.get_eval_loss_dict(step=ITERATIONS)
    assert set(eval_losses) == set(train_losses) == {"rnb_loss", "eikonal_loss", "mask_loss", "surface_smoothness_loss"}
    for name, value in eval_losses.items():
        assert torch.isfinite(value) and not value.requires_grad, name
    assert float(eval_losses["rnb_loss"]) < 0.2 and "normal_error_deg" in eval_metrics


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


def test_recon_eval_views_finds_the_true_surface_agreeing_with_every_view(trained, tmp_path):
    """recon-eval views measures a mesh against the input views: the exact surface must fill every silhouette
    and carry the input normals; the same surface moved by 5 % of its size must not."""
    gt_path = trained["scene"] / "gt_mesh.ply"

    def views(mesh: Path, output_dir: Path | None = None) -> dict:
        command = [str(BIN / "recon-eval"), "views", str(trained["config"]), "--mesh", str(mesh)]
        command += ["--model-normals", "none"] + (["--output-dir", str(output_dir)] if output_dir else [])
        return json.loads(run(command, cwd=trained["root"] / "work").stdout.strip().splitlines()[-1])

    exact = views(gt_path, tmp_path / "pictures")
    assert exact["silhouette_iou"]["min"] > 0.97, exact["silhouette_iou"]
    assert exact["mesh_normal_error"]["train"]["mean_deg"] < 2.0, exact["mesh_normal_error"]
    assert exact["detached_area_fraction"] == 0.0
    assert len(exact["per_view"]) == 12
    picture = tmp_path / "pictures" / "views" / f"train_{exact['per_view'][0]['name']}.png"
    assert picture.is_file()

    moved = load_mesh(gt_path)
    moved.vertices = moved.vertices + 0.05 * moved.extents.max() * np.array([1.0, 0.0, 0.0])
    moved_path = tmp_path / "moved.ply"
    moved.export(moved_path)
    shifted = views(moved_path)
    assert shifted["silhouette_iou"]["mean"] < exact["silhouette_iou"]["mean"] - 0.03, shifted["silhouette_iou"]
    assert shifted["mesh_normal_error"]["train"]["mean_deg"] > exact["mesh_normal_error"]["train"]["mean_deg"] + 2.0


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
    cwd, relative = nerfstudio_cwd(trained)
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
    cwd, relative = nerfstudio_cwd(trained)
    run(
        [
            str(BIN / "ns-export"),
            "tsdf",
            "--load-config",
            str(relative),
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
    for name, channels in {"rgb": 3, "depth": 1, "accumulation": 1, "normal": 3, "normals": 3, "albedo": 3}.items():
        assert outputs[name].shape == (SIZE, SIZE, channels), name
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


def world_points_near_ground_truth(points_normalised: np.ndarray, trained: dict) -> np.ndarray:
    """Distances (relative to the bounding radius) from points in nerfstudio's frame to the ground-truth surface."""
    transform, scale = load_dataparser_transform(trained["config"].parent / "dataparser_transforms.json")
    points = normalized_to_world(points_normalised, transform, scale)
    radius = json.loads((trained["scene"] / "scene.json").read_text())["bounding_radius"]
    return point_to_mesh_distance(points, load_mesh(trained["scene"] / "gt_mesh.ply")) / radius


def test_ns_export_poisson_gives_a_mesh_of_the_object(trained):
    out = trained["root"] / "poisson"
    cwd, relative = nerfstudio_cwd(trained)
    # --num-points and --texture-method as a CPU user sets them: the defaults (1M points, xatlas NeRF texturing)
    # take tens of minutes on 2 cores.
    run(
        [
            str(BIN / "ns-export"), "poisson",
            "--load-config", str(relative),
            "--output-dir", str(out),
            "--num-points", "30000",
            "--texture-method", "point_cloud",
        ],
        cwd=cwd,
    )  # fmt: skip
    metrics = evaluate_mesh_files(
        out / "poisson_mesh.ply",
        trained["scene"] / "gt_mesh.ply",
        transform=trained["config"].parent / "dataparser_transforms.json",
        num_samples=50000,
    )
    assert metrics["chamfer_rel"] < 0.05, json.dumps(metrics)


def test_ns_export_pointcloud_lies_on_the_object(trained):
    out = trained["root"] / "pointcloud"
    cwd, relative = nerfstudio_cwd(trained)
    run(
        [str(BIN / "ns-export"), "pointcloud", "--load-config", str(relative), "--output-dir", str(out),
         "--num-points", "20000"],
        cwd=cwd,
    )  # fmt: skip
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(out / "point_cloud.ply"))
    points, normals = np.asarray(cloud.points), np.asarray(cloud.normals)
    assert len(points) > 10000 and normals.shape == points.shape
    distance = world_points_near_ground_truth(points, trained)
    assert np.median(distance) < 0.02 and np.mean(distance < 0.05) > 0.95, np.percentile(distance, [50, 90, 99])


def test_ns_eval_writes_finite_metrics_and_images(trained):
    cwd, relative = nerfstudio_cwd(trained)
    output = trained["root"] / "eval" / "metrics.json"
    renders = trained["root"] / "eval" / "renders"
    run(
        [str(BIN / "ns-eval"), "--load-config", str(relative), "--output-path", str(output),
         "--render-output-path", str(renders)],
        cwd=cwd,
    )  # fmt: skip
    results = json.loads(output.read_text())["results"]
    for name in ("psnr", "ssim", "normal_error_deg"):
        assert math.isfinite(results[name]), (name, results)
    assert results["normal_error_deg"] < 25.0 and results["psnr"] > 15.0, results
    assert len(list(renders.glob("*"))) >= 12  # one or more images per eval view


def test_ns_render_interpolate_writes_a_video_of_the_object(trained):
    import mediapy

    cwd, relative = nerfstudio_cwd(trained)
    video = trained["root"] / "render" / "interpolate.mp4"
    run(
        [str(BIN / "ns-render"), "interpolate", "--load-config", str(relative), "--output-path", str(video),
         "--interpolation-steps", "2", "--frame-rate", "8"],
        cwd=cwd,
    )  # fmt: skip
    frames = mediapy.read_video(str(video))
    assert frames.shape[0] >= 12 and frames.shape[1:3] == (SIZE, SIZE)
    centre = frames[:, SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4].mean()
    corners = frames[:, :4, :4].mean()
    assert centre > 40 and corners < 15, (centre, corners)  # the object in the middle, black around it


@pytest.mark.skipif(not CHROMIUM.exists(), reason=CHROMIUM_MISSING)
def test_ns_viewer_shows_the_object_in_a_browser(trained):
    cwd, relative = nerfstudio_cwd(trained)
    port = free_port()
    viewer = subprocess.Popen(
        [str(BIN / "ns-viewer"), "--load-config", str(relative), "--viewer.websocket-port", str(port)],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:  # ns-viewer loads the checkpoint first, then serves
            assert viewer.poll() is None, viewer.stdout.read()[-3000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "ns-viewer did not start serving"
            time.sleep(0.5)
        with headless_chromium(f"http://127.0.0.1:{port}", window=(1000, 700)) as page:
            # nerfstudio's panel reports the size of the last frame it rendered for this browser
            resolution = r"(document.body.innerText.match(/Resolution: (\d+)\D(\d+)px/) || []).slice(1).map(Number)"
            width, height = page.wait_for(resolution, lambda wh: len(wh) == 2 and min(wh) > 0, timeout=180)
            shot = page.screenshot().astype(np.float32)
            canvas = page.evaluate(
                "(() => { const r = document.querySelector('canvas').getBoundingClientRect();"
                " return [r.left, r.top, r.width, r.height]; })()"
            )
    finally:
        viewer.terminate()
        try:
            viewer.wait(30)
        except subprocess.TimeoutExpired:
            viewer.kill()
    left, top, w, h = (int(v) for v in canvas)
    scene = shot[top : top + h, left : left + int(w * 0.6)]  # the 3-D view, left of the control panel
    # The viewer's empty scene is near-black; the rendered object is a lit, coloured surface.
    lit = scene.mean(-1) > 60
    assert lit.mean() > 0.1, (lit.mean(), width, height)


def test_recon_render_server_streams_the_run(trained, tmp_path):
    from recon_plugin.renderer import RenderClient, ResolutionLadder

    ladder = tmp_path / "ladder.json"
    ladder.write_text(json.dumps(ResolutionLadder.from_sizes([(16, 9), (32, 18)]).to_dict()))
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "recon-render-server"), "--load-config", str(trained["config"]), "--port", str(port),
         "--ladder", str(ladder)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "recon-render-server did not start serving"
            time.sleep(0.5)
        with RenderClient(f"ws://127.0.0.1:{port}/ws") as client:
            c2w = np.eye(4)
            c2w[:3, 3] = [0.0, 0.0, 2.5]  # 2.5 units from the centre of the normalised frame, looking down -Z
            request = client.update_camera_matrix(c2w)
            frames = []
            while not frames or frames[-1].level < 1:
                frame = client.get_frame(timeout=120)
                assert frame is not None, "no frame within 120 s"
                frames.append(frame)
    finally:
        server.terminate()
        server.wait(30)
    assert frames[-1].request_id == request and frames[-1].image.shape == (18, 32, 3)
    image = frames[-1].image
    assert image[7:11, 14:18].mean() > 0.05 and image[0, 0].max() < 0.05
