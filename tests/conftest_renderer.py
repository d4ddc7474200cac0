"""Shared helpers for the renderer tests and the render-queue bench (not a pytest conftest).

- ``write_sphere_scene``: a tiny nerfstudio ``transforms.json`` dataset of three coloured spheres, ray-cast here.
- ``train_tiny_nerfacto``: trains stock nerfacto on it through ``ns-train`` in a subprocess (once per root folder,
  ``cli_helpers.build_once``).
- ``load_pipeline_offline``: ``eval_setup`` with the LPIPS constructor replaced (see ``OFFLINE_LPIPS_PATCH``).
- ``AnalyticModel``: a real nerfstudio ``Model`` subclass whose colour is a closed-form function of the ray direction,
  with an optional per-chunk delay and a chunk log. It implements the same ``Model.forward``/``get_outputs`` interface
  that nerfstudio's own renderer uses, so the queue code path is identical; it just costs nothing to build.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cli_helpers import build_once

REPO_ROOT = Path(__file__).resolve().parents[1]

# torchmetrics' LearnedPerceptualImagePatchSimilarity downloads torchvision's AlexNet weights when it is constructed,
# and nerfacto constructs it in populate_modules: on an offline machine (CI) that raises URLError. The renderer never
# computes LPIPS, so the tests replace that constructor with a stand-in module. This is the only patch we apply to
# nerfstudio; it is applied in the training subprocess, in the server subprocess and around in-process eval_setup.
OFFLINE_LPIPS_PATCH = """
import torch as _torch
import torchmetrics.image.lpip as _lpip


class _OfflineLPIPS(_torch.nn.Module):
    '''Stand-in for LearnedPerceptualImagePatchSimilarity (AlexNet weights cannot be downloaded offline).'''

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, img1, img2):
        return _torch.zeros((), device=img1.device)


_lpip.LearnedPerceptualImagePatchSimilarity = _OfflineLPIPS
"""

SPHERES = (  # centre, radius, albedo
    ((0.45, 0.0, 0.0), 0.35, (0.9, 0.15, 0.1)),
    ((-0.45, 0.0, 0.0), 0.35, (0.1, 0.8, 0.2)),
    ((0.0, 0.0, 0.45), 0.3, (0.15, 0.25, 0.95)),
)
BACKGROUND = (0.55, 0.55, 0.6)


def look_at_c2w(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenGL camera-to-world (camera looks down -Z, +Y up) placed at ``eye`` looking at ``target``."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, eye
    return c2w


def ray_cast_spheres(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Lambert-shaded colour of the sphere scene along each ray (N,3) -> (N,3)."""
    best_t = np.full(len(origins), np.inf)
    colour = np.tile(np.asarray(BACKGROUND), (len(origins), 1))
    light = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    for centre, radius, albedo in SPHERES:
        oc = origins - np.asarray(centre)
        b = np.sum(oc * directions, axis=1)
        c = np.sum(oc * oc, axis=1) - radius**2
        disc = b * b - c
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        hit = (disc > 0) & (t > 0) & (t < best_t)
        normal = (origins + t[:, None] * directions - np.asarray(centre)) / radius
        shade = 0.25 + 0.75 * np.clip(normal @ light, 0.0, 1.0)
        colour[hit] = np.asarray(albedo) * shade[hit, None]
        best_t[hit] = t[hit]
    return colour


def write_sphere_scene(root: Path, views: int = 10, size: int = 32, radius: float = 2.5) -> Path:
    """Writes ``views`` ``size``x``size`` renders of the sphere scene as a nerfstudio dataset; returns its folder."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    focal = 0.5 * size / np.tan(np.deg2rad(50.0) / 2)
    frames = []
    for index in range(views):
        angle = 2 * np.pi * index / views
        elevation = np.deg2rad(25.0 + 15.0 * (index % 2))
        eye = radius * np.array(
            [np.cos(angle) * np.cos(elevation), np.sin(angle) * np.cos(elevation), np.sin(elevation)]
        )
        c2w = look_at_c2w(eye, np.zeros(3))
        j, i = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        dirs_cam = np.stack([(j - size / 2) / focal, -(i - size / 2) / focal, -np.ones_like(i)], axis=-1).reshape(-1, 3)
        dirs = dirs_cam @ c2w[:3, :3].T
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rgb = ray_cast_spheres(np.broadcast_to(eye, dirs.shape), dirs).reshape(size, size, 3)
        name = f"images/frame_{index:05d}.png"
        Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(root / name)
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    meta = {
        "camera_model": "OPENCV",
        "fl_x": focal,
        "fl_y": focal,
        "cx": size / 2,
        "cy": size / 2,
        "w": size,
        "h": size,
        "frames": frames,
    }
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root


TRAIN_SCRIPT = (
    OFFLINE_LPIPS_PATCH
    + """
