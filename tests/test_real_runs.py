"""Short runs of each method on the real captures of ../shared/fixtures/real/, typed as the README shows them (the
run length aside): rnb-sdf on a DiLiGenT-MV object, nero-shape on DTU scan 37 (NeuS layout) and on NeRD's
Ethiopian head (LLFF), nero-material on the DTU run. Each mesh must lie inside the masks' visual hull and cover
the silhouettes (``recon-eval views``); the meshes of rnb-sdf come out in millimetres, where the cameras are.

The runs are a few hundred steps: long enough to leave the initial sphere, far too short for the figures of
bench/real (``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from cli_helpers import BIN, run
from gltf_validation import validate_glb

from recon_plugin.data.nero_dataparser import NeroDataParserConfig, load_foreground_mask
from recon_plugin.data.rnb_dataparser import RnbDataParserConfig

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
COW = REAL / "diligent_mv" / "cow"
DTU = REAL / "dtu_scan37"
HEAD = REAL / "ethiopian_head_llff"

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
    """Whether each world point projects inside every view's silhouette (dilated by a few pixels)."""
    import cv2

    inside = np.ones(len(points), dtype=bool)
    kernel = np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8)
    for k, pose, mask in zip(intrinsics, poses, masks, strict=True):
        grown = cv2.dilate(mask.astype(np.uint8), kernel) > 0
        local = (points - pose[:3, 3]) @ pose[:3, :3]  # OpenCV camera frame
        pixels = local @ k.T
        u, v = pixels[:, 0] / pixels[:, 2], pixels[:, 1] / pixels[:, 2]  # pixel centres at +0.5
        col, row = np.floor(u).astype(int), np.floor(v).astype(int)
        valid = (local[:, 2] > 0) & (col >= 0) & (row >= 0) & (col < mask.shape[1]) & (row < mask.shape[0])
        hit = np.zeros(len(points), dtype=bool)
        hit[valid] = grown[row[valid], col[valid]]
        inside &= hit
    return inside


def nero_views(data: Path):
    """World-unit pinhole cameras (OpenCV axes) and masks of a nero-data folder, as the dataparser reads them."""
    parser = NeroDataParserConfig(data=data, eval_mode="all").setup()
    layout = parser._layout()
    read = {"neus": parser._read_neus, "llff": parser._read_llff}[layout]
    photo_views = read()
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


@pytest.mark.parametrize("scene", ["dtu", "head"])
def test_nero_shape_on_a_real_capture_stays_inside_the_visual_hull(scene, dtu_run, tmp_path_factory):
    config = dtu_run if scene == "dtu" else train(tmp_path_factory, "nero-shape", HEAD, 300)
    data = DTU if scene == "dtu" else HEAD
    mesh = extract(config)
    intrinsics, poses, masks = nero_views(data)
    inside = inside_visual_hull(mesh.sample(20000, return_index=False), intrinsics, poses, masks)
    assert inside.mean() > 0.9, inside.mean()
    scores = views(config, config.parent / "mesh.ply")
    assert scores["silhouette_iou"]["mean"] > 0.8, scores["silhouette_iou"]


def test_nero_material_trains_on_the_real_stage_one_mesh_and_exports(dtu_run, tmp_path):
    root = tmp_path / "material"
    run(
        [str(BIN / "ns-train"), "nero-material", "--data", str(DTU), "--output-dir", str(root), "--timestamp", "t",
         "--max-num-iterations", "12", "--viewer.quit-on-train-completion", "True",
         "--pipeline.model.shape-config", str(dtu_run)],
        cwd=tmp_path,
    )  # fmt: skip
    config = next(root.glob("*/nero-material/t/config.yml"))
    out = tmp_path / "materials"
    result = run([str(BIN / "recon-export-materials"), "--load-config", str(config), "--output-dir", str(out),
                  "--texture-size", "256"])  # fmt: skip
    summary = json.loads((out / "materials.json").read_text())
    # The full stage-I mesh (512^3 extraction) is over the default face budget: decimated for the atlas.
    assert summary["faces"] > 100_000 and "decimating" in result.stdout
    assert summary["model_glb_faces"] <= 100_000
    issues = validate_glb(out / "model.glb", tmp_path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
