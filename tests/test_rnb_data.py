"""The rnb-data dataparser and dataset, on the real fixture and on synthetic scenes with exact ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recon_plugin.data.image_io import read_image, write_png
from recon_plugin.data.rnb_dataparser import RnbDataError, RnbDataParserConfig
from recon_plugin.data.rnb_dataset import RnbDataset
from recon_plugin.data.synthetic.rnb import write_rnb_scene

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "golden_snail_rnb_mini"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason=f"real RnB fixture not found at {FIXTURE} (shared/ is not beside this checkout)"
)


def parse(path: Path, split: str = "train", **options):
    return RnbDataParserConfig(data=path, **options).setup().get_dataparser_outputs(split)


@pytest.fixture(scope="module")
def sphere_scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sphere"
    write_rnb_scene(path, shape="sphere", views=4, size=48, mesh_resolution=64, log=None)
    return path


def copy_scene(scene: Path, tmp_path: Path) -> Path:
    target = tmp_path / "scene"
    shutil.copytree(scene, target)
    return target


# ---------------------------------------------------------------- real data


@needs_fixture
def test_real_fixture_cameras_match_the_world_matrices():
    outputs = parse(FIXTURE)
    cameras = outputs.cameras
    assert cameras.shape[0] == 3
    assert int(cameras.width[0]) == 32 and int(cameras.height[0]) == 28
    poses = outputs.transform_poses_to_original_space(cameras.camera_to_worlds).numpy()
    data = np.load(FIXTURE / "cameras.npz")
    for index in range(3):
        *_, centre, _, _, _, _ = cv2.decomposeProjectionMatrix(data[f"world_mat_{index}"][:3].astype(np.float64))
        centre = (centre[:3] / centre[3]).ravel()
        assert np.allclose(poses[index, :3, 3], centre, atol=1e-4)
    # The normalised frame puts the object inside the unit sphere: cameras lie outside it.
    assert bool((cameras.camera_to_worlds[:, :3, 3].norm(dim=-1) > 1.0).all())


@needs_fixture
def test_real_fixture_normals_are_unit_and_face_their_camera():
    outputs = parse(FIXTURE)
    dataset = RnbDataset(outputs)
    for index in range(len(dataset)):
        data = dataset[index]
        mask = data["fg_mask"][..., 0] > 0.5
        normals = data["normal"][mask]
        assert torch.allclose(normals.norm(dim=-1), torch.ones(len(normals)), atol=1e-4)
        directions = outputs.cameras.generate_rays(camera_indices=index).directions[mask]
        facing = ((normals * directions).sum(-1) < 0).float().mean()
        # Photometric-stereo normals of a real object: a few silhouette pixels may graze away.
        assert facing > 0.9, f"view {index}: only {facing:.0%} of the normals face the camera"
        assert data["albedo"].shape == (28, 32, 3) and data["image"].shape == (28, 32, 3)


# ---------------------------------------------------------------- exact synthetic ground truth


def test_world_normals_match_the_analytic_sphere(sphere_scene):
    """Decoding, the OpenGL axis convention and the camera rotation together give the exact normal."""
    import json

    outputs = parse(sphere_scene)
    scene = json.loads((sphere_scene / "scene.json").read_text())
    transform = outputs.dataparser_transform.double().numpy()
    scale = outputs.dataparser_scale
    centre = scale * (transform[:, :3] @ np.asarray(scene["object_center"]) + transform[:, 3])
    radius = scale * scene["bounding_radius"]
    dataset = RnbDataset(outputs)
    for index in range(len(dataset)):
        data = dataset[index]
        rays = outputs.cameras.generate_rays(camera_indices=index)
        mask = data["fg_mask"][..., 0] > 0.5
        origins = rays.origins[mask].double().numpy()
        directions = rays.directions[mask].double().numpy()
        offset = origins - centre
        b = (offset * directions).sum(-1)
        t = -b - np.sqrt(np.maximum(b * b - (offset * offset).sum(-1) + radius * radius, 0.0))
        expected = (origins + directions * t[:, None] - centre) / radius
        got = data["normal"][mask].double().numpy()
        assert np.abs(got - expected).max() < 1e-3


def test_normalisation_puts_the_object_in_the_unit_sphere_and_back(sphere_scene):
    import json

    outputs = parse(sphere_scene)
    scene = json.loads((sphere_scene / "scene.json").read_text())
    assert 0.2 < outputs.dataparser_scale < 0.9  # the synthetic object is not unit sized
    transform = outputs.dataparser_transform.double().numpy()
    centre = outputs.dataparser_scale * (transform[:, :3] @ np.asarray(scene["object_center"]) + transform[:, 3])
    assert np.linalg.norm(centre) < 1e-5
    assert outputs.dataparser_scale * scene["bounding_radius"] < 1.0


def test_sixteen_bit_masks_are_read_by_bit_depth(tmp_path):
    path = tmp_path / "scene16"
    write_rnb_scene(path, shape="sphere", views=2, size=32, mesh_resolution=48, mask_bit_depth=16, log=None)
    raw = cv2.imread(str(sorted((path / "mask").iterdir())[0]), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    data = RnbDataset(parse(path))[0]
    fraction = float(data["fg_mask"].mean())
    assert 0.05 < fraction < 0.95


def test_missing_albedo_and_mask_folders_are_optional(sphere_scene, tmp_path):
    scene = copy_scene(sphere_scene, tmp_path)
    shutil.rmtree(scene / "albedo")
    shutil.rmtree(scene / "mask")
    outputs = parse(scene)
    assert outputs.metadata["rnb_silhouette_source"] == "zero-normal"
    data = RnbDataset(outputs)[0]
    assert "albedo" not in data and "valid_normal" not in data
    # Without masks, the all-zero normal code marks the background: it becomes the silhouette the mask term trains.
    silhouette = data["fg_mask"][..., 0]
    assert 0.05 < float(silhouette.mean()) < 0.95
    with_masks = RnbDataset(parse(sphere_scene))[0]["fg_mask"][..., 0]
    assert float((silhouette != with_masks).float().mean()) < 0.01  # the zero code and the mask agree
    # Without a silhouette, the same pixels only mark which normals are valid.
    ignored = RnbDataset(parse(scene, silhouette="none"))[0]
    assert "fg_mask" not in ignored and torch.equal(ignored["valid_normal"], data["fg_mask"])


# ---------------------------------------------------------------- clear errors


def test_missing_cameras_file_is_named(sphere_scene, tmp_path):
    scene = copy_scene(sphere_scene, tmp_path)
    (scene / "cameras.npz").unlink()
    with pytest.raises(RnbDataError, match="cameras.npz"):
        parse(scene)


def test_count_mismatch_is_reported(sphere_scene, tmp_path):
    scene = copy_scene(sphere_scene, tmp_path)
    sorted((scene / "albedo").iterdir())[-1].unlink()
    with pytest.raises(RnbDataError, match=r"albedo: 3 images but 4 normal maps"):
        parse(scene)
    scene2 = copy_scene(sphere_scene, tmp_path / "b")
    data = dict(np.load(scene2 / "cameras.npz"))
    del data["world_mat_3"]
    np.savez(scene2 / "cameras.npz", **data)
    with pytest.raises(RnbDataError, match="3 world_mat_i entries but 4 normal maps"):
        parse(scene2)


def test_differing_image_size_names_the_file(sphere_scene, tmp_path):
    scene = copy_scene(sphere_scene, tmp_path)
    bad = sorted((scene / "albedo").iterdir())[1]
    write_png(bad, np.zeros((20, 20, 3)), bit_depth=16)
    with pytest.raises(RnbDataError, match=bad.name):
        parse(scene)


def test_a_picture_that_is_not_a_normal_map_is_rejected(sphere_scene, tmp_path):
    scene = copy_scene(sphere_scene, tmp_path)
    bad = sorted((scene / "normal").iterdir())[2]
    write_png(bad, np.full_like(read_image(bad), 0.5), bit_depth=16)  # a grey picture decodes to |n| = 0
    with pytest.raises(RnbDataError, match=f"{bad.name}.*normal map"):
        parse(scene)


@pytest.mark.parametrize("corruption", ["singular", "nan"])
def test_bad_camera_matrices_are_rejected(sphere_scene, tmp_path, corruption):
    scene = copy_scene(sphere_scene, tmp_path)
    data = dict(np.load(scene / "cameras.npz"))
    if corruption == "singular":
        data["world_mat_1"][:3, :3] = 0.0
        expected = "world_mat_1.*singular"
    else:
        data["world_mat_2"][0, 0] = np.nan
        expected = "world_mat_2.*NaN"
    np.savez(scene / "cameras.npz", **data)
    with pytest.raises(RnbDataError, match=expected):
        parse(scene)


def test_eval_interval_split(sphere_scene):
    train = parse(sphere_scene, "train", eval_mode="interval", eval_interval=2)
    test = parse(sphere_scene, "test", eval_mode="interval", eval_interval=2)
    assert train.cameras.shape[0] == 2 and test.cameras.shape[0] == 2
    assert len(train.metadata["rnb_normal_filenames"]) == 2
