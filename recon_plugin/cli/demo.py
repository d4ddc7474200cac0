"""recon-demo (`make demo`): synthesise a scene, train rnb-sdf on it, extract the mesh, score it.

Everything lands in ``demo_output/``: the scene, the nerfstudio run, ``mesh.ply`` (world units),
the mesh of nerfstudio's own ``ns-export tsdf`` in ``tsdf/``, rendered normals, and ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class Demo:
    """Train rnb-sdf on a synthetic scene with exact ground truth and report mesh and normal accuracy."""

    output_dir: Path = Path("demo_output")
    shape: str = "blob"
    views: int = 20
    size: int = 128
    iterations: int = 1000
    """Training iterations (about 8 minutes on 2 CPU cores)."""
    resolution: int = 512
    """Marching-cubes resolution of the extracted mesh."""
    seed: int = 0

    def main(self) -> dict:
        with warnings.catch_warnings():
            # nerfstudio 1.1.5 under torch 2.14 warns about its own tensor indexing on every camera call.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return self._run()

    def _run(self) -> dict:
        started = time.time()
        out = self.output_dir.resolve()
        scene = out / "scene"
        self._synthesise(scene)
        config_path = self._train(scene, out / "runs")
        train_seconds = time.time() - started

        from recon_plugin.eval.mesh_metrics import evaluate_mesh_files
        from recon_plugin.eval.render_normals import evaluate_rendered_normals
        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.export.mesh import extract_world_mesh, write_mesh_atomic

        print("\n[3/5] extracting the mesh (recon-extract-mesh)")
        _, pipeline, _, _ = load_pipeline(config_path, test_mode="test")
        mesh = extract_world_mesh(pipeline, resolution=self.resolution)
        mesh_path = out / "mesh.ply"
        write_mesh_atomic(mesh, mesh_path)

        tsdf_path = self._export_tsdf(config_path, out / "tsdf")

        print("\n[5/5] scoring against the ground truth")
        mesh_metrics = evaluate_mesh_files(mesh_path, scene / "gt_mesh.ply")
        tsdf_metrics = evaluate_mesh_files(
            tsdf_path, scene / "gt_mesh.ply", transform=config_path.parent / "dataparser_transforms.json"
        )
        normal_metrics = evaluate_rendered_normals(pipeline, output_dir=out / "rendered_normals")
        normal_metrics.pop("per_view", None)
        report = {
            "scene": str(scene),
            "config": str(config_path),
            "mesh_path": str(mesh_path),
            "iterations": self.iterations,
            "train_seconds_including_startup": round(train_seconds, 1),
            "total_seconds": round(time.time() - started, 1),
            "chamfer_rel": mesh_metrics["chamfer_rel"],
            "fscore_1pct": mesh_metrics["fscore"]["0.01"],
            "mesh": mesh_metrics,
            "tsdf_mesh_path": str(tsdf_path),
            "tsdf_mesh": tsdf_metrics,
            "normals": normal_metrics,
        }
        (out / "metrics.json").write_text(json.dumps(report, indent=2))
        print(
            "\nrnb-sdf demo results (relative to the object's bounding radius "
            f"{mesh_metrics['scale']:.3f} world units)\n"
            f"  Chamfer distance     {100 * mesh_metrics['chamfer_rel']:.3f} %"
            f"   ({mesh_metrics['chamfer']:.5f} world units)\n"
            f"  F-score @ 1%         {mesh_metrics['fscore']['0.01']:.4f}\n"
            f"  F-score @ 0.5%       {mesh_metrics['fscore']['0.005']:.4f}\n"
            f"  ns-export tsdf mesh  Chamfer {100 * tsdf_metrics['chamfer_rel']:.3f} %,"
            f" F-score @ 1% {tsdf_metrics['fscore']['0.01']:.4f}\n"
            f"  normal error (mask)  {normal_metrics['mean_deg']:.2f} deg mean,"
            f" {normal_metrics['median_deg']:.2f} median\n"
            f"  total time           {report['total_seconds']:.0f} s\n"
            f"\noutputs in {out}:\n"
            f"  mesh (world units)   {mesh_path}\n"
            f"  ns-export tsdf mesh  {tsdf_path} (normalised frame, as nerfstudio writes it)\n"
            f"  metrics              {out / 'metrics.json'}\n"
            f"  rendered normals     {out / 'rendered_normals'}\n"
            f"                       (check: recon-eval normals {out / 'rendered_normals'} {scene})\n"
            f"\nlook at it:  ns-viewer --load-config {config_path}\n"
        )
        return report

    def _synthesise(self, scene: Path) -> None:
        from recon_plugin.data.synthetic.rnb import write_rnb_scene

        wanted = {"shape": self.shape, "views": self.views, "size": self.size, "seed": self.seed}
        info = scene / "scene.json"
        if info.is_file():
            existing = json.loads(info.read_text())
            if all(existing.get(key) == value for key, value in wanted.items()):
                print(f"[1/5] reusing the synthetic scene in {scene}")
                return
        print(f"[1/5] synthesising the '{self.shape}' scene ({self.views} views, {self.size}x{self.size}) in {scene}")
        write_rnb_scene(scene, shape=self.shape, views=self.views, size=self.size, seed=self.seed, overwrite=True)

    def _export_tsdf(self, config_path: Path, output_dir: Path) -> Path:
        """Runs nerfstudio's own ``ns-export tsdf`` on the run, as a user would (defaults, untextured)."""
        print("\n[4/5] ns-export tsdf (nerfstudio's TSDF fusion of the rendered depth)")
        command = [
            str(Path(sys.executable).parent / "ns-export"),
            "tsdf",
            "--load-config", str(config_path),
            "--output-dir", str(output_dir),
            "--texture-method", "tsdf",  # the default NeRF texturing renders a 2048^2 atlas: minutes on a CPU
        ]  # fmt: skip
        result = subprocess.run(command, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        mesh_path = output_dir / "tsdf_mesh.ply"
        if result.returncode != 0 or not mesh_path.is_file():
            raise RuntimeError(f"ns-export tsdf failed (exit {result.returncode}); see its output above")
        return mesh_path

    def _train(self, scene: Path, runs: Path) -> Path:
        print(f"\n[2/5] training rnb-sdf for {self.iterations} iterations (progress below)")
        timestamp = time.strftime("%Y-%m-%d_%H%M%S")
        command = [
            str(Path(sys.executable).parent / "ns-train"),
            "rnb-sdf",
            "--data", str(scene),
            "--output-dir", str(runs),
            "--experiment-name", "demo",
            "--timestamp", timestamp,
            "--max-num-iterations", str(self.iterations),
            # a non-interactive run: with the default viewer ns-train would keep serving after training until Ctrl-C
            "--vis", "tensorboard",
            "--logging.steps-per-log", "100",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        result = subprocess.run(command, env=env)
        config_path = runs / "demo" / "rnb-sdf" / timestamp / "config.yml"
        if result.returncode != 0 or not config_path.is_file():
            raise RuntimeError(f"ns-train rnb-sdf failed (exit {result.returncode}); see its output above")
        return config_path


def entrypoint() -> None:
    """Console script entry point."""
    try:
        tyro.cli(Demo).main()
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"recon-demo: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