if __name__ == "__main__":  # nerfacto's ParallelDataManager spawns worker processes that re-import this file
    from nerfstudio.scripts.train import entrypoint

    entrypoint()
"""
)


def train_tiny_nerfacto(root: Path, iterations: int = 40, timeout_s: float = 600.0) -> Path:
    """Trains stock nerfacto on the sphere scene below ``root`` (once; later calls, in any pytest-xdist worker, reuse
    it) and returns config.yml.

    Runs ``ns-train`` in a subprocess on the CPU with the torch hash grid.
    """
    config = root / "outputs" / "spheres" / "nerfacto" / "tiny" / "config.yml"

    def train(root: Path) -> None:
        write_sphere_scene(root / "data")
        script = root / "train_nerfacto.py"
        script.write_text(TRAIN_SCRIPT)
        # Relative --data and --output-dir (run from `root`), as users usually type them: loading the run from
        # another working directory then exercises RenderQueue.from_config's path handling.
        command = [
            sys.executable,
            str(script),
            "nerfacto",
            "--data",
            "data",
            "--output-dir",
            "outputs",
            "--experiment-name",
            "spheres",
            "--timestamp",
            "tiny",
            "--vis",
            "tensorboard",
            "--machine.device-type",
            "cpu",
            "--max-num-iterations",
            str(iterations),
            "--steps-per-eval-batch",
            "0",
            "--steps-per-eval-image",
            "0",
            "--steps-per-eval-all-images",
            "0",
            "--pipeline.datamanager.train-num-rays-per-batch",
            "512",
            "--pipeline.model.implementation",
            "torch",
            "--pipeline.model.num-levels",
            "8",
            "--pipeline.model.log2-hashmap-size",
            "14",
            "--pipeline.model.max-res",
            "256",
            "--pipeline.model.num-proposal-samples-per-ray",
            "32",
            "16",
            "--pipeline.model.num-nerf-samples-per-ray",
            "16",
        ]
        # One intra-op thread: the trainer and its spawned data process otherwise oversubscribe a small shared CPU
        # (measured 40x slower on 2 cores).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout_s, env=env)
        if result.returncode != 0 or not config.exists():
            raise RuntimeError(
                f"ns-train nerfacto failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
            )

    build_once(root, train)
    return config


def train_camera(pipeline, index: int = 0):
    """(c2w 4x4 in nerfstudio's frame, fx, width, height, image file name) of a training camera of ``pipeline``."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    camera = outputs.cameras[index]
    c2w = np.eye(4)
    c2w[:3] = camera.camera_to_worlds.cpu().numpy()
    return c2w, float(camera.fx), int(camera.width), int(camera.height), Path(outputs.image_filenames[index]).name


@contextlib.contextmanager
def offline_lpips() -> Iterator[None]:
    """Replaces the LPIPS constructor in this process for the duration of the block (see OFFLINE_LPIPS_PATCH)."""
    import torchmetrics.image.lpip as lpip

    original = lpip.LearnedPerceptualImagePatchSimilarity
    exec(OFFLINE_LPIPS_PATCH, {})  # defines the stand-in and installs it on torchmetrics.image.lpip
    try:
        yield
    finally:
        lpip.LearnedPerceptualImagePatchSimilarity = original


# ----------------------------------------------------------------------------------------------------------------
# Analytic nerfstudio model
# ----------------------------------------------------------------------------------------------------------------


def direction_colour(directions: np.ndarray) -> np.ndarray:
    """Colour the analytic model gives a unit ray direction: an affine map of the direction into [0, 1]."""
    return np.clip(0.5 + 0.5 * directions, 0.0, 1.0)


def random_c2w(rng: np.random.Generator) -> np.ndarray:
    """A random camera-to-world pose: position in [-2, 2]^3, any orientation."""
    from recon_plugin.renderer import pose_to_c2w

    return pose_to_c2w(rng.uniform(-2, 2, 3), rng.uniform(-np.pi, np.pi, 3))


def expected_image(c2w: np.ndarray, width: int, height: int, fov_deg: float) -> np.ndarray:
    """What the analytic model must show: pixel-centre rays of a pinhole camera, computed independently."""
    from recon_plugin.renderer import intrinsics_for

    fx, fy, cx, cy = intrinsics_for(width, height, fov_deg)
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    dirs = np.stack([(jj - cx) / fx, -(ii - cy) / fy, -np.ones_like(ii)], axis=-1) @ c2w[:3, :3].T
    return direction_colour(dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)).astype(np.float32)


