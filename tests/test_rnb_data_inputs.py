"""rnb-data on real-capture inputs: RNb-NeuS2's RGBA layout, Meshroom SfMData cameras, scene normalisation.

The golden-snail fixture is rewritten here, in a temporary folder, into each layout; every layout must give
the cameras and normals of the original. The fixture's world_mat intrinsics describe the full-size
Skoltech3D images (principal point near (1184, 976)) while its maps are 32x28: tests that need consistent
geometry pass that size (``camera_image_size``) or write it into the SfMData file, as Meshroom would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh

from recon_plugin.data.image_io import read_image, write_png
from recon_plugin.data.rnb_cameras import read_cameras
from recon_plugin.data.rnb_dataparser import RnbDataError, RnbDataParserConfig
from recon_plugin.data.rnb_dataset import RnbDataset
from recon_plugin.data.synthetic.rnb import write_rnb_scene

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "golden_snail_rnb_mini"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason=f"real RnB fixture not found at {FIXTURE} (shared/ is not beside this checkout)"
)
#: Size of the images the fixture's intrinsics were calibrated on (its maps are 32x28).
CALIBRATED_SIZE = (2368, 1952)
VIEWS = 3


def parse(path: Path, split: str = "train", **options):
    return RnbDataParserConfig(data=path, **options).setup().get_dataparser_outputs(split)


def fixture_cameras() -> list[tuple[np.ndarray, np.ndarray]]:
    """(K, OpenCV camera-to-world) of each view, decomposed by OpenCV (independently of the reader)."""
    data = np.load(FIXTURE / "cameras.npz")
    cameras = []
    for index in range(VIEWS):
        k, rotation, centre, *_ = cv2.decomposeProjectionMatrix(data[f"world_mat_{index}"][:3].astype(np.float64))
        pose = np.eye(4)
        pose[:3, :3] = rotation.T
        pose[:3, 3] = (centre[:3] / centre[3]).ravel()
        cameras.append((k / k[2, 2], pose))
    return cameras


def fixture_maps(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal (RGB), albedo (RGB) and mask (bool) of a view, as stored (8-bit values in [0, 1])."""
    name = f"{index:04d}.png"
    mask = read_image(FIXTURE / "mask" / name) > 0.5
    return read_image(FIXTURE / "normal" / name), read_image(FIXTURE / "albedo" / name), mask


def trusted_pattern(mask: np.ndarray) -> np.ndarray:
    """A normal-uncertainty mask to hide in the albedo alpha: the left part of the silhouette."""
    trusted = mask.copy()
    trusted[:, 16:] = False
    return trusted


def write_neus2_layout(target: Path, n2w: bool = True) -> Path:
    """The fixture as RNb-NeuS2's prepare step writes it: transform.json, normals/ and albedos/ RGBA, 5 digits."""
    scale_mat = np.load(FIXTURE / "cameras.npz")["scale_mat_0"].astype(np.float64)
    frames = []
    for index, (k, pose) in enumerate(fixture_cameras()):
        normal, albedo, mask = fixture_maps(index)
        name = f"{index:05d}.png"
        write_png(target / "normals" / name, np.dstack([normal, mask]), bit_depth=8)
        # Alpha 250/255 = 0.98 on the rest of the silhouette: trusted at threshold 0.5, not at RNb-NeuS2's 0.99.
        alpha = np.where(trusted_pattern(mask), 1.0, np.where(mask, 250 / 255, 0.0))
        write_png(target / "albedos" / name, np.dstack([albedo, alpha]), bit_depth=8)
        normalised = pose.copy()
        normalised[:3, 3] = np.linalg.solve(scale_mat, np.append(pose[:3, 3], 1.0))[:3]
        normalised[:3, :3] = pose[:3, :3]  # scale_mat has no rotation
        intrinsic = np.eye(4)
        intrinsic[:3, :3] = k
        frames.append(
            {
                "normal_path": f"normals/{name}",
                "albedo_path": f"albedos/{name}",
                "transform_matrix": normalised.tolist(),
                "intrinsic_matrix": intrinsic.tolist(),
            }
        )
    transform = {"w": 32, "h": 28, "aabb_scale": 1.0, "scale": 0.5, "offset": [0.5] * 3, "from_na": True}
    if n2w:
        transform["n2w"] = scale_mat.tolist()
    transform["frames"] = frames
    (target / "transform.json").write_text(json.dumps(transform, indent=2))
    return target


