"""Helpers of the short real-capture runs (test_real_runs_*.py): the fixtures' paths, ``ns-train`` as typed with a
run length, mesh extraction, ``recon-eval views`` and the masks' visual hull."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh
from cli_helpers import BIN, run

from recon_plugin.data.nero_dataparser import NeroDataParserConfig, load_foreground_mask

#: ../shared/fixtures/real beside the checkout (absent on a clone without it: the real-run tests skip).
REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
COW = REAL / "diligent_mv" / "cow"
DTU = REAL / "dtu_scan37"


def train(tmp_path_factory, method: str, data: Path, iterations: int, *extra: str) -> Path:
    """``ns-train METHOD --data DATA`` with its defaults but the run length; returns the run's config.yml."""
    root = tmp_path_factory.mktemp(method)
    run(
        [str(BIN / "ns-train"), method, "--data", str(data), "--output-dir", str(root), "--timestamp", "test",
         "--max-num-iterations", str(iterations), "--viewer.quit-on-train-completion", "True", *extra],
        cwd=root,
    )  # fmt: skip
    return next(root.glob(f"*/{method}/test/config.yml"))


def extract(config: Path, resolution: int = 256) -> trimesh.Trimesh:
    """``recon-extract-mesh`` of a run into mesh.ply beside its config, loaded."""
    path = config.parent / "mesh.ply"
    run([str(BIN / "recon-extract-mesh"), "--load-config", str(config), "--output-path", str(path),
         "--resolution", str(resolution), "--no-vertex-colors"])  # fmt: skip
    return trimesh.load(path, process=False, force="mesh")


def views(config: Path, mesh: Path) -> dict:
    """``recon-eval views`` of a run's mesh against every view: its JSON summary."""
    command = [str(BIN / "recon-eval"), "views", str(config), "--mesh", str(mesh), "--model-normals", "none"]
    return json.loads(run(command).stdout.strip().splitlines()[-1])


def inside_visual_hull(points: np.ndarray, intrinsics, poses, masks, dilation: int = 3) -> np.ndarray:
    """Whether each world point projects inside every view's silhouette (dilated by a few pixels). A view whose
    frame the point falls outside of says nothing about it: DTU's bricks run out of most pictures."""
    import cv2

    inside = np.ones(len(points), dtype=bool)
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
    for k, pose, mask in zip(intrinsics, poses, masks, strict=True):
        grown = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        local = (points - pose[:3, 3]) @ pose[:3, :3]  # OpenCV camera frame
        pixels = local @ k.T
        u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]  # pixel centres at +0.5
        col, row = np.floor(u).astype(int), np.floor(v).astype(int)
        in_frame = (col >= 0) & (row >= 0) & (col < mask.shape[1]) & (row < mask.shape[0])
        valid = (local[:, 2] > 0) & in_frame
        hit = ~in_frame  # beside the frame: no evidence either way
        hit[valid] = grown[row[valid], col[valid]]
        inside &= hit
    return inside


def nero_views(data: Path):
    """World-unit pinhole cameras (OpenCV axes) and masks of a NeuS-layout folder, as the dataparser reads them."""
    parser = NeroDataParserConfig(data=data, eval_mode="all").setup()
    photo_views = parser._read_neus()
    fx, fy, cx, cy = photo_views.intrinsics.T
    intrinsics = np.zeros((len(fx), 3, 3))
    intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2] = fx, fy, cx, cy
    intrinsics[:, 2, 2] = 1.0
    poses = np.tile(np.eye(4), (len(fx), 1, 1))
    poses[:, :3, :4] = photo_views.camera_to_worlds @ np.diag([1.0, -1.0, -1.0, 1.0])
    masks = [load_foreground_mask(path, photo_views.mask_kind) for path in photo_views.mask_filenames]
    return intrinsics, poses, masks
