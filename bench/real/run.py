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

nero rows:
  - "nero-shape/dtu_scan37" and its ablation "nero-shape plain/dtu_scan37" (``--pipeline.model.shading plain``):
    ``ns-train nero-shape --data dtu_scan37`` (every 8th view held out, the dataparser's default), ``ns-eval`` on
    the held-out views (PSNR/SSIM), ``recon-eval views`` (silhouette IoU of the mesh in every view);
  - "nero-material/dtu_scan37": ``ns-train nero-material --data dtu_scan37 --pipeline.model.shape-config STAGE_I``,
    ``ns-eval``, ``recon-export-materials`` (timed, on the full stage-I mesh) and ``recon-relight --cameras orbit``
    under the exported environment;
  - "nero-shape/ethiopian_head_llff": the LLFF scene as typed, ``recon-eval views`` (silhouette IoU, held-out views
    apart; no ``ns-eval``, whose 9 full-size held-out renders would take longer than the training);
  - "photos-only/dtu_scan37": ``ns-process-data images`` (COLMAP) on scan 37's photos alone, then
    ``ns-train nero-shape`` on its output; the COLMAP cameras against the calibrated ones after a similarity
    alignment, and the mesh (mapped by that alignment) against the calibrated views' masks.

Only what a bench needs is added to the user's command: where the run goes and tensorboard instead of the viewer
(and the run length when ``--iterations`` is given). Results go to bench/real/results.json (earlier rows kept, each
with its machine, its commands and the date) and pictures to bench/real/<row>.png.

    python bench/real/run.py [--only rnb,dtu,head,photos] [--objects cow,pot2,reading] [--iterations N]
                             [--workdir DIR]
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
        }
        store_row(name, stamp(row, machine))
        print(
            f"  {name}: {row['wall_seconds']:.0f} s, IoU {views['silhouette_iou']['mean']:.3f}, held-out normal error "
            f"mesh {row['held_out']['mesh_normal_error']['mean_deg']:.2f} deg, "
            f"model {row['held_out']['model_normal_error']['mean_deg']:.2f} deg",
            flush=True,
        )


def ns_eval(run_dir: Path, name: str, workdir: Path) -> dict:
    """``ns-eval`` on the run's held-out views: nerfstudio's mean metrics."""
    output = workdir / f"eval-{name}.json"
    command = [str(BIN / "ns-eval"), "--load-config", str(run_dir / "config.yml"), "--output-path", str(output)]
    run_checked(command, workdir / f"eval-{name}.log")
    return json.loads(output.read_text())["results"]