def map_intrinsics(k: np.ndarray) -> np.ndarray:
    """The fixture's intrinsics scaled from the calibrated images to its 32x28 maps (pixel centres at +0.5)."""
    return np.diag([32 / CALIBRATED_SIZE[0], 28 / CALIBRATED_SIZE[1], 1.0]) @ k


def sfm_document(version: str = "1.2.5", factor: int = 1) -> dict:
    """The fixture's cameras as a Meshroom SfMData of images ``factor`` times the maps' size (strings, as
    AliceVision writes them)."""
    width, height = 32 * factor, 28 * factor
    views, intrinsics, poses = [], [], []
    for index, (k, pose) in enumerate(fixture_cameras()):
        k = np.diag([factor, factor, 1.0]) @ map_intrinsics(k)
        view_id, pose_id, intrinsic_id = str(1000 + index), str(2000 + index), str(3000 + index)
        views.append(
            {
                "viewId": view_id,
                "poseId": pose_id,
                "intrinsicId": intrinsic_id,
                "path": f"/capture/photos/{index:04d}.JPG",
                "width": str(width),
                "height": str(height),
            }
        )
        intrinsics.append(
            {
                "intrinsicId": intrinsic_id,
                "width": str(width),
                "height": str(height),
                "sensorWidth": "36",
                "sensorHeight": "24",
                "type": "pinhole",
                "focalLength": repr(k[0, 0] * 36.0 / width),
                "pixelRatio": repr(k[1, 1] / k[0, 0]),
                # AliceVision: offset from the image centre, pixel i centred at i.
                "principalPoint": [repr(k[0, 2] - 0.5 - width / 2), repr(k[1, 2] - 0.5 - height / 2)],
                "distortionParams": "",
                "undistortionParams": "",
            }
        )
        # As AliceVision writes a Pose3: its rotation (world -> camera) in Eigen's column-major order.
        world_to_camera = pose[:3, :3].T
        poses.append(
            {
                "poseId": pose_id,
                "pose": {
                    "transform": {
                        "rotation": [repr(v) for v in world_to_camera.ravel(order="F")],
                        "center": [repr(v) for v in pose[:3, 3]],
                    }
                },
            }
        )
    return {"version": version.split("."), "views": views, "intrinsics": intrinsics, "poses": poses}


def write_sfm_layout(target: Path, document: dict | None = None) -> Path:
    for folder in ("normal", "albedo", "mask"):
        shutil.copytree(FIXTURE / folder, target / folder)
    (target / "cameras.sfm").write_text(json.dumps(document or sfm_document(), indent=2))
    return target


def world_centres(outputs) -> np.ndarray:
    poses = outputs.transform_poses_to_original_space(outputs.cameras.camera_to_worlds)
    return poses[:, :3, 3].double().numpy()


def assert_object_inside_cameras_outside(outputs, dataset: RnbDataset) -> None:
    """Every silhouette ray (nerfstudio's own ray generator) meets the unit sphere; every camera is outside it."""
    cameras = outputs.cameras
    assert bool((cameras.camera_to_worlds[:, :3, 3].norm(dim=-1) > 1.0).all())
    for index in range(len(dataset)):
        mask = dataset[index]["fg_mask"][..., 0] > 0.5
        rays = cameras.generate_rays(camera_indices=index)
        origins, directions = rays.origins[mask].double(), rays.directions[mask].double()
        along = -(origins * directions).sum(-1)
        closest = (origins + along[:, None] * directions).norm(dim=-1)
        assert bool(((closest < 1.0) & (along > 0)).all()), f"view {index}: silhouette rays miss the unit sphere"


# ---------------------------------------------------------------- RNb-NeuS2 RGBA layout


