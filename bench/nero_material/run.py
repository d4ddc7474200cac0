"""nero-material benchmark: material and relighting accuracy against training time, step cost, ray-caster speed.

Stage II is the command a user types, ``ns-train nero-material --data SCENE --pipeline.model.shape-config
STAGE_I/config.yml`` with the method's defaults (eval steps included), plus only what the bench needs: the run
length when ``--iterations`` is given, a checkpoint every ``--curve-every`` steps kept on disk and tensorboard
logging instead of the viewer. The final figures come from the user's commands on the last checkpoint:
``recon-eval materials`` (albedo after a per-channel scale, roughness and metallic at the ground-truth surface
points) and ``recon-relight --env SCENE/relight/environment.exr`` + ``recon-eval relight`` (PSNR/SSIM on the
held-out views under the second environment). The curve scores every checkpoint the same way through the same
library code. Times are wall-clock seconds from the run's ``config.yml`` (written when training starts) to each
checkpoint file, so an existing run (``--stage-two-run``) is timed the same way as a fresh one.

    python bench/nero_material/run.py --scene DIR --shape-config STAGE_I/config.yml [--iterations N]
    python bench/nero_material/run.py --scene DIR --shape-config STAGE_I/config.yml --stage-two-run RUN_DIR

``--shape-config`` is a nero-shape run on the same scene (``python bench/nero_shape/run.py --workdir W`` keeps
one under ``W/runs/split-sum/nero-shape/bench``); its training time is taken from its files in the same way and
reported with stage II's, against the issue's 60-minute budget for both stages. Results go to
bench/nero_material/results.json (earlier runs kept, each with its machine and command), results.png and
relight.png (truth, ``recon-relight`` render and 4x difference of each held-out view).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402  (bench/common.py, found through the path above)

BIN = common.BIN


def checkpoint_seconds(run_dir: Path) -> dict[int, float]:
    """Seconds from the run's config.yml (written as training starts) to each ``step-*.ckpt``."""
    start = (run_dir / "config.yml").stat().st_mtime
    return {
        int(path.name[5:-5]): path.stat().st_mtime - start
        for path in sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    }


def train_stage_two(scene: Path, shape_config: Path, iterations: int | None, curve_every: int, workdir: Path) -> dict:
    """``ns-train nero-material`` on ``scene`` with the stage-I run; returns the run folder, command, peak memory."""
    command = [str(BIN / "ns-train"), "nero-material", "--data", str(scene), "--pipeline.model.shape-config"]
    command += [str(shape_config), *common.bench_run_flags(workdir, "material", curve_every, iterations)]
    run_dir = workdir / "runs" / "material" / "nero-material" / "bench"
    print("  " + " ".join(command), flush=True)
    watched = common.run_watched(command, workdir / "train-material.log", run_dir / "nerfstudio_models")
    return {
        "command": " ".join(["ns-train", *command[1:]]),
        "run_dir": run_dir,
        "peak_rss_mib": round(watched["peak_rss_bytes"] / 2**20),
    }


def ray_caster_speed(pipeline, num_rays: int = 1 << 20) -> dict:
    """Secondary rays per second of the run's ray caster: random rays leaving surface points, as in shading."""
    import torch
    import torch.nn.functional as F

    caster = pipeline.model.caster
    generator = torch.Generator().manual_seed(0)
    faces = torch.randint(0, caster.num_faces, (num_rays,), generator=generator)
    origins = caster.vertices[caster.faces[faces]].mean(1)
    directions = F.normalize(torch.randn(num_rays, 3, generator=generator), dim=-1)
    normals = caster.vertex_normals[caster.faces[faces]].mean(1)
    directions = torch.where((directions * normals).sum(-1, keepdim=True) < 0, -directions, directions)
    origins = origins + 1e-3 * normals
    caster.cast(origins[:4096], directions[:4096])  # first call builds open3d's BVH
    start = time.perf_counter()
    hits = caster.cast(origins, directions)
    seconds = time.perf_counter() - start
    return {
        "rays": num_rays,
        "seconds": round(seconds, 3),
        "rays_per_second": round(num_rays / seconds),
        "hit_fraction": round(float(hits.hit.float().mean()), 4),
        "faces": caster.num_faces,
        "threads": caster.num_threads,
    }


