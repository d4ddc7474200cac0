"""nero-shape benchmark: mesh accuracy against training time, step cost, throughput and memory.

Each run is the real command a user types, ``ns-train nero-shape --data SCENE`` with the method's defaults (eval
steps included), plus only what the bench needs around it: the run length when ``--iterations`` is given, a
checkpoint every ``--curve-every`` steps kept on disk (for the accuracy curve; saving does not change training)
and tensorboard logging instead of the viewer. The final mesh is what ``recon-extract-mesh`` writes (defaults,
512^3), scored by ``recon-eval mesh`` against the scene's exact ``gt_mesh.ply``; the curve's meshes come from
the intermediate checkpoints through the same extraction code at 256^3. Times are wall-clock seconds since the
start of ``ns-train`` (start-up and eval steps included: what a user waits for).

    python bench/nero_shape/run.py [--scene DIR] [--shading split-sum,plain] [--iterations N] [--layout transforms]

Without ``--scene`` the default ``recon-synth glossy`` scene is generated first (10-20 CPU minutes). Results
go to bench/nero_shape/results.json (runs of earlier sessions are kept, each with its machine and command) and
results.png. ``--layout transforms`` trains on the scene's ``transforms.json`` (written by ``recon-synth glossy
--transforms-json``) instead of its GlossySynthetic files: same views, the bounding sphere from ``sparse_pc.ply``;
its runs are recorded as ``<head> (transforms.json)``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import (  # noqa: E402  (bench/common.py, found through the path above)
    BIN,
    bench_run_flags,
    last_json_line,
    load_checkpoint,
    machine_info,
    run_checked,
    run_watched,
    step_timings,
)


def train(data: Path, shading: str, name: str, iterations: int | None, curve_every: int, workdir: Path) -> dict:
    """``ns-train nero-shape --data DATA``; returns the run folder, wall time, peak memory and checkpoint times."""
    command = [str(BIN / "ns-train"), "nero-shape", "--data", str(data)]
    command += bench_run_flags(workdir, name, curve_every, iterations)
    if shading != "split-sum":
        command += ["--pipeline.model.shading", shading]
    run_dir = workdir / "runs" / name / "nero-shape" / "bench"
    print("  " + " ".join(command), flush=True)
    watched = run_watched(command, workdir / f"train-{name}.log", run_dir / "nerfstudio_models")
    wall, peak_rss, seen = watched["wall_seconds"], watched["peak_rss_bytes"], watched["checkpoint_seconds"]
    return {
        "command": " ".join(["ns-train", *command[1:]]),
        "run_dir": run_dir,
        "wall_seconds": wall,
        "peak_rss_mib": peak_rss / 2**20,
        "checkpoint_seconds": seen,
    }


def score_checkpoints(run_dir: Path, checkpoint_seconds: dict, gt_path: Path, scale: float) -> list[dict]:
    """Chamfer and F-score of the mesh of every checkpoint (256^3, same extraction as recon-extract-mesh)."""
    from recon_plugin.eval.mesh_metrics import evaluate_meshes, load_mesh
    from recon_plugin.export.loading import load_pipeline
    from recon_plugin.export.mesh import extract_world_mesh

    _, pipeline, _, _ = load_pipeline(run_dir / "config.yml")
    gt = load_mesh(gt_path)
    curve = []
    for step in sorted(checkpoint_seconds):
        load_checkpoint(pipeline, run_dir, step)
        mesh = extract_world_mesh(pipeline, resolution=256, vertex_colors=False, log=None)
        metrics = evaluate_meshes(mesh, gt, scale=scale, num_samples=100_000)
        point = {
            "step": step,
            "seconds": round(checkpoint_seconds[step], 1),
            "chamfer_rel": metrics["chamfer_rel"],
            "fscore_1pct": metrics["fscore"]["0.01"],
        }
        curve.append(point)
        chamfer = 100 * point["chamfer_rel"]
        print(f"    step {point['step']}: {point['seconds']:.0f} s, Chamfer {chamfer:.3f} %", flush=True)
    return curve


def final_score(run_dir: Path, gt_path: Path, workdir: Path, name: str) -> dict:
    """``recon-extract-mesh`` with its defaults, then ``recon-eval mesh`` (scale: the scene's bounding radius)."""
    mesh_path = workdir / f"{name}-mesh.ply"
    config = run_dir / "config.yml"
    extract = [str(BIN / "recon-extract-mesh"), "--load-config", str(config), "--output-path", str(mesh_path)]
    run_checked(extract, workdir / f"extract-{name}.log")
    output = run_checked([str(BIN / "recon-eval"), "mesh", str(mesh_path), str(gt_path)], workdir / f"eval-{name}.log")
    metrics = last_json_line(output)
    return {
        "chamfer_rel": metrics["chamfer_rel"],
        "chamfer_world": metrics["chamfer"],
        "accuracy_rel": metrics["accuracy_rel"],
        "completeness_rel": metrics["completeness_rel"],
        "fscore_0.5pct": metrics["fscore"]["0.005"],
        "fscore_1pct": metrics["fscore"]["0.01"],
        "fscore_2pct": metrics["fscore"]["0.02"],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    # Rows of other scenes ("[tag]", bench/nero_material/scenes.py) have one point each: their own table.
    for name, run in ((name, run) for name, run in results["runs"].items() if "[" not in name):
        seconds = [p["seconds"] / 60 for p in run["curve"]]
        # Colour: the head; line: the layout.
        style = {"color": "C1" if name.startswith("split-sum") else "C0", "ls": "--" if "transforms" in name else "-"}
        axes[0].plot(seconds, [100 * p["chamfer_rel"] for p in run["curve"]], marker="o", label=name, **style)
        axes[1].plot(seconds, [p["fscore_1pct"] for p in run["curve"]], marker="o", label=name, **style)
    axes[0].axhline(1.0, color="grey", ls="--", lw=1)
    axes[0].set(xlabel="wall time since ns-train started (min)", ylabel="Chamfer (% of bounding radius)", yscale="log")
    axes[1].set(xlabel="wall time since ns-train started (min)", ylabel="F-score at 1 %", ylim=(0, 1.02))
    axes[0].set_yticks([0.1, 0.2, 0.5, 1, 2, 5])
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].legend()
    fig.suptitle("nero-shape on the default recon-synth glossy scene (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=None, help="a recon-synth glossy scene (default: generate)")
    parser.add_argument("--shading", default="split-sum", help="comma-separated: split-sum, plain")
    parser.add_argument("--iterations", type=int, default=None, help="run length (default: the method's)")
    parser.add_argument("--curve-points", type=int, default=6, help="checkpoints scored along the run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and meshes here (default: a temp dir)")
    parser.add_argument(
        "--layout", choices=("glossy", "transforms"), default="glossy", help="which of the scene's layouts to train on"
    )
    parser.add_argument("--tag", default=None, help="appended to the rows' names in results.json (other scenes)")
    args = parser.parse_args()
    for shading in args.shading.split(","):
        if shading not in ("split-sum", "plain"):
            raise SystemExit(f"--shading: unknown head {shading!r} (split-sum or plain)")

    from recon_plugin.methods.nero.config import nero_shape_config

    iterations = args.iterations or nero_shape_config().max_num_iterations
    curve_every = max(1, iterations // args.curve_points)
    machine = machine_info()
    results_path = HERE / "results.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nero_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        scene = args.scene
        if scene is None:
            scene = workdir / "scene"
            print("nero-shape bench: recon-synth glossy (defaults)", flush=True)
            synth = [str(BIN / "recon-synth"), "glossy", str(scene)]
            run_checked(synth + (["--transforms-json"] if args.layout == "transforms" else []), workdir / "synth.log")
        data = scene / "transforms.json" if args.layout == "transforms" else scene
        if not data.exists():
            raise SystemExit(f"--layout transforms: {data} is missing (recon-synth glossy --transforms-json writes it)")
        info = json.loads((scene / "scene.json").read_text())
        gt_path = scene / "gt_mesh.ply"
        for shading in args.shading.split(","):
            name = shading if args.layout == "glossy" else f"{shading} (transforms.json)"
            name = f"{name} [{args.tag}]" if args.tag else name
            print(f"nero-shape bench: {name}, {iterations} iterations", flush=True)
            run_name = shading if args.layout == "glossy" else f"{shading}-transforms"
            trained = train(data, shading, run_name, args.iterations, curve_every, workdir)
            timings = step_timings(trained["run_dir"])
            curve = score_checkpoints(
                trained["run_dir"], trained["checkpoint_seconds"], gt_path, float(info["bounding_radius"])
            )
            final = final_score(trained["run_dir"], gt_path, workdir, run_name)
            print(f"  final (recon-extract-mesh 512^3): Chamfer {100 * final['chamfer_rel']:.3f} %", flush=True)
            run = {
                "scene": {k: info.get(k) for k in ("shape", "views", "size", "samples_per_pixel", "bounding_radius")}
                | {"layout": args.layout},
                "iterations": iterations,
                "wall_seconds": round(trained["wall_seconds"], 1),
                **{k: round(v, 4) if v is not None else None for k, v in timings.items()},
                "peak_rss_mib": round(trained["peak_rss_mib"]),
                "final": final,
                "curve": curve,
                "train_command": trained["command"],
                "command": "python bench/nero_shape/run.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine,
            }
            # Read just before writing: runs of the other head may be running in another process at the same time.
            results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
            results["runs"][name] = run
            tmp = results_path.with_name(f".results.{os.getpid()}.json.tmp")
            tmp.write_text(json.dumps(results, indent=2))
            os.replace(tmp, results_path)
        plot(results, HERE / "results.png")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        name: run["final"] | {k: run[k] for k in ("wall_seconds", "seconds_per_step", "rays_per_second")}
        for name, run in results["runs"].items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