@needs_fixture
def test_rnb_neus2_rgba_layout_gives_the_same_cameras_normals_and_silhouettes(tmp_path):
    reference = parse(FIXTURE)
    outputs = parse(write_neus2_layout(tmp_path / "neus2"))
    assert outputs.metadata["rnb_silhouette_source"] == "normal-alpha"
    assert outputs.metadata["rnb_uncertainty_source"] == "albedo-alpha"
    assert outputs.metadata["rnb_normalisation"] == "scale-mat"
    assert [p.name for p in outputs.metadata["rnb_normal_filenames"]] == ["00000.png", "00001.png", "00002.png"]
    centres = outputs.cameras.camera_to_worlds[:, :3, 3].double().numpy()
    expected = reference.cameras.camera_to_worlds[:, :3, 3].double().numpy()
    assert np.all(np.linalg.norm(centres - expected, axis=-1) <= 1e-6 * np.linalg.norm(expected, axis=-1))
    for key in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(outputs.cameras, key), getattr(reference.cameras, key), rtol=1e-6)

    dataset, reference_dataset = RnbDataset(outputs), RnbDataset(reference)
    for index in range(VIEWS):
        got, want = dataset[index], reference_dataset[index]
        assert torch.allclose(got["normal"], want["normal"], atol=1e-5)
        assert torch.equal(got["fg_mask"], want["fg_mask"])  # alpha silhouette == the mask folder
        assert torch.allclose(got["albedo"], want["albedo"])
        # Alpha 0.98 is untrusted at RNb-NeuS2's 0.99 threshold.
        trusted = trusted_pattern(fixture_maps(index)[2])
        assert torch.equal(got["normal_weight"][..., 0], torch.from_numpy(trusted.astype(np.float32)))


@needs_fixture
def test_uncertainty_alpha_threshold_is_an_option(tmp_path):
    outputs = parse(write_neus2_layout(tmp_path / "neus2"), uncertainty_alpha_threshold=0.5)
    weight = RnbDataset(outputs)[0]["normal_weight"][..., 0]
    mask = fixture_maps(0)[2]
    assert torch.equal(weight > 0.5, torch.from_numpy(mask))  # every silhouette pixel (alpha >= 0.98) passes


@needs_fixture
def test_readers_agree_in_float64_world_units(tmp_path):
    """cameras.npz, transform.json and SfMData give the same world cameras before any normalisation."""
    idr = read_cameras(FIXTURE / "cameras.npz", FIXTURE / "normal")
    neus2_dir = write_neus2_layout(tmp_path / "neus2")
    neus2 = read_cameras(neus2_dir / "transform.json", None)
    sfm_dir = write_sfm_layout(tmp_path / "sfm")
    sfm = read_cameras(sfm_dir / "cameras.sfm", sfm_dir / "normal")
    for other in (neus2, sfm):
        assert np.allclose(other.poses, idr.poses, rtol=0, atol=1e-9)
    assert np.allclose(neus2.intrinsics, idr.intrinsics, atol=1e-9)
    # The SfMData intrinsics are AliceVision's, converted to pixel centres at +0.5 (skew is not stored).
    expected = np.stack([map_intrinsics(k) for k in idr.intrinsics])
    assert np.allclose(sfm.intrinsics[:, [0, 1, 0, 1], [0, 1, 2, 2]], expected[:, [0, 1, 0, 1], [0, 1, 2, 2]])
    assert sfm.image_size == (32, 28)
    assert [p.name for p in sfm.normal_files] == ["0000.png", "0001.png", "0002.png"]


# ---------------------------------------------------------------- Meshroom SfMData


@needs_fixture
def test_sfm_json_gives_the_same_cameras_and_normals(tmp_path):
    reference = parse(FIXTURE, camera_image_size=CALIBRATED_SIZE)
    outputs = parse(write_sfm_layout(tmp_path / "sfm"))  # intrinsics of the 32x28 maps
    assert outputs.metadata["rnb_normalisation"] == "silhouettes"  # no scale_mat in an SfMData file
    centres, expected = world_centres(outputs), world_centres(reference)
    assert np.all(np.linalg.norm(centres - expected, axis=-1) <= 1e-6 * np.linalg.norm(expected, axis=-1))
    for key in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(outputs.cameras, key), getattr(reference.cameras, key), rtol=1e-5)
    # Same world rotation for every view (the normalisation has no rotation).
    assert torch.allclose(outputs.cameras.camera_to_worlds[:, :3, :3], reference.cameras.camera_to_worlds[:, :3, :3])
    dataset, reference_dataset = RnbDataset(outputs), RnbDataset(reference)
    for index in range(VIEWS):
        assert torch.allclose(dataset[index]["normal"], reference_dataset[index]["normal"], atol=1e-5)
    assert_object_inside_cameras_outside(outputs, dataset)


