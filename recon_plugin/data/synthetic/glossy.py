"""Glossy objects with exact ground truth, written in NeRO's GlossySynthetic layout (``recon-synth glossy``).

Output folder::

    0.png ... N-1.png         sRGB 8-bit renders; the environment is visible behind the object
    k-camera.pkl              pickle of (pose 3x4 world->camera [R|t], OpenCV axes, K 3x3), float64
    k-depth.png               uint16 camera-z depth, v = depth / 15 * 65535; background 65535 (>= 14.5)
    environment.exr / .hdr    the lighting: linear HDR equirect (z up, see components/environment.py)
    relight/k.png             the test views (every 8th, as nero-data's default eval split) under a second
    relight/environment.exr   environment (+ .hdr), for the relighting check of stage II
    gt_mesh.ply               ground-truth surface in world units (watertight)
    gt_materials.npz          points, normals (world), albedo (linear RGB), roughness, metallic at surface points
    transforms.json           optional (--transforms-json): the same views for nerfstudio, + sparse_pc.ply
    scene.json                every generator parameter, the conventions, timings and the measured MC noise

Shading (linear radiance, then sRGB): the metallic-roughness Cook-Torrance BRDF of
:func:`recon_plugin.components.shading.cook_torrance` (GGX with alpha = roughness², height-correlated Smith,
Schlick Fresnel on F0 = 0.04 (1 - m) + m a, Lambert diffuse (1 - m) a / pi without a (1 - F) factor) under a
distant environment, without self-shadowing unless ``interreflection`` is on. Because the diffuse lobe does
not depend on the view, its integral is the cosine-convolved environment, computed once per environment by
quadrature over every texel (:func:`prefilter_equirect_diffuse`): noise-free, and within 0.5 % (6e-4
absolute) of a brute-force quadrature of the bilinear environment on both procedural kinds. The specular
integral is Monte Carlo with ``samples`` directions per pixel from three strategies, an eighth
cosine-weighted, half GGX visible normals (the shared samplers of components/shading.py) and the rest (3/8)
drawn from the environment's small bright lights (:class:`EnvironmentSampler`), combined with the
balance heuristic; the uniform numbers are a randomly shifted scrambled Sobol set per pixel (randomised
quasi-Monte Carlo, still unbiased). Without the light strategy a rough metal misses the sun in most samples;
without QMC the horizon's step stays noisy. The noise is measured on the first view by a second, independent
estimate and recorded in scene.json (``monte_carlo_noise_view0``, in 8-bit sRGB steps).

With ``interreflection`` every secondary ray is traced against the exact shape: a miss reads the environment,
a hit returns the radiance leaving the hit point (its own diffuse integral plus a one-sample specular
estimate, no further bounce). The diffuse term is then Monte Carlo as well (occlusion makes it view-
dependent), so it needs more samples for the same noise, and tracing costs about a primary render per sample.

Pixels are sampled at their centres (no anti-aliasing), the rays nerfstudio casts. The folder is assembled next
to the target and renamed into place at the end; an interrupted run leaves nothing under the requested name.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recon_plugin.components.environment import (
    EnvironmentSampler,
    prefilter_equirect_diffuse,
    procedural_environment,
    sample_equirect,
    write_environment,
)
from recon_plugin.components.shading import (
    cook_torrance,
    cosine_hemisphere_pdf,
    ggx_reflection_pdf,
    linear_to_srgb,
    sample_cosine_hemisphere,
    sample_ggx_reflection,
)
from recon_plugin.data.image_io import write_png
from recon_plugin.data.synthetic.output import staged_output, write_scene_json
from recon_plugin.data.synthetic.rnb import write_gt_mesh
from recon_plugin.data.synthetic.scene import (
    PIXEL_CENTER,
    Camera,
    SyntheticScene,
    albedo_canonical,
    cast_rays,
    make_cameras,
    make_scene,
    render_gbuffer,
)
from recon_plugin.data.synthetic.shapes import SHAPES, _fibonacci_directions

__all__ = [
    "DEPTH_BACKGROUND",
    "DEPTH_RANGE",
    "GENERATOR_VERSION",
    "GlossyRenderer",
    "encode_depth",
    "glossy_materials",
    "MATERIAL_LAYOUTS",
    "measure_noise",
    "relight_view_indices",
    "shifted_sobol",
    "to_srgb8",
    "write_camera_pickle",
    "write_glossy_scene",
    "write_transforms_json",
]

GENERATOR_VERSION = "1.0.0"
#: GlossySynthetic depth encoding: depth = v / 65535 * DEPTH_RANGE, background where depth >= DEPTH_BACKGROUND.
DEPTH_RANGE = 15.0
DEPTH_BACKGROUND = 14.5
#: Every TEST_INTERVAL-th view is a test view (nero-data's default eval split: eval_mode interval, 8).
TEST_INTERVAL = 8

# Material patches: (metallic, roughness, linear base colour). Metals get bright F0 colours, dielectrics a
# range of glossiness from near-mirror to rough, so every roughness in [0.05, 0.6] is represented.
_PATCHES = (
    (1.0, 0.08, (0.95, 0.64, 0.54)),  # polished copper
    (0.0, 0.35, (0.70, 0.12, 0.10)),  # red plastic
    (1.0, 0.30, (0.91, 0.92, 0.92)),  # brushed silver
    (0.0, 0.05, (0.08, 0.22, 0.60)),  # glossy blue lacquer
    (0.0, 0.60, (0.80, 0.74, 0.52)),  # rough beige
    (1.0, 0.18, (1.00, 0.77, 0.34)),  # gold
    (0.0, 0.15, (0.12, 0.50, 0.18)),  # green enamel
    (0.0, 0.45, (0.55, 0.55, 0.55)),  # grey
)
_PATCH_CENTRES = _fibonacci_directions(len(_PATCHES), offset=0.7)
#: Softmax sharpness of the patch blend in cos(angle): borders are ~2-4 degrees wide, smooth at pixel scale.
_PATCH_SHARPNESS = 60.0


def glossy_materials(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth materials at canonical points (N, 3): albedo (N, 3) linear RGB, roughness (N,), metallic (N,).

    The surface is divided into eight patches by the direction of the point from the canonical origin (soft
    Voronoi cells on the sphere of directions, blended over a few degrees); each patch has one metallic value
    (0 or 1), one roughness (0.05 to 0.6) and a base colour modulated by the smooth albedo texture of the RnB
    scenes. Roughness is perceptual: GGX alpha = roughness².
    """
    points = np.asarray(canonical, dtype=np.float64)
    directions = points / np.maximum(np.linalg.norm(points, axis=-1, keepdims=True), 1e-12)
    logits = _PATCH_SHARPNESS * (directions @ _PATCH_CENTRES.T)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    metallic = weights @ np.array([p[0] for p in _PATCHES])
    roughness = weights @ np.array([p[1] for p in _PATCHES])
    base = weights @ np.array([p[2] for p in _PATCHES])
    albedo = np.clip(base * _texture(points), 0.0, 1.0)
    return albedo, roughness, metallic


