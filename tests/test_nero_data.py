"""The nero-data dataparser and dataset on ``recon-synth glossy`` scenes, as GlossySynthetic and as transforms.json.

Camera checks project ground-truth surface points (world units) through the dataparser's cameras in the
normalised frame and through the generator's cameras; both must land on the same pixels.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_plugin.data.dataparser_configs import nero_dataparser
from recon_plugin.data.errors import RnbDataError
from recon_plugin.data.image_io import write_png
from recon_plugin.data.nero_dataparser import NeroDataError, NeroDataParserConfig, world_points_to_unit
from recon_plugin.data.nero_dataset import NeroDataset
from recon_plugin.data.synthetic.glossy import write_glossy_scene
from recon_plugin.data.synthetic.scene import Camera, make_scene, render_gbuffer
from recon_plugin.data.transforms import normalized_to_world

VIEWS, SIZE = 4, 32


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nero") / "blob"
    write_glossy_scene(
        out,
        views=VIEWS,
        size=SIZE,
        samples=8,
        env_height=16,
        mesh_resolution=40,
        material_points=1000,
        transforms_json=True,
        log=None,
    )
    return out


def parse(path: Path, split: str = "train", **options):
    return NeroDataParserConfig(data=path, **options).setup().get_dataparser_outputs(split)


def synth_cameras(folder: Path) -> list[Camera]:
    cameras = []
    for index in range(VIEWS):
        pose, K = pickle.loads((folder / f"{index}-camera.pkl").read_bytes())
        cameras.append(Camera(K=K, R=pose[:, :3], t=pose[:, 3], width=SIZE, height=SIZE))
    return cameras


def project(outputs, index: int, points_unit: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of normalised points through dataparser camera ``index`` (OpenGL axes, pinhole)."""
    cameras = outputs.cameras
    c2w = cameras.camera_to_worlds[index].double().numpy()
    local = (points_unit - c2w[:, 3]) @ c2w[:, :3]
    u = float(cameras.fx[index]) * local[:, 0] / -local[:, 2] + float(cameras.cx[index])
    v = float(cameras.fy[index]) * -local[:, 1] / -local[:, 2] + float(cameras.cy[index])
    return np.stack([u, v], axis=-1)


def surface_points(folder: Path) -> np.ndarray:
    return np.load(folder / "gt_materials.npz")["points"].astype(np.float64)


def assert_cameras_match(outputs, folder: Path, view_ids: list[int]) -> None:
    points = surface_points(folder)
    unit = world_points_to_unit(points, outputs)
    assert np.linalg.norm(unit, axis=1).max() < 1.0, "the object must lie inside the unit sphere"
    back = normalized_to_world(unit, outputs.dataparser_transform.numpy(), outputs.dataparser_scale)
    assert np.allclose(back, points, atol=1e-5)
    truth = synth_cameras(folder)
    for row, view in enumerate(view_ids):
        error = np.abs(project(outputs, row, unit) - truth[view].project(points)).max()
        assert error < 2e-3, f"view {view}: projections differ by {error:.2e} px"


def test_glossy_layout_gives_the_generator_cameras_and_split(scene_dir: Path):
    train = parse(scene_dir)
    evaluation = parse(scene_dir, "val")
    assert [p.name for p in train.image_filenames] == ["1.png", "2.png", "3.png"]
    assert [p.name for p in evaluation.image_filenames] == ["0.png"]  # the relit test views
    assert_cameras_match(train, scene_dir, [1, 2, 3])
    assert_cameras_match(evaluation, scene_dir, [0])
    assert train.metadata["object_sphere"]["source"] == "depth"
    assert torch.equal(train.dataparser_transform, evaluation.dataparser_transform)
    assert len(parse(scene_dir, eval_mode="all").image_filenames) == VIEWS


def test_depth_mask_reaches_the_batch_as_fg_mask(scene_dir: Path):
    outputs = parse(scene_dir, eval_mode="all")
    dataset = NeroDataset(outputs)
    info = json.loads((scene_dir / "scene.json").read_text())
    scene = make_scene(info["shape"], center=info["object_center"], scale=info["object_scale"])
    for index, camera in enumerate(synth_cameras(scene_dir)):
        data = dataset[index]
        assert data["image"].shape == (SIZE, SIZE, 3)
        silhouette = render_gbuffer(scene, camera)["mask"]
        assert torch.equal(data["fg_mask"][..., 0] > 0.5, torch.from_numpy(silhouette))
    assert "fg_mask" not in NeroDataset(parse(scene_dir, use_masks=False))[0]


def test_transforms_json_gives_the_same_cameras(scene_dir: Path):
    outputs = parse(scene_dir, layout="transforms", eval_mode="all")
    assert outputs.metadata["object_sphere"]["source"] == "point-cloud"
    assert_cameras_match(outputs, scene_dir, list(range(VIEWS)))
    # With the same bounding sphere the two layouts give identical normalised cameras.
    sphere = {"object_center": (0.4, -0.3, 1.2), "object_radius": 2.0, "eval_mode": "all"}
    glossy = parse(scene_dir, layout="glossy", **sphere).cameras
    ns = parse(scene_dir, layout="transforms", **sphere).cameras
    assert torch.allclose(glossy.camera_to_worlds, ns.camera_to_worlds, atol=1e-5)
    assert torch.allclose(glossy.fx, ns.fx) and torch.allclose(glossy.cx, ns.cx)
    # Without a point cloud, the sphere comes from where the cameras look and still holds the object.
    from_cameras = parse(scene_dir, layout="transforms", bounds="cameras", eval_mode="all")
    assert from_cameras.metadata["object_sphere"]["source"] == "cameras"
    assert_cameras_match(from_cameras, scene_dir, list(range(VIEWS)))