def score_checkpoints(config: Path, scene: Path, seconds: dict[int, float], workdir: Path) -> tuple[list, dict]:
    """Material errors and relighting PSNR/SSIM of every checkpoint; also the ray caster's speed."""
    import torch

    from recon_plugin.components.environment import read_environment
    from recon_plugin.eval.material_metrics import (
        evaluate_relight_dirs,
        material_errors_of_pipeline,
        read_ground_truth_materials,
    )
    from recon_plugin.export.loading import load_pipeline
    from recon_plugin.export.relight import relight_pipeline_views

    _, pipeline, _, _ = load_pipeline(config)
    truth = read_ground_truth_materials(scene)
    environment = read_environment(scene / "relight" / "environment.exr")
    curve = []
    for step in sorted(seconds):
        common.load_checkpoint(pipeline, config.parent, step)
        materials = material_errors_of_pipeline(pipeline, truth)
        relit_dir = workdir / f"relit-{step}"
        relight_start = time.perf_counter()
        with torch.no_grad():
            relight_pipeline_views(pipeline, environment, relit_dir, log=None)
        relight_seconds = time.perf_counter() - relight_start
        relit = evaluate_relight_dirs(relit_dir, scene)
        point = {
            "step": step,
            "seconds": round(seconds[step], 1),
            **{k: materials[k] for k in ("albedo_mae_after_scale", "roughness_mae", "metallic_accuracy")},
            **{k: relit[k] for k in ("psnr_object", "psnr_image", "ssim")},
            "relight_seconds": round(relight_seconds, 1),
        }
        curve.append(point)
        print(
            f"    step {step}: {point['seconds']:.0f} s, albedo {point['albedo_mae_after_scale']:.3f}, "
            f"roughness {point['roughness_mae']:.3f}, metallic {100 * point['metallic_accuracy']:.1f} %, "
            f"relight {point['psnr_object']:.2f} dB (object) / {point['psnr_image']:.2f} dB",
            flush=True,
        )
    return curve, ray_caster_speed(pipeline)


def final_score(config: Path, scene: Path, workdir: Path) -> dict:
    """The user's commands on the run's last checkpoint: ``recon-eval materials``, ``recon-relight``,
    ``recon-eval relight``."""
    run = common.run_checked
    materials = run([str(BIN / "recon-eval"), "materials", str(config), str(scene)], workdir / "eval-materials.log")
    relit_dir = workdir / "relit"
    relight = [str(BIN / "recon-relight"), "--load-config", str(config), "--env"]
    relight += [str(scene / "relight" / "environment.exr"), "--output-dir", str(relit_dir)]
    start = time.time()
    run(relight, workdir / "relight.log")
    relight_seconds = time.time() - start
    relit = run([str(BIN / "recon-eval"), "relight", str(relit_dir), str(scene)], workdir / "eval-relight.log")
    materials, relit = common.last_json_line(materials), common.last_json_line(relit)
    return {
        **{k: materials[k] for k in ("albedo_mae_after_scale", "roughness_mae", "metallic_accuracy", "metallic_mae")},
        **{k: relit[k] for k in ("psnr_object", "psnr_image", "ssim") if k in relit},
        **({"lpips": relit["lpips"]} if relit.get("lpips") is not None else {}),
        "recon_relight_seconds": round(relight_seconds, 1),
    }


