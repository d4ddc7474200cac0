"""``recon-eval``: reconstruction metrics, printed as one JSON line.

recon-eval mesh PRED GT [--scale S] [--thresholds 0.005 0.01 0.02] [--num-samples 200000]
                        [--seed 0] [--transform dataparser_transforms.json]
recon-eval normals PRED_DIR DATA_DIR [--mask-dir DIR]
recon-eval views CONFIG [--mesh MESH] [--output-dir DIR] [--model-normals held-out|all|none]
recon-eval materials CONFIG DATA_DIR
recon-eval relight PRED_DIR DATA_DIR
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from recon_plugin.eval.mesh_metrics import DEFAULT_THRESHOLDS


@dataclass
class MeshCommand:
    """Accuracy, completeness, Chamfer distance and F-scores between a predicted and a ground-truth mesh."""

    pred: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PRED")]
    """Predicted mesh (PLY, OBJ, ...)."""
    gt: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="GT")]
    """Ground-truth mesh in world units."""
    scale: float | None = None
    """Reference length for *_rel metrics and thresholds; default: bounding_radius of GT's scene.json, else 1."""
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    """F-score thresholds as fractions of --scale."""
    num_samples: int = 200_000
    """Points sampled on each surface."""
    seed: int = 0
    """Sampling seed."""
    transform: Path | None = None
    """dataparser_transforms.json mapping PRED from nerfstudio's normalised frame to world (ns-export meshes)."""

    def main(self) -> dict:
        """Computes the metrics."""
        from recon_plugin.eval.mesh_metrics import evaluate_mesh_files

        return evaluate_mesh_files(
            self.pred,
            self.gt,
            scale=self.scale,
            thresholds=self.thresholds,
            num_samples=self.num_samples,
            seed=self.seed,
            transform=self.transform,
        )


@dataclass
class NormalsCommand:
    """Mean / median angular error (degrees) of predicted normal PNGs against DATA_DIR/normal on the masks."""

    pred_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PRED_DIR")]
    """Predicted camera-frame normal PNGs ((n+1)/2, OpenGL axes), same sorted order as DATA_DIR/normal."""
    data_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATA_DIR")]
    """RnB data folder holding normal/ and mask/."""
    mask_dir: Path | None = None
    """Mask folder (default DATA_DIR/mask)."""

    def main(self) -> dict:
        """Computes the metrics."""
        from recon_plugin.eval.normal_metrics import evaluate_normal_dirs

        return evaluate_normal_dirs(self.pred_dir, self.data_dir, self.mask_dir)


@dataclass
class ViewsCommand:
    """A trained SDF run against its own input views, for captures without a ground-truth mesh: silhouette IoU of
    the mesh in every view, angular error of the mesh's and the model's normals against the input normal maps
    (training and held-out views apart), detached pieces, and a picture per view."""

    load_config: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CONFIG")]
    """config.yml of the run (train with the dataparser's ``--eval-mode interval`` to hold views out)."""
    mesh: Path | None = None
    """The mesh to score, in world units (recon-extract-mesh's output); default: extracted here at --resolution,
    largest component, as recon-extract-mesh does."""
    resolution: int = 512
    """Marching-cubes resolution when the mesh is extracted here."""
    output_dir: Path | None = None
    """Where views/<split>_<name>.png go: input normals | mesh normals | mesh shaded | error (0-30 degrees)."""
    model_normals: Literal["held-out", "all", "none"] = "held-out"
    """Which views also get the model's volume-rendered normals scored (a full-size render takes tens of seconds
    per view on a CPU)."""
    data: Path | None = None
    """New location of the training data, if it moved since training."""

    def main(self) -> dict:
        """Computes the metrics."""
        import trimesh

        from recon_plugin.eval.view_consistency import detached_fraction, evaluate_views
        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.export.mesh import extract_world_mesh, keep_largest_component

        _, pipeline, checkpoint, step = load_pipeline(self.load_config, data=self.data, test_mode="test")
        log = lambda line: print(line, file=sys.stderr)  # noqa: E731  (stdout carries the JSON line)
        result: dict = {"checkpoint": str(checkpoint), "step": step}
        if self.mesh is None:
            log(f"recon-eval views: extracting the surface at {self.resolution}^3")
            raw = extract_world_mesh(
                pipeline, resolution=self.resolution, largest_component=False, vertex_colors=False, log=log
            )
            fraction, components = detached_fraction(raw)
            result["detached_area_fraction"], result["raw_components"] = fraction, components
            mesh = keep_largest_component(raw)
        else:
            if not self.mesh.is_file():
                raise FileNotFoundError(f"{self.mesh}: mesh file not found")
            mesh = trimesh.load(self.mesh, process=False, force="mesh")
            fraction, components = detached_fraction(mesh)
            result["detached_area_fraction"], result["raw_components"] = fraction, components
        result.update(evaluate_views(pipeline, mesh, self.output_dir, self.model_normals, log=log))
        return result


@dataclass
class MaterialsCommand:
    """Material errors of a nero-material run at the ground-truth surface points of a recon-synth glossy scene:
    albedo MAE after a per-channel scale fit, roughness MAE, metallic classified right (threshold 0.5)."""

    load_config: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CONFIG")]
    """config.yml of the nero-material run."""
    data_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATA_DIR")]
    """The scene folder holding gt_materials.npz."""

    def main(self) -> dict:
        """Computes the metrics."""
        from recon_plugin.eval.material_metrics import material_errors_of_run

        return material_errors_of_run(self.load_config, self.data_dir)


@dataclass
class RelightCommand:
    """Relighting PSNR (object pixels and whole image) and SSIM of recon-relight PNGs against DATA_DIR/relight/."""

    pred_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="PRED_DIR")]
    """Folder of relit PNGs named like the views (recon-relight --cameras test)."""
    data_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DATA_DIR")]
    """The recon-synth glossy scene (relight/k.png, k-depth.png for the object mask)."""

    def main(self) -> dict:
        """Computes the metrics."""
        from recon_plugin.eval.material_metrics import evaluate_relight_dirs

        return evaluate_relight_dirs(self.pred_dir, self.data_dir)


#: Subcommand name -> command dataclass.
SUBCOMMANDS: dict[str, type] = {
    "mesh": MeshCommand,
    "normals": NormalsCommand,
    "views": ViewsCommand,
    "materials": MaterialsCommand,
    "relight": RelightCommand,
}


def entrypoint(args: list[str] | None = None) -> None:
    """Console-script entry point of ``recon-eval``: prints one JSON line on stdout."""
    command = tyro.extras.subcommand_cli_from_dict(
        SUBCOMMANDS, prog="recon-eval", description="Reconstruction metrics (one JSON line).", args=args
    )
    try:
        result = command.main()
    except (OSError, ValueError) as err:
        print(f"recon-eval: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    entrypoint()
