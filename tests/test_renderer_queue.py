"""RenderQueue semantics on an analytic nerfstudio Model (colour = 0.5 + 0.5 * ray direction).

The analytic model (tests/conftest_renderer.py) is a real ``nerfstudio.models.base_model.Model`` subclass, so the
queue exercises exactly the code path it uses for nerfacto or rnb-sdf; only the network evaluation is replaced by
a closed form (and an optional sleep per chunk), which lets every pixel of every frame be checked exactly.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest_renderer import expected_image, make_analytic_model, random_c2w, wait_for

from recon_plugin.renderer import (
    LadderLevel,
    RenderQueue,
    RenderQueueClosed,
    RenderWorkerError,
    ResolutionLadder,
    c2w_to_pose,
    euler_xyz_to_matrix,
    look_at,
    matrix_to_euler_xyz,
    pose_to_c2w,
    validate_c2w,
)

TINY_LADDER = ResolutionLadder.from_sizes([(4, 2), (8, 4), (16, 8)], horizontal_fov_deg=70.0)


# ---------------------------------------------------------------------------------------------------- conventions
def test_euler_xyz_is_extrinsic_scipy_convention_and_round_trips():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    for _ in range(200):
        angles = rng.uniform([-math.pi, -math.pi / 2, -math.pi], [math.pi, math.pi / 2, math.pi])
        matrix = euler_xyz_to_matrix(angles)
        np.testing.assert_allclose(matrix, Rotation.from_euler("xyz", angles).as_matrix(), atol=1e-12)
        np.testing.assert_allclose(euler_xyz_to_matrix(matrix_to_euler_xyz(matrix)), matrix, atol=1e-9)
        c2w = pose_to_c2w(rng.normal(size=3), angles)
        position, rotation = c2w_to_pose(c2w)
        np.testing.assert_allclose(pose_to_c2w(position, rotation), c2w, atol=1e-9)
    # extrinsic X then Z: a camera rotated 90 degrees about X looks down -Z -> +Y; then 90 about Z: +Y -> -X
    forward = -euler_xyz_to_matrix([math.pi / 2, 0.0, math.pi / 2])[:, 2]
    np.testing.assert_allclose(forward, [-1.0, 0.0, 0.0], atol=1e-12)
    locked = euler_xyz_to_matrix([0.3, math.pi / 2, -0.4])  # gimbal lock still round-trips the matrix
    np.testing.assert_allclose(euler_xyz_to_matrix(matrix_to_euler_xyz(locked)), locked, atol=1e-9)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.diag([2.0, 2.0, 2.0, 1.0]), "proper rotation"),
        (np.diag([1.0, 1.0, -1.0, 1.0]), "proper rotation"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.eye(3), "shape"),
        (np.vstack([np.eye(4)[:3], [0.0, 0.0, 1.0, 1.0]]), "last row"),
        ([["a"] * 4] * 4, "array of numbers"),
    ],
)
def test_validate_c2w_rejects_non_rigid_poses(matrix, message):
    with pytest.raises(ValueError, match=message):
        validate_c2w(matrix)


def test_ladder_default_and_files(tmp_path: Path):
    ladder = ResolutionLadder()
    assert [(level.width, level.height) for level in ladder] == [
        (64, 36),
        (128, 72),
        (320, 180),
        (640, 360),
        (1280, 720),
    ]
    assert ladder.horizontal_fov_deg == 60.0
    # the reference's file layout stores the *vertical* fov; 35.98339777135764 at 16:9 is 60 degrees horizontal
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps([{"width": 64, "height": 36, "fov": 35.98339777135764}]))
    assert ResolutionLadder.from_file(reference).horizontal_fov_deg == pytest.approx(60.0, abs=1e-9)
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps(TINY_LADDER.to_dict()))
    assert ResolutionLadder.from_file(ours) == TINY_LADDER
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"width": 64, "height": 36, "fov": 30}, {"width": 128, "height": 72, "fov": 40}]))
    with pytest.raises(ValueError, match="mixed.json.*one horizontal field of view"):
        ResolutionLadder.from_file(mixed)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        ResolutionLadder.from_file(broken)
    with pytest.raises(ValueError, match="width"):
        LadderLevel(0, 10)


# ---------------------------------------------------------------------------------------------------- rendering
def record_publications(queue: RenderQueue) -> list:
    """Every frame the queue publishes, in order: the listener runs in the (single) worker right after each
    publication, before it renders on, so no frame is superseded before it is seen, however fast the renders."""
    reader, published = queue.open_reader(), []
    queue.add_listener(lambda: published.append(reader.get_frame()))
    return published


def test_every_level_renders_the_requested_camera_exactly():
    model = make_analytic_model()
    with RenderQueue(model, ladder=TINY_LADDER, chunk_size=5) as queue:
        published = record_publications(queue)
        c2w = look_at([1.0, -2.0, 0.5], [0.0, 0.2, 0.0])
        request_id = queue.update_camera_matrix(c2w)
        assert wait_for(queue, lambda f: f.level == 2)[-1].key == (request_id, 2)
        frames = list(published)
        assert [f.key for f in frames] == [(request_id, 0), (request_id, 1), (request_id, 2)]
        for frame, level in zip(frames, TINY_LADDER, strict=True):
            assert frame.image.shape == (level.height, level.width, 3) and frame.image.dtype == np.float32
            assert (frame.width, frame.height) == (level.width, level.height)
            assert 0 < frame.render_seconds <= frame.latency_seconds
            np.testing.assert_allclose(frame.image, expected_image(c2w, level.width, level.height, 70.0), atol=2e-6)
            with pytest.raises(ValueError):
                frame.image[0, 0, 0] = 1.0  # frames are shared between readers: read-only

        # Euler form, per-call field of view and aspect (each level keeps its width)
        position, rotation = [0.3, 0.1, 2.0], [0.2, -0.4, 1.0]
        request_id = queue.update_camera(position, rotation, horizontal_fov_deg=40.0, aspect=1.0)
        frames = wait_for(queue, lambda f: f.key == (request_id, 2))
        last = frames[-1]
        assert last.image.shape == (16, 16, 3)
        np.testing.assert_allclose(last.image, expected_image(pose_to_c2w(position, rotation), 16, 16, 40.0), atol=2e-6)
        with pytest.raises(ValueError, match="field of view"):
            queue.update_camera(position, rotation, horizontal_fov_deg=180.0)
        with pytest.raises(ValueError, match="aspect"):
            queue.update_camera(position, rotation, aspect=0.0)


def test_identical_updates_are_deduplicated_and_inputs_are_copied():
    model = make_analytic_model()
    with RenderQueue(model, ladder=TINY_LADDER) as queue:
        c2w = look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0])
        first = queue.update_camera_matrix(c2w)
        assert queue.update_camera_matrix(c2w.copy()) == first
        c2w[:3, 3] = [5.0, 5.0, 5.0]  # the caller reuses its buffer: the queued request must not change
        frames = wait_for(queue, lambda f: f.level == 2)
        np.testing.assert_allclose(
            frames[-1].image, expected_image(look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0]), 16, 8, 70.0), atol=2e-6
        )
        assert queue.update_camera_matrix(c2w) == first + 1
        assert queue.stats()["requests"] == 2


def test_no_way_back_under_concurrent_updates_and_polls():
    """Property test: 3 threads issue thousands of random camera updates (reusing and mutating their pose buffers)
    while 4 threads poll (two through the shared default reader, two through their own readers); 4 workers render
    with random per-chunk delays. Every returned frame must be newer than the previous one of its poller (request id
    never decreases; within a request the level increases), frames published later must have larger keys whoever
    received them, and every frame must show exactly the pose of its request.

    The updaters run until every one of them issued 1000 updates, the pollers received 100 frames and 100 renders
    were cancelled: a slow or busy machine takes longer, it does not check less. Only a generous deadline ends the
    run early, and then the test fails saying which amount was not reached."""
    min_updates, min_frames, min_cancelled, deadline_s = 1000, 100, 100, 240.0
    model = make_analytic_model(chunk_delay_s=0.002, random_delay=True)
    updaters, pollers = 3, 4
    poses: dict[int, np.ndarray] = {}
    issued = [0] * updaters
    returned: list[list] = [[] for _ in range(pollers)]
    timings: list[tuple[float, float, tuple[int, int]]] = []  # (get_frame called, returned, frame key)
    failures: list[BaseException] = []
    stop_updates, done = threading.Event(), threading.Event()

    with RenderQueue(model, ladder=TINY_LADDER, num_workers=4, chunk_size=16) as queue:

        def update(index: int) -> None:
            try:
                rng = np.random.default_rng(index)
                buffer = np.eye(4)
                while not stop_updates.is_set():
                    buffer[:] = random_c2w(rng)
                    poses[queue.update_camera_matrix(buffer)] = buffer.copy()
                    issued[index] += 1
                    buffer[:3, 3] += 100.0  # mutate in place after the call, like the reference's pygame client
                    # paced like a fast interactive client (~1-2 kHz per thread); some pauses let levels finish
                    time.sleep(0.005 if rng.random() < 0.05 else rng.uniform(0.0, 0.001))
            except BaseException as error:  # pragma: no cover - reported below
                failures.append(error)

        def poll(index: int) -> None:
            reader = queue if index < 2 else queue.open_reader()
            try:
                while not done.is_set():
                    called = time.perf_counter()
                    frame = reader.get_frame(timeout=0.01 * (index % 2))
                    if frame is not None:
                        returned[index].append(frame)
                        timings.append((called, time.perf_counter(), frame.key))
            except BaseException as error:  # pragma: no cover - reported below
                failures.append(error)

        def enough() -> bool:
            return (
                min(issued) >= min_updates
                and sum(len(frames) for frames in returned) >= min_frames
                and queue.stats()["renders_cancelled"] >= min_cancelled
            )

        threads = [threading.Thread(target=update, args=(index,)) for index in range(updaters)]
        threads += [threading.Thread(target=poll, args=(index,)) for index in range(pollers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + deadline_s
        while not enough() and not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        stop_updates.set()
        for thread in threads[:updaters]:
            thread.join(60)
        # after the last update, the newest request must complete all levels
        last_id = queue.latest_request_id
        final = wait_for(queue.open_reader(), lambda f: f.key == (last_id, 2), timeout=60)
        done.set()
        for thread in threads[updaters:]:
            thread.join(60)
        stats = queue.stats()

    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads)
    total = sum(len(frames) for frames in returned)
    reached = f"run ended (deadline {deadline_s} s): updates per thread {issued}, frames received {total}, {stats}"
    assert min(issued) >= min_updates, reached
    assert total >= min_frames, reached
    assert stats["renders_cancelled"] >= min_cancelled, reached  # the stream of updates really did cancel renders
    assert last_id == sum(issued) - 1 and len(poses) == sum(issued)  # every update got its own id
    for frames in returned:
        for previous, current in itertools.pairwise(frames):
            assert current.key > previous.key, f"went back in time: {previous.key} then {current.key}"
            assert current.sequence > previous.sequence
    # Across readers: publication order (sequence) is key order, so no reader can receive an older request's
    # frame after a newer request's frame was published, whoever received that one.
    # Implementation-independent form: if a frame G was already in some poller's hands when another poller *called*
    # get_frame, that call must not return anything older than G.
    by_return = sorted(timings, key=lambda t: t[1])
    returned_at = [t[1] for t in by_return]
    newest_so_far = list(itertools.accumulate((t[2] for t in by_return), max))
    for called, _, key in timings:
        position = bisect.bisect_left(returned_at, called)
        if position:
            assert newest_so_far[position - 1] <= key, f"{key} returned after {newest_so_far[position - 1]} was out"
    by_sequence = sorted({f.sequence: f for frames in returned for f in frames}.values(), key=lambda f: f.sequence)
    for previous, current in itertools.pairwise(by_sequence):
        assert current.key > previous.key, f"published out of order: {previous} then {current}"
    for frame in [f for frames in returned for f in frames] + final:
        level = TINY_LADDER[frame.level]
        np.testing.assert_allclose(
            frame.image, expected_image(poses[frame.request_id], level.width, level.height, 70.0), atol=2e-6
        )


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Polls ``condition()`` until it holds (a generous deadline only turns a hang into a failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.005)


def test_camera_change_cancels_a_large_render_within_one_chunk():
    chunk_delay = 0.04
    ladder = ResolutionLadder.from_sizes([(8, 4), (256, 64)])  # level 1 = 128 chunks = ~5 s
    model = make_analytic_model(chunk_delay_s=chunk_delay)
    with RenderQueue(model, ladder=ladder, chunk_size=128) as queue:
        old_pose = look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0])
        new_pose = look_at([3.0, 0.0, 0.0], [0.0, 0.0, 0.0])
        queue.update_camera_matrix(old_pose)
        wait_for(queue, lambda f: f.level == 0)
        wait_until(lambda: queue.stats()["chunks_rendered"] >= 4, what="3 chunks into level 1")
        assert queue.get_frame() is None  # well inside the large level
        issued = time.perf_counter()
        new_id = queue.update_camera_matrix(new_pose)
        chunks_at_update = queue.stats()["chunks_rendered"]  # read after the update: only the in-flight chunk ends
        frames = wait_for(queue, lambda f: f.request_id == new_id)
        latency = time.perf_counter() - issued
        assert frames[-1].key == (new_id, 0) and [f.key for f in frames[:-1]] == []
        old_origin = tuple(old_pose[:3, 3])
        late_old_chunks = [c for c in model.chunk_log if c[0] > issued and np.allclose(c[2], old_origin)]
        # the in-flight chunk may finish; no further chunk of the stale request may start
        assert len(late_old_chunks) <= 1, late_old_chunks
        # at most the stale in-flight chunk, then the single chunk of the new level 0
        assert queue.stats()["chunks_rendered"] - chunks_at_update <= 2
        # rendering the rest of the level would take ~120 chunks; cancelling takes about two, on any machine
        assert latency < 30 * chunk_delay, latency
        assert queue.stats()["renders_cancelled"] == 1


def test_worker_error_reaches_the_caller_and_the_queue_keeps_serving():
    model = make_analytic_model(fail_above_rays=16)  # level 0 (8 rays) works, level 1 (32 rays in a chunk) fails
    ladder = ResolutionLadder.from_sizes([(4, 2), (8, 4)])
    with RenderQueue(model, ladder=ladder, chunk_size=64) as queue:
        request_id = queue.update_camera_matrix(look_at([0.0, -3.0, 0.0], [0.0, 0.0, 0.0]))
        assert queue.wait_idle(60) and queue.stats()["errors"] == 1
        # events in order: level 0 was published before level 1 failed
        assert queue.get_frame().key == (request_id, 0)
        with pytest.raises(RenderWorkerError, match=f"request {request_id} at ladder level 1") as info:
            queue.get_frame()
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "refuses a chunk of 32 rays" in str(info.value.__cause__)
        assert (info.value.request_id, info.value.level) == (request_id, 1)
        assert queue.get_frame() is None  # reported once
        model.config.fail_above_rays = -1
        request_id = queue.update_camera_matrix(np.eye(4))
        assert wait_for(queue, lambda f: f.key == (request_id, 1))[-1].key == (request_id, 1)


def test_a_failure_outside_the_model_call_is_reported_and_the_worker_survives(monkeypatch):
    """A bug after rendering (building or publishing the frame) reaches the caller; the worker keeps serving
    instead of dying silently and leaving every later camera update unrendered."""
    import recon_plugin.renderer.queue as queue_module

    failed = []
    frame_type = queue_module.Frame

    def frame_once_broken(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise TypeError("simulated bug while building the frame")
        return frame_type(*args, **kwargs)

    monkeypatch.setattr(queue_module, "Frame", frame_once_broken)
    ladder = ResolutionLadder.from_sizes([(4, 2)])
    with RenderQueue(make_analytic_model(), ladder=ladder) as queue:
        first = queue.update_camera_matrix(np.eye(4))
        with pytest.raises(RenderWorkerError, match=f"request {first} .*simulated bug") as info:
            wait_for(queue, lambda f: False)
        assert isinstance(info.value.__cause__, TypeError)
        second = queue.update_camera([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
        assert wait_for(queue, lambda f: f.key == (second, 0))[-1].key == (second, 0)


def test_missing_output_is_a_clear_error():
    with RenderQueue(make_analytic_model(), ladder=TINY_LADDER, output_name="normals") as queue:
        queue.update_camera_matrix(np.eye(4))
        with pytest.raises(RenderWorkerError) as info:
            wait_for(queue, lambda f: False, timeout=60)
        assert "no tensor output 'normals'" in str(info.value) and "'rgb'" in str(info.value)


def test_render_lock_is_held_around_each_chunk():
    lock = threading.Lock()
    model = make_analytic_model()
    model.train()  # a pipeline that is still training: rendered in eval mode under the trainer's lock
    with RenderQueue(model, ladder=TINY_LADDER, render_lock=lock) as queue:
        with lock:
            queue.update_camera_matrix(np.eye(4))
            assert queue.get_frame(timeout=0.3) is None  # the trainer holds the lock: no chunk may run
        assert queue.get_frame(timeout=60) is not None
        assert queue.wait_idle(60)
        assert model.training  # mode restored after every chunk


def test_close_cancels_joins_workers_and_rejects_updates():
    model = make_analytic_model(chunk_delay_s=0.05)
    before = {t.name for t in threading.enumerate()}
    queue = RenderQueue(model, ladder=ResolutionLadder.from_sizes([(256, 256)]), chunk_size=64, num_workers=3)
    names = {t.name for t in threading.enumerate()} - before
    assert len(names) == 3 and all("worker" in name for name in names)
    queue.update_camera_matrix(np.eye(4))
    wait_until(lambda: len(model.chunk_log) >= 2, what="the render started")
    started = time.perf_counter()
    queue.close()
    closed = time.perf_counter()
    # 1024 chunks (~51 s) pending: close cancels after the chunk in flight, whatever the machine's speed (a chunk
    # that passed its staleness check just before close() may log its start just after it)
    assert len([c for c in model.chunk_log if c[0] > started]) <= 1
    assert len(model.chunk_log) < 100 and closed - started < 20.0
    assert not names & {t.name for t in threading.enumerate()}
    with pytest.raises(RenderQueueClosed):
        queue.update_camera_matrix(np.eye(4))
    queue.close()  # idempotent
    with pytest.raises(TypeError, match="Pipeline"):
        RenderQueue(object())


def test_readers_are_independent():
    with RenderQueue(make_analytic_model(), ladder=TINY_LADDER) as queue:
        request_id = queue.update_camera_matrix(np.eye(4))
        assert queue.wait_idle(60)
        first, second = queue.open_reader(), queue.open_reader()
        assert first.get_frame().key == second.get_frame().key == (request_id, 2)
        assert first.get_frame() is None and second.get_frame() is None
        assert queue.get_rgb_image().shape == (8, 16, 3)
        assert queue.get_rgb_image() is None
        assert queue.get_frame(timeout=0.05) is None
        # a waiting reader wakes up for the next frame
        result = []
        waiter = threading.Thread(target=lambda: result.append(first.get_frame(timeout=60)))
        waiter.start()
        time.sleep(0.05)
        queue.update_camera([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
        waiter.join(10)
        assert result and result[0] is not None and result[0].request_id == request_id + 1


def test_random_interleaving_smoke_with_one_worker():
    """The single-worker default under bursty updates: every request id that yields frames yields them in order.
    Runs at least 200 updates and until 10 frames were seen (a busy machine takes longer, not fewer frames)."""
    rng = random.Random(3)
    model = make_analytic_model(chunk_delay_s=0.001)
    with RenderQueue(model, ladder=TINY_LADDER, chunk_size=8) as queue:
        keys = []
        updates = 0
        deadline = time.monotonic() + 120
        while (updates < 200 or len(keys) < 10) and time.monotonic() < deadline:
            queue.update_camera([rng.uniform(-1, 1), 0.0, 2.0], [0.0, rng.uniform(-1, 1), 0.0])
            updates += 1
            time.sleep(rng.choice([0.0, 0.0, 0.002, 0.01]))
            frame = queue.get_frame()
            if frame is not None:
                keys.append(frame.key)
        assert len(keys) >= 10, f"{len(keys)} frames in {updates} updates"
        assert keys == sorted(set(keys))
