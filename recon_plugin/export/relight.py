"""Relighting a nero-material run under another environment map (Monte Carlo, the same BRDF and ray caster).

Each pixel's ray is traced to the mesh; at the hit the learned materials are shaded with
:func:`recon_plugin.components.shading.shade_monte_carlo` under the NEW environment, whose small bright lights are
importance-sampled besides the BRDF lobes (:class:`EnvironmentSampler`, balance heuristic): a secondary ray that misses
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

from recon_plugin.components.environment import EnvironmentSampler, prefilter_equirect_diffuse, sample_equirect
from recon_plugin.components.shading import linear_to_srgb, shade_monte_carlo
from recon_plugin.data.image_io import write_png


class Relighter:
    """Renders rays of a nero-material ``model`` under ``environment`` (H, 2H, 3) linear, world z up.

    ``rotation`` (3, 3) is the dataparser rotation R (normalised-frame directions are R times world ones).
    ``num_light`` directions per pixel are drawn from the environment's small bright lights; with none in the
    map (a uniform sky) they go to the GGX lobe instead."""

    def __init__(
        self,
        model,
        environment: Tensor,
        rotation: np.ndarray,
        num_diffuse: int = 32,
        num_specular: int = 128,
        seed: int = 0,
        num_light: int = 96,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.environment = environment.to(self.device, torch.float32)
        self.irradiance = prefilter_equirect_diffuse(environment.float(), height=32).to(self.device)
        self.rotation = torch.as_tensor(np.asarray(rotation)[:3, :3], dtype=torch.float32, device=self.device)
        self.light_sampler = EnvironmentSampler(self.environment.cpu(), rotation=self.rotation.cpu())
        if self.light_sampler.empty:
            num_specular, num_light = num_specular + num_light, 0
        self.num_diffuse = num_diffuse
        self.num_specular = num_specular
        self.num_light = num_light
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
                    light_sampler=self.light_sampler,
                    num_light=self.num_light,
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


def orbit_cameras(cameras, up: Tensor, num_views: int = 60, elevation_deg: float = 30.0, max_size: int | None = None):
    """``num_views`` cameras on a circle around the object (the origin of the normalised frame), ``elevation_deg``
    above the plane normal to ``up`` (3,), at the training cameras' median distance, with the first training
    camera's field of view and image size, scaled down so that the longer side is at most ``max_size`` pixels
    (nerfstudio ``Cameras``, OpenGL axes)."""
    from nerfstudio.cameras.cameras import Cameras

    from recon_plugin.renderer.camera import look_at

    if num_views < 1:
        raise ValueError(f"orbit views must be >= 1, got {num_views}")
    if not -89.0 <= elevation_deg <= 89.0:
        raise ValueError(f"orbit elevation must be within [-89, 89] degrees, got {elevation_deg}")
    if max_size is not None and max_size < 8:
        raise ValueError(f"orbit frame size must be >= 8 pixels, got {max_size}")
    width, height = int(cameras.width[0]), int(cameras.height[0])
    scale = 1.0 if max_size is None else min(1.0, max_size / max(width, height))
    up_axis = F.normalize(up.double().cpu(), dim=0).numpy()
    radius = float(cameras.camera_to_worlds[:, :3, 3].double().norm(dim=-1).median())
    first = np.cross(up_axis, [1.0, 0.0, 0.0] if abs(up_axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    first /= np.linalg.norm(first)
    second = np.cross(up_axis, first)
    elevation = np.radians(elevation_deg)
    poses = []
    for azimuth in np.linspace(0.0, 2.0 * np.pi, num_views, endpoint=False):
        ring = np.cos(azimuth) * first + np.sin(azimuth) * second
        eye = radius * (np.cos(elevation) * ring + np.sin(elevation) * up_axis)
        poses.append(look_at(eye, np.zeros(3), up_axis)[:3])
    return Cameras(
        camera_to_worlds=torch.as_tensor(np.stack(poses), dtype=torch.float32),
        fx=float(cameras.fx[0]) * scale,
        fy=float(cameras.fy[0]) * scale,
        cx=float(cameras.cx[0]) * scale,
        cy=float(cameras.cy[0]) * scale,
        width=max(1, round(width * scale)),
        height=max(1, round(height * scale)),
    )


def write_orbit_video(frames: List[Path], path: Path, fps: int = 30) -> Path | None:
    """An MP4 of the orbit's PNGs when a video writer (mediapy with ffmpeg) is installed; None otherwise."""
    try:
        import mediapy

        from recon_plugin.data.image_io import read_image

        images = [read_image(frame)[..., :3] for frame in frames]
        mediapy.write_video(str(path), images, fps=fps)
    except Exception as err:  # no mediapy, no ffmpeg, or an encoder failure: the PNGs stand on their own
        print(f"  no orbit video ({type(err).__name__}: {err}); the PNGs are written")
        return None
    return path


def relight_pipeline_views(
    pipeline,
    environment: Tensor,
    output_dir: Path,
    cameras: str = "test",
    num_diffuse: int = 32,
    num_specular: int = 128,
    seed: int = 0,
    log: Callable[[str], None] | None = print,
    num_light: int = 96,
    orbit_views: int = 60,
    orbit_elevation_deg: float = 30.0,
    orbit_size: int | None = 256,
) -> List[Path]:
    """Renders a loaded nero-material pipeline under ``environment`` (H, 2H, 3, linear, world z up) to
    ``output_dir``: its ``cameras`` views ("train" or "test", one PNG named like each view's image) or an "orbit"
    of ``orbit_views`` cameras around the object (world z up, frames at most ``orbit_size`` pixels on the longer
    side; ``orbit_000.png`` ... and ``orbit.mp4`` when a video writer is installed)."""
    if cameras not in ("train", "test", "orbit"):
        raise ValueError(f"cameras must be 'train', 'test' or 'orbit', got {cameras!r}")
    datamanager = pipeline.datamanager
    rotation = datamanager.train_dataparser_outputs.dataparser_transform.double().numpy()[:3, :3]
    relighter = Relighter(pipeline.model, environment, rotation, num_diffuse, num_specular, seed, num_light)
    if cameras == "orbit":
        up = torch.as_tensor(rotation[:, 2])  # world z in the normalised frame
        orbit = orbit_cameras(datamanager.train_dataset.cameras, up, orbit_views, orbit_elevation_deg, orbit_size)
        names = [f"orbit_{index:03d}.png" for index in range(orbit_views)]
        written = relight_cameras(relighter, orbit, names, output_dir, log)
        video = write_orbit_video(written, Path(output_dir) / "orbit.mp4")
        return written + ([video] if video is not None else [])
    dataset = datamanager.train_dataset if cameras == "train" else datamanager.eval_dataset
    names = [Path(name).name for name in dataset.image_filenames]
    return relight_cameras(relighter, dataset.cameras, names, output_dir, log)
