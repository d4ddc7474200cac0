"""pbr-fusion benchmark: held-out materials from ``recon-synth pbr``, CPU-budgeted training, model vs baseline.

Steps: write a dataset (paired clean/dirty renders); train with ``ns-train`` (the real CLI, as a user would)
pbr-fusion-small (GAN) and pbr-fusion-lightweight (the same without the GAN) (``--runs`` also offers each with
NeuroPBR's default loss weights, the ablation of loss_weights_ablation.json), each for at most ``--minutes`` of
training on the machine as it is
(``--threads`` caps torch's threads: run the bench alone, where two threads take ~0.4 s per pbr-fusion-small step
and the preset's 3000 steps fit in 20 minutes; on 2 cores shared with other work one thread ran ~10x faster per
step than two, whose OpenMP threads wait on each other whenever a core is taken); evaluate every run on the
held-out materials (the preset's seeded 10 % split by material) with clean and with dirty inputs, next to the
baseline (mean view as albedo, flat normal, training-mean roughness/metallic), overall and per material family;
write results.json, results.png and one picture grid per run (rows: held-out samples; columns: the three views, then
prediction | ground truth for albedo, roughness, metallic, normal).

    python bench/pbr_fusion/run.py [--minutes 20] [--iterations 3000] [--materials 280] [--samples-per-material 3]
                                   [--size 64] [--threads 2] [--runs small,lightweight,...]
                                   [--data DIR] [--out bench/pbr_fusion] [--workdir DIR] [--evaluate-only]

Training runs the presets with their defaults; the only flags are the run length (--max-num-iterations, which
the learning-rate schedule follows, and --max-train-minutes) and, for the two ablation rows, the loss weights.
Runs from several invocations (e.g. two ablations side by side with one thread each, on a dataset written once
and passed with --data) are merged into one results.json; each run records its own command, budget and machine.

The done-when check (recorded under "done_when"): on clean held-out inputs, pbr-fusion-small beats the baseline
by >= 3 dB albedo PSNR and has at most half its mean normal angular error.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

# The two small presets differ only in the GAN (small: on, lightweight: off), so they are the with/without-GAN
# pair; the "-neuropbr-weights" rows are the same presets with NeuroPBR's default loss weights (SSIM 0.3, normal
# 0.5) instead of its "lightweight" ones, which the presets use.
NEUROPBR_DEFAULT_WEIGHTS = ["--pipeline.model.ssim-weight", "0.3", "--pipeline.model.normal-weight", "0.5"]
RUNS = {
    "small": ("pbr-fusion-small", []),
    "lightweight": ("pbr-fusion-lightweight", []),
    "small-neuropbr-weights": ("pbr-fusion-small", NEUROPBR_DEFAULT_WEIGHTS),
    "lightweight-neuropbr-weights": ("pbr-fusion-lightweight", NEUROPBR_DEFAULT_WEIGHTS),
}
VARIANTS = {"clean": 0, "dirty": 2}
KEY_METRICS = ("albedo_psnr", "albedo_ssim", "roughness_mae", "metallic_mae", "normal_angle_mean")


def train(name: str, data: Path, workdir: Path, args: argparse.Namespace) -> tuple[Path, float, str]:
    method, extra = RUNS[name]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [
        str(BIN / "ns-train"), method, "--data", str(data),
        "--output-dir", str(workdir / "runs"), "--experiment-name", name, "--timestamp", "bench",
        "--max-num-iterations", str(args.iterations),
        "--max-train-minutes", str(args.minutes),
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    shown = " ".join(["ns-train", method, "--data", "DATA", *command[4:]])
    return next((workdir / "runs").glob(f"{name}/{method}/bench/config.yml")), time.perf_counter() - start, shown


def grid_samples(materials: list[str], rows: int) -> list[int]:
    """Indices of up to ``rows`` samples showing distinct materials, distinct families first (material names
    are ``<family>_<index>``); consecutive samples share a material, so the first rows would repeat one."""
    first: dict[str, int] = {}
    for index, material in enumerate(materials):
        first.setdefault(material, index)
    seen: set[str] = set()
    new_family, repeated_family = [], []
    for material, index in first.items():
        family = material.rsplit("_", 1)[0]
        (repeated_family if family in seen else new_family).append(index)
        seen.add(family)
    return (new_family + repeated_family)[:rows]


FAMILY_METRICS = ("albedo_psnr", "roughness_mae", "metallic_mae", "normal_angle_mean")


def per_family_metrics(pipeline) -> dict:
    """Key metrics (model and baseline) averaged per material family (material names are ``<family>_<index>``),
    with the number of held-out samples of each: the held-out set is a random 10 % of the materials, so the
    families are not equally represented and the overall mean leans towards the frequent ones."""
    import torch

    dataset = pipeline.datamanager.eval_dataset
    rows: dict[str, list[dict]] = {}
    for index, record in enumerate(dataset.records):
        views, batch = dataset.batch(torch.tensor([index]), pipeline.datamanager.device)
        with torch.no_grad():
            outputs = pipeline.model.get_outputs_for_camera(views)
        metrics, _ = pipeline.model.get_image_metrics_and_images(outputs, batch)
        rows.setdefault(record.material.rsplit("_", 1)[0], []).append(metrics)
    keys = [*FAMILY_METRICS, *(f"baseline_{k}" for k in FAMILY_METRICS)]
    return {
        family: {"samples": len(group), **{k: sum(row[k] for row in group) / len(group) for k in keys}}
        for family, group in sorted(rows.items())
    }


def evaluate(config_path: Path, variant: str, grid_path: Path | None, grid_rows: int) -> tuple[dict, int]:
    """Mean metrics over the held-out samples with ``variant`` inputs (model and ``baseline_*``)."""
    import torch

    from recon_plugin.export.loading import load_pipeline

    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    config.pipeline.datamanager.eval_curriculum = VARIANTS[variant]
    variant_config = config_path.with_name(f"config_eval_{variant}.yml")
    variant_config.write_text(yaml.dump(config))
    _, pipeline, _, step = load_pipeline(variant_config, test_mode="test")
    metrics = pipeline.get_average_eval_image_metrics(get_std=False)
    pipeline.eval()  # the call above leaves the pipeline in training mode (BatchNorm on batch statistics)
    metrics["per_family"] = per_family_metrics(pipeline)
    if grid_path is not None:
        rows = []
        dataset = pipeline.datamanager.eval_dataset
        for index in grid_samples([record.material for record in dataset.records], grid_rows):
            views, batch = dataset.batch(torch.tensor([index]), pipeline.datamanager.device)
            with torch.no_grad():
                outputs = pipeline.model.get_outputs_for_camera(views)
            _, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
            rows.append(torch.cat([images[k] for k in ("views", "albedo", "roughness", "metallic", "normal")], dim=1))
        import torchvision.utils as vutils

        vutils.save_image(torch.cat(rows, dim=0).permute(2, 0, 1).cpu(), grid_path)
    return metrics, step


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return {"platform": platform.platform(), "cpu": model, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "load_average_at_start": os.getloadavg()}  # fmt: skip


def merge_results(path: Path, results: dict) -> dict:
    """Adds this invocation's runs to ``path`` (kept runs of other invocations), under a lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
        merged["runs"].update(results["runs"])
        for key in ("dataset", "done_when"):
            if key in results:
                merged[key] = results[key]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=2, default=float))
        tmp.replace(path)
    finally:
        os.close(lock)  # releases the lock
    return merged


