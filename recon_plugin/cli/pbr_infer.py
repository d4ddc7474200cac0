"""``recon-pbr-infer``: PBR maps of a material from three photos, with a trained pbr-fusion run.

    recon-pbr-infer --load-config RUN/config.yml VIEW0 VIEW1 VIEW2 --output-dir OUT

Writes OUT/{albedo,roughness,metallic,normal}.png (normal encoded (n + 1) / 2) and OUT/material.glb.
The views are resized to the run's resolution (``--pipeline.datamanager.resolution`` at training), and should
be registered to the material's UV space like the training views (see ``recon-synth pbr``), lit like them:
with the default training data the main light is within 30 degrees of the top edge of the map (a normal's tilt
is only readable from shading when the light's side is known).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Tuple

import tyro


@dataclass
class PbrInfer:
    """Predict albedo, roughness, metallic and normal maps (and a .glb) from three views."""

    views: Annotated[Tuple[Path, Path, Path], tyro.conf.Positional, tyro.conf.arg(metavar="VIEW0 VIEW1 VIEW2")]
    """The three input images (PNG/JPEG), in the order the model was trained with."""
    load_config: Path
    """config.yml of a pbr-fusion run (written by ns-train)."""
    output_dir: Path
    """Folder for the maps and material.glb (created)."""

    def main(self) -> dict:
        for path in self.views:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: input view not found")
        # Heavy imports after the cheap checks, so a typo fails fast.
        import torch

        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.methods.pbr_fusion.data import load_views
        from recon_plugin.methods.pbr_fusion.export import write_maps
        from recon_plugin.methods.pbr_fusion.model import PbrFusionModel

        # pbr-fusion reads no training data at inference, so the recorded data folder need not exist; the run's
        # own folder satisfies the loader's check for it.
        config_path = Path(self.load_config).expanduser().resolve()
        _, pipeline, _, _ = load_pipeline(config_path, data=config_path.parent, test_mode="inference")
        model = pipeline.model
        if not isinstance(model, PbrFusionModel):
            raise ValueError(f"{self.load_config}: not a pbr-fusion run (model is {type(model).__name__})")
        resolution = pipeline.datamanager.config.resolution  # type: ignore[attr-defined]
        views = load_views(list(self.views), resolution)[None].float().div(255.0).to(model.device)
        model.eval()
        with torch.no_grad():
            outputs = model.get_outputs_for_camera(views)  # the evaluated prediction (mirror averaging included)
        maps = {
            "albedo": outputs["albedo"][0].permute(1, 2, 0).cpu().numpy(),
            "roughness": outputs["roughness"][0, 0].cpu().numpy(),
            "metallic": outputs["metallic"][0, 0].cpu().numpy(),
            "normal": outputs["normal"][0].permute(1, 2, 0).cpu().numpy(),
        }
        paths = write_maps(self.output_dir, maps)
        print(f"recon-pbr-infer: wrote {', '.join(p.name for p in paths.values())} to {self.output_dir}")
        return paths


def entrypoint(args: list[str] | None = None) -> None:
    """Console-script entry point of ``recon-pbr-infer``."""
    command = tyro.cli(PbrInfer, args=args, prog="recon-pbr-infer")
    try:
        command.main()
    except (FileNotFoundError, ValueError) as err:
        print(f"recon-pbr-infer: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    entrypoint()
