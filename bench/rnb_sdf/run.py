"""rnb-sdf benchmark: accuracy against exact ground truth, training throughput and memory.

Scenes (synthetic, regenerated here): the demo scene (blob, 20 views, 128x128), the same with
per-view albedo scaled by random factors (tests the learned per-view gain), and a larger scene
(40 views, 256x256). Each is trained with the same trainer as ns-train; training time excludes
the periodic evaluations. Results go to bench/rnb_sdf/results.json and results.png.

    python bench/rnb_sdf/run.py [--only demo,jitter,large]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

SCENES = {
    "demo": {"shape": "blob", "views": 20, "size": 128, "jitter": 0.0, "iterations": 1000},
    "jitter": {"shape": "blob", "views": 20, "size": 128, "jitter": 0.3, "iterations": 600},
    "large": {"shape": "blob", "views": 40, "size": 256, "jitter": 0.0, "iterations": 600},
}


def train_and_score(name: str, spec: dict, workdir: Path, eval_every: int = 250) -> dict:
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from recon_plugin.data.synthetic.rnb import write_rnb_scene
    from recon_plugin.eval.mesh_metrics import evaluate_meshes, load_mesh
    from recon_plugin.eval.render_normals import evaluate_rendered_normals
    from recon_plugin.export.mesh import extract_mesh_from_model
    from recon_plugin.methods.rnb_sdf.config import rnb_sdf_config

    scene = workdir / name
    write_rnb_scene(
        scene, shape=spec["shape"], views=spec["views"], size=spec["size"], albedo_scale_jitter=spec["jitter"], log=None
    )
    info = json.loads((scene / "scene.json").read_text())
    config = rnb_sdf_config()
    config.pipeline.datamanager.data = scene
    config.max_num_iterations = spec["iterations"]
    config.vis = "tensorboard"
    config.output_dir = workdir / "runs"
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    outputs = trainer.pipeline.datamanager.train_dataparser_outputs
    transform, scale = outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale)
    gt = load_mesh(scene / "gt_mesh.ply")
    rays_per_step = trainer.pipeline.datamanager.get_train_rays_per_batch()
    curve, train_seconds = [], 0.0
    for step in range(spec["iterations"]):
        start = time.perf_counter()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        train_seconds += time.perf_counter() - start
        last = step == spec["iterations"] - 1
        if (step + 1) % eval_every == 0 or last:
            model.eval()
            mesh = extract_mesh_from_model(
                model, resolution=512 if last else 256, transform=transform, scale=scale, log=None
            )
            model.train()
            metrics = evaluate_meshes(mesh, gt, scale=info["bounding_radius"], num_samples=200000)
            curve.append(
                {
                    "step": step + 1,
                    "train_seconds": round(train_seconds, 1),
                    "chamfer_rel": metrics["chamfer_rel"],
                    "fscore_1pct": metrics["fscore"]["0.01"],
                }
            )
            print(
                f"  [{name}] step {step + 1}: {train_seconds:.0f} s, Chamfer {100 * metrics['chamfer_rel']:.3f}%, "
                f"F@1% {metrics['fscore']['0.01']:.3f}",
                flush=True,
            )
    model.eval()
    normals = evaluate_rendered_normals(trainer.pipeline)
    normals.pop("per_view", None)
    samples_per_ray = model.config.num_render_samples
    result = {
        "scene": {k: info[k] for k in ("shape", "views", "size", "bounding_radius")}
        | {"albedo_jitter": spec["jitter"]},
        "iterations": spec["iterations"],
        "rays_per_step": rays_per_step,
        "train_seconds": round(train_seconds, 1),
        "rays_per_second": round(rays_per_step * spec["iterations"] / train_seconds),
        "gradient_samples_per_second": round(rays_per_step * samples_per_ray * spec["iterations"] / train_seconds),
        "final": {
            "chamfer_rel": metrics["chamfer_rel"],
            "chamfer_world": metrics["chamfer"],
            "fscore_0.5pct": metrics["fscore"]["0.005"],
            "fscore_1pct": metrics["fscore"]["0.01"],
            "fscore_2pct": metrics["fscore"]["0.02"],
            "normal_error_mean_deg": normals["mean_deg"],
            "normal_error_median_deg": normals["median_deg"],
        },
        "curve": curve,
        "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if model.view_log_gain is not None:
        gains = torch.exp(model.view_log_gain - model.view_log_gain.mean(0)).detach().numpy()
        result["learned_gain_range"] = [float(gains.min()), float(gains.max())]
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, result in results["runs"].items():
        seconds = [p["train_seconds"] for p in result["curve"]]
        axes[0].plot(seconds, [100 * p["chamfer_rel"] for p in result["curve"]], "o-", label=name)
        axes[1].plot(seconds, [p["fscore_1pct"] for p in result["curve"]], "o-", label=name)
    axes[0].axhline(0.4, color="grey", ls="--", lw=1)
    axes[0].set(xlabel="training time (s)", ylabel="Chamfer (% of bounding radius)", yscale="log")
    axes[1].axhline(0.95, color="grey", ls="--", lw=1)
    axes[1].set(xlabel="training time (s)", ylabel="F-score at 1%", ylim=(0, 1.02))
    axes[0].legend()
    fig.suptitle(f"rnb-sdf on {results['machine']['cpu_count']} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENES), help="comma-separated subset of " + ",".join(SCENES))
    args = parser.parse_args()
    import os

    results = {
        "command": "python bench/rnb_sdf/run.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            print(f"rnb-sdf bench: {name} {SCENES[name]}", flush=True)
            results["runs"][name] = train_and_score(name, SCENES[name], Path(tmp))
            (HERE / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, HERE / "results.png")
    print(
        json.dumps(
            {
                k: v["final"] | {"train_seconds": v["train_seconds"], "rays_per_second": v["rays_per_second"]}
                for k, v in results["runs"].items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
