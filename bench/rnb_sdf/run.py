"""rnb-sdf benchmark: accuracy against exact ground truth, training throughput and memory.

Scenes (synthetic, regenerated here): the demo scene (blob, 20 views, 128x128), the same with
per-view albedo scaled by random factors (tests the learned per-view gain), and a larger scene
(40 views, 256x256). Each is trained with the same trainer as ns-train; training time excludes
the periodic evaluations. Results go to bench/rnb_sdf/results.json and results.png.

    python bench/rnb_sdf/run.py [--only demo,jitter,large,scaling,table,lights,maskweight] [--skip-done]

``scaling`` times training steps at 512, 1024 and 2048 rays per step (fixed vs per-ray cost).
``table`` is the defaults table: four shapes (blob, knot, figure, bowl) x {clean, photometric-stereo noise} x
{mask, no mask with a textured floor behind the object}, at ns-train's default run length; single rows are named
``table/<shape>-<clean|noisy>-<mask|backdrop>``. ``lights`` runs two of its noisy rows with RNb-NeuS v1's
clamped 30-degree light warm-up, ``maskweight`` two with RNb-NeuS's mask weight 0.1 (see ABLATIONS). Rows are
stored as they finish (parallel processes may share results.json).
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
    # The demo scene with twice the rays per step and 70 % of the steps (same wall-clock budget).
    "demo-2048": {"shape": "blob", "views": 20, "size": 128, "jitter": 0.0, "iterations": 700, "rays": 2048},
}
# Ablation groups, each a few noisy-mask rows of the table with some `--pipeline.model.*` options changed; compare
# row `<group>/<shape>-noisy-mask-<suffix>` with `table/<shape>-noisy-mask`.
#   lights: RNb-NeuS v1's clamped warm-up (fixed 30-degree triplet, n.l clamped at 0) against the default
#     (unclamped optimal-slant triplet).
#   maskweight: RNb-NeuS's mask weight 0.1 against our 1.0 (does a strong silhouette term lock a cavity's lid in?).
ABLATIONS = {
    "lights": ("clamped30", {"clamp_fixed_lights": True, "fixed_slant_deg": 30.0}, ("knot", "figure")),
    "maskweight": ("mask0.1", {"mask_loss_mult": 0.1}, ("bowl", "figure")),
}


def ablation_specs(group: str, iterations: int) -> dict:
    suffix, options, shapes = ABLATIONS[group]
    return {
        f"{group}/{shape}-noisy-mask-{suffix}": {
            "shape": shape,
            "views": 20,
            "size": 128,
            "jitter": 0.0,
            "iterations": iterations,
            "realism": "ps",
            "masks": True,
            "backdrop": "none",
            "model": options,
        }
        for shape in shapes
    }


def default_iterations() -> int:
    from recon_plugin.methods.rnb_sdf.config import rnb_sdf_config

    return rnb_sdf_config().max_num_iterations


TABLE_SHAPES = ("blob", "knot", "figure", "bowl")
TABLE_NOISE = {"clean": "none", "noisy": "ps"}
TABLE_SILHOUETTE = {
    "mask": {"masks": True, "backdrop": "none"},
    "nomask": {"masks": False, "backdrop": "none"},  # zero-coded background: the silhouette comes from the code
    "backdrop": {"masks": False, "backdrop": "plane"},  # a floor's normals fill the background: background field
}


def table_specs(iterations: int, shapes=TABLE_SHAPES, silhouettes=("mask", "backdrop")) -> dict:
    """The issue-9 table: shapes x {clean, photometric-stereo noise} x silhouette variants, at one run length."""
    return {
        f"table/{shape}-{noise}-{silhouette}": {
            "shape": shape,
            "views": 20,
            "size": 128,
            "jitter": 0.0,
            "iterations": iterations,
            "realism": realism,
            **TABLE_SILHOUETTE[silhouette],
        }
        for shape in shapes
        for noise, realism in TABLE_NOISE.items()
        for silhouette in silhouettes
    }


def setup_trainer(scene: Path, iterations: int, rays_per_step: int, output_dir: Path, model_options=None):
    """The trainer ns-train would build for ``ns-train rnb-sdf --data scene`` (tensorboard logging);
    ``model_options`` are the ``--pipeline.model.*`` flags of an ablation row."""
    from recon_plugin.methods.rnb_sdf.config import rnb_sdf_config

    config = rnb_sdf_config()
    for option, value in (model_options or {}).items():
        if not hasattr(config.pipeline.model, option):
            raise ValueError(f"bench row sets unknown rnb-sdf model option {option!r}")
        setattr(config.pipeline.model, option, value)
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.train_num_rays_per_batch = rays_per_step
    config.max_num_iterations = iterations
    config.vis = "tensorboard"
    config.output_dir = output_dir
    config.set_timestamp()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def train_and_score(name: str, spec: dict, workdir: Path, eval_every: int = 250) -> dict:
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from recon_plugin.data.synthetic.rnb import write_rnb_scene
    from recon_plugin.eval.mesh_metrics import evaluate_meshes, load_mesh
    from recon_plugin.eval.render_normals import evaluate_rendered_normals
    from recon_plugin.export.mesh import extract_world_mesh

    scene = workdir / name
    write_rnb_scene(
        scene,
        shape=spec["shape"],
        views=spec["views"],
        size=spec["size"],
        albedo_scale_jitter=spec["jitter"] or None,
        realism=spec.get("realism", "none"),
        masks=spec.get("masks", True),
        backdrop=spec.get("backdrop", "none"),
        log=None,
    )
    info = json.loads((scene / "scene.json").read_text())
    trainer = setup_trainer(scene, spec["iterations"], spec.get("rays", 1024), workdir / "runs", spec.get("model"))
    model = trainer.pipeline.model
    gt = load_mesh(scene / "gt_mesh.ply")
    rays_per_step = trainer.pipeline.datamanager.get_train_rays_per_batch()
    curve, train_seconds, eval_seconds = [], 0.0, 0.0
    for step in range(spec["iterations"]):
        start = time.perf_counter()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        train_seconds += time.perf_counter() - start
        # The default eval cadence, as in ns-train's loop (eval batch every 500 steps, an eval image every 1000);
        # timed apart so rays/s stays comparable with earlier rows.
        start = time.perf_counter()
        trainer.eval_iteration(step)
        eval_seconds += time.perf_counter() - start
        last = step == spec["iterations"] - 1
        if (step + 1) % eval_every == 0 or last:
            model.eval()
            mesh = extract_world_mesh(trainer.pipeline, resolution=512 if last else 256, log=None)
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
    # Floaters: the part of the raw marching-cubes surface (no largest-component filter) farther than 1 % of the
    # bounding radius from the true surface.
    raw = extract_world_mesh(trainer.pipeline, resolution=512, largest_component=False, vertex_colors=False, log=None)
    raw_metrics = evaluate_meshes(raw, gt, scale=info["bounding_radius"], num_samples=200000)
    floaters = floater_fraction(raw, gt, info["bounding_radius"])
    tsdf = tsdf_metrics(trainer.pipeline, workdir / f"{name}-tsdf", gt, info["bounding_radius"])
    print(f"  [{name}] ns-export tsdf defaults: Chamfer {100 * tsdf['chamfer_rel']:.3f}%", flush=True)
    normals = evaluate_rendered_normals(trainer.pipeline)
    normals.pop("per_view", None)
    samples_per_ray = model.config.num_render_samples
    result = {
        "scene": {k: info[k] for k in ("shape", "views", "size", "bounding_radius")}
        | {k: spec.get(k) for k in ("jitter", "realism", "masks", "backdrop")},
        "model_options": spec.get("model", {}),
        "iterations": spec["iterations"],
        "rays_per_step": rays_per_step,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "rays_per_second": round(rays_per_step * spec["iterations"] / train_seconds),
        "gradient_samples_per_second": round(rays_per_step * samples_per_ray * spec["iterations"] / train_seconds),
        "final": {
            "chamfer_rel": metrics["chamfer_rel"],
            "chamfer_world": metrics["chamfer"],
            "fscore_0.5pct": metrics["fscore"]["0.005"],
            "fscore_1pct": metrics["fscore"]["0.01"],
            "fscore_2pct": metrics["fscore"]["0.02"],
            "outlier_surface_fraction_1pct": 1.0 - raw_metrics["precision"]["0.01"],
            "floater_surface_fraction_1pct": floaters,
            "tsdf_chamfer_rel": tsdf["chamfer_rel"],
            "tsdf_fscore_1pct": tsdf["fscore"]["0.01"],
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


def floater_fraction(raw, gt, bounding_radius: float) -> float:
    """Floaters proper: the fraction of the raw marching-cubes surface that lies in pieces detached from the
    largest one and farther than 1 % of the bounding radius from the true surface. (The outlier fraction counts
    every surface that far off, a lid over a cavity included.)"""
    import trimesh

    from recon_plugin.eval.mesh_metrics import evaluate_meshes

    pieces = raw.split(only_watertight=False)
    if len(pieces) <= 1:
        return 0.0
    pieces.sort(key=lambda piece: len(piece.faces))
    detached = trimesh.util.concatenate(pieces[:-1])
    far = 1.0 - evaluate_meshes(detached, gt, scale=bounding_radius, num_samples=50000)["precision"]["0.01"]
    return float(detached.area / raw.area * far)


def tsdf_metrics(pipeline, output_dir: Path, gt, bounding_radius: float) -> dict:
    """The mesh of nerfstudio's ``ns-export tsdf`` (its defaults: 128^3 in [-1, 1]^3, images at half size),
    produced by the same function on the in-memory pipeline, scored in world units."""
    from nerfstudio.exporter.tsdf_utils import export_tsdf_mesh

    from recon_plugin.data.transforms import normalized_to_world
    from recon_plugin.eval.mesh_metrics import evaluate_meshes, load_mesh

    output_dir.mkdir(parents=True, exist_ok=True)
    export_tsdf_mesh(pipeline, output_dir, downscale_factor=2, resolution=[128, 128, 128])
    mesh = load_mesh(output_dir / "tsdf_mesh.ply")
    outputs = pipeline.datamanager.train_dataparser_outputs
    mesh.vertices = normalized_to_world(
        mesh.vertices, outputs.dataparser_transform.cpu().numpy(), float(outputs.dataparser_scale)
    )
    return evaluate_meshes(mesh, gt, scale=bounding_radius, num_samples=200000)


def batch_scaling(workdir: Path, batches=(512, 1024, 2048), steps: int = 15) -> dict:
    """Seconds per training step against rays per step on the demo scene, fitted as fixed + per-ray cost.

    Every schedule is held at step 600 of 1000 (all hash-grid levels on, sharp NeuS weights); the
    network is the initial sphere, so the timings measure the cost of a step, not convergence.
    """
    import numpy as np

    from recon_plugin.data.synthetic.rnb import write_rnb_scene

    scene = workdir / "scaling"
    spec = SCENES["demo"]
    write_rnb_scene(scene, shape=spec["shape"], views=spec["views"], size=spec["size"], log=None)
    rows = []
    for rays in batches:
        trainer = setup_trainer(scene, 1000, rays, workdir / "scaling-runs")
        model = trainer.pipeline.model
        model.total_steps = 1000
        for step in range(600, 603):  # warm-up: caches, allocator
            model.set_step(step)
            trainer.train_iteration(step)
        start = time.perf_counter()
        for step in range(603, 603 + steps):
            model.set_step(step)
            trainer.train_iteration(step)
        seconds = (time.perf_counter() - start) / steps
        rows.append(
            {"rays_per_step": rays, "seconds_per_step": round(seconds, 4), "rays_per_second": round(rays / seconds)}
        )
        print(f"  [scaling] {rays} rays/step: {seconds:.3f} s/step, {rays / seconds:.0f} rays/s", flush=True)
    per_ray, fixed = np.polyfit([r["rays_per_step"] for r in rows], [r["seconds_per_step"] for r in rows], 1)
    return {"rows": rows, "fixed_seconds_per_step": round(float(fixed), 4), "seconds_per_ray": float(per_ray)}


def plot(results: dict, path: Path) -> None:
    """Curves of the blob scenes, the defaults table as bars (Chamfer per shape and variant), the step cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scaling = results.get("batch_scaling")
    runs = results["runs"]
    curves = {name: run for name, run in runs.items() if "/" not in name}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1.6, 1]})
    for name, result in curves.items():
        seconds = [p["train_seconds"] for p in result["curve"]]
        axes[0].plot(seconds, [100 * p["chamfer_rel"] for p in result["curve"]], "o-", label=name)
    axes[0].axhline(0.4, color="grey", ls="--", lw=1)
    axes[0].set(xlabel="training time (s)", ylabel="Chamfer (% of bounding radius)", yscale="log", title="blob")
    axes[0].legend(fontsize=8)

    variants = [f"{noise}-{silhouette}" for noise in TABLE_NOISE for silhouette in ("mask", "backdrop")]
    prefixes = {variant: "table" for variant in variants}
    prefixes |= {f"noisy-mask-{suffix}": group for group, (suffix, _, _) in ABLATIONS.items()}
    variants = list(prefixes)
    width = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        values = [
            runs.get(f"{prefixes[variant]}/{shape}-{variant}", {}).get("final", {}).get("chamfer_rel")
            for shape in TABLE_SHAPES
        ]
        present = [(i, 100 * v) for i, v in enumerate(values) if v is not None]
        if present:
            x = np.array([i for i, _ in present]) + (index - (len(variants) - 1) / 2) * width
            label = variant.replace("backdrop", "no mask, textured floor")
            axes[1].bar(x, [v for _, v in present], width, color=f"C{index}", label=label)
    axes[1].set_xticks(np.arange(len(TABLE_SHAPES)), TABLE_SHAPES)
    axes[1].set_xlim(-0.5, len(TABLE_SHAPES) - 0.5)
    axes[1].set(ylabel="Chamfer (% of bounding radius)", title="defaults table (ns-train's default run length)")
    heights = [bar.get_height() for bar in axes[1].patches] or [1.0]
    # Log scale: a failing shape sits 50x above the others; headroom above the bars for the legend.
    axes[1].set_yscale("log")
    axes[1].set_ylim(0.5 * min(heights), 8.0 * max(heights))
    axes[1].legend(fontsize=8, ncol=3, loc="upper center")
    if scaling:
        rays = [row["rays_per_step"] for row in scaling["rows"]]
        axes[2].plot(rays, [row["seconds_per_step"] for row in scaling["rows"]], "o-", label="measured")
        fit = [scaling["fixed_seconds_per_step"] + scaling["seconds_per_ray"] * r for r in rays]
        label = f"fit: {scaling['fixed_seconds_per_step']:.2f} s + {1000 * scaling['seconds_per_ray']:.2f} ms per ray"
        axes[2].plot(rays, fit, "--", color="grey", label=label)
        axes[2].set(xlabel="rays per step", ylabel="seconds per step", ylim=(0, None), title="step cost (demo scene)")
        axes[2].legend(fontsize=8)
    else:
        axes[2].set_visible(False)
    fig.suptitle(f"rnb-sdf on {results['machine']['cpu_count']} CPU cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table_markdown(results: dict) -> str:
    """The defaults table and the ablation rows as the README's markdown table, straight from results.json."""
    runs = results["runs"]
    lines = [
        "| shape | input | silhouette | options | Chamfer (SDF mesh) | F@1% | surface > 1 % off | floaters > 1 % off "
        "| Chamfer (TSDF mesh) | normal error (mean) | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = [f"table/{s}-{n}-{m}" for s in TABLE_SHAPES for n in TABLE_NOISE for m in ("mask", "backdrop")]
    names += [name for name in runs if name.split("/")[0] in ABLATIONS]
    for name in names:
        if name not in runs:
            continue
        run, final = runs[name], runs[name]["final"]
        scene = run["scene"]
        options = (
            " ".join(f"`{k.replace('_', '-')} {v}`" for k, v in run.get("model_options", {}).items()) or "defaults"
        )
        floaters = final.get("floater_surface_fraction_1pct")
        lines.append(
            "| "
            + " | ".join(
                [
                    scene["shape"],
                    "noisy" if scene.get("realism") == "ps" else "clean",
                    "mask" if scene.get("masks") else "none, textured floor",
                    options,
                    f"{100 * final['chamfer_rel']:.3f} %",
                    f"{final['fscore_1pct']:.3f}",
                    f"{100 * final['outlier_surface_fraction_1pct']:.2f} %",
                    "-" if floaters is None else f"{100 * floaters:.2f} %",
                    f"{100 * final['tsdf_chamfer_rel']:.3f} %",
                    f"{final['normal_error_mean_deg']:.1f}°",
                    f"{run['train_seconds'] / run['iterations']:.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def store_row(results_path: Path, name: str, run: dict, machine: dict, section: str = "runs") -> dict:
    """Adds one row to results.json under a lock, re-reading the file first: table rows run as parallel
    processes (one thread each) and each must keep the rows the others wrote meanwhile. ``section`` "runs"
    holds the training rows; any other name stores ``run`` as that top-level entry (the step-cost check)."""
    import fcntl

    with open(results_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
        if section == "runs":
            results["runs"][name] = run
        else:
            results[section] = run
        results["machine"] = machine
        staged = results_path.with_suffix(".json.partial")
        staged.write_text(json.dumps(results, indent=2))
        staged.replace(results_path)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [*SCENES, "scaling", "table", *ABLATIONS]
    parser.add_argument("--only", default=",".join(names), help="comma-separated subset of " + ",".join(names))
    parser.add_argument(
        "--table-iterations",
        type=int,
        default=None,
        help="run length of the table rows (default: the method's default, ns-train rnb-sdf's max-num-iterations)",
    )
    parser.add_argument("--table-shapes", default=",".join(TABLE_SHAPES))
    parser.add_argument("--table-silhouettes", default="mask,backdrop", help="subset of " + ",".join(TABLE_SILHOUETTE))
    parser.add_argument("--skip-done", action="store_true", help="keep table rows already in results.json")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table rows of results.json as markdown and exit"
    )
    args = parser.parse_args()
    if args.markdown:
        print(table_markdown(json.loads((HERE / "results.json").read_text())))
        return
    iterations = args.table_iterations or default_iterations()
    table = table_specs(
        iterations,
        shapes=args.table_shapes.split(","),
        silhouettes=args.table_silhouettes.split(","),
    )
    ablations = {group: ablation_specs(group, iterations) for group in ABLATIONS}
    for rows in ablations.values():
        table = table | rows
    import os

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    results_path = HERE / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"runs": {}}
    # Rows run in different sessions (the table takes hours of CPU) are kept; each row records the machine it
    # ran on, so rows from another kind of machine are told apart rather than silently mixed or thrown away.
    for run in results["runs"].values():
        run.setdefault("machine", results.get("machine"))
    results["machine"] = machine
    with tempfile.TemporaryDirectory() as tmp:
        groups = {"table": [name for name in table if name.startswith("table/")]}
        groups |= {group: list(rows) for group, rows in ablations.items()}
        requested = [row for name in args.only.split(",") for row in groups.get(name, [name])]
        for name in requested:
            if args.skip_done and name in results["runs"] and name in table:
                continue
            if name == "scaling":
                print("rnb-sdf bench: step cost against rays per step", flush=True)
                scaling = batch_scaling(Path(tmp)) | {
                    "command": "python bench/rnb_sdf/run.py " + " ".join(sys.argv[1:]),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": machine,
                }
                results = store_row(results_path, name, scaling, machine, section="batch_scaling")
                continue
            spec = table.get(name) or SCENES[name]
            print(f"rnb-sdf bench: {name} {spec}", flush=True)
            run = train_and_score(name.replace("/", "-"), spec, Path(tmp))
            # Each scene records its own command and date: `--only` re-runs some and keeps the others.
            run["command"] = "python bench/rnb_sdf/run.py " + " ".join(sys.argv[1:])
            run["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            run["machine"] = machine
            results = store_row(results_path, name, run, machine)
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