@needs_fixture
@pytest.mark.parametrize("version", ["1.2.2", "1.1.0"])
def test_older_sfm_versions_store_focal_and_principal_point_differently(tmp_path, version):
    document = sfm_document(version)
    expected = np.stack([map_intrinsics(k) for k, _ in fixture_cameras()])
    for entry, k in zip(document["intrinsics"], expected, strict=True):
        if version == "1.2.2":  # pixelRatio held fx / fy
            entry["pixelRatio"] = repr(k[0, 0] / k[1, 1])
        else:  # focal in pixels, principal point absolute
            del entry["focalLength"], entry["pixelRatio"]
            entry["pxFocalLength"] = [repr(k[0, 0]), repr(k[1, 1])]
            entry["principalPoint"] = [repr(k[0, 2] - 0.5), repr(k[1, 2] - 0.5)]
    sfm_dir = write_sfm_layout(tmp_path / "sfm", document)
    sfm = read_cameras(sfm_dir / "cameras.sfm", sfm_dir / "normal")
    assert np.allclose(sfm.intrinsics[:, [0, 1, 0, 1], [0, 1, 2, 2]], expected[:, [0, 1, 0, 1], [0, 1, 2, 2]])


@needs_fixture
def test_sfm_intrinsics_of_larger_images_are_scaled_to_the_maps(tmp_path):
    small = parse(write_sfm_layout(tmp_path / "small"))
    large = parse(write_sfm_layout(tmp_path / "large", sfm_document(factor=4)))
    for key in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(large.cameras, key), getattr(small.cameras, key), rtol=1e-6)
    document = sfm_document()
    for entry in document["intrinsics"] + document["views"]:
        entry["width"] = "40"
    with pytest.raises(RnbDataError, match="0000.png: size 32x28 has another aspect ratio than the 40x28 images"):
        parse(write_sfm_layout(tmp_path / "wide", document))


@needs_fixture
def test_sfm_views_match_normal_maps_by_view_id(tmp_path):
    document = sfm_document()
    sfm_dir = write_sfm_layout(tmp_path / "sfm", document)
    for index, view in enumerate(document["views"]):
        view["path"] = f"/capture/photos/DSC_{index}.JPG"
        (sfm_dir / "normal" / f"{index:04d}.png").rename(sfm_dir / "normal" / f"{view['viewId']}.png")
        for folder in ("albedo", "mask"):
            (sfm_dir / folder / f"{index:04d}.png").rename(sfm_dir / folder / f"{view['viewId']}.png")
    (sfm_dir / "cameras.sfm").write_text(json.dumps(document))
    cameras = read_cameras(sfm_dir / "cameras.sfm", sfm_dir / "normal")
    assert [p.name for p in cameras.normal_files] == ["1000.png", "1001.png", "1002.png"]
    assert np.allclose(cameras.poses, np.stack([pose for _, pose in fixture_cameras()]), atol=1e-9)
    outputs = parse(sfm_dir)
    assert [p.name for p in outputs.metadata["rnb_mask_filenames"]] == ["1000.png", "1001.png", "1002.png"]


@needs_fixture
def test_sfm_views_whose_paths_are_the_normal_maps(tmp_path):
    """Meshroom's photometric-stereo SfMData points at the normal maps themselves; no normal/ folder."""
    document = sfm_document()
    maps = tmp_path / "ps_output"
    maps.mkdir()
    for index, view in enumerate(document["views"]):
        normal, _, mask = fixture_maps(index)
        write_png(maps / f"view_{index}_normals.png", normal * mask[..., None], bit_depth=8)  # zero-coded backdrop
        view["path"] = str(maps / f"view_{index}_normals.png")
    data = tmp_path / "data"
    data.mkdir()
    (maps / "sfm.json").write_text(json.dumps(document))
    outputs = parse(data, camera_file=maps / "sfm.json", silhouette="none")
    names = [p.name for p in outputs.metadata["rnb_normal_filenames"]]
    assert names == ["view_0_normals.png", "view_1_normals.png", "view_2_normals.png"]
    assert outputs.metadata["rnb_silhouette_source"] is None  # silhouettes off: the model gets valid_normal
    assert outputs.metadata["rnb_normalisation"] == "cameras"
    valid = RnbDataset(outputs)[0]["valid_normal"][..., 0] > 0.5
    assert torch.equal(valid, torch.from_numpy(fixture_maps(0)[2]))
    document["views"][1]["path"] = str(maps / "gone.png")
    (maps / "sfm.json").write_text(json.dumps(document))
    with pytest.raises(RnbDataError, match=r"sfm.json: view 1001 .*image not found at .*gone.png"):
        parse(data, camera_file=maps / "sfm.json")


