"""recon-export-materials: a nero-material run as a glTF asset, per-vertex materials and its environment map."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class ExportMaterials:
    """Write model.glb (textured metallic-roughness glTF), materials.ply (per-vertex materials) and the learned
    environment (environment.exr / .hdr / .png) of a nero-material run, in the world units of its data."""

    load_config: Path
    """config.yml of the nero-material run (written by ns-train)."""
    output_dir: Path = Path("materials")
    """Folder for the exported files (created; files of the same names are replaced)."""
    texture_size: int = 1024
    """Width and height of the base-colour and metallic-roughness textures."""
    environment_height: int = 128
    """Rows of the exported equirect environment (columns = 2 x rows)."""
    max_faces: int = 100_000
    """model.glb's mesh is decimated to at most this many triangles (the textures carry the material detail;
    the UV unwrap takes about 40 s per 100k faces on one CPU core). materials.ply keeps every face."""
    data: Path | None = None
    """New location of the training data, if it moved since training."""

    def main(self) -> None:
        if self.texture_size < 8:
            raise ValueError(f"--texture-size must be >= 8, got {self.texture_size}")
        if self.max_faces < 4:
            raise ValueError(f"--max-faces must be >= 4, got {self.max_faces}")
        if self.environment_height < 2:
            raise ValueError(f"--environment-height must be >= 2, got {self.environment_height}")
        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.export.materials import export_materials

        config, pipeline, checkpoint, step = load_pipeline(self.load_config, data=self.data)
        if config.method_name != "nero-material":
            raise ValueError(
                f"{self.load_config}: a {config.method_name} run; recon-export-materials reads nero-material"
            )
        print(f"recon-export-materials: {checkpoint} (step {step})")
        written = export_materials(
            pipeline, self.output_dir, self.texture_size, self.environment_height, max_faces=self.max_faces
        )
        print(f"recon-export-materials: wrote {', '.join(sorted(written))} to {self.output_dir}")


def entrypoint() -> None:
    """Console script entry point."""
    try:
        tyro.cli(ExportMaterials).main()
    except (FileNotFoundError, ValueError) as err:
        print(f"recon-export-materials: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
