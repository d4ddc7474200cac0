"""Short runs of each method on the real captures of ../shared/fixtures/real/, typed as the README shows them (the
run length aside): rnb-sdf on a DiLiGenT-MV object, nero-shape on DTU scan 37 (NeuS layout), nero-material on the
DTU run's mesh. Each mesh must lie inside the masks' visual hull and cover the silhouettes (``recon-eval views``);
the mesh of rnb-sdf comes out in millimetres, where the cameras are. (The LLFF layout is read in
test_nero_real_layouts.py; its full run is in bench/real.)

The runs are a few hundred steps: long enough to leave the initial sphere, far too short for the figures of
bench/real (``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from cli_helpers import BIN, run

from recon_plugin.data.nero_dataparser import NeroDataParserConfig, load_foreground_mask
from recon_plugin.data.rnb_dataparser import RnbDataParserConfig

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
COW = REAL / "diligent_mv" / "cow"
DTU = REAL / "dtu_scan37"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real fixtures not present")


def train(tmp_path_factory, method: str, data: Path, iterations: int, *extra: str) -> Path:
    root = tmp_path_factory.mktemp(method)
    run(
        [str(BIN / "ns-train"), method, "--data", str(data), "--output-dir", str(root), "--timestamp", "test",
         "--max-num-iterations", str(iterations), "--viewer.quit-on-train-completion", "True", *extra],
        cwd=root,
    )  # fmt: skip
    return next(root.glob(f"*/{method}/test/config.yml"))


def extract(config: Path, resolution: int = 256) -> trimesh.Trimesh:
    path = config.parent / "mesh.ply"
    run([str(BIN / "recon-extract-mesh"), "--load-config", str(config), "--output-path", str(path),
         "--resolution", str(resolution), "--no-vertex-colors"])  # fmt: skip
    return trimesh.load(path, process=False, force="mesh")


def views(config: Path, mesh: Path) -> dict:
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


# ------------------------------------------------------------------------------------------------- rnb-sdf
@pytest.fixture(scope="module")
def cow_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory, "rnb-sdf", COW, 250)


def test_rnb_sdf_on_a_diligent_mv_object_gives_a_mesh_in_millimetres_inside_the_visual_hull(cow_run):
    mesh = extract(cow_run)
    outputs = RnbDataParserConfig(data=COW).setup().get_dataparser_outputs("train")
    # The cow is about 10 cm long; its 20 cameras stand about 1.5 m away: millimetres, as cameras.npz.
    assert 60 < mesh.extents.max() < 150, mesh.extents
    from recon_plugin.data.rnb_cameras import read_idr_cameras

    cameras = read_idr_cameras(COW / "cameras.npz")
    masks = [load_foreground_mask(path, "image") for path in outputs.metadata["rnb_mask_filenames"]]
    intrinsics = cameras.intrinsics.copy()  # file convention = nerfstudio's here (pixel_centers "half")
    points = mesh.sample(20000, return_index=False)
    inside = inside_visual_hull(points, intrinsics, cameras.poses, masks)
    assert inside.mean() > 0.99, inside.mean()
    scores = views(cow_run, cow_run.parent / "mesh.ply")
    assert scores["silhouette_iou"]["min"] > 0.9, scores["silhouette_iou"]
    assert scores["mesh_normal_error"]["train"]["mean_deg"] < 12.0, scores["mesh_normal_error"]


# ---------------------------------------------------------------------------------------------- nero-shape
@pytest.fixture(scope="module")
def dtu_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory, "nero-shape", DTU, 300)


def test_nero_shape_on_dtu_gives_a_mesh_in_the_scans_millimetres_near_the_visual_hull(dtu_run):
    """300 steps of the 20k default: the mesh has left the initial sphere for the objects and bricks (measured at
    300 steps: 77 % of its area inside every view's mask, silhouette IoU 0.88; the full run's IoU is in
    bench/real), in DTU's millimetres inside cameras_sphere.npz's bounding sphere."""
    mesh = extract(dtu_run)
    scale_mat = np.load(DTU / "cameras_sphere.npz")["scale_mat_0"]
    radius, centre = scale_mat[0, 0], scale_mat[:3, 3]
    assert np.linalg.norm(mesh.vertices - centre, axis=1).max() < 1.05 * radius
    assert mesh.extents.max() > 0.5 * radius, mesh.extents
    intrinsics, poses, masks = nero_views(DTU)
    inside = inside_visual_hull(mesh.sample(20000, return_index=False), intrinsics, poses, masks)
    assert inside.mean() > 0.6, inside.mean()
    scores = views(dtu_run, dtu_run.parent / "mesh.ply")
    assert scores["silhouette_iou"]["mean"] > 0.8, scores["silhouette_iou"]
    assert scores["num_views"] == {"train": 42, "held-out": 7}


def test_nero_material_trains_on_the_real_stage_one_mesh(dtu_run, tmp_path):
    """Stage II on the real stage-I run: its 512^3 mesh (about a million faces) is extracted, cached and traced.
    The export of such a mesh (decimated for the atlas) is timed in bench/real; the decimation is tested in
    test_nero_material.py."""
    root = tmp_path / "material"
    run(
        [str(BIN / "ns-train"), "nero-material", "--data", str(DTU), "--output-dir", str(root), "--timestamp", "t",
         "--max-num-iterations", "12", "--viewer.quit-on-train-completion", "True",
         "--pipeline.model.shape-config", str(dtu_run)],
        cwd=tmp_path,
    )  # fmt: skip
    assert list(root.glob("*/nero-material/t/nerfstudio_models/step-*.ckpt"))
    cached = trimesh.load(next(dtu_run.parent.glob("nero_material_mesh_*.ply")), process=False, force="mesh")
    assert len(cached.faces) > 100_000