def dtu_rows(workdir: Path, iterations: int | None, machine: dict) -> Path:
    """nero-shape (split-sum and plain) and nero-material on DTU scan 37; returns the split-sum run's config."""
    data = REAL / "dtu_scan37"
    stage_one = None
    for shading in ("split-sum", "plain"):
        name = "nero-shape" if shading == "split-sum" else "nero-shape plain"
        key = f"dtu-{shading}"
        extra = [] if shading == "split-sum" else ["--pipeline.model.shading", "plain"]
        trained = train("nero-shape", data, key, workdir, iterations, extra)
        metrics = ns_eval(trained["run_dir"], key, workdir)
        views = score_views(trained["run_dir"], key, workdir, None, "none")
        picture = HERE / f"{key}.png"
        view_grid(workdir / f"views-{key}" / "views", picture, panels=3)
        row = {
            "method": name,
            "scene": "dtu_scan37",
            **{k: trained[k] for k in ("wall_seconds", "seconds_per_step", "rays_per_second", "peak_rss_mib")},
            "held_out_psnr": metrics.get("psnr"),
            "held_out_ssim": metrics.get("ssim"),
            "silhouette_iou": views["silhouette_iou"],
            "detached_area_fraction": views["detached_area_fraction"],
            "picture": picture.name,
            "commands": [trained["command"], "ns-eval --load-config RUN/config.yml", "recon-eval views RUN/config.yml"],
        }
        store_row(f"{name}/dtu_scan37", stamp(row, machine))
        print(f"  {name}: PSNR {row['held_out_psnr']:.2f}, IoU {views['silhouette_iou']['mean']:.3f}", flush=True)
        if shading == "split-sum":
            stage_one = trained
    assert stage_one is not None
    config = stage_one["run_dir"] / "config.yml"
    material = train(
        "nero-material", data, "dtu-material", workdir, iterations, ["--pipeline.model.shape-config", str(config)]
    )
    metrics = ns_eval(material["run_dir"], "dtu-material", workdir)
    exported = workdir / "dtu-materials"
    started = time.time()
    export = [str(BIN / "recon-export-materials"), "--load-config", str(material["run_dir"] / "config.yml")]
    export_log = run_checked(export + ["--output-dir", str(exported)], workdir / "export-dtu.log")
    export_seconds = time.time() - started
    orbit = workdir / "dtu-orbit"
    relight = [str(BIN / "recon-relight"), "--load-config", str(material["run_dir"] / "config.yml"), "--env"]
    relight += [str(exported / "environment.exr"), "--cameras", "orbit", "--output-dir", str(orbit)]
    started = time.time()
    run_checked(relight, workdir / "relight-dtu.log")
    orbit_strip(orbit, HERE / "dtu-material-orbit.png")
    summary = json.loads((exported / "materials.json").read_text())
    row = {
        "method": "nero-material",
        "scene": "dtu_scan37",
        **{k: material[k] for k in ("wall_seconds", "seconds_per_step", "rays_per_second", "peak_rss_mib")},
        "stages_wall_seconds": round(stage_one["wall_seconds"] + material["wall_seconds"], 1),
        "held_out_psnr": metrics.get("psnr"),
        "held_out_ssim": metrics.get("ssim"),
        "export_seconds": round(export_seconds, 1),
        "export_log": [line for line in export_log.splitlines() if is_progress_line(line)],
        "model_glb_validation": validate_glb_file(exported / "model.glb", workdir),
        "stage_one_faces": summary["faces"],
        "model_glb_faces": summary["model_glb_faces"],
        "orbit_seconds": round(time.time() - started, 1),
        "orbit_video": (orbit / "orbit.mp4").is_file(),
        "orbit_picture": "dtu-material-orbit.png",
        "commands": [
            material["command"],
            "ns-eval --load-config RUN/config.yml",
            "recon-export-materials --load-config RUN/config.yml --output-dir materials",
            "recon-relight --load-config RUN/config.yml --env materials/environment.exr --cameras orbit",
        ],  # fmt: skip
    }
    store_row("nero-material/dtu_scan37", stamp(row, machine))
    print(f"  nero-material: PSNR {row['held_out_psnr']:.2f}, export {export_seconds:.0f} s", flush=True)
    return config