def test_registered_as_a_nerfstudio_dataparser():
    assert isinstance(nero_dataparser.config, NeroDataParserConfig)
    assert issubclass(NeroDataError, RnbDataError)


def copy_scene(scene_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "scene"
    shutil.copytree(scene_dir, target)
    return target


def test_missing_pose_names_the_file(scene_dir: Path, tmp_path: Path):
    folder = copy_scene(scene_dir, tmp_path)
    (folder / "2-camera.pkl").unlink()
    with pytest.raises(NeroDataError, match="2-camera.pkl"):
        parse(folder)


def test_intrinsics_of_another_image_size_are_refused(scene_dir: Path, tmp_path: Path):
    folder = copy_scene(scene_dir, tmp_path)
    pose, K = pickle.loads((folder / "1-camera.pkl").read_bytes())
    (folder / "1-camera.pkl").write_bytes(pickle.dumps((pose, K * np.array([[2.0], [2.0], [1.0]]))))
    with pytest.raises(NeroDataError, match="1-camera.pkl.*principal point"):
        parse(folder)


def test_unreadable_image_and_foreign_pickle_are_refused(scene_dir: Path, tmp_path: Path):
    folder = copy_scene(scene_dir, tmp_path)
    (folder / "3.png").write_bytes(b"not a png")
    with pytest.raises(NeroDataError, match="3.png"):
        parse(folder)
    (folder / "3.png").write_bytes((scene_dir / "3.png").read_bytes())
    # A pickle that would run code is rejected, not executed.
    (folder / "0-camera.pkl").write_bytes(pickle.dumps((os.getcwd, 1)))
    with pytest.raises(NeroDataError, match="0-camera.pkl.*refuses"):
        parse(folder)


def test_no_views_is_an_error(tmp_path: Path):
    with pytest.raises(NeroDataError, match="no views"):
        parse(tmp_path)
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(NeroDataError, match="transforms.json: no views"):
        parse(tmp_path)


def test_transforms_json_errors_name_the_file_and_frame(scene_dir: Path, tmp_path: Path):
    folder = copy_scene(scene_dir, tmp_path)
    path = folder / "transforms.json"
    meta = json.loads(path.read_text())
    del meta["frames"][1]["transform_matrix"]
    path.write_text(json.dumps(meta))
    with pytest.raises(NeroDataError, match=r"transforms.json: frame 1 \(1.png\): missing pose"):
        parse(folder, layout="transforms")
    meta = json.loads((scene_dir / "transforms.json").read_text())
    meta["frames"][2]["w"] = 2 * SIZE
    path.write_text(json.dumps(meta))
    with pytest.raises(NeroDataError, match="2.png: the image is 32x32 px"):
        parse(folder, layout="transforms")


def test_transforms_json_mask_path_becomes_fg_mask(scene_dir: Path, tmp_path: Path):
    folder = copy_scene(scene_dir, tmp_path)
    meta = json.loads((folder / "transforms.json").read_text())
    dataset = NeroDataset(parse(folder, layout="glossy", eval_mode="all"))
    for index, frame in enumerate(meta["frames"]):
        silhouette = dataset[index]["fg_mask"][..., 0].numpy()
        write_png(folder / "masks" / f"{index}.png", silhouette, bit_depth=8)
        frame["mask_path"] = f"masks/{index}.png"
    (folder / "transforms.json").write_text(json.dumps(meta))
    from_json = NeroDataset(parse(folder, layout="transforms", eval_mode="all"))
    for index in range(VIEWS):
        assert torch.equal(from_json[index]["fg_mask"], dataset[index]["fg_mask"])
        assert "mask" not in from_json[index]  # nerfstudio's key would confine ray sampling to the object


def test_transforms_json_applied_transform_is_undone_to_the_original_world(scene_dir: Path, tmp_path: Path):
    """ns-process-data stores poses and points after its applied_transform; world units are the frame before it."""
    import trimesh

    folder = copy_scene(scene_dir, tmp_path)
    angle = 0.7
    applied = np.array(
        [[np.cos(angle), -np.sin(angle), 0.0, 0.5], [np.sin(angle), np.cos(angle), 0.0, -1.0], [0.0, 0.0, 1.0, 2.0]]
    )
    lift = np.vstack([applied, [0.0, 0.0, 0.0, 1.0]])
    meta = json.loads((folder / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["transform_matrix"] = (lift @ np.array(frame["transform_matrix"])).tolist()
    meta["applied_transform"] = applied.tolist()
    (folder / "transforms.json").write_text(json.dumps(meta))
    points = surface_points(folder) @ applied[:, :3].T + applied[:, 3]
    trimesh.PointCloud(points).export(str(folder / "sparse_pc.ply"))
    outputs = parse(folder, layout="transforms", eval_mode="all")
    assert_cameras_match(outputs, folder, list(range(VIEWS)))