# The layouts below ignore the shape's parts: their borders and ramps follow planes and cells of canonical space,
# so a method that learns "one material per smooth patch" gets them wrong. Canonical shapes fit in a ball of
# radius ~0.8 (SHAPES' bounding radii are 0.70-0.81); coordinates are divided by it.
_CANONICAL_RADIUS = 0.8
#: Width (in normalised canonical units) of the soft metal/dielectric borders: under 1 % of the object's
#: diameter, sharp at the default image size, as sharp as the patch borders (2-4 % of the surface lies in them).
_BORDER_WIDTH = 0.012
_SILVER, _GOLD, _COPPER = np.array([0.91, 0.92, 0.92]), np.array([1.00, 0.77, 0.34]), np.array([0.95, 0.64, 0.54])


def _unit(vector: tuple[float, float, float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    return array / np.linalg.norm(array)


def _soft_step(signed: np.ndarray, width: float = _BORDER_WIDTH) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(signed / width))


def _texture(points: np.ndarray) -> np.ndarray:
    """The smooth albedo modulation of every layout (that of the RnB scenes, squeezed)."""
    return 0.85 + 0.35 * (albedo_canonical(points) - 0.55)  # in [0.71, 0.99]


def gradient_materials(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth roughness ramp (0.05 to 0.6 across the object along one diagonal, in metal and dielectric alike)
    and one metal/dielectric border on a wavy plane along another: silver blending into gold on the metal side,
    terracotta into teal on the dielectric side. Same return as :func:`glossy_materials`."""
    points = np.asarray(canonical, dtype=np.float64)
    q = points / _CANONICAL_RADIUS
    roughness = 0.05 + 0.55 * np.clip(0.5 + 0.6 * (q @ _unit((0.48, -0.36, 0.8))), 0.0, 1.0)
    wave = 0.15 * np.sin(5.0 * (q @ _unit((0.2, 0.9, -0.4))))
    metallic = _soft_step(q @ _unit((0.7, 0.5, 0.1)) + wave - 0.1)
    height = np.clip(0.5 + 0.6 * q[:, 2:3], 0.0, 1.0)
    metal_colour = (1.0 - height) * _SILVER + height * _GOLD
    across = np.clip(0.5 + 0.6 * (q @ _unit((-0.3, 0.8, 0.5)))[:, None], 0.0, 1.0)
    dielectric_colour = (1.0 - across) * np.array([0.62, 0.25, 0.12]) + across * np.array([0.10, 0.42, 0.45])
    base = metallic[:, None] * metal_colour + (1.0 - metallic[:, None]) * dielectric_colour * _texture(points)
    return np.clip(base, 0.0, 1.0), roughness, metallic


def banded_materials(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three to four copper bands across a blue-grey lacquer, along a tilted axis, with roughness from a smooth
    3-D field (0.08 to 0.53) that crosses the bands. Same return as :func:`glossy_materials`."""
    points = np.asarray(canonical, dtype=np.float64)
    q = points / _CANONICAL_RADIUS
    frequency = 2.0 * np.pi * 1.1  # three to four bands across the object
    metallic = _soft_step(np.sin(frequency * (q @ _unit((0.3, -0.5, 0.8))) + 0.4), frequency * _BORDER_WIDTH)
    field = albedo_canonical(1.3 * points + 0.4)[:, 1]  # in [0.15, 0.95]
    roughness = 0.08 + 0.45 * (field - 0.15) / 0.8
    dielectric_colour = np.array([0.20, 0.30, 0.55]) * _texture(points)
    base = metallic[:, None] * _COPPER + (1.0 - metallic[:, None]) * dielectric_colour
    return np.clip(base, 0.0, 1.0), roughness, metallic


#: Spot centres (normalised canonical units) and radii of :func:`spotted_materials`: fixed, so every scene and
#: its ground truth agree without a seed.
_SPOTS = np.array(
    [[0.8, 0.1, 0.3], [-0.6, 0.6, 0.2], [0.1, -0.8, -0.4], [-0.3, -0.2, 0.9], [0.5, 0.6, -0.6], [-0.7, -0.5, -0.5]]
)
_SPOT_RADII = np.array([0.45, 0.4, 0.5, 0.35, 0.45, 0.4])


def spotted_materials(canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round gold and silver spots (balls of canonical space cut by the surface, so their outlines do not follow
    the shape) on a beige dielectric whose roughness rises from 0.2 at the bottom to 0.55 at the top; the spots
    are polished (0.1). Same return as :func:`glossy_materials`."""
    points = np.asarray(canonical, dtype=np.float64)
    q = points / _CANONICAL_RADIUS
    inside = _SPOT_RADII[None, :] - np.linalg.norm(q[:, None, :] - _SPOTS[None, :, :], axis=-1)
    metallic = _soft_step(inside.max(axis=1))
    gold = (inside.argmax(axis=1) % 2 == 0)[:, None]
    metal_colour = np.where(gold, _GOLD, _SILVER)
    dielectric_roughness = 0.2 + 0.35 * np.clip(0.5 + 0.6 * q[:, 2], 0.0, 1.0)
    roughness = metallic * 0.1 + (1.0 - metallic) * dielectric_roughness
    dielectric_colour = np.array([0.80, 0.70, 0.50]) * _texture(points)
    base = metallic[:, None] * metal_colour + (1.0 - metallic[:, None]) * dielectric_colour
    return np.clip(base, 0.0, 1.0), roughness, metallic


#: ``recon-synth glossy --materials``: layout name -> canonical points (N, 3) -> (albedo, roughness, metallic).
MATERIAL_LAYOUTS: dict[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
    "patches": glossy_materials,
    "gradient": gradient_materials,
    "bands": banded_materials,
    "spots": spotted_materials,
}


def relight_view_indices(views: int, interval: int = TEST_INTERVAL) -> list[int]:
    """The test views: every ``interval``-th index starting at 0 (nerfstudio's interval split)."""
    return list(range(0, views, interval))


def encode_depth(depth: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
    """Camera-z depth (H, W) -> GlossySynthetic uint16 (v = depth / 15 * 65535, background 65535)."""
    if mask.any() and float(depth[mask].max()) >= DEPTH_BACKGROUND:
        raise ValueError(
            f"{where}: object depth {float(depth[mask].max()):.3f} reaches the format's background "
            f"threshold {DEPTH_BACKGROUND}; the scene is too large for the GlossySynthetic depth encoding"
        )
    encoded = np.full(depth.shape, 65535, dtype=np.uint16)
    encoded[mask] = np.round(depth[mask] / DEPTH_RANGE * 65535.0).astype(np.uint16)
    return encoded


def _write_depth_png(path: Path, encoded: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), encoded):
        raise OSError(f"{path}: could not write the depth PNG")


def shifted_sobol(points: int, count: int, dims: int, generator: torch.Generator) -> torch.Tensor:
    """Randomised quasi-Monte-Carlo numbers (points, count, dims): one scrambled Sobol set of ``count`` points,
    moved by an independent uniform random shift modulo 1 for every point (Cranley-Patterson rotation).

    Each number is still uniform on [0, 1)^dims, so every estimator stays unbiased; the set fills the square
    evenly, so the error on piecewise-smooth integrands (a horizon, a light's edge) falls much faster than
    with independent samples.
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    base = torch.quasirandom.SobolEngine(dims, scramble=True, seed=seed).draw(count)
    shift = torch.rand(points, 1, dims, generator=generator)
    return torch.remainder(base[None] + shift, 1.0)


class GlossyRenderer:
    """Shades primary hits of one scene under one environment (see the module docstring for the estimator).

    Args:
        scene: the placed shape. env: (H, W, 3) linear HDR equirect.
        samples: Monte-Carlo directions per pixel (1/8 cosine, 1/2 GGX, 3/8 environment lights;
            half cosine, half GGX when the environment has no small bright lights).
        interreflection: trace secondary rays against the shape (one bounce) instead of the environment alone.
        chunk: sample directions evaluated at once (bounds memory).
        materials: canonical points (N, 3) -> (albedo (N, 3), roughness (N,), metallic (N,)); default
            :func:`glossy_materials`.
    """

    def __init__(
        self,
        scene: SyntheticScene,
        env: torch.Tensor,
        samples: int,
        interreflection: bool = False,
        chunk: int = 1 << 20,
        materials: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] = glossy_materials,
    ) -> None:
        if samples < 3:
            raise ValueError(f"samples must be >= 3 (one direction per sampling strategy), got {samples}")
        self.scene = scene
        self.env = env.to(torch.float32)
        # The cosine-convolved map is smooth: 64 rows interpolate it to ~1e-4 (never finer than the source).
        self.diffuse_light = prefilter_equirect_diffuse(self.env, height=min(64, self.env.shape[0]))
        self.sampler = EnvironmentSampler(self.env)
        self.samples = samples
        self.interreflection = interreflection
        self.chunk = chunk
        self.materials = materials

    def background(self, directions: np.ndarray) -> np.ndarray:
        """Environment radiance (N, 3) seen along world directions (N, 3)."""
        return sample_equirect(self.env, torch.from_numpy(directions).float()).numpy().astype(np.float64)

    def _materials(self, canonical: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        albedo, roughness, metallic = self.materials(canonical)
        as_tensor = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        return as_tensor(albedo), as_tensor(roughness)[:, None], as_tensor(metallic)[:, None]

    def _diffuse_unshadowed(self, normal: torch.Tensor, albedo: torch.Tensor, metallic: torch.Tensor) -> torch.Tensor:
        """(1 - m) a ∫ L (n.l)+ / pi dl, from the cosine-convolved environment."""
        return (1.0 - metallic) * albedo * sample_equirect(self.diffuse_light, normal)

    def _bounce_radiance(
        self, origins: np.ndarray, directions: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Radiance arriving at ``origins`` (P, 3) along ``directions`` (P, S, 3): environment or a one-bounce hit."""
        flat = directions.reshape(-1, 3)
        radiance = sample_equirect(self.env, flat)
        count = directions.shape[1]
        starts = np.repeat(origins, count, axis=0)
        dirs = flat.numpy().astype(np.float64)
        trace = cast_rays(self.scene, starts, dirs)
        hit = trace["hit"]
        if hit.any():
            normal = torch.from_numpy(trace["normal"][hit]).float()
            view = -flat[torch.from_numpy(hit)]
            albedo, roughness, metallic = self._materials(self.scene.to_canonical(trace["position"][hit]))
            u = torch.rand(len(normal), 2, generator=generator)
            light, pdf = sample_ggx_reflection(normal, view, roughness, u)
            _, specular = cook_torrance(normal, view, light, albedo, roughness, metallic)
            cosine = (normal * light).sum(-1, keepdim=True).clamp(min=0.0)
            weight = torch.where(pdf > 0, cosine / pdf.clamp(min=1e-12), torch.zeros_like(pdf))
            outgoing = self._diffuse_unshadowed(normal, albedo, metallic)
            outgoing = outgoing + specular * weight * sample_equirect(self.env, light)
            radiance[torch.from_numpy(hit)] = outgoing
        return radiance.reshape(directions.shape)

    def _strategy_counts(self) -> tuple[int, int, int]:
        """(cosine, GGX, environment) directions per pixel."""
        if self.sampler.empty:
            return self.samples // 2, self.samples - self.samples // 2, 0
        # Shares chosen by measurement on the default scene (view 0, 256 samples): 1/8, 1/2, 3/8 gave 0.59 RMS
        # 8-bit noise against 0.79 for 1/4, 1/4, 1/2 and 0.63 without the cosine strategy.
        cosine, ggx = self.samples // 8, self.samples // 2
        return cosine, ggx, self.samples - cosine - ggx

    def _estimate(
        self,
        normal: torch.Tensor,
        view: torch.Tensor,
        albedo: torch.Tensor,
        roughness: torch.Tensor,
        metallic: torch.Tensor,
        radiance: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-sample MIS (balance heuristic) over cosine, GGX and environment sampling: every direction,
        whatever strategy drew it, is weighted by 1 / sum_k n_k p_k. Returns (diffuse, specular) (P, 3)."""
        counts = self._strategy_counts()
        n, v = normal[:, None, :], view[:, None, :]
        albedo, roughness, metallic = albedo[:, None, :], roughness[:, None, :], metallic[:, None, :]
        points = len(normal)
        directions = []
        if counts[0]:
            u = shifted_sobol(points, counts[0], 2, generator)
            directions.append(sample_cosine_hemisphere(n, u)[0])
        if counts[1]:
            u = shifted_sobol(points, counts[1], 2, generator)
            directions.append(sample_ggx_reflection(n, v, roughness, u)[0])
        if counts[2]:
            u = shifted_sobol(points, counts[2], 3, generator)
            directions.append(self.sampler.sample(u)[0])
        light = torch.cat(directions, dim=-2)
        mixture = counts[1] * ggx_reflection_pdf(n, v, light, roughness) + counts[2] * self.sampler.pdf(light)
        if counts[0]:
            mixture = mixture + counts[0] * cosine_hemisphere_pdf(n, light)
        diffuse_brdf, specular_brdf = cook_torrance(n, v, light, albedo, roughness, metallic)
        cosine = (n * light).sum(-1, keepdim=True).clamp(min=0.0)
        weight = radiance(light) * cosine / mixture.clamp(min=1e-12)
        return (diffuse_brdf * weight).sum(-2), (specular_brdf * weight).sum(-2)

    def shade(
        self, position: np.ndarray, normal: np.ndarray, view: np.ndarray, canonical: np.ndarray, seed: int
    ) -> np.ndarray:
        """Linear radiance (N, 3) leaving surface points (world ``position``, unit ``normal``, unit ``view``
        towards the camera, ``canonical`` for the materials) towards the camera."""
        generator = torch.Generator().manual_seed(seed)
        out = np.zeros((len(position), 3))
        per_chunk = max(1, self.chunk // self.samples)
        offset = 2e-3 * self.scene.scale  # start secondary rays off the surface (sphere tracing would stop at once)
        for start in range(0, len(position), per_chunk):
            part = slice(start, start + per_chunk)
            n = torch.from_numpy(normal[part]).float()
            v = torch.from_numpy(view[part]).float()
            albedo, roughness, metallic = self._materials(canonical[part])
            if self.interreflection:
                origins = position[part] + offset * normal[part]
                radiance = lambda d, o=origins: self._bounce_radiance(o, d, generator)  # noqa: E731
            else:
                radiance = lambda d: sample_equirect(self.env, d)  # noqa: E731
            diffuse, specular = self._estimate(n, v, albedo, roughness, metallic, radiance, generator)
            if not self.interreflection:
                diffuse = self._diffuse_unshadowed(n, albedo, metallic)
            out[part] = (diffuse + specular).double().numpy()
        return out

    def render(self, gbuffer: dict[str, np.ndarray], seed: int) -> np.ndarray:
        """Linear radiance image (H, W, 3) of one view from its G-buffer."""
        mask = gbuffer["mask"]
        image = self.background(gbuffer["ray_direction"].reshape(-1, 3)).reshape(*mask.shape, 3)
        if mask.any():
            image[mask] = self.shade(
                gbuffer["position"][mask],
                gbuffer["normal"][mask],
                -gbuffer["ray_direction"][mask],
                gbuffer["canonical_position"][mask],
                seed,
            )
        return image


def to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear radiance -> sRGB in [0, 1] (clipped), the value an 8-bit PNG stores before rounding."""
    return linear_to_srgb(torch.from_numpy(linear)).numpy()


def measure_noise(renderer: GlossyRenderer, gbuffer: dict[str, np.ndarray], seed: int) -> dict[str, float]:
    """Monte-Carlo noise on the object's pixels, in 8-bit sRGB steps, from two independent estimates.

    The standard deviation of one estimate is that of the difference divided by sqrt(2); reports its RMS over
    pixels and channels and the 99th percentile of |difference| / sqrt(2).
    """
    mask = gbuffer["mask"]
    args = (gbuffer["position"][mask], gbuffer["normal"][mask], -gbuffer["ray_direction"][mask])
    canonical = gbuffer["canonical_position"][mask]
    first = to_srgb8(renderer.shade(*args, canonical, seed))
    second = to_srgb8(renderer.shade(*args, canonical, seed + 7919))
    difference = (first - second) * 255.0 / math.sqrt(2.0)
    return {
        "rms_8bit": float(np.sqrt(np.mean(difference**2))),
        "p99_8bit": float(np.quantile(np.abs(difference), 0.99)),
        "pixels": int(mask.sum()),
    }


def write_camera_pickle(path: Path, camera: Camera) -> None:
    """NeRO's ``k-camera.pkl``: (pose 3x4 world->camera [R|t] OpenCV axes, K 3x3), both float64."""
    pose = np.concatenate([camera.R, camera.t[:, None]], axis=1)
    path.write_bytes(pickle.dumps((pose, np.array(camera.K, dtype=np.float64)), protocol=4))


def write_transforms_json(
    folder: Path, cameras: list[Camera], image_names: list[str], ply_name: str | None = None
) -> Path:
    """Writes ``folder/transforms.json`` (nerfstudio's format: OpenGL camera-to-world, per-frame intrinsics)."""
    frames = []
    for camera, name in zip(cameras, image_names, strict=True):
        frames.append(
            {
                "file_path": name,
                "transform_matrix": camera.c2w_opengl.tolist(),
                "fl_x": float(camera.K[0, 0]),
                "fl_y": float(camera.K[1, 1]),
                "cx": float(camera.K[0, 2]),
                "cy": float(camera.K[1, 2]),
                "w": camera.width,
                "h": camera.height,
            }
        )
    content: dict = {"camera_model": "OPENCV", "frames": frames}
    if ply_name is not None:
        content["ply_file_path"] = ply_name
    path = Path(folder) / "transforms.json"
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def _sample_surface(
    scene: SyntheticScene,
    mesh_path: Path,
    count: int,
    seed: int,
    materials: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] = glossy_materials,
) -> dict[str, np.ndarray]:
    """Area-uniform points on the ground-truth surface (mesh samples moved onto the exact implicit)."""
    import trimesh

    mesh = trimesh.load(str(mesh_path), process=False)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    canonical = scene.shape.project(scene.to_canonical(np.asarray(points)))
    albedo, roughness, metallic = materials(canonical)
    return {
        "points": scene.to_world(canonical).astype(np.float32),
        "normals": scene.shape.normal(canonical).astype(np.float32),
        "albedo": albedo.astype(np.float32),
        "roughness": roughness.astype(np.float32),
        "metallic": metallic.astype(np.float32),
    }


def write_glossy_scene(
    out: Path | str,
    shape: str = "blob",
    views: int = 48,
    size: int = 128,
    samples: int = 256,
    seed: int = 0,
    environment: str = "outdoor",
    relight_environment: str = "studio",
    materials: str = "patches",
    env_height: int = 128,
    interreflection: bool = False,
    transforms_json: bool = False,
    material_points: int = 20000,
    mesh_resolution: int = 256,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Renders a glossy synthetic scene and writes it in the GlossySynthetic layout (see the module docstring).

    Args:
        out: target folder; must be missing or empty unless ``overwrite``.
        shape: a name from :data:`recon_plugin.data.synthetic.shapes.SHAPES`.
        views: number of cameras; size: square image size in pixels.
        samples: Monte-Carlo directions per pixel for the specular integral (and the diffuse one with
            interreflection).
        seed: camera spiral rotation, environment lights and Monte-Carlo streams.
        environment, relight_environment: kinds of :func:`procedural_environment` for the training views and
            for the relit test views.
        materials: a :data:`MATERIAL_LAYOUTS` name: "patches" (eight soft patches by direction), "gradient",
            "bands" or "spots" (borders and ramps independent of the shape's parts).
        env_height: rows of the equirect environments (width = 2 x height).
        interreflection: trace secondary rays against the object (one bounce); much slower.
        transforms_json: also write transforms.json + sparse_pc.ply (surface points) for nerfstudio readers.
        material_points: surface points in gt_materials.npz.
        mesh_resolution: marching-cubes grid of the ground-truth mesh.
        log: progress printer (None for silence).

    Returns:
        The scene.json content (plus ``path`` and ``seconds``).
    """
    say = log or (lambda _msg: None)
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    if materials not in MATERIAL_LAYOUTS:
        raise ValueError(f"unknown material layout {materials!r}; choose one of {sorted(MATERIAL_LAYOUTS)}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if samples < 3:
        raise ValueError(f"samples must be >= 3, got {samples}")
    out = Path(out)
    start = time.perf_counter()
    with staged_output(out, overwrite) as tmp:
        scene = make_scene(shape)
        cameras = make_cameras(scene, views, size, seed=seed)
        env = procedural_environment(environment, env_height, 2 * env_height, seed=seed)
        relight_env = procedural_environment(relight_environment, env_height, 2 * env_height, seed=seed + 1)
        layout = MATERIAL_LAYOUTS[materials]
        renderer = GlossyRenderer(scene, env, samples, interreflection, materials=layout)
        relighter = GlossyRenderer(scene, relight_env, samples, interreflection, materials=layout)
        tests = relight_view_indices(views)
        say(
            f"recon-synth glossy: shape '{shape}', {views} views at {size}x{size} px, {samples} samples/pixel, "
            f"materials '{materials}', interreflection {'on' if interreflection else 'off'}, seed {seed}"
        )
        names, coverage, noise = [], [], None
        (tmp / "relight").mkdir()
        for index, camera in enumerate(cameras):
            name = f"{index}.png"
            names.append(name)
            gbuffer = render_gbuffer(scene, camera)
            mask = gbuffer["mask"]
            coverage.append(float(mask.mean()))
            view_seed = seed * 1_000_003 + 2 * index
            write_png(tmp / name, to_srgb8(renderer.render(gbuffer, view_seed)), bit_depth=8)
            _write_depth_png(tmp / f"{index}-depth.png", encode_depth(gbuffer["depth"], mask, str(tmp / name)))
            write_camera_pickle(tmp / f"{index}-camera.pkl", camera)
            if index in tests:
                write_png(tmp / "relight" / name, to_srgb8(relighter.render(gbuffer, view_seed + 1)), bit_depth=8)
            if index == 0 and mask.any():
                noise = measure_noise(renderer, gbuffer, seed * 1_000_003 + 104_729)
                say(
                    f"  Monte-Carlo noise (view 0): {noise['rms_8bit']:.2f} RMS, "
                    f"{noise['p99_8bit']:.2f} p99 (8-bit steps)"
                )
            if (index + 1) % max(1, views // 4) == 0 or index + 1 == views:
                say(f"  rendered {index + 1}/{views} views ({time.perf_counter() - start:.1f} s)")
        render_seconds = time.perf_counter() - start
        for suffix in (".exr", ".hdr"):
            write_environment(tmp / f"environment{suffix}", env)
            write_environment(tmp / "relight" / f"environment{suffix}", relight_env)
        n_vertices, n_faces = write_gt_mesh(scene, tmp / "gt_mesh.ply", mesh_resolution)
        surface = _sample_surface(scene, tmp / "gt_mesh.ply", material_points, seed, layout)
        np.savez(tmp / "gt_materials.npz", **surface)
        if transforms_json:
            import trimesh

            trimesh.PointCloud(surface["points"]).export(str(tmp / "sparse_pc.ply"))
            write_transforms_json(tmp, cameras, names, ply_name="sparse_pc.ply")
        say(f"  ground truth: mesh {n_vertices} vertices / {n_faces} faces, {material_points} material points")

        info = {
            "format": "nero-glossy-synthetic",
            "generator": "recon_plugin.data.synthetic.glossy",
            "generator_version": GENERATOR_VERSION,
            "shape": shape,
            "views": views,
            "size": size,
            "width": size,
            "height": size,
            "seed": seed,
            "samples_per_pixel": samples,
            "sampling": "specular: balance-heuristic MIS of samples/8 cosine + samples/2 GGX visible-normal + "
            "3 samples/8 environment-light directions, randomly shifted Sobol numbers per pixel; diffuse: "
            "cosine-convolved environment (quadrature over all texels), Monte Carlo too with interreflection",
            "interreflection": interreflection,
            "monte_carlo_noise_view0": noise,
            "object_center": scene.center.tolist(),
            "object_scale": scene.scale,
            "canonical_bounding_radius": scene.shape.bounding_radius,
            "bounding_radius": scene.bounding_radius,
            "pixel_center": PIXEL_CENTER,
            "camera_convention": "k-camera.pkl = (pose, K): pose 3x4 world->camera [R|t], OpenCV axes (x right, "
            "y down, z forward); pixel (u, v) is the ray through K^-1 (u + 0.5, v + 0.5, 1)",
            "depth_encoding": f"uint16 camera z: depth = v / 65535 * {DEPTH_RANGE}; background where depth >= "
            f"{DEPTH_BACKGROUND}",
            "image_encoding": "sRGB 8-bit of linear radiance clipped to [0, 1]",
            "brdf": "metallic-roughness Cook-Torrance: GGX D with alpha = roughness^2, height-correlated Smith G2, "
            "Schlick F with F0 = 0.04 (1 - metallic) + metallic * albedo; diffuse (1 - metallic) albedo / pi, "
            "no (1 - F)",
            "materials": "gt_materials.npz: world points and normals, linear albedo, perceptual roughness, metallic",
            "material_layout": materials,
            "environment": {"file": "environment.exr", "kind": environment, "seed": seed},
            "relight_environment": {"file": "relight/environment.exr", "kind": relight_environment, "seed": seed + 1},
            "environment_convention": "equirect, world z up, row 0 at +z, u = 0.5 - atan2(y, x) / (2 pi) "
            "(recon_plugin.components.environment); linear radiance",
            "environment_size": [env_height, 2 * env_height],
            "test_views": tests,
            "test_view_rule": f"every {TEST_INTERVAL}th view (nero-data eval_mode interval, eval_interval "
            f"{TEST_INTERVAL})",
            "mesh_resolution": mesh_resolution,
            "mean_mask_coverage": float(np.mean(coverage)),
            "images": names,
            "transforms_json": transforms_json,
            "render_seconds": render_seconds,
        }
        write_scene_json(tmp, info)
    seconds = time.perf_counter() - start
    say(f"recon-synth glossy: wrote {out} in {seconds:.1f} s")
    return {**info, "path": str(out), "seconds": seconds}
