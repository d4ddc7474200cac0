"""Real captures benchmark: every method on the real scenes of ../shared/fixtures/real/, as a user types it.

No real scene ships a ground-truth mesh, so quality is measured against the input views themselves
(``recon-eval views``): the silhouette IoU of the extracted mesh in every view against the masks, and (normal-map
data) the angular error of the rendered normals against the input normal maps inside the mask, on views the run
was trained on and on views it never saw.

rnb-sdf rows, one per DiLiGenT-MV object (``--objects cow,pot2,reading``):
  - "as typed": ``ns-train rnb-sdf --data OBJECT`` with the defaults (time, s/step, peak memory), then
    ``recon-extract-mesh`` (the user's mesh, in mm) and ``recon-eval views`` (silhouette IoU in all 20 views, mesh
    normal error, detached pieces of the raw surface, a picture per view);
  - "leave-views-out": the same command trained on all but every 5th view (``rnb-data --eval-mode interval
    --eval-interval 5``), scored on the 4 held-out views (mesh and model normals).

Only what a bench needs is added to the user's command: where the run goes and tensorboard instead of the viewer
(and the run length when ``--iterations`` is given). Results go to bench/real/results.json (earlier rows kept, each
with its machine, its commands and the date) and pictures to bench/real/<row>.png.

    python bench/real/run.py [--only rnb] [--objects cow,pot2,reading] [--iterations N] [--workdir DIR]
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
    last_json_line,
    machine_info,
    run_checked,
    run_watched,
    step_timings,
)

REAL = HERE.parents[2] / "shared" / "fixtures" / "real"
DILIGENT_OBJECTS = ("cow", "pot2", "reading")


def store_row(name: str, row: dict) -> None:
    """Writes one row into results.json, re-read just before writing (another bench process may have written)."""
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    results["rows"][name] = row
    tmp = path.with_name(f".results.{os.getpid()}.json.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def train(method: str, data: Path, name: str, workdir: Path, iterations: int | None, parser_args: list[str]) -> dict:
    """``ns-train METHOD --data DATA`` with the bench's output flags, watched for time and memory."""
    command = [str(BIN / "ns-train"), method, "--data", str(data)]
    command += ["--output-dir", str(workdir / "runs"), "--experiment-name", name, "--timestamp", "bench"]
    command += ["--vis", "tensorboard", "--viewer.quit-on-train-completion", "True"]
    command += ["--max-num-iterations", str(iterations)] if iterations is not None else []
    command += parser_args
    run_dir = workdir / "runs" / name / method / "bench"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    print(f"real bench: {name}: {' '.join(command[1:])}", flush=True)
    watched = run_watched(command, workdir / f"train-{name}.log", run_dir / "nerfstudio_models")
    timings = step_timings(run_dir)
    return {
        "run_dir": run_dir,
        "command": " ".join(["ns-train", *command[1:]]),
        "wall_seconds": round(watched["wall_seconds"], 1),
        "peak_rss_mib": round(watched["peak_rss_bytes"] / 2**20),
        **{key: round(value, 4) if value is not None else None for key, value in timings.items()},
    }


def score_views(run_dir: Path, name: str, workdir: Path, mesh: Path | None, model_normals: str) -> dict:
    """``recon-eval views`` on a run (its pictures under workdir/views-NAME)."""
    command = [
        str(BIN / "recon-eval"),
        "views",
        str(run_dir / "config.yml"),
        "--output-dir",
        str(workdir / f"views-{name}"),
    ]
    command += ["--model-normals", model_normals] + (["--mesh", str(mesh)] if mesh is not None else [])
    return last_json_line(run_checked(command, workdir / f"views-{name}.log"))


def mesh_extent(path: Path) -> list[float]:
    import trimesh

    mesh = trimesh.load(path, process=False, force="mesh")
    return [round(float(v), 2) for v in mesh.extents]