def relight_montage(relit_dir: Path, scene: Path, path: Path) -> None:
    """A picture of the final relighting: per held-out view the truth under the second environment (top row), the
    ``recon-relight`` render (middle) and 4x their absolute difference (bottom)."""
    import numpy as np

    from recon_plugin.data.image_io import read_image, write_png

    columns = []
    for truth_path in sorted((scene / "relight").glob("*.png"), key=lambda p: int(p.stem)):
        truth, ours = read_image(truth_path)[..., :3], read_image(relit_dir / truth_path.name)[..., :3]
        columns.append(np.concatenate([truth, ours, np.clip(4.0 * np.abs(truth - ours), 0.0, 1.0)], axis=0))
    write_png(path, np.concatenate(columns, axis=1), bit_depth=8)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for index, (name, run) in enumerate(results["runs"].items()):
        colour = f"C{index}"
        minutes = [p["seconds"] / 60 for p in run["curve"]]
        axes[0].plot(minutes, [p["psnr_object"] for p in run["curve"]], marker="o", color=colour)
        axes[0].plot(minutes, [p["psnr_image"] for p in run["curve"]], marker="o", ls="--", color=colour)
        axes[1].plot(minutes, [p["albedo_mae_after_scale"] for p in run["curve"]], marker="o", color=colour)
        axes[1].plot(minutes, [p["roughness_mae"] for p in run["curve"]], marker="s", ls="--", color=colour)
        metallic = [100 * p["metallic_accuracy"] for p in run["curve"]]
        axes[2].plot(minutes, metallic, marker="o", color=colour, label=name)
    axes[0].axhline(26, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="stage II wall time (min)", ylabel="relighting PSNR (dB)",
                title="second environment: object (solid), image (--)")  # fmt: skip
    axes[1].axhline(0.06, color="C0", ls=":", lw=1)
    axes[1].axhline(0.1, color="C1", ls=":", lw=1)
    axes[1].set(xlabel="stage II wall time (min)", ylabel="MAE",
                title="albedo after scale (solid), roughness (--)")  # fmt: skip
    axes[2].axhline(90, color="grey", ls=":", lw=1)
    axes[2].set(xlabel="stage II wall time (min)", ylabel="% of points", title="metallic classified right")
    axes[2].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("nero-material on recon-synth glossy scenes (CPU; dotted: the issue's targets)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, required=True, help="a recon-synth glossy scene")
    parser.add_argument("--shape-config", type=Path, required=True, help="config.yml of a nero-shape run on it")
    parser.add_argument("--iterations", type=int, default=None, help="run length (default: the method's)")
    parser.add_argument("--curve-points", type=int, default=6, help="checkpoints scored along the run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run and the renders here")
    parser.add_argument("--stage-two-run", type=Path, default=None, help="score this existing run instead")
    parser.add_argument("--name", default="defaults", help="the run's key in results.json")
    args = parser.parse_args()
    for path in (args.scene / "gt_materials.npz", args.scene / "relight" / "environment.exr", args.shape_config):
        if not path.is_file():
            raise SystemExit(f"{path}: missing (a recon-synth glossy scene and a nero-shape config.yml are needed)")

    from recon_plugin.methods.nero.material_config import nero_material_config

    iterations = args.iterations or nero_material_config().max_num_iterations
    curve_every = max(1, iterations // args.curve_points)
    machine = common.machine_info()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nero_material_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.stage_two_run is None:
        print(f"nero-material bench: {iterations} iterations", flush=True)
        trained = train_stage_two(args.scene, args.shape_config, args.iterations, curve_every, workdir)
    else:
        trained = {"command": "(an existing run: --stage-two-run)", "run_dir": args.stage_two_run, "peak_rss_mib": None}
    run_dir = trained["run_dir"]
    seconds = checkpoint_seconds(run_dir)
    stage_one_seconds = max(checkpoint_seconds(args.shape_config.parent).values())
    curve, caster = score_checkpoints(run_dir / "config.yml", args.scene, seconds, workdir)
    final = final_score(run_dir / "config.yml", args.scene, workdir)
    info = json.loads((args.scene / "scene.json").read_text())
    run = {
        "scene": {k: info.get(k) for k in ("shape", "views", "size", "samples_per_pixel", "environment")},
        "iterations": max(seconds),
        "stage_two_seconds": round(max(seconds.values()), 1),
        "stage_one_seconds": round(stage_one_seconds, 1),
        **{k: round(v, 4) if v is not None else None for k, v in common.step_timings(run_dir).items()},
        "peak_rss_mib": trained["peak_rss_mib"],
        "ray_caster": caster,
        "final": final,
        "curve": curve,
        "train_command": trained["command"],
        "stage_one_config": str(args.shape_config),
        "command": "python bench/nero_material/run.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
    }
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    results["runs"][args.name] = run
    tmp = results_path.with_name(f".results.{os.getpid()}.json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, results_path)
    plot(results, HERE / "results.png")
    montage = "relight.png" if args.name == "defaults" else f"relight-{args.name}.png"
    relight_montage(workdir / "relit", args.scene, HERE / montage)
    print(json.dumps({k: run[k] for k in ("stage_one_seconds", "stage_two_seconds", "final", "ray_caster")}, indent=2))


if __name__ == "__main__":
    main()
