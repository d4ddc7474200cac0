"""nero-data on the layouts real captures ship in, read from the real fixtures in ../shared/fixtures/real/:
NeuS/IDR (DTU scan 37: cameras_sphere.npz + image/ + mask/) and LLFF (NeRD's Ethiopian head: poses_bounds.npy +
JPEG images/ + masks/); downscaling, EXIF orientation, optional masks and the refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recon_plugin.data.errors import NeroDataError
from recon_plugin.data.nero_dataparser import NeroDataParserConfig
from recon_plugin.data.nero_dataset import NeroDataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
DTU = REAL / "dtu_scan37"
HEAD = REAL / "ethiopian_head_llff"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="real fixtures not present")


def parse(path: Path, split: str = "train", **options):
    return NeroDataParserConfig(data=path, **options).setup().get_dataparser_outputs(split)


def project(outputs, index: int, points_normalised: np.ndarray) -> np.ndarray:
    """Pixel coordinates (nerfstudio's convention: pixel centres at +0.5) of normalised points in view ``index``."""
    cameras = outputs.cameras
    c2w = cameras.camera_to_worlds[index].double().numpy()
    local = (points_normalised - c2w[:, 3]) @ c2w[:, :3]  # OpenGL camera frame
    fx, fy = float(cameras.fx[index]), float(cameras.fy[index])
    cx, cy = float(cameras.cx[index]), float(cameras.cy[index])
    return np.stack([cx + fx * local[:, 0] / -local[:, 2], cy - fy * local[:, 1] / -local[:, 2]], axis=-1)


def linked_copy(source: Path, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """A folder of symbolic links to ``source``'s files (sub-folders linked file by file), minus ``skip``."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.name in skip:
            continue
        if path.is_dir():
            linked_copy(path, target / path.name)
        else:
            (target / path.name).symlink_to(path)
    return target


def test_neus_layout_projects_world_points_like_the_stored_projection_matrices():
    """The DTU cameras: every world_mat_i projects a world point where the dataparser's camera does, up to
    NeuS's integer pixel centres (+0.5 in nerfstudio's convention)."""
    outputs = parse(DTU, eval_mode="all")
    stored = np.load(DTU / "cameras_sphere.npz")
    assert len(outputs.image_filenames) == 49
    assert outputs.metadata["object_sphere"]["source"] == "scale-mat"
    assert outputs.metadata["fg_mask_kind"] == "image"
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(50, 3)) * 0.3
    scale_mat = stored["scale_mat_0"]
    world = unit @ scale_mat[:3, :3].T + scale_mat[:3, 3]
    transform = outputs.dataparser_transform.double().numpy()
    normalised = outputs.dataparser_scale * (world @ transform[:, :3].T + transform[:, 3])
    np.testing.assert_allclose(normalised, unit, atol=1e-4)
    for view in (0, 17, 48):
        homogeneous = np.concatenate([world, np.ones((len(world), 1))], axis=1) @ stored[f"world_mat_{view}"][:3].T
        expected = homogeneous[:, :2] / homogeneous[:, 2:] + 0.5
        np.testing.assert_allclose(project(outputs, view, normalised), expected, atol=0.02)


def test_neus_layout_split_masks_and_dataset():
    train, evaluation = parse(DTU), parse(DTU, "val")
    assert len(train.image_filenames) == 42 and len(evaluation.image_filenames) == 7  # every 8th held out
    dataset = NeroDataset(train)
    data = dataset[3]
    assert data["image"].shape == (600, 800, 3)
    assert data["fg_mask"].shape == (600, 800, 1)
    assert 0.05 < float(data["fg_mask"].mean()) < 0.9


def test_llff_layout_reads_jpeg_views_whose_cameras_look_at_the_masked_object():
    outputs = parse(HEAD, eval_mode="all")
    assert len(outputs.image_filenames) == 66
    assert outputs.image_filenames[0].name == "DSC_0007.JPG"
    assert outputs.metadata["object_sphere"]["source"] == "silhouettes"
    dataset = NeroDataset(outputs)
    for view in (0, 30, 65):
        data = dataset[view]
        mask = data["fg_mask"][..., 0].numpy() > 0.5
        rows, cols = np.nonzero(mask)
        centroid = project(outputs, view, np.zeros((1, 3)))[0]
        # The sphere's centre (the visual hull's) projects inside the silhouette's bounding box, near its centroid.
        assert cols.min() < centroid[0] < cols.max() and rows.min() < centroid[1] < rows.max()
        assert np.hypot(centroid[0] - cols.mean(), centroid[1] - rows.mean()) < 0.15 * mask.shape[1]
    distances = outputs.cameras.camera_to_worlds[:, :, 3].norm(dim=-1)
    assert float(distances.min()) > 1.0  # every camera outside the unit sphere


def test_downscale_factor_resizes_images_masks_and_intrinsics():
    full = parse(HEAD)
    quarter = parse(HEAD, downscale_factor=4)
    assert int(quarter.cameras.width[0]) == 250 and int(quarter.cameras.height[0]) == 250
    np.testing.assert_allclose(quarter.cameras.fx.numpy(), full.cameras.fx.numpy() / 4, rtol=1e-6)
    np.testing.assert_allclose(quarter.cameras.cx.numpy(), full.cameras.cx.numpy() / 4, rtol=1e-6)
    data = NeroDataset(quarter)[0]
    assert data["image"].shape == (250, 250, 3) and data["fg_mask"].shape == (250, 250, 1)
    # Area averaging: the quarter image is the mean of the full image's 4x4 blocks (to JPEG/rounding).
    full_image = NeroDataset(full)[0]["image"]
    blocks = full_image.reshape(250, 4, 250, 4, 3).mean(dim=(1, 3))
    assert float((blocks - data["image"]).abs().mean()) < 2.0 / 255.0
    dtu_half = parse(DTU, downscale_factor=2)
    assert int(dtu_half.cameras.width[0]) == 400


def test_llff_images_n_folder_is_preferred(tmp_path: Path):
    data = linked_copy(HEAD, tmp_path / "head")
    (data / "images_4").mkdir()
    for path in sorted((HEAD / "images").iterdir()):
        Image.open(path).resize((250, 250), Image.Resampling.BOX).save(data / "images_4" / path.name, quality=95)
    outputs = parse(data, downscale_factor=4)
    assert outputs.image_filenames[0].parent.name == "images_4"
    assert int(outputs.cameras.width[0]) == 250


def test_exif_orientation_is_applied_when_the_camera_describes_the_upright_picture(tmp_path: Path):
    """A phone stores a portrait shot as landscape pixels plus an orientation tag; here a DTU photo (800x600,
    the size its camera describes) is stored turned by 90 degrees with EXIF orientation 6 (rotate back)."""
    data = linked_copy(DTU, tmp_path / "dtu", skip=("image",))
    (data / "image").mkdir()
    original = Image.open(DTU / "image" / "000000.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels must be turned 90 degrees clockwise to be upright
    original.transpose(Image.Transpose.ROTATE_90).save(data / "image" / "000000.jpg", exif=exif, quality=95)
    for path in sorted((DTU / "image").iterdir())[1:]:
        (data / "image" / path.name).symlink_to(path)
    outputs = parse(data, eval_mode="all")
    assert outputs.metadata["photo_upright"][0] and not any(outputs.metadata["photo_upright"][1:])
    image = NeroDataset(outputs)[0]["image"]
    assert image.shape == (600, 800, 3)
    assert float((image - torch.from_numpy(np.asarray(original)).float() / 255.0).abs().mean()) < 0.02
    with pytest.raises(NeroDataError, match=r"000000\.jpg.*600x800.*800x600"):
        parse(data, eval_mode="all", exif_orientation="ignore")


def test_masks_are_optional_and_mismatches_are_named(tmp_path: Path):
    no_masks = linked_copy(HEAD, tmp_path / "no_masks", skip=("masks",))
    outputs = parse(no_masks)
    assert outputs.metadata["fg_mask_kind"] == "none"
    assert outputs.metadata["object_sphere"]["source"] == "cameras"
    assert "fg_mask" not in NeroDataset(outputs)[0]

    missing_mask = linked_copy(DTU, tmp_path / "missing_mask")
    (missing_mask / "mask" / "030.png").unlink()
    with pytest.raises(NeroDataError, match=r"mask: 48 masks but 49 images"):
        parse(missing_mask)

    extra_image = linked_copy(HEAD, tmp_path / "extra_image")
    shutil.copy(HEAD / "images" / "DSC_0007.JPG", extra_image / "images" / "DSC_9999.JPG")
    with pytest.raises(NeroDataError, match=r"poses_bounds\.npy: 66 poses but 67 images"):
        parse(extra_image)

    wrong_size = linked_copy(DTU, tmp_path / "wrong_size")
    (wrong_size / "mask" / "005.png").unlink()
    Image.new("L", (400, 300)).save(wrong_size / "mask" / "005.png")
    with pytest.raises(NeroDataError, match=r"005\.png: size \(400, 300\) differs"):
        parse(wrong_size)

    wrong_camera = linked_copy(HEAD, tmp_path / "wrong_camera", skip=("images", "masks"))
    (wrong_camera / "images").mkdir()
    for index, path in enumerate(sorted((HEAD / "images").iterdir())):
        if index == 3:
            Image.open(path).crop((0, 0, 1000, 700)).save(wrong_camera / "images" / path.name)
        else:
            (wrong_camera / "images" / path.name).symlink_to(path)
    with pytest.raises(NeroDataError, match=r"DSC_00\d\d\.JPG: the image is 1000x700"):
        parse(wrong_camera)


def test_auto_layout_names_what_it_looked_for(tmp_path: Path):
    with pytest.raises(NeroDataError, match=r"cameras_sphere\.npz.*poses_bounds\.npy"):
        parse(tmp_path)