def orbit_strip(orbit: Path, path: Path, frames: int = 4) -> None:
    """Every (60 / frames)-th frame of a recon-relight orbit side by side."""
    import numpy as np
    from PIL import Image

    pngs = sorted(orbit.glob("orbit_*.png"))
    chosen = pngs[:: max(1, len(pngs) // frames)][:frames]
    Image.fromarray(np.concatenate([np.asarray(Image.open(p).convert("RGB")) for p in chosen], axis=1)).save(path)


def is_progress_line(line: str) -> bool:
    """recon-export-materials' indented progress lines, not the indented source lines of Python warnings."""
    return line.startswith("  ") and not line.startswith("  @") and "warn" not in line


def validate_glb_file(path: Path, workdir: Path) -> dict | None:
    """The Khronos glTF validator's error and warning counts (the tests' helper; None without node/npm)."""
    import pytest

    sys.path.insert(0, str(HERE.parents[1] / "tests"))
    from gltf_validation import validate_glb

    try:
        issues = validate_glb(path.resolve(), workdir.resolve())
    except pytest.skip.Exception as skipped:
        print(f"  glTF validator not run: {skipped}", flush=True)
        return None
    return {"errors": issues["numErrors"], "warnings": issues["numWarnings"], "infos": issues.get("numInfos")}


def head_row(workdir: Path, iterations: int | None, machine: dict) -> None:
    trained = train("nero-shape", REAL / "ethiopian_head_llff", "head", workdir, iterations, [])
    # No ns-eval here: its 9 held-out views of 1000x1000 take about 20 min to render on 2 cores; the head is
    # measured by the held-out silhouette IoU.
    views = score_views(trained["run_dir"], "head", workdir, None, "none")
    picture = HERE / "head.png"
    view_grid(workdir / "views-head" / "views", picture, panels=3)
    held = [row["silhouette_iou"] for row in views["per_view"] if row["split"] == "held-out"]
    row = {
        "method": "nero-shape",
        "scene": "ethiopian_head_llff",
        **{k: trained[k] for k in ("wall_seconds", "seconds_per_step", "rays_per_second", "peak_rss_mib")},
        "silhouette_iou": views["silhouette_iou"],
        "silhouette_iou_held_out": {"mean": sum(held) / len(held), "min": min(held)},
        "detached_area_fraction": views["detached_area_fraction"],
        "picture": picture.name,
        "commands": [trained["command"], "recon-eval views RUN/config.yml"],
    }
    store_row("nero-shape/ethiopian_head_llff", stamp(row, machine))
    print(f"  head: IoU held-out {row['silhouette_iou_held_out']['mean']:.3f}", flush=True)


def photos_row(workdir: Path, iterations: int | None, machine: dict, reference_config: Path | None) -> None:
    """COLMAP on scan 37's photos alone, nero-shape on the result, both scored against the calibrated data."""
    import numpy as np
    import trimesh

    from recon_plugin.data.nero_dataparser import NeroDataParserConfig
    from recon_plugin.eval.camera_metrics import camera_errors
    from recon_plugin.eval.view_consistency import evaluate_views
    from recon_plugin.export.loading import load_pipeline

    photos = workdir / "dtu-photos"
    if photos.exists():
        shutil.rmtree(photos)
    shutil.copytree(REAL / "dtu_scan37" / "image", photos)
    processed = workdir / "dtu-processed"
    process = [str(BIN / "ns-process-data"), "images", "--data", str(photos), "--output-dir", str(processed)]
    # No GPU here, and the default vocab-tree matcher downloads its vocabulary: exhaustive matching needs neither.
    process += ["--no-gpu", "--matching-method", "exhaustive"]
    started = time.time()
    run_checked(process, workdir / "process-dtu.log")
    process_seconds = time.time() - started
    trained = train("nero-shape", processed, "dtu-photos", workdir, iterations, [])

    # COLMAP's cameras (nerfstudio's original-data frame) against the calibrated ones, matched by sorted name:
    # ns-process-data renames the i-th photo to frame_{i+1:05d}.
    estimated = NeroDataParserConfig(data=processed, eval_mode="all").setup()._read_transforms()
    calibrated = NeroDataParserConfig(data=REAL / "dtu_scan37", eval_mode="all").setup()._read_neus()
    names = sorted(path.name for path in photos.iterdir())
    index = {f"frame_{i + 1:05d}": i for i in range(len(names))}
    matched = [index[path.stem] for path in estimated.image_filenames]
    estimate_c2w, reference_c2w = estimated.camera_to_worlds, calibrated.camera_to_worlds[matched]
    errors, alignment = camera_errors(estimate_c2w, reference_c2w)
    # estimated.camera_to_worlds are in the poses' frame (nerfstudio's applied transform undone below for the mesh)
    row = {
        "method": "ns-process-data images + nero-shape",
        "scene": "dtu_scan37 (photos only)",
        "process_seconds": round(process_seconds, 1),
        "registered_views": f"{len(matched)} of {len(names)}",
        "camera_error": {k: errors[k] for k in ("centre_error", "rotation_error_deg")},
        "camera_centre_error_unit": "mm (DTU world units)",
        **{k: trained[k] for k in ("wall_seconds", "seconds_per_step", "rays_per_second", "peak_rss_mib")},
        "held_out_psnr": ns_eval(trained["run_dir"], "dtu-photos", workdir).get("psnr"),
        "commands": [" ".join(["ns-process-data", *process[1:]]), trained["command"]],
    }
    if reference_config is not None:
        # The photo run's mesh, carried into the calibrated world by the camera alignment, against the real masks.
        mesh_path = workdir / "dtu-photos.ply"
        extract = [str(BIN / "recon-extract-mesh"), "--load-config", str(trained["run_dir"] / "config.yml")]
        run_checked(extract + ["--output-path", str(mesh_path)], workdir / "extract-dtu-photos.log")
        mesh = trimesh.load(mesh_path, process=False, force="mesh")
        pose_frame = estimated.world_scale * (
            np.asarray(mesh.vertices) @ estimated.world_transform[:, :3].T + estimated.world_transform[:, 3]
        )
        mesh.vertices = alignment.points(pose_frame)
        _, pipeline, _, _ = load_pipeline(reference_config, test_mode="test")
        views = evaluate_views(pipeline, mesh, workdir / "views-dtu-photos", "none", log=None)
        row["silhouette_iou_in_calibrated_views"] = views["silhouette_iou"]
    store_row("photos-only/dtu_scan37", stamp(row, machine))
    print(f"  photos only: {row['camera_error']}", flush=True)


def stamp(row: dict, machine: dict) -> dict:
    """The row with the bench's command line, the date and the machine."""
    return row | {
        "bench_command": "python bench/real/run.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
    }


def view_grid(views_dir: Path, path: Path, max_rows: int = 4, panels: int = 4, max_width: int = 1200) -> None:
    """The held-out views' pictures (recon-eval views: input | mesh normals | shaded [| error]), cropped to the
    object, at most ``max_width`` pixels wide."""
    import numpy as np
    from PIL import Image

    files = sorted(views_dir.glob("held-out_*.png"))[:max_rows] or sorted(views_dir.glob("*.png"))[:max_rows]
    rows = []
    for file in files:
        image = np.asarray(Image.open(file).convert("RGB"))
        width = image.shape[1] // panels
        # The first panel (input normals, black outside the mask) gives the object's box.
        ys, xs = np.nonzero(image[:, :width].max(axis=-1) > 0)
        y0, y1 = max(ys.min() - 8, 0), min(ys.max() + 8, image.shape[0])
        x0, x1 = max(xs.min() - 8, 0), min(xs.max() + 8, width)
        rows.append(np.concatenate([image[y0:y1, k * width + x0 : k * width + x1] for k in range(panels)], axis=1))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    if grid.width > max_width:
        grid = grid.resize((max_width, round(grid.height * max_width / grid.width)), Image.Resampling.LANCZOS)
    grid.save(path, optimize=True)


def markdown() -> str:
    """The README's tables from results.json."""
    rows = json.loads((HERE / "results.json").read_text())["rows"]
    lines = [
        "| object | wall (as typed) | s/step | peak RSS | silhouette IoU mean / min (20 views) | mesh normal error, "
        "training views | held-out views (4 of 20 left out): mesh / model normal error | detached surface | mesh "
        "extent (mm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows.values():
        if row["method"] != "rnb-sdf":
            continue
        held = row["held_out"]
        lines.append(
            f"| {row['scene'].split('/')[-1]} | {row['wall_seconds'] / 60:.1f} min | {row['seconds_per_step']:.3f} | "
            f"{row['peak_rss_mib'] / 1024:.1f} GiB | {row['silhouette_iou']['mean']:.3f} / "
            f"{row['silhouette_iou']['min']:.3f} | {row['mesh_normal_error_train_views']['mean_deg']:.2f}° | "
            f"**{held['mesh_normal_error']['mean_deg']:.2f}°** / {held['model_normal_error']['mean_deg']:.2f}° | "
            f"{100 * row['detached_area_fraction']:.2f} % | "
            f"{' x '.join(f'{v:.0f}' for v in row['mesh_extent_mm'])} |"
        )
    others = [row for row in rows.values() if row["method"] != "rnb-sdf"]
    if others:
        lines += [
            "",
            "| method | scene | wall | s/step | peak RSS | held-out PSNR / SSIM | silhouette IoU mean / min | other |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in others:
            iou = row.get("silhouette_iou") or row.get("silhouette_iou_in_calibrated_views")
            iou_text = f"{iou['mean']:.3f} / {iou['min']:.3f}" if iou else "-"
            psnr = row.get("held_out_psnr")
            ssim = row.get("held_out_ssim")
            quality = "-" if psnr is None else f"{psnr:.2f} dB / " + ("-" if ssim is None else f"{ssim:.3f}")
            other = []
            if "silhouette_iou_held_out" in row:
                other.append(f"held-out IoU {row['silhouette_iou_held_out']['mean']:.3f}")
            if "export_seconds" in row:
                validation = row.get("model_glb_validation")
                checked = (
                    f", glTF validator: {validation['errors']} errors, {validation['warnings']} warnings"
                    if validation
                    else ""
                )
                other.append(
                    f"stages I + II {row['stages_wall_seconds'] / 60:.1f} min; `recon-export-materials` "
                    f"{row['export_seconds']:.0f} s ({row['stage_one_faces']:,} faces -> GLB "
                    f"{row['model_glb_faces']:,}{checked}); `recon-relight --cameras orbit` "
                    f"{row['orbit_seconds'] / 60:.1f} min"
                )
            if "camera_error" in row:
                camera = row["camera_error"]
                other.append(
                    f"COLMAP {row['process_seconds']:.0f} s, {row['registered_views']} views, camera centres "
                    f"{camera['centre_error']['median']:.2f} mm (median), rotations "
                    f"{camera['rotation_error_deg']['median']:.3f}° (median)"
                )
            seconds_per_step = row.get("seconds_per_step")
            lines.append(
                f"| {row['method']} | {row['scene']} | {row['wall_seconds'] / 60:.1f} min | "
                f"{seconds_per_step if seconds_per_step is None else f'{seconds_per_step:.3f}'} | "
                f"{row['peak_rss_mib'] / 1024:.1f} GiB | {quality} | {iou_text} | {'; '.join(other)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="rnb,dtu,head,photos", help="comma-separated sections: rnb,dtu,head,photos")
    parser.add_argument("--objects", default=",".join(DILIGENT_OBJECTS), help="DiLiGenT-MV objects for rnb-sdf")
    parser.add_argument("--iterations", type=int, default=None, help="run length (default: each method's)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and meshes here (default: a temp dir)")
    parser.add_argument("--markdown", action="store_true", help="print the README's tables from results.json")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
        return
    if not REAL.is_dir():
        raise SystemExit(f"{REAL}: the real fixtures are missing")
    machine = machine_info()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="real_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sections = args.only.split(",")
    try:
        if "rnb" in sections:
            rnb_rows(args.objects.split(","), workdir, args.iterations, machine)
        stage_one = None
        if "dtu" in sections:
            stage_one = dtu_rows(workdir, args.iterations, machine)
        if "head" in sections:
            head_row(workdir, args.iterations, machine)
        if "photos" in sections:
            if stage_one is None:  # a dtu section of an earlier invocation in the same workdir
                earlier = workdir / "runs" / "dtu-split-sum" / "nero-shape" / "bench" / "config.yml"
                stage_one = earlier if earlier.is_file() else None
            photos_row(workdir, args.iterations, machine, stage_one)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
