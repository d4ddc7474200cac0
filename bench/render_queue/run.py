"""Render-queue benchmark: latency from ``update_camera`` to the first frame of each ladder level, sustained
frames/s per level, and the latency of a camera change that interrupts a large render.

    python bench/render_queue/run.py                       # trains a tiny nerfacto (~1 min on 2 CPU cores) first
    python bench/render_queue/run.py --config RUN/config.yml [--data-dir DATA]

Writes ``results.json`` and ``results.png`` next to this file (``--out`` to change). Runs on CUDA when available
(nerfstudio's ``eval_setup`` choice), else on the CPU. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tiny-scene and training helpers shared with the tests

from conftest_renderer import offline_lpips, train_tiny_nerfacto  # noqa: E402

from recon_plugin.renderer import RenderQueue, ResolutionLadder, look_at  # noqa: E402


def orbit_pose(target: np.ndarray, up: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """Camera on a circle around ``target`` (perpendicular to ``up``), 20 degrees above the horizon."""
    up = up / np.linalg.norm(up)
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    elevation = math.radians(20.0)
    direction = math.cos(elevation) * (math.cos(angle) * e1 + math.sin(angle) * e2) + math.sin(elevation) * up
    return look_at(target + radius * direction, target, up)


def first_frame_latencies(queue: RenderQueue, poses: list[np.ndarray], top_level: int) -> list[dict[int, dict]]:
    """For each pose: update_camera, then wait for every level up to ``top_level``; caller-observed latencies."""
    runs = []
    for pose in poses:
        queue.wait_idle(600)
        while queue.get_frame() is not None:
            pass
        started = time.perf_counter()
        request_id = queue.update_camera_matrix(pose)
        seen: dict[int, dict] = {}
        while top_level not in seen:
            frame = queue.get_frame(timeout=600)
            if frame is None:
                raise RuntimeError("no frame within 600 s")
            if frame.request_id == request_id:
                seen[frame.level] = {
                    "latency_s": time.perf_counter() - started,
                    "render_s": frame.render_seconds,
                }
        runs.append(seen)
    return runs


def sustained_rate(queue: RenderQueue, poses: list[np.ndarray], seconds: float, max_frames: int) -> dict:
    """A camera that moves whenever a frame arrives: frames/s of a one-level ladder over ``seconds``."""
    count, index = 0, 0
    started = time.perf_counter()
    queue.update_camera_matrix(poses[0])
    while count < max_frames and (time.perf_counter() - started < seconds or count == 0):
        frame = queue.get_frame(timeout=600)
        if frame is None:
            raise RuntimeError("no frame within 600 s")
        count += 1
        index += 1
        queue.update_camera_matrix(poses[index % len(poses)])
    elapsed = time.perf_counter() - started
    return {"frames": count, "seconds": elapsed, "fps": count / elapsed}


def cancellation_latency(queue_factory, pose_a: np.ndarray, pose_b: np.ndarray, level_seconds: float) -> dict:
    """Camera change while a large level renders: time to the new request's first (coarsest) frame."""
    with queue_factory() as queue:
        queue.update_camera_matrix(pose_a)
        queue.get_frame(timeout=600)  # level 0 of request A
        time.sleep(min(level_seconds / 3, 5.0))  # inside level 1
        started = time.perf_counter()
        request_id = queue.update_camera_matrix(pose_b)
        while True:
            frame = queue.get_frame(timeout=600)
            if frame is not None and frame.request_id == request_id:
                break
        latency = time.perf_counter() - started
        return {"latency_s": latency, "stale_render_cancelled": queue.stats()["renders_cancelled"] >= 1}


