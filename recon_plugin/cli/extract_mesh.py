"""recon-extract-mesh: marching cubes on a trained SDF run (CPU or GPU), mesh in world units."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class ExtractMesh:
    """Extract the surface of a trained SDF method (rnb-sdf, ...) as a mesh in the input's world units."""

    load_config: Path
    """config.yml of the run (written by ns-train)."""
    output_path: Path = Path("mesh.ply")
    """Output mesh (.ply, .obj, .glb: any format trimesh writes)."""
    resolution: int = 512
    """Lattice resolution over the unit sphere's bounding cube."""
    keep_largest_component: bool = True
    """Drop floaters, keep the connected component with the most faces."""
    vertex_colors: bool = True
    """Colour vertices with the learned albedo."""
    data: Path | None = None
    """New location of the training data, if it moved since training."""

    def main(self) -> None:
        if self.resolution < 16:
            raise ValueError(f"--resolution must be >= 16, got {self.resolution}")
        from recon_plugin.export.loading import load_pipeline
        from recon_plugin.export.mesh import extract_world_mesh, write_mesh_atomic

        _, pipeline, checkpoint, step = load_pipeline(self.load_config, data=self.data)
        model = pipeline.model
        if not hasattr(model, "field") or not hasattr(model.field, "get_sdf"):
            raise ValueError(f"{self.load_config}: method {type(model).__name__} has no SDF field to extract")
        print(f"recon-extract-mesh: {checkpoint} (step {step}), resolution {self.resolution}")
        mesh = extract_world_mesh(
            pipeline,
            resolution=self.resolution,
            largest_component=self.keep_largest_component,
            vertex_colors=self.vertex_colors,
        )
        write_mesh_atomic(mesh, self.output_path)
        print(f"recon-extract-mesh: wrote {self.output_path} (world units)")


def entrypoint() -> None:
    """Console script entry point."""
    try:
        tyro.cli(ExtractMesh).main()
    except (FileNotFoundError, ValueError) as err:
        print(f"recon-extract-mesh: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
