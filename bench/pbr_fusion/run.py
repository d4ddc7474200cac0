"""pbr-fusion benchmark: held-out materials from ``recon-synth pbr``, CPU-budgeted training, model vs baseline.

Steps: write a dataset (paired clean/dirty renders); train with ``ns-train`` (the real CLI, as a user would)
pbr-fusion-small (GAN), pbr-fusion-small without the GAN, pbr-fusion-lightweight (no GAN) and
pbr-fusion-lightweight with the GAN, each for at most ``--minutes`` of training on the machine as it is
(``--threads`` caps torch's threads; 2 = "2 CPU cores"); evaluate every run on the held-out materials with
clean and with dirty inputs, next to the baseline (mean view as albedo, flat normal, training-mean roughness/metallic);
write results.json and one picture grid per run (rows: held-out samples; columns: the three views, then
prediction | ground truth for albedo, roughness, metallic, normal).

    python bench/pbr_fusion/run.py [--minutes 20] [--materials 70] [--samples-per-material 6] [--size 128]
                                   [--threads 2] [--runs small,small-nogan,lightweight,lightweight-gan]
                                   [--out bench/pbr_fusion]

The done-when check (recorded under "done_when"): on clean held-out inputs, pbr-fusion-small beats the baseline
by >= 3 dB albedo PSNR and has at most half its mean normal angular error.
"""

from __future__ import annotations

import argparse
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

RUNS = {
    "small": ("pbr-fusion-small", []),
    "small-nogan": ("pbr-fusion-small", ["--pipeline.model.use-gan", "False"]),
    "lightweight": ("pbr-fusion-lightweight", []),
    "lightweight-gan": ("pbr-fusion-lightweight", ["--pipeline.model.use-gan", "True"]),
}
VARIANTS = {"clean": 0, "dirty": 2}
KEY_METRICS = ("albedo_psnr", "albedo_ssim", "roughness_mae", "metallic_mae", "normal_angle_mean")


def train(name: str, data: Path, workdir: Path, args: argparse.Namespace) -> tuple[Path, float]:
    method, extra = RUNS[name]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    command = [
        str(BIN / "ns-train"), method, "--data", str(data),
        "--output-dir", str(workdir / "runs"), "--experiment-name", name, "--timestamp", "bench",
        "--max-num-iterations", str(args.iterations),
        "--max-train-minutes", str(args.minutes),
        "--steps-per-eval-image", str(10**9), "--steps-per-eval-batch", str(10**9),
        "--pipeline.datamanager.resolution", str(args.size),
        "--pipeline.datamanager.eval-fraction", str(args.eval_fraction),
        "--pipeline.datamanager.render-curriculum", "1",
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return next((workdir / "runs").glob(f"{name}/{method}/bench/config.yml")), time.perf_counter() - start


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
    if grid_path is not None:
        rows = []
        for index, (views, batch) in enumerate(pipeline.datamanager.iter_eval_samples()):
            if index >= grid_rows:
                break
            with torch.no_grad():
                outputs = pipeline.model.get_outputs_for_camera(views)
            _, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
            rows.append(torch.cat([images[k] for k in ("views", "albedo", "roughness", "metallic", "normal")], dim=1))
        import torchvision.utils as vutils

        vutils.save_image(torch.cat(rows, dim=0).permute(2, 0, 1).cpu(), grid_path)
    return metrics, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget per run")
    parser.add_argument(
        "--iterations",
        type=int,
        default=1500,
        help="run length the learning-rate schedule follows (warm-up, cosine); --minutes stops earlier if reached",
    )
    parser.add_argument("--materials", type=int, default=70)
    parser.add_argument("--samples-per-material", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--grid-rows", type=int, default=4)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and runs here (default: a tmp dir)")
    args = parser.parse_args()
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
        data = workdir / "data"
        synth = write_pbr_dataset(data, materials=args.materials, samples_per_material=args.samples_per_material,
                                  size=args.size, dirty_fraction=1.0, workers=args.threads, overwrite=True,
                                  log=None)  # fmt: skip
        results: dict = {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
            "synthesis": synth,
            "runs": {},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        for name in runs:
            config_path, seconds = train(name, data, workdir, args)
            entry: dict = {"method": RUNS[name][0], "extra_args": RUNS[name][1], "wall_seconds": seconds}
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
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