PLOTTED = (("albedo_psnr", "albedo PSNR (dB, higher is better)"), ("roughness_mae", "roughness MAE"),
           ("metallic_mae", "metallic MAE"), ("normal_angle_mean", "normal error (deg)"))  # fmt: skip


def plot(results: dict, path: Path) -> None:
    """Bar chart per metric: each run's model next to the baseline, on clean and on dirty held-out inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(results["runs"])
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.8))
    width = 0.8 / (len(runs) + 1)
    for ax, (key, title) in zip(axes, PLOTTED, strict=True):
        for index, variant in enumerate(VARIANTS):
            baseline = results["runs"][runs[0]][variant][f"baseline_{key}"]
            ax.bar(index, baseline, width, color="0.6", label="baseline" if index == 0 else None)
            for r, run in enumerate(runs):
                value = results["runs"][run][variant][key]
                ax.bar(index + (r + 1) * width, value, width, color=f"C{r}", label=run if index == 0 else None)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(VARIANTS))], list(VARIANTS))
        ax.set_title(title, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle("pbr-fusion on held-out materials (bench/pbr_fusion/results.json)", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def table_markdown(results: dict) -> str:
    """The README's results tables: every run on clean and dirty held-out inputs (baseline in brackets), then
    the normal error per material family for every run on clean inputs."""

    def pair(metrics: dict, key: str, digits: int, unit: str = "") -> str:
        return f"{metrics[key]:.{digits}f}{unit} ({metrics['baseline_' + key]:.{digits}f}{unit})"

    lines = [
        "| run | steps, wall | inputs | albedo PSNR dB | albedo SSIM | roughness MAE | metallic MAE "
        "| normal error mean / median / p90 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        for index, variant in enumerate(VARIANTS):
            m = run[variant]
            head = f"| `{name}` | {run['steps']}, {run['wall_seconds'] / 60:.1f} min |" if index == 0 else "| | |"
            normal = (f"{m['normal_angle_mean']:.2f}° / {m['normal_angle_median']:.2f}° / {m['normal_angle_p90']:.1f}° "
                      f"({m['baseline_normal_angle_mean']:.2f}° / {m['baseline_normal_angle_median']:.2f}° / "
                      f"{m['baseline_normal_angle_p90']:.1f}°)")  # fmt: skip
            lines.append(
                f"{head} {variant} | {pair(m, 'albedo_psnr', 2)} | {pair(m, 'albedo_ssim', 3)} | "
                f"{pair(m, 'roughness_mae', 3)} | {pair(m, 'metallic_mae', 3)} | {normal} |"
            )
    runs = [name for name, run in results["runs"].items() if "per_family" in run["clean"]]
    if runs:
        families = results["runs"][runs[0]]["clean"]["per_family"]
        lines += ["", "| family (held-out samples) | flat normal | " + " | ".join(f"`{r}`" for r in runs) + " |"]
        lines.append("|---|---|" + "---|" * len(runs))
        for family, first in families.items():
            cells = [f"{results['runs'][r]['clean']['per_family'][family]['normal_angle_mean']:.2f}°" for r in runs]
            lines.append(
                f"| {family} ({first['samples']}) | {first['baseline_normal_angle_mean']:.2f}° | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run")
    parser.add_argument(
        "--iterations",
        type=int,
        default=3000,
        help="run length the learning-rate schedule follows (warm-up, cosine); --minutes stops earlier if reached",
    )
    parser.add_argument("--materials", type=int, default=280)
    parser.add_argument("--samples-per-material", type=int, default=3)
    parser.add_argument("--size", type=int, default=64, help="render size (the small presets train at 64 px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="small,lightweight", help=f"any of {', '.join(RUNS)}")
    parser.add_argument("--grid-rows", type=int, default=4)
    parser.add_argument("--data", type=Path, default=None, help="an existing recon-synth pbr dataset (else written)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here (default: a tmp dir)")
    parser.add_argument("--evaluate-only", action="store_true", help="re-score the runs kept in --workdir")
    parser.add_argument("--markdown", action="store_true", help="print the README tables of results.json and exit")
    parser.add_argument("--plot-only", action="store_true", help="redraw results.png from results.json and exit")
    args = parser.parse_args()
    if args.evaluate_only and (args.workdir is None or args.data is None):
        parser.error("--evaluate-only needs the --workdir and --data of the training invocation")
    if args.markdown:
        print(table_markdown(json.loads((args.out / "results.json").read_text())))
        return
    if args.plot_only:
        plot(json.loads((args.out / "results.json").read_text()), args.out / "results.png")
        return
    runs = [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")

    import torch

    torch.set_num_threads(args.threads)
    from recon_plugin.data.synthetic.pbr import write_pbr_dataset

    with tempfile.TemporaryDirectory(prefix="pbr_bench_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results: dict = {"runs": {}}
        if args.data is None:
            data = workdir / "data"
            # Every sample gets a dirty copy so the held-out set can be scored on clean and on dirty inputs.
            synth = write_pbr_dataset(data, materials=args.materials, samples_per_material=args.samples_per_material,
                                      size=args.size, dirty_fraction=1.0, workers=args.threads, overwrite=True,
                                      log=None)  # fmt: skip
            results["dataset"] = {
                "command": f"recon-synth pbr DATA --materials {args.materials} --samples-per-material "
                f"{args.samples_per_material} --size {args.size} --dirty-fraction 1",
                "synthesis": synth,
            }
        else:
            data = args.data
            metadata = json.loads((data / "input" / "render_metadata.json").read_text())
            results["dataset"] = {
                "given": str(data),
                "generator": f"{metadata.get('generator')} version {metadata.get('version')}",
                "materials": len(metadata.get("materials", {})),
                "samples": len(metadata.get("samples", {})),
                "size": metadata.get("size"),
            }
        args.out.mkdir(parents=True, exist_ok=True)
        previous = json.loads((args.out / "results.json").read_text()) if args.evaluate_only else {}
        for name in runs:
            if args.evaluate_only:
                # Re-scores a kept run (--workdir of the training invocation); its training record stays.
                config_path = workdir / "runs" / name / RUNS[name][0] / "bench" / "config.yml"
                if not config_path.is_file():
                    parser.error(f"--evaluate-only: no trained run {config_path}")
                entry: dict = previous.get("runs", {}).get(name, {})
            else:
                started_on = machine()  # before training, so the load average is the one the run met
                config_path, seconds, command = train(name, data, workdir, args)
                entry = {
                    "method": RUNS[name][0],
                    "command": command,
                    "threads": args.threads,
                    "budget_minutes": args.minutes,
                    "schedule_iterations": args.iterations,
                    "wall_seconds": seconds,
                    "machine": started_on,
                }
            for variant in VARIANTS:
                grid = args.out / f"grid_{name}.png" if variant == "clean" else None
                metrics, step = evaluate(config_path, variant, grid, args.grid_rows)
                entry["steps"] = step + 1
                entry[variant] = metrics
            results["runs"][name] = entry
            print(json.dumps({name: {v: {k: round(entry[v][k], 3) for k in KEY_METRICS} for v in VARIANTS}}))
        if "small" in results["runs"]:
            clean = results["runs"]["small"]["clean"]
            gain = clean["albedo_psnr"] - clean["baseline_albedo_psnr"]
            ratio = clean["normal_angle_mean"] / max(clean["baseline_normal_angle_mean"], 1e-9)
            results["done_when"] = {
                "albedo_psnr_gain_db": gain,
                "normal_error_ratio": ratio,
                "passed": bool(gain >= 3.0 and ratio <= 0.5),
            }
        plot(merge_results(args.out / "results.json", results), args.out / "results.png")
        print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
