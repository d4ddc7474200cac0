"""``recon-synth``: synthetic scenes with exact ground truth.

    recon-synth pbr OUT [--materials 16] [--samples-per-material 4] [--size 256] [--seed 0]
                        [--dirty-fraction 0.5] [--workers N] [--overwrite]
    recon-synth rnb OUT [--shape blob] [--views 20] [--size 128] [--seed 0] [--realism none|ps]
                        [--normal-noise-deg D] [--normal-bias-deg D] [--albedo-scale-jitter F]
                        [--no-masks] [--backdrop none|plane|box] [--mask-bit-depth 8] [--overwrite]
    recon-synth glossy OUT [--shape blob] [--views 48] [--size 128] [--samples 256] [--seed 0]
                           [--interreflection] [--transforms-json] [--overwrite]

One subcommand per output format; each is a dataclass with a ``main()`` method, registered in
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

ShapeName = Literal["blob", "sphere", "torus", "dimpled_cube", "knot", "figure", "bowl"]


@dataclass
class RnbCommand:
    """Render a synthetic object into the RnB layout (cameras.npz, normal/, albedo/, mask/, gt_mesh.ply, scene.json)."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output folder (created; must be missing or empty unless --overwrite)."""
    shape: ShapeName = "blob"
    """Object to render."""
    views: int = 20
    """Number of cameras, spread over a sphere around the object."""
    size: int = 128
    """Image width and height in pixels."""
    seed: int = 0
    """Seed for the camera spiral rotation, the albedo gains and the normal noise."""
    realism: Literal["none", "ps"] = "none"
    """Photometric-stereo realism preset; "ps": 4 deg noise, 2 deg bias, 0.15 albedo jitter. The options
    below override it."""
    normal_noise_deg: float | None = None
    """Mean angle (deg) of independent per-pixel normal noise (writes mask_normal_uncertainty/)."""
    normal_bias_deg: float | None = None
    """RMS angle (deg) of a smooth per-view rotation field applied to the normals."""
    albedo_scale_jitter: float | None = None
    """F > 0 multiplies each view's albedo by per-channel factors in [1-F, 1+F] (recorded in scene.json)."""
    uncertainty_threshold_deg: float | None = None
    """Noise angle (deg) above which a pixel is marked untrusted (default: twice the mean noise)."""
    masks: bool = True
    """Write mask/ (--no-masks: a capture without silhouettes)."""
    backdrop: Literal["none", "plane", "box"] = "none"
    """Textured backdrop in the background pixels: a floor ("plane") or a room ("box")."""
    mask_bit_depth: Literal[8, 16] = 8
    """Bit depth of the mask PNGs."""
    mesh_resolution: int = 256
    """Marching-cubes resolution of the ground-truth mesh."""
    overwrite: bool = False
    """Replace a non-empty OUT folder."""

    def main(self) -> None:
        """Writes the scene."""
        from recon_plugin.data.synthetic.rnb import write_rnb_scene

        write_rnb_scene(
            self.out,
            shape=self.shape,
            views=self.views,
            size=self.size,
            seed=self.seed,
            albedo_scale_jitter=self.albedo_scale_jitter,
            mask_bit_depth=self.mask_bit_depth,
            mesh_resolution=self.mesh_resolution,
            overwrite=self.overwrite,
            realism=self.realism,
            normal_noise_deg=self.normal_noise_deg,
            normal_bias_deg=self.normal_bias_deg,
            uncertainty_threshold_deg=self.uncertainty_threshold_deg,
            masks=self.masks,
            backdrop=self.backdrop,
        )