def machine_description(device: str, load_average: tuple[float, ...] | None) -> dict:
    from importlib.metadata import version

    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    description = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_cores_visible": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "nerfstudio": version("nerfstudio"),
        "device": device,
        "load_average_at_start": load_average,  # other jobs on a shared machine slow everything down
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = results["levels"]
    labels = [f"{lv['width']}x{lv['height']}" for lv in levels]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].bar(labels, [lv["first_frame_latency_s"]["median"] for lv in levels], color="#4c72b0")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds (log)")
    axes[0].set_title("update_camera -> first frame of level")
    axes[1].bar(labels, [lv["sustained"]["fps"] for lv in levels], color="#dd8452")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("frames / s (log)")
    axes[1].set_title("sustained frames/s, moving camera")
    for axis in axes:
        axis.tick_params(axis="x", rotation=30)
        axis.grid(axis="y", alpha=0.3)
    machine = results["machine"]
    fig.suptitle(
        f"{results['model']['method']} on {machine.get('gpu', machine['cpu'])} ({machine['device']})", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="config.yml of a trained run (default: train a tiny nerfacto)")
    parser.add_argument("--data-dir", type=Path, help="data folder of --config, if it moved")
    parser.add_argument("--ladder", type=Path, help="ladder JSON (default: 64x36 ... 1280x720)")
    parser.add_argument("--chunk-size", type=int, help="rays per chunk (default: the queue's default)")
    parser.add_argument("--repeats", type=int, default=3, help="extra latency runs over the fast levels")
    parser.add_argument("--fast-level-seconds", type=float, default=8.0, help="levels faster than this get repeats")
    parser.add_argument("--sustained-seconds", type=float, default=6.0, help="time box of each sustained loop")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder for results.json / results.png")
    args = parser.parse_args()
    bench_started = time.perf_counter()
    load_average = os.getloadavg() if hasattr(os, "getloadavg") else None

    work = Path(tempfile.mkdtemp(prefix="recon-bench-"))
    try:
        training_seconds = None
        config, data_dir = args.config, args.data_dir
        if config is None:
            started = time.perf_counter()
            config = train_tiny_nerfacto(work / "run")
            training_seconds = time.perf_counter() - started
            data_dir = work / "run" / "data"
        ladder = ResolutionLadder.from_file(args.ladder) if args.ladder else ResolutionLadder()
        options = {"chunk_size": args.chunk_size} if args.chunk_size else {}
        with offline_lpips():  # nerfacto constructs LPIPS (AlexNet download) even though rendering never uses it
            queue = RenderQueue.from_config(config, data_dir=data_dir, ladder=ladder, **options)
        pipeline = queue.pipeline
        hint = queue.scene_hint()
        target, up = np.array(hint["target"]), np.array(hint["up"])
        radius = float(np.linalg.norm(np.array(hint["initial_c2w"])[:3, 3] - target))
        poses = [orbit_pose(target, up, radius, angle) for angle in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
        model_config = pipeline.model.config
        model = {
            **{k: v for k, v in queue.info.items() if k in ("method", "step")},
            "trained_here": args.config is None,
            "num_proposal_samples_per_ray": list(getattr(model_config, "num_proposal_samples_per_ray", [])),
            "num_nerf_samples_per_ray": getattr(model_config, "num_nerf_samples_per_ray", None),
            "hash_grid_levels": getattr(model_config, "num_levels", None),
            "implementation": getattr(model_config, "implementation", None),
        }
        print(f"bench: {model} on {queue.device}, chunk {queue.chunk_size}", flush=True)

        # 1) one full pass through the ladder, then repeats over the levels that are fast enough
        with queue:
            queue.update_camera_matrix(poses[-1])  # warm-up (first call allocates, imports kernels)
            queue.get_frame(timeout=600)
            queue.wait_idle(60)
        latency_runs = []
        top = len(ladder) - 1
        with RenderQueue(pipeline, ladder=ladder, chunk_size=queue.chunk_size) as full:
            latency_runs += first_frame_latencies(full, [poses[0]], top)
        print(f"bench: full ladder {json.dumps(latency_runs[0])}", flush=True)
        fast = [lv for lv in range(len(ladder)) if latency_runs[0][lv]["render_s"] < args.fast_level_seconds]
        if fast and args.repeats > 0:
            sub_ladder = ResolutionLadder(ladder.levels[: max(fast) + 1], ladder.horizontal_fov_deg)
            with RenderQueue(pipeline, ladder=sub_ladder, chunk_size=queue.chunk_size) as partial:
                latency_runs += first_frame_latencies(partial, poses[1 : 1 + args.repeats], max(fast))

        # 2) sustained frames/s of each level with a moving camera (single renders for the slow levels)
        levels = []
        for index, level in enumerate(ladder):
            samples = [run[index] for run in latency_runs if index in run]
            latencies = [s["latency_s"] for s in samples]
            renders = [s["render_s"] for s in samples]
            if index in fast:
                one_level = ResolutionLadder((level,), ladder.horizontal_fov_deg)
                with RenderQueue(pipeline, ladder=one_level, chunk_size=queue.chunk_size) as single:
                    sustained = sustained_rate(single, poses, args.sustained_seconds, max_frames=500)
                sustained["method"] = f"moving camera, one-level ladder, {args.sustained_seconds:g} s time box"
            else:
                sustained = {"frames": 1, "seconds": renders[0], "fps": 1.0 / renders[0]}
                sustained["method"] = "1 / render time of one frame (level too slow for a timed loop)"
            levels.append(
                {
                    "level": index,
                    "width": level.width,
                    "height": level.height,
                    "rays": level.width * level.height,
                    "first_frame_latency_s": {
                        "median": statistics.median(latencies),
                        "min": min(latencies),
                        "max": max(latencies),
                        "samples": len(latencies),
                    },
                    "render_s_median": statistics.median(renders),
                    "rays_per_s": level.width * level.height / statistics.median(renders),
                    "sustained": sustained,
                }
            )
            print(f"bench: level {index} {json.dumps(levels[-1])}", flush=True)

        # 3) camera change while a larger level renders (the coarsest render of the new camera comes back)
        cancel = None
        if len(ladder) >= 2:
            big = min(2, len(ladder) - 1)
            two = ResolutionLadder((ladder[0], ladder[big]), ladder.horizontal_fov_deg)
            big_seconds = levels[big]["render_s_median"]
            cancel = cancellation_latency(
                lambda: RenderQueue(pipeline, ladder=two, chunk_size=queue.chunk_size), poses[5], poses[9], big_seconds
            )
            cancel["scenario"] = (
                f"update_camera while {two[1].width}x{two[1].height} renders ({big_seconds:.2f} s); "
                f"new camera's {two[0].width}x{two[0].height} frame"
            )
            cancel["one_chunk_s_estimate"] = queue.chunk_size / levels[-1]["rays_per_s"]
            print(f"bench: cancellation {json.dumps(cancel)}", flush=True)

        results = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_description(str(queue.device), load_average),
            "model": model,
            "training_seconds": training_seconds,
            "ladder": ladder.to_dict(),
            "chunk_size": queue.chunk_size,
            "levels": levels,
            "cancellation": cancel,
            "bench_seconds": time.perf_counter() - bench_started,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out / "results.png")
        print(f"bench: wrote {args.out / 'results.json'} and results.png in {results['bench_seconds']:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # nerfacto's training (a subprocess) and its data workers use the spawn start method
    main()