@needs_fixture
def test_the_only_sfm_file_of_the_folder_is_found(tmp_path):
    sfm_dir = write_sfm_layout(tmp_path / "sfm")
    (sfm_dir / "cameras.sfm").rename(sfm_dir / "StructureFromMotion.sfm")
    assert parse(sfm_dir).cameras.shape[0] == VIEWS
    shutil.copy(sfm_dir / "StructureFromMotion.sfm", sfm_dir / "Other.sfm")
    with pytest.raises(RnbDataError, match=r"several SfMData files \(Other.sfm, StructureFromMotion.sfm\)"):
        parse(sfm_dir)


def _drop_pose(document):
    document["poses"].pop(1)
    return "view 1001 .*missing pose 2001"


def _unknown_intrinsic(document):
    document["views"][2]["intrinsicId"] = "77"
    return "view 1002 .*unknown intrinsicId 77"


def _distortion(document):
    document["intrinsics"][0].update(type="radial3", distortionParams=["0.1", "0", "0"])
    return "intrinsic 3000: lens distortion is present .*unsupported"


def _no_sensor_width(document):
    del document["intrinsics"][1]["sensorWidth"]
    return "intrinsic 3001: 'focalLength' is in mm but 'sensorWidth' is missing"


def _bad_rotation(document):
    document["poses"][0]["pose"]["transform"]["rotation"] = ["1", "0", "0", "0", "2", "0", "0", "0", "1"]
    return "pose 2000: 'rotation' is not a rotation matrix"


def _fisheye(document):
    document["intrinsics"][0]["type"] = "equidistant_r3"
    return "camera type 'equidistant_r3' is not supported"


def _rig(document):
    document["views"][0].update(rigId="0", subPoseId="1")
    return "view 1000 .*rigs"


def _missing_image(document):
    document["views"][1]["path"] = "/capture/photos/IMG_9.JPG"
    return "view 1001 .*image not found: no .*normal/IMG_9.png"


@needs_fixture
@pytest.mark.parametrize(
    "corrupt",
    [_drop_pose, _unknown_intrinsic, _distortion, _no_sensor_width, _bad_rotation, _fisheye, _rig, _missing_image],
)
def test_bad_sfm_files_are_named_with_the_fault(tmp_path, corrupt):
    document = sfm_document()
    expected = corrupt(document)
    sfm_dir = write_sfm_layout(tmp_path / "sfm", document)
    with pytest.raises(RnbDataError, match=f"cameras.sfm: .*{expected}"):
        parse(sfm_dir)


@needs_fixture
def test_transform_json_in_nerf_axes_and_missing_frames_are_rejected(tmp_path):
    neus2_dir = write_neus2_layout(tmp_path / "neus2")
    data = json.loads((neus2_dir / "transform.json").read_text())
    del data["from_na"]
    (neus2_dir / "transform.json").write_text(json.dumps(data))
    with pytest.raises(RnbDataError, match=r"transform.json: only .*from_na"):
        parse(neus2_dir)
    data["from_na"] = True
    (neus2_dir / "transform.json").write_text(json.dumps(data))
    (neus2_dir / "normals" / "00001.png").unlink()
    with pytest.raises(RnbDataError, match=r"transform.json: frame 1: normal map .*00001.png not found"):
        parse(neus2_dir)