@dataclass
class PbrCommand:
    """Render procedural planar materials in three views each, in NeuroPBR's layout (input/, output/)."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output folder (created; must be missing or empty unless --overwrite)."""
    materials: int = 16
    """Number of materials (families are cycled through)."""
    samples_per_material: int = 4
    """Three-view samples per material (each with its own cameras, environment and exposure)."""
    size: int = 256
    """Width and height of the maps and the views, in pixels."""
    seed: int = 0
    """Seed of every random choice."""
    dirty_fraction: float = 0.5
    """Fraction of samples also written with shadows, smudges and scratches under input/dirty."""
    environments: int = 8
    """Number of procedural HDR environments (outdoor and studio alternate)."""
    workers: int | None = None
    """Worker processes (default: min(4, CPU count))."""
    overwrite: bool = False
    """Replace a non-empty OUT folder."""
    light_azimuth_spread_deg: float = 60.0
    """Range of the key light's azimuth in the map's frame, centred on +v, the top of the map image (360: from
    any side, which leaves the sign of a normal's tilt ambiguous in the shading)."""

    def main(self) -> None:
        """Writes the dataset."""
        from recon_plugin.data.synthetic.pbr import write_pbr_dataset

        write_pbr_dataset(
            self.out,
            materials=self.materials,
            samples_per_material=self.samples_per_material,
            size=self.size,
            seed=self.seed,
            dirty_fraction=self.dirty_fraction,
            environments=self.environments,
            workers=self.workers,
            overwrite=self.overwrite,
            light_azimuth_spread_deg=self.light_azimuth_spread_deg,
        )


@dataclass
class GlossyCommand:
    """Render a glossy object under an HDR environment into NeRO's GlossySynthetic layout (k.png, k-camera.pkl,
    k-depth.png), with gt_mesh.ply, gt_materials.npz, the environment maps and relit test views."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
    """Output folder (created; must be missing or empty unless --overwrite)."""
    shape: ShapeName = "blob"
    """Object to render."""
    views: int = 48
    """Number of cameras, spread over a sphere around the object; every 8th is a relit test view."""
    size: int = 128
    """Image width and height in pixels."""
    samples: int = 256
    """Monte-Carlo directions per pixel (the measured noise goes to scene.json)."""
    seed: int = 0
    """Seed for the cameras, the environment lights and the Monte-Carlo streams."""
    environment: Literal["outdoor", "studio"] = "outdoor"
    """Procedural environment of the training views."""
    relight_environment: Literal["outdoor", "studio"] = "studio"
    """Procedural environment of the relit test views."""
    materials: Literal["patches", "gradient", "bands", "spots"] = "patches"
    """Material layout: "patches" (eight soft patches by direction from the centre, one metallic value and
    roughness each), "gradient" (a roughness ramp across the object and one wavy metal/dielectric border),
    "bands" (copper bands across lacquer, roughness from a smooth 3-D field), "spots" (polished metal spots on a
    dielectric whose roughness rises with height); the last three ignore the shape's parts."""
    interreflection: bool = False
    """Trace secondary rays against the object (one bounce); several times slower."""
    transforms_json: bool = False
    """Also write nerfstudio's transforms.json (+ sparse_pc.ply of surface points) for the same views."""
    mesh_resolution: int = 256
    """Marching-cubes resolution of the ground-truth mesh."""
    overwrite: bool = False
    """Replace a non-empty OUT folder."""

    def main(self) -> None:
        """Writes the scene."""
        from recon_plugin.data.synthetic.glossy import write_glossy_scene

        write_glossy_scene(
            self.out,
            shape=self.shape,
            views=self.views,
            size=self.size,
            samples=self.samples,
            seed=self.seed,
            environment=self.environment,
            relight_environment=self.relight_environment,
            materials=self.materials,
            interreflection=self.interreflection,
            transforms_json=self.transforms_json,
            mesh_resolution=self.mesh_resolution,
            overwrite=self.overwrite,
        )


#: Subcommand name -> command dataclass (``nero`` and ``pbr`` slot in here).
SUBCOMMANDS: dict[str, type] = {"rnb": RnbCommand, "pbr": PbrCommand, "glossy": GlossyCommand}


def entrypoint(args: list[str] | None = None) -> None:
    """Console-script entry point of ``recon-synth``."""
    command = tyro.extras.subcommand_cli_from_dict(
        SUBCOMMANDS, prog="recon-synth", description="Synthetic scenes with exact ground truth.", args=args
    )
    try:
        command.main()
    except (FileExistsError, ValueError) as err:
        print(f"recon-synth: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    entrypoint()
