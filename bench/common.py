"""What every benchmark shares: the machine record, running the user's commands (checked, or watched for memory
and checkpoint times), the flags a bench adds to ``ns-train``, reading a run's logged step cost and loading a
checkpoint into a pipeline.

Bench scripts run as ``python bench/<name>/run.py``; they put this folder on ``sys.path`` and ``import common``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

#: The console scripts of the environment the bench runs in (ns-train, recon-eval, ...).
BIN = Path(sys.executable).parent


def machine_info() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "niceness": os.nice(0),
    }


def run_checked(command: list[str], log_path: Path) -> str:
    """Runs a command, its output teed to ``log_path``; a failure stops the bench with the log's tail."""
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    output = log_path.read_text()
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{output[-4000:]}")
    return output


def last_json_line(output: str) -> dict:
    """The JSON line that ends the output of ``recon-eval`` (its only stdout line)."""
    return json.loads(output.strip().splitlines()[-1])


def bench_run_flags(workdir: Path, name: str, curve_every: int, iterations: int | None) -> list[str]:
    """What a bench adds to the user's ``ns-train`` command: where the run goes (``workdir/runs/name/<method>/
    bench``), tensorboard instead of the viewer, every ``curve_every``-th checkpoint kept, and the run length."""
    flags = ["--output-dir", str(workdir / "runs"), "--experiment-name", name, "--timestamp", "bench"]
    flags += ["--vis", "tensorboard", "--save-only-latest-checkpoint", "False", "--steps-per-save", str(curve_every)]
    return flags + (["--max-num-iterations", str(iterations)] if iterations is not None else [])


def load_checkpoint(pipeline, run_dir: Path, step: int) -> None:
    """Loads ``run_dir``'s checkpoint of ``step`` into ``pipeline`` and puts it in eval mode."""
    import torch

    state = torch.load(run_dir / "nerfstudio_models" / f"step-{step:09d}.ckpt", map_location="cpu")
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.eval()


def run_watched(command: list[str], log_path: Path, checkpoints: Path) -> dict:
    """Runs ``command`` (output to ``log_path``), sampling its memory (children included) and noting when each
    ``checkpoints/step-*.ckpt`` appears; a failure stops the bench with the log's tail."""
    import psutil

    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        watched = psutil.Process(process.pid)
        peak_rss, seen = 0, {}
        while process.poll() is None:
            try:
                rss = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
                peak_rss = max(peak_rss, rss)
            except psutil.NoSuchProcess:
                pass
            # A checkpoint's time is when it first appears: nerfstudio writes it right after that step.
            for path in checkpoints.glob("step-*.ckpt") if checkpoints.is_dir() else []:
                seen.setdefault(path.name, time.time() - start)
            time.sleep(1.0)
    wall = time.time() - start
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}):\n{log_path.read_text()[-4000:]}")
    for path in checkpoints.glob("step-*.ckpt"):
        seen.setdefault(path.name, wall)
    return {
        "wall_seconds": wall,
        "peak_rss_bytes": peak_rss,
        "checkpoint_seconds": {int(name[5:-5]): seconds for name, seconds in seen.items()},
    }


def step_timings(run_dir: Path) -> dict:
    """Seconds per training step and rays/s as nerfstudio logged them (running means, every 10 steps)."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]

    def values(tag: str) -> list[float]:
        return [event.value for event in events.Scalars(tag)] if tag in tags else []

    step_times = values("Train Iter (time)")
    rays = values("Train Rays / Sec")
    # The first logged means include the set-up of caches and the allocator: the median is the steady cost.
    return {
        "seconds_per_step": float(np.median(step_times)) if step_times else None,
        "rays_per_second": float(np.median(rays)) if rays else None,
    }