@needs_fixture
def test_eight_bit_albedo_alpha_in_a_sixteen_bit_png_is_caught(tmp_path):
    """RNb-NeuS2's fixed bug: such an alpha reads as nearly transparent and silently trusts no normal."""
    neus2_dir = write_neus2_layout(tmp_path / "neus2")
    path = neus2_dir / "albedos" / "00002.png"
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.uint16)
    raw[..., :3] *= 257  # colour rescaled to 16 bits, alpha left at 8-bit values
    cv2.imwrite(str(path), raw)
    with pytest.raises(RnbDataError, match="00002.png: its alpha .*trusts no foreground pixel"):
        parse(neus2_dir)


@needs_fixture
def test_normal_alpha_silhouette_needs_rgba_normals():
    with pytest.raises(RnbDataError, match="0000.png: silhouette 'normal-alpha' needs RGBA normal maps"):
        parse(FIXTURE, silhouette="normal-alpha")


# ---------------------------------------------------------------- scene normalisation


@needs_fixture
def test_without_scale_mat_the_silhouettes_place_the_unit_sphere(tmp_path):
    scene = tmp_path / "no_scale"
    shutil.copytree(FIXTURE, scene)
    data = dict(np.load(scene / "cameras.npz"))
    np.savez(scene / "cameras.npz", **{k: v for k, v in data.items() if not k.startswith("scale_mat")})
    outputs = parse(scene, camera_image_size=CALIBRATED_SIZE)
    assert outputs.metadata["rnb_normalisation"] == "silhouettes"
    assert_object_inside_cameras_outside(outputs, RnbDataset(outputs))
    # The recorded transform maps the normalised cameras back onto the world_mat centres.
    expected = np.stack([pose[:3, 3] for _, pose in fixture_cameras()])
    assert np.allclose(world_centres(outputs), expected, rtol=1e-5, atol=1e-6)


@needs_fixture
def test_cameras_inconsistent_with_the_maps_stop_with_a_clear_error(tmp_path):
    """Without camera_image_size, the fixture's full-size intrinsics send the silhouette rays astray."""
    scene = tmp_path / "no_scale"
    shutil.copytree(FIXTURE, scene)
    data = dict(np.load(scene / "cameras.npz"))
    np.savez(scene / "cameras.npz", **{k: v for k, v in data.items() if not k.startswith("scale_mat")})
    with pytest.raises(RnbDataError, match="empty visual hull"):
        parse(scene)
    with pytest.raises(RnbDataError, match="cameras.npz: normalisation 'scale-mat' but the file stores no scale_mat"):
        parse(scene, normalisation="scale-mat")


@needs_fixture
def test_scale_mat_warning_says_what_is_used(tmp_path, capsys):
    scene = tmp_path / "scale"
    shutil.copytree(FIXTURE, scene)
    data = dict(np.load(scene / "cameras.npz"))
    data["scale_mat_1"] = data["scale_mat_1"] * np.array([2.0, 2.0, 2.0, 1.0])[:, None]
    np.savez(scene / "cameras.npz", **data)
    outputs = parse(scene)
    assert "scale_mat_1 differs from scale_mat_0; every view is normalised with scale_mat_0" in " ".join(
        capsys.readouterr().out.split()
    )
    assert torch.allclose(outputs.cameras.camera_to_worlds, parse(FIXTURE).cameras.camera_to_worlds)


