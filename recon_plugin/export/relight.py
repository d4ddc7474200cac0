"""Relighting a nero-material run under another environment map (Monte Carlo, the same BRDF and ray caster).

Each pixel's ray is traced to the mesh; at the hit the learned materials are shaded with
:func:`recon_plugin.components.shading.shade_monte_carlo` under the NEW environment: a secondary ray that misses
the mesh reads the environment map (world z up, bilinear); one that hits it returns the diffuse light leaving the
hit point, (1 - m) a E(n) / pi with E the irradiance of the new environment there (cosine-prefiltered map,
unoccluded): a one-bounce approximation of interreflection. The learned indirect-light field is not used: it
holds light of the training environment. Pixels that miss the mesh show the environment itself. Colour is
linear radiance, written as 8-bit sRGB PNGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recon_plugin.components.environment import prefilter_equirect_diffuse, sample_equirect
from recon_plugin.components.shading import linear_to_srgb, shade_monte_carlo
from recon_plugin.data.image_io import write_png


class Relighter:
    """Renders rays of a nero-material ``model`` under ``environment`` (H, 2H, 3) linear, world z up.

    ``rotation`` (3, 3) is the dataparser rotation R (normalised-frame directions are R times world ones)."""

    def __init__(
        self,
        model,
        environment: Tensor,
        rotation: np.ndarray,
        num_diffuse: int = 128,
        num_specular: int = 128,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.environment = environment.to(self.device, torch.float32)
        self.irradiance = prefilter_equirect_diffuse(environment.float(), height=32).to(self.device)
        self.rotation = torch.as_tensor(np.asarray(rotation)[:3, :3], dtype=torch.float32, device=self.device)
        self.num_diffuse = num_diffuse
        self.num_specular = num_specular
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _to_world(self, directions: Tensor) -> Tensor:
        return F.normalize(directions @ self.rotation, dim=-1)  # R^T d for row vectors

    def environment_radiance(self, directions: Tensor) -> Tensor:
        """The new environment along model-frame directions (..., 3)."""
        return sample_equirect(self.environment, self._to_world(directions))

    def _incident(self, origins: Tensor, normals: Tensor, directions: Tensor) -> Tensor:
        model = self.model
        count, samples = directions.shape[:2]
        start = (origins + model.config.ray_offset * normals)[:, None, :].expand(count, samples, 3)
        flat = directions.reshape(-1, 3)
        hits = model.caster.cast(start.reshape(-1, 3), flat)
        radiance = self.environment_radiance(flat)
        if bool(hits.hit.any()):
            index = hits.hit.nonzero().squeeze(-1)
            materials = model.material(hits.position[index])
            # The hit normal as seen from the incoming ray (a secondary ray can reach a back face).
            normal = hits.normal[index]
            normal = torch.where((normal * flat[index]).sum(-1, keepdim=True) > 0, -normal, normal)
            irradiance = sample_equirect(self.irradiance, self._to_world(normal))
            radiance[index] = (1.0 - materials["metallic"]) * materials["albedo"] * irradiance
        return radiance.reshape(count, samples, 3)

    @torch.no_grad()
    def render_rays(self, origins: Tensor, directions: Tensor, chunk: int = 1024) -> Tensor:
        """Linear radiance (N, 3) of rays (N, 3) (model frame)."""
        directions = F.normalize(directions, dim=-1)
        out = []
        for start in range(0, origins.shape[0], chunk):
            o, d = origins[start : start + chunk].to(self.device), directions[start : start + chunk].to(self.device)
            colour = self.environment_radiance(d)
            _, index, positions, normals = self.model.surface_hits(o, d)
            if index.numel():
                materials = self.model.material(positions)
                diffuse, specular = shade_monte_carlo(
                    normals,
                    -d[index],
                    materials["albedo"],
                    materials["roughness"],
                    materials["metallic"],
                    lambda sample_directions, p=positions, n=normals: self._incident(p, n, sample_directions),
                    num_diffuse=self.num_diffuse,
                    num_specular=self.num_specular,
                    generator=self.generator,
                )
                colour[index] = diffuse + specular
            out.append(colour.cpu())
        return torch.cat(out)


def relight_cameras(
    relighter: Relighter,
    cameras,
    names: List[str],
    output_dir: Path,
    log: Callable[[str], None] | None = print,
) -> List[Path]:
    """Renders every camera of a nerfstudio ``Cameras`` batch to ``output_dir/<name>`` (8-bit sRGB PNG)."""
    written = []
    for index, name in enumerate(names):
        rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
        height, width = rays.origins.shape[:2]
        radiance = relighter.render_rays(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3))
        image = linear_to_srgb(radiance).reshape(height, width, 3).numpy()
        path = Path(output_dir) / name
        write_png(path, image, bit_depth=8)
        written.append(path)
        if log is not None:
            log(f"  {path} ({index + 1}/{len(names)})")
    return written


def relight_pipeline_views(
    pipeline,
    environment: Tensor,
    output_dir: Path,
    cameras: str = "test",
    num_diffuse: int = 128,
    num_specular: int = 128,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> List[Path]:
    """Renders a loaded nero-material pipeline's ``cameras`` views ("train" or "test") under ``environment``
    (H, 2H, 3, linear, world z up) to ``output_dir``, one PNG named like each view's image."""
    datamanager = pipeline.datamanager
    dataset = datamanager.train_dataset if cameras == "train" else datamanager.eval_dataset
    names = [Path(name).name for name in dataset.image_filenames]
    rotation = datamanager.train_dataparser_outputs.dataparser_transform.double().numpy()[:3, :3]
    relighter = Relighter(pipeline.model, environment, rotation, num_diffuse, num_specular, seed)
    return relight_cameras(relighter, dataset.cameras, names, output_dir, log)