def rnb_rows(objects: list[str], workdir: Path, iterations: int | None, machine: dict) -> None:
    for obj in objects:
        data = REAL / "diligent_mv" / obj
        # As typed: the whole capture, the user's mesh and its agreement with every view.
        name = f"rnb-sdf/{obj}"
        trained = train("rnb-sdf", data, f"rnb-{obj}", workdir, iterations, [])
        mesh = workdir / f"rnb-{obj}.ply"
        extract = [str(BIN / "recon-extract-mesh"), "--load-config", str(trained["run_dir"] / "config.yml")]
        run_checked(extract + ["--output-path", str(mesh)], workdir / f"extract-rnb-{obj}.log")
        views = score_views(trained["run_dir"], f"rnb-{obj}", workdir, None, "none")
        # Leave views out: every 5th view held out of training, scored there.
        held = train("rnb-sdf", data, f"rnb-{obj}-lvo", workdir, iterations, ["rnb-data", "--eval-mode", "interval",
                                                                           "--eval-interval", "5"])  # fmt: skip
        held_views = score_views(held["run_dir"], f"rnb-{obj}-lvo", workdir, None, "held-out")
        picture = HERE / f"rnb_{obj}.png"
        view_grid(workdir / f"views-rnb-{obj}-lvo" / "views", picture)
        row = {
            "method": "rnb-sdf",
            "scene": f"diligent_mv/{obj}",
            **{key: trained[key] for key in ("wall_seconds", "seconds_per_step", "rays_per_second", "peak_rss_mib")},
            "mesh_extent_mm": mesh_extent(mesh),
            "silhouette_iou": views["silhouette_iou"],
            "detached_area_fraction": views["detached_area_fraction"],
            "raw_components": views["raw_components"],
            "mesh_normal_error_train_views": views["mesh_normal_error"]["train"],
            "held_out": {
                "silhouette_iou_all_views": held_views["silhouette_iou"],
                "mesh_normal_error": held_views["mesh_normal_error"]["held-out"],
                "model_normal_error": held_views["model_normal_error"]["held-out"],
                "mesh_normal_error_train_views": held_views["mesh_normal_error"]["train"],
                "wall_seconds": held["wall_seconds"],
            },
            "per_view": views["per_view"],
            "picture": picture.name,
            "commands": [
                trained["command"],
                "recon-extract-mesh --load-config RUN/config.yml --output-path mesh.ply",
                "recon-eval views RUN/config.yml --model-normals none",
                held["command"],
                "recon-eval views LVO_RUN/config.yml --model-normals held-out",
            ],  # fmt: skip
            "bench_command": "python bench/real/run.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine,
        }
        store_row(name, row)
        print(
            f"  {name}: {row['wall_seconds']:.0f} s, IoU {views['silhouette_iou']['mean']:.3f}, held-out normal error "
            f"mesh {row['held_out']['mesh_normal_error']['mean_deg']:.2f} deg, "
            f"model {row['held_out']['model_normal_error']['mean_deg']:.2f} deg",
            flush=True,
        )


def view_grid(views_dir: Path, path: Path, max_rows: int = 4) -> None:
    """The held-out views' pictures (input normals | mesh normals | shaded | error), cropped to the object."""
    import numpy as np
    from PIL import Image

    files = sorted(views_dir.glob("held-out_*.png"))[:max_rows] or sorted(views_dir.glob("*.png"))[:max_rows]
    rows = []
    for file in files:
        image = np.asarray(Image.open(file).convert("RGB"))
        width = image.shape[1] // 4
        # The first panel (input normals, black outside the mask) gives the object's box.
        ys, xs = np.nonzero(image[:, :width].max(axis=-1) > 0)
        y0, y1 = max(ys.min() - 8, 0), min(ys.max() + 8, image.shape[0])
        x0, x1 = max(xs.min() - 8, 0), min(xs.max() + 8, width)
        rows.append(np.concatenate([image[y0:y1, k * width + x0 : k * width + x1] for k in range(4)], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="rnb", help="comma-separated sections: rnb")
    parser.add_argument("--objects", default=",".join(DILIGENT_OBJECTS), help="DiLiGenT-MV objects for rnb-sdf")
    parser.add_argument("--iterations", type=int, default=None, help="run length (default: each method's)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and meshes here (default: a temp dir)")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"{REAL}: the real fixtures are missing")
    machine = machine_info()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="real_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sections = args.only.split(",")
    try:
        if "rnb" in sections:
            rnb_rows(args.objects.split(","), workdir, args.iterations, machine)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