@pytest.fixture(scope="module")
def sphere_without_scale_mat(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("data") / "sphere"
    write_rnb_scene(path, shape="sphere", views=6, size=40, mesh_resolution=48, log=None)
    data = dict(np.load(path / "cameras.npz"))
    np.savez(path / "cameras.npz", **{k: v for k, v in data.items() if not k.startswith("scale_mat")})
    return path, json.loads((path / "scene.json").read_text())


def object_sphere_normalised(outputs, scene: dict) -> tuple[float, float]:
    """Distance of the true object centre from the origin and its radius, in the normalised frame."""
    transform = outputs.dataparser_transform.double().numpy()
    centre = outputs.dataparser_scale * (transform[:, :3] @ np.asarray(scene["object_center"]) + transform[:, 3])
    return float(np.linalg.norm(centre)), outputs.dataparser_scale * scene["bounding_radius"]


@pytest.mark.parametrize("mode", ["auto", "cameras", "point-cloud"])
def test_normalisation_modes_put_a_known_object_inside_the_unit_sphere(sphere_without_scale_mat, mode):
    path, scene = sphere_without_scale_mat
    options = {"normalisation": mode}
    if mode == "point-cloud":
        options["point_cloud"] = Path("gt_mesh.ply")
    outputs = parse(path, **options)
    assert outputs.metadata["rnb_normalisation"] == ("silhouettes" if mode == "auto" else mode)
    distance, radius = object_sphere_normalised(outputs, scene)
    assert distance + radius < 1.0, f"{mode}: object reaches {distance + radius:.3f}"
    assert radius > 0.3, f"{mode}: the unit sphere is far too loose (object radius {radius:.3f})"
    assert bool((outputs.cameras.camera_to_worlds[:, :3, 3].norm(dim=-1) > 1.0).all())
    if mode == "point-cloud":  # bounding sphere of the surface points, plus the 10 % margin
        assert radius == pytest.approx(1 / 1.1, rel=0.02)


def test_normalisation_errors_name_the_problem(sphere_without_scale_mat, tmp_path):
    path, scene = sphere_without_scale_mat
    with pytest.raises(RnbDataError, match="normalisation 'point-cloud' needs --point-cloud"):
        parse(path, normalisation="point-cloud")
    with pytest.raises(RnbDataError, match="missing.ply: point cloud file not found"):
        parse(path, normalisation="point-cloud", point_cloud=tmp_path / "missing.ply")
    centre, radius = np.asarray(scene["object_center"]), scene["bounding_radius"]
    huge = tmp_path / "huge.ply"
    _write_ply(huge, centre + 50 * radius * np.eye(3))
    with pytest.raises(RnbDataError, match=r"camera lies inside the unit sphere .*point-cloud normalisation"):
        parse(path, normalisation="point-cloud", point_cloud=huge)
    aside = tmp_path / "aside.ply"
    _write_ply(aside, centre + radius * np.array([0.0, 0.0, 1.5]) + 0.1 * radius * np.eye(3))
    with pytest.raises(RnbDataError, match=r"silhouette's rays miss the unit sphere .*the object is not inside it"):
        parse(path, normalisation="point-cloud", point_cloud=aside)


def test_silhouettes_that_disagree_carve_nothing(sphere_without_scale_mat, tmp_path):
    path, _ = sphere_without_scale_mat
    scene = tmp_path / "bad_poses"
    shutil.copytree(path, scene)
    data = dict(np.load(scene / "cameras.npz"))
    angle = np.radians(30.0)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    for index in range(3):  # these cameras turn 30 degrees about their centre: their masks now lie elsewhere
        k = cv2.decomposeProjectionMatrix(data[f"world_mat_{index}"][:3].astype(np.float64))[0]
        data[f"world_mat_{index}"][:3] = k @ turn @ np.linalg.inv(k) @ data[f"world_mat_{index}"][:3]
    np.savez(scene / "cameras.npz", **data)
    with pytest.raises(RnbDataError, match="cameras.npz: the silhouettes carve an empty visual hull"):
        parse(scene, normalisation="silhouettes")


def _write_ply(path: Path, points: np.ndarray) -> None:
    trimesh.PointCloud(points).export(path)


DILIGENT_COW = FIXTURE.parent / "real" / "diligent_mv" / "cow"


@pytest.mark.skipif(not DILIGENT_COW.is_dir(), reason="DiLiGenT-MV fixture not present")
def test_diligent_maps_without_masks_take_the_zero_vector_code_as_background(tmp_path: Path):
    """DiLiGenT-MV codes the background as (0.5, 0.5, 0.5), a zero normal; without mask/ that code is the
    silhouette (not a backdrop for the background field), and it matches the shipped masks."""
    data = tmp_path / "cow"
    data.mkdir()
    for name in ("cameras.npz", "normal", "albedo", "mask_normal_uncertainty"):
        (data / name).symlink_to(DILIGENT_COW / name)
    outputs = parse(data)
    assert outputs.metadata["rnb_silhouette_source"] == "zero-normal"
    dataset = RnbDataset(outputs)
    for view in (0, 7, 19):
        silhouette = dataset[view]["fg_mask"][..., 0].numpy() > 0.5
        mask = read_image(DILIGENT_COW / "mask" / f"{view:03d}.png") > 0.5
        iou = (silhouette & mask).sum() / (silhouette | mask).sum()
        assert iou > 0.97, (view, iou)