def _make_analytic_model_classes():
    import torch
    from nerfstudio.models.base_model import Model, ModelConfig

    @dataclass
    class AnalyticModelConfig(ModelConfig):
        """Config of :class:`AnalyticModel`."""

        _target: type = field(default_factory=lambda: AnalyticModel)
        enable_collider: bool = False
        eval_num_rays_per_chunk: int = 256
        chunk_delay_s: float = 0.0
        """Seconds each forward pass sleeps (outside the GIL), standing in for network evaluation time."""
        random_delay: bool = False
        """Sleep a uniformly random fraction of chunk_delay_s instead (to shuffle thread interleavings)."""
        fail_above_rays: int = -1
        """Raise RuntimeError for chunks of more rays than this (error propagation tests); -1 = never."""

    class AnalyticModel(Model):
        """Colour = 0.5 + 0.5 * ray direction. Records every forward call in ``chunk_log``."""

        config: AnalyticModelConfig

        def populate_modules(self) -> None:
            super().populate_modules()
            self.chunk_log: list[tuple[float, float, tuple[float, float, float], int]] = []
            self._log_lock = threading.Lock()
            self._rng = np.random.default_rng(0)

        def get_param_groups(self) -> dict:
            return {}

        def get_outputs(self, ray_bundle) -> dict:
            start = time.perf_counter()
            if 0 <= self.config.fail_above_rays < len(ray_bundle):
                raise RuntimeError(f"analytic model refuses a chunk of {len(ray_bundle)} rays")
            delay = self.config.chunk_delay_s
            if self.config.random_delay:
                with self._log_lock:
                    delay *= float(self._rng.random())
            if delay > 0:
                time.sleep(delay)
            directions = ray_bundle.directions
            rgb = (0.5 + 0.5 * directions).clamp(0.0, 1.0)
            ones = torch.ones_like(directions[..., :1])
            origin = tuple(float(v) for v in ray_bundle.origins[0].tolist())
            with self._log_lock:
                self.chunk_log.append((start, time.perf_counter(), origin, int(directions.shape[0])))
            return {"rgb": rgb, "accumulation": ones, "depth": ones}

        def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict:
            return {}

        def get_image_metrics_and_images(self, outputs, batch):
            return {}, {}

    return AnalyticModelConfig, AnalyticModel


_ANALYTIC: tuple | None = None


def make_analytic_model(**config_kwargs):
    """Builds an :class:`AnalyticModel` (a genuine ``nerfstudio.models.base_model.Model``) on the CPU."""
    global _ANALYTIC
    import torch
    from nerfstudio.data.scene_box import SceneBox

    if _ANALYTIC is None:
        _ANALYTIC = _make_analytic_model_classes()
    config_cls, _ = _ANALYTIC
    scene_box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config_cls(**config_kwargs).setup(scene_box=scene_box, num_train_data=1)
    return model.eval()


def wait_for(queue, predicate, timeout: float = 60.0):
    """Polls get_frame until predicate(frame) holds; returns the frames seen. The timeout only turns a hang into a
    failure: it returns as soon as the frame is there."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = queue.get_frame(timeout=0.2)
        if frame is not None:
            seen.append(frame)
            if predicate(frame):
                return seen
    raise AssertionError(f"condition not met within {timeout} s; frames seen: {[f.key for f in seen]}")
