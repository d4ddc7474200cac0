"""Hash-grid throughput of the torch path: points per second on the CPU and on CUDA.

    python bench/hash_grid/run.py [--out DIR] [--points N]

Two configurations: the SDF field's default (6 dense levels, 4 features, read with grid_sample) and a
nerfstudio-like hashed grid (16 levels up to 2048, 2^19 entries, 2 features). Two workloads: forward +
backward of the features, and the eikonal pattern (spatial gradient with create_graph, then a backward
through it: the double backward the SDF methods run every step). Imports only the encodings module (no
nerfstudio), so it runs on a bare GPU machine. Writes ``results.json`` (``--out``, default next to this file).
Not run by CI.

The recorded ``results.json`` is one run on an NVIDIA H100 with torch 2.11 (CPU rows on its 16 cores, a quarter
of the points). torch 2.11 has no grid_sample double backward, so every level took the gather path there.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from recon_plugin.components.encodings import (  # noqa: E402
    HashGridEncoding,
    grid_sample_double_backward_supported,
)

CONFIGS = {
    "sdf_field_default_dense": dict(
        num_levels=6, features_per_level=4, log2_hashmap_size=21, base_resolution=16, max_resolution=128
    ),
    "hashed_16_levels": dict(
        num_levels=16, features_per_level=2, log2_hashmap_size=19, base_resolution=16, max_resolution=2048
    ),
}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step(grid: HashGridEncoding, points: torch.Tensor, workload: str) -> None:
    if workload == "forward_backward":
        grid(points).square().sum().backward()
        return
    points = points.detach().requires_grad_(True)
    features = grid(points)
    (spatial,) = torch.autograd.grad(features.sum(), points, create_graph=True)
    (spatial.square().sum() + features.sum()).backward()


def points_per_second(config: dict, device: str, workload: str, count: int, repeats: int) -> float:
    grid = HashGridEncoding(**config, implementation="torch", device=device).to(device)
    for table in grid.tables:
        torch.nn.init.normal_(table, std=0.1)
    points = torch.rand(count, 3, device=device) * 0.9 + 0.05
    for _ in range(2):  # warm-up: allocator, kernels, the double-backward probe
        step(grid, points, workload)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step(grid, points, workload)
    synchronize(device)
    return count * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--points", type=int, default=2**18, help="points per step on CUDA (CPU: a quarter)")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "grid_sample_double_backward": grid_sample_double_backward_supported(),
        "points_per_second": {},
    }
    for name, config in CONFIGS.items():
        for workload in ("forward_backward", "eikonal_double_backward"):
            for device in devices:
                count = args.points if device == "cuda" else args.points // 4
                rate = points_per_second(config, device, workload, count, repeats=10 if device == "cuda" else 3)
                results["points_per_second"][f"{name}/{workload}/{device}"] = round(rate)
                print(f"{name:26s} {workload:24s} {device:5s} {rate:14,.0f} points/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({key: value for key, value in results.items() if key != "points_per_second"}))


if __name__ == "__main__":
    main()
