"""recon-relight: a nero-material run rendered under another environment map (Monte Carlo, no Blender)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class Relight:
    """Render the recovered materials on the mesh under a new equirect environment (.exr/.hdr, world z up) from
    the run's cameras; writes one 8-bit sRGB PNG per view, named like the view's image."""

    load_config: Path
    """config.yml of the nero-material run (written by ns-train)."""
    env: Path
    """The new environment: an equirect .exr or .hdr of linear radiance, world z up."""
    output_dir: Path = Path("relight")
    """Folder for the PNGs (created)."""
    cameras: Literal["train", "test"] = "test"
    """Which views to render: the training views or the held-out ones (what recon-synth glossy relights)."""
    num_diffuse_samples: int = 128
    """Cosine-weighted Monte-Carlo directions per pixel."""
    num_specular_samples: int = 128
    """GGX-lobe Monte-Carlo directions per pixel."""
    seed: int = 0
    data: Path | None = None
    """New location of the training data, if it moved since training."""

    def main(self) -> None:
        if self.num_diffuse_samples < 0 or self.num_specular_samples < 0:
            raise ValueError("--num-diffuse-samples and --num-specular-samples must be >= 0")
        if self.num_diffuse_samples + self.num_specular_samples == 0:
            raise ValueError("--num-diffuse-samples + --num-specular-samples must be positive")
        from recon_plugin.components.environment import read_environment

        environment = read_environment(self.env)  # fails early, naming the file, before the heavy loading
        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.export.relight import relight_pipeline_views

        config, pipeline, checkpoint, step = load_pipeline(self.load_config, data=self.data)
        if config.method_name != "nero-material":
            raise ValueError(f"{self.load_config}: a {config.method_name} run, not nero-material")
        print(f"recon-relight: {checkpoint} (step {step}), {self.cameras} views under {self.env}")
        written = relight_pipeline_views(
            pipeline,
            environment,
            self.output_dir,
            self.cameras,
            self.num_diffuse_samples,
            self.num_specular_samples,
            self.seed,
        )
        print(f"recon-relight: wrote {len(written)} PNGs to {self.output_dir}")


def entrypoint() -> None:
    """Console script entry point."""
    try:
        tyro.cli(Relight).main()
    except (FileNotFoundError, ValueError) as err:
        print(f"recon-relight: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
