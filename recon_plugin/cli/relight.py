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
    the run's cameras (one 8-bit sRGB PNG per view, named like the view's image) or from an orbit around the
    object (orbit_000.png ... and orbit.mp4 when a video writer is installed)."""

    load_config: Path
    """config.yml of the nero-material run (written by ns-train)."""
    env: Path
    """The new environment: an equirect .exr or .hdr of linear radiance, world z up."""
    output_dir: Path = Path("relight")
    """Folder for the PNGs (created)."""
    cameras: Literal["train", "test", "orbit"] = "test"
    """Which views to render: the training views, the held-out ones (what recon-synth glossy relights), or an
    orbit around the object (world z up)."""
    orbit_views: int = 60
    """Frames of the orbit (--cameras orbit)."""
    orbit_elevation: float = 30.0
    """Degrees above the horizon of the orbit (--cameras orbit), at the training cameras' median distance."""
    orbit_size: int = 256
    """Longer side of the orbit frames in pixels (the training cameras' field of view, their size when smaller;
    0: their size). The Monte-Carlo render costs a few milliseconds per object pixel on a CPU: 60 frames of
    800x600 take over an hour there."""
    num_diffuse_samples: int = 32
    """Cosine-weighted Monte-Carlo directions per pixel."""
    num_specular_samples: int = 128
    """GGX-lobe Monte-Carlo directions per pixel."""
    num_light_samples: int = 96
    """Directions per pixel drawn from the environment's small bright lights (GGX ones instead if it has none)."""
    seed: int = 0
    data: Path | None = None
    """New location of the training data, if it moved since training."""

    def main(self) -> None:
        counts = (self.num_diffuse_samples, self.num_specular_samples, self.num_light_samples)
        if min(counts) < 0:
            raise ValueError("--num-diffuse-samples, --num-specular-samples and --num-light-samples must be >= 0")
        if sum(counts) == 0:
            raise ValueError("--num-diffuse-samples + --num-specular-samples + --num-light-samples must be positive")
        if self.cameras == "orbit" and self.orbit_views < 1:
            raise ValueError(f"--orbit-views must be >= 1, got {self.orbit_views}")
        if not (self.orbit_size == 0 or self.orbit_size >= 8):
            raise ValueError(f"--orbit-size must be 0 (the training image size) or >= 8 pixels, got {self.orbit_size}")
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
            num_light=self.num_light_samples,
            orbit_views=self.orbit_views,
            orbit_elevation_deg=self.orbit_elevation,
            orbit_size=self.orbit_size or None,
        )
        pngs = [path for path in written if path.suffix == ".png"]
        videos = [str(path) for path in written if path.suffix != ".png"]
        print(f"recon-relight: wrote {len(pngs)} PNGs to {self.output_dir}" + (f" and {videos[0]}" if videos else ""))


def entrypoint() -> None:
    """Console script entry point."""
    try:
        tyro.cli(Relight).main()
    except (FileNotFoundError, ValueError) as err:
        print(f"recon-relight: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
