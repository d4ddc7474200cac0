"""RenderQueue on a real, stock nerfacto run trained here (ns-train, CPU, torch hash grid, ~40 iterations).

The run is trained once per session (tests/conftest_renderer.py, shared with test_renderer_server.py) on a tiny
scene of coloured spheres written by the test itself.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_renderer import offline_lpips, train_camera, wait_for

from recon_plugin.renderer import DataparserTransform, RenderQueue, ResolutionLadder, look_at


@pytest.fixture(scope="module")
def nerfacto_queue(nerfacto_run: Path):
    """The run loaded through RenderQueue.from_config (eval_setup) from another working directory."""
    with offline_lpips():  # nerfacto builds LPIPS (AlexNet download) in populate_modules; see conftest_renderer
        queue = RenderQueue.from_config(
            nerfacto_run,
            data_dir=nerfacto_run.parents[4] / "data",
            ladder=ResolutionLadder.from_sizes([(16, 9), (32, 18)]),
            chunk_size=256,
        )
    yield queue
    queue.close()


def collect(queue, request_id: int, level: int, timeout: float = 60.0) -> list:
    return wait_for(queue, lambda frame: frame.key == (request_id, level), timeout)


def test_from_config_loads_stock_nerfacto_and_renders_like_nerfstudio(nerfacto_queue, nerfacto_run):
    import torch

    queue = nerfacto_queue
    assert queue.info["method"] == "nerfacto" and queue.info["step"] >= 1
    assert Path(queue.info["checkpoint"]).parent == nerfacto_run.parent / "nerfstudio_models"
    assert queue.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    request_id = queue.update_camera_matrix(look_at([2.0, 1.0, 1.0], queue.scene_hint()["target"]))
    frames = collect(queue, request_id, 1)
    assert [f.key for f in frames] == [(request_id, 0), (request_id, 1)]
    assert [f.image.shape for f in frames] == [(9, 16, 3), (18, 32, 3)]
    assert all(np.isfinite(f.image).all() and 0.0 <= f.image.min() and f.image.max() <= 1.0 for f in frames)

    # A training camera through the queue (our chunk loop) equals nerfstudio's own get_outputs_for_camera.
    pipeline = queue.pipeline
    c2w, fx, width, height, _ = train_camera(pipeline, 0)
    fov = math.degrees(2 * math.atan(0.5 * width / fx))
    with RenderQueue(pipeline, ladder=ResolutionLadder.from_sizes([(width, height)], fov), chunk_size=100) as same:
        request_id = same.update_camera_matrix(c2w)
        ours = collect(same, request_id, 0)[-1].image
    cameras = pipeline.datamanager.train_dataparser_outputs.cameras[0:1].to(pipeline.device)
    with torch.no_grad():
        reference = pipeline.model.get_outputs_for_camera(cameras)["rgb"].clamp(0, 1).cpu().numpy()
    assert ours.shape == reference.shape == (height, width, 3)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert ours.std() > 1e-3  # not a constant image


def test_data_frame_poses_go_through_the_dataparser_transform(nerfacto_queue, nerfacto_run):
    pipeline = nerfacto_queue.pipeline
    c2w_world, fx, width, height, name = train_camera(pipeline, 0)
    data_dir = nerfacto_run.parents[4] / "data"
    frames = json.loads((data_dir / "transforms.json").read_text())["frames"]
    c2w_data = np.array(next(f["transform_matrix"] for f in frames if f["file_path"].endswith(name)))
    saved = json.loads((nerfacto_run.parent / "dataparser_transforms.json").read_text())
    transform = DataparserTransform(np.array(saved["transform"]), saved["scale"])
    np.testing.assert_allclose(transform.to_world(c2w_data), c2w_world, atol=1e-5)  # our math == nerfstudio's
    np.testing.assert_allclose(transform.to_data(c2w_world), c2w_data, atol=1e-5)

    fov = math.degrees(2 * math.atan(0.5 * width / fx))
    ladder = ResolutionLadder.from_sizes([(12, 12)], fov)
    with (
        RenderQueue(pipeline, ladder=ladder, world_frame="data") as in_data,
        RenderQueue(pipeline, ladder=ladder) as in_world,
    ):
        np.testing.assert_allclose(in_data.scene_hint()["initial_c2w"], c2w_data, atol=1e-5)
        from_data = collect(in_data, in_data.update_camera_matrix(c2w_data), 0)[-1].image
        from_world = collect(in_world, in_world.update_camera_matrix(c2w_world), 0)[-1].image
    np.testing.assert_allclose(from_data, from_world, atol=1e-5)


def test_camera_change_cancels_a_large_nerfacto_render_within_one_chunk(nerfacto_queue):
    pipeline = nerfacto_queue.pipeline
    target = nerfacto_queue.scene_hint()["target"]
    ladder = ResolutionLadder.from_sizes([(8, 4), (96, 54)])  # level 1: 81 chunks of 64 rays
    with RenderQueue(pipeline, ladder=ladder, chunk_size=64) as queue:
        first = queue.update_camera_matrix(look_at([2.0, 0.0, 1.0], target))
        full_level_seconds = collect(queue, first, 1)[-1].render_seconds
        second = queue.update_camera_matrix(look_at([2.0, 0.2, 1.0], target))
        collect(queue, second, 0)
        level_started = queue.stats()["chunks_rendered"]
        deadline = time.monotonic() + 120
        while queue.stats()["chunks_rendered"] < level_started + 5:  # inside the large level, whatever the speed
            assert time.monotonic() < deadline, queue.stats()
            time.sleep(0.005)
        assert queue.get_frame() is None
        issued = time.perf_counter()
        third = queue.update_camera_matrix(look_at([2.0, 0.4, 1.0], target))
        chunks_before = queue.stats()["chunks_rendered"]  # read after the update: only the in-flight chunk ends
        frame = collect(queue, third, 0)[-1]
        latency = time.perf_counter() - issued
        chunks_after = queue.stats()["chunks_rendered"]
        assert frame.key == (third, 0)
        # at most the stale request's in-flight chunk, then the single chunk of the new level 0
        assert chunks_after - chunks_before <= 2, (chunks_before, chunks_after)
        # ~2 chunks instead of the ~75 left in the level; the margin absorbs a machine that slows down meanwhile
        assert latency < full_level_seconds / 2, (latency, full_level_seconds)
        assert queue.stats()["renders_cancelled"] == 1


def test_from_config_reports_missing_inputs(nerfacto_run, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        RenderQueue.from_config(tmp_path / "nope" / "config.yml")
    monkeypatch.chdir(tmp_path)  # the run was trained with a relative --data path
    with pytest.raises(FileNotFoundError, match="training data data does not exist.*new location"):
        RenderQueue.from_config(nerfacto_run)
    with pytest.raises(FileNotFoundError, match="data folder .*missing does not exist"):
        RenderQueue.from_config(nerfacto_run, data_dir=tmp_path / "missing")
