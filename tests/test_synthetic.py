"""Synthetic scenes: analytic shapes, ray caster, and the RnB writer checked against exact ground truth.

The checks re-derive the cameras from cameras.npz (OpenCV decomposition, as an RnB reader would) and
cast their own rays, so the written files are tested, not the writer's in-memory objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh

from recon_plugin.cli.synth import ShapeName
from recon_plugin.data.image_io import decode_normals, list_images, read_image
from recon_plugin.data.synthetic.rnb import write_rnb_scene
from recon_plugin.data.synthetic.scene import (
    PIXEL_CENTER,
    albedo_canonical,
    cast_rays,
    make_cameras,
    make_scene,
    render_gbuffer,
)
from recon_plugin.data.synthetic.shapes import SHAPES, extract_mesh, get_shape

REPO_ROOT = Path(__file__).resolve().parents[1]
JITTER = 0.2


def _write(path: Path, shape: str, **kwargs) -> Path:
    options = {"views": 4, "size": 40, "mesh_resolution": 96, "log": None, **kwargs}
    write_rnb_scene(path, shape=shape, **options)
    return path


@pytest.fixture(scope="module")
def blob_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("synth") / "blob", "blob", albedo_scale_jitter=JITTER)


@pytest.fixture(scope="module")
def sphere_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("synth") / "sphere", "sphere")


def _cameras_from_npz(folder: Path) -> list[dict]:
    """Decomposes world_mat_i like an RnB reader: K, R (world->cam, OpenCV), centre, P."""
    data = np.load(folder / "cameras.npz")
    count = len([key for key in data if key.startswith("world_mat_")])
    cameras = []
    for i in range(count):
        P = data[f"world_mat_{i}"][:3]
        K, R, center_h = cv2.decomposeProjectionMatrix(P)[:3]
        K = K / K[2, 2]
        # decomposeProjectionMatrix may flip the sign of (K, R) pairs; enforce a positive focal.
        fix = np.diag(np.sign(np.diag(K)))
        K, R = K @ fix, fix @ R
        cameras.append({"K": K, "R": R, "center": center_h[:3, 0] / center_h[3, 0], "P": P})
    return cameras


def _rays(camera: dict, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(width) + PIXEL_CENTER, np.arange(height) + PIXEL_CENTER)
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3)
    dirs = pixels @ np.linalg.inv(camera["K"]).T @ camera["R"]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return np.broadcast_to(camera["center"], dirs.shape), dirs


def _scene_of(folder: Path):
    info = json.loads((folder / "scene.json").read_text())
    return info, make_scene(info["shape"], center=info["object_center"], scale=info["object_scale"])


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_gradient_matches_finite_differences(name: str) -> None:
    shape = get_shape(name)
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, size=(20000, 3)) * shape.bounding_radius * 1.2
    values = shape.sdf(points)
    points = points[np.abs(values) < 0.1][:2000]
    assert len(points) > 200
    eps = 1e-6
    numeric = np.stack(
        [(shape.sdf(points + eps * e) - shape.sdf(points - eps * e)) / (2 * eps) for e in np.eye(3)], axis=1
    )
    analytic = shape.gradient(points)
    np.testing.assert_allclose(analytic, numeric, atol=1e-4)
    # Sphere tracing relies on the Lipschitz bound.
    assert np.linalg.norm(analytic, axis=1).max() <= shape.lipschitz + 1e-9


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_fits_its_bounding_radius(name: str) -> None:
    shape = get_shape(name)
    assert 0.5 < shape.bounding_radius <= 0.85
    vertices, faces = extract_mesh(shape, resolution=64)
    assert np.linalg.norm(vertices, axis=1).max() <= shape.bounding_radius + 1e-9
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight


def test_cli_shape_choices_match_registry() -> None:
    assert set(typing.get_args(ShapeName)) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_hit_points_lie_on_the_surface(name: str) -> None:
    scene = make_scene(name)
    camera = make_cameras(scene, views=3, size=48, seed=1)[1]
    gbuffer = render_gbuffer(scene, camera)
    mask = gbuffer["mask"]
    # The figure is tall and thin: its silhouette covers little of the bounding sphere's image.
    assert (0.05 if name == "figure" else 0.15) < mask.mean() < 0.8
    canonical = scene.to_canonical(gbuffer["position"][mask])
    residual = np.abs(scene.shape.sdf(canonical))
    assert residual.max() < 1e-5
    assert np.quantile(residual, 0.99) < 1e-9
    # Distance along the ray and the camera z-depth agree with the hit points.
    centre = camera.center
    np.testing.assert_allclose(
        gbuffer["distance"][mask], np.linalg.norm(gbuffer["position"][mask] - centre, axis=1), rtol=1e-10
    )
    z = (gbuffer["position"][mask] @ camera.R.T + camera.t)[:, 2]
    np.testing.assert_allclose(gbuffer["depth"][mask], z, rtol=1e-10)


def test_torus_hole_is_empty() -> None:
    scene = make_scene("torus")
    axis = np.array([0.0, 0.0, 1.0])
    origin = scene.center + 10.0 * axis
    result = cast_rays(scene, origin[None], -axis[None])
    assert not result["hit"][0]


def test_cameras_cover_both_hemispheres_and_look_at_the_object() -> None:
    scene = make_scene("blob")
    cameras = make_cameras(scene, views=20, size=64)
    directions = np.array([c.center - scene.center for c in cameras])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    assert (directions[:, 2] > 0.3).sum() >= 5 and (directions[:, 2] < -0.3).sum() >= 5
    assert np.abs(directions[:, 2]).max() < 0.95
    for camera in cameras:
        np.testing.assert_allclose(camera.project(scene.center[None])[0], [32.0, 32.0], atol=1e-9)


def test_sphere_world_normals_are_radial() -> None:
    scene = make_scene("sphere")
    camera = make_cameras(scene, views=2, size=32)[0]
    gbuffer = render_gbuffer(scene, camera)
    mask = gbuffer["mask"]
    radius = scene.shape.radius * scene.scale
    expected = (gbuffer["position"][mask] - scene.center) / radius
    np.testing.assert_allclose(gbuffer["normal"][mask], expected, atol=1e-10)


def test_scale_mat_is_nontrivial_and_encloses_the_object(blob_dir: Path) -> None:
    info, scene = _scene_of(blob_dir)
    data = np.load(blob_dir / "cameras.npz")
    scale_mat = data["scale_mat_0"]
    assert not np.allclose(scale_mat, np.eye(4))
    np.testing.assert_allclose(scale_mat[:3, 3], info["object_center"])
    np.testing.assert_allclose(np.diag(scale_mat)[:3], 1.1 * info["bounding_radius"])
    np.testing.assert_allclose(np.array(info["scale_mat"]), scale_mat)
    assert np.linalg.norm(info["object_center"]) > 0.5 and info["bounding_radius"] > 1.2
    for i, camera in enumerate(_cameras_from_npz(blob_dir)):
        np.testing.assert_allclose(data[f"scale_mat_{i}"], scale_mat)
        np.testing.assert_allclose(data[f"camera_mat_{i}"][:3, :3], camera["K"], atol=1e-9)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = camera["R"], -camera["R"] @ camera["center"]
        np.testing.assert_allclose(data[f"world_mat_{i}"], data[f"camera_mat_{i}"] @ w2c, atol=1e-8)


@pytest.mark.parametrize("which", ["blob", "sphere"])
def test_written_normals_masks_and_projection(which: str, blob_dir: Path, sphere_dir: Path) -> None:
    folder = blob_dir if which == "blob" else sphere_dir
    info, scene = _scene_of(folder)
    size = info["size"]
    for camera, name in zip(_cameras_from_npz(folder), info["images"], strict=True):
        origins, dirs = _rays(camera, size, size)
        result = cast_rays(scene, origins, dirs)
        hit = result["hit"].reshape(size, size)
        mask = read_image(folder / "mask" / name) > 0.5
        assert (mask != hit).sum() <= 2

        both = mask & hit
        encoded = read_image(folder / "normal" / name)
        assert np.all(encoded[~mask] == 0)
        n_gl = decode_normals(encoded)[both]
        c2w_gl = camera["R"].T @ np.diag([1.0, -1.0, -1.0])
        n_world = n_gl @ c2w_gl.T
        n_world /= np.linalg.norm(n_world, axis=1, keepdims=True)
        analytic = result["normal"].reshape(size, size, 3)[both]
        np.testing.assert_allclose(n_world, analytic, atol=1e-4)
        assert np.all(n_gl[:, 2] > -1e-3)  # visible normals face the camera (OpenGL: +z)
        if which == "sphere":
            positions = result["position"].reshape(size, size, 3)[both]
            radial = (positions - scene.center) / (scene.shape.radius * scene.scale)
            np.testing.assert_allclose(n_world, radial, atol=1e-4)

        # world_mat projects each hit point to its pixel centre.
        rows, cols = np.nonzero(hit)
        points = result["position"][hit.ravel()]
        projected = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ camera["P"].T
        uv = projected[:, :2] / projected[:, 2:]
        np.testing.assert_allclose(uv, np.stack([cols + 0.5, rows + 0.5], axis=1), atol=1e-6)


def test_albedo_is_smooth_varied_and_jittered(blob_dir: Path) -> None:
    info, scene = _scene_of(blob_dir)
    gains = np.array(info["albedo_gains"])
    assert gains.shape == (info["views"], 3)
    assert np.all((gains >= 1 - JITTER) & (gains <= 1 + JITTER)) and np.ptp(gains) > 0.05
    size = info["size"]
    for i, (camera, name) in enumerate(zip(_cameras_from_npz(blob_dir), info["images"], strict=True)):
        result = cast_rays(scene, *_rays(camera, size, size))
        mask = read_image(blob_dir / "mask" / name) > 0.5
        both = mask & result["hit"].reshape(size, size)
        albedo = read_image(blob_dir / "albedo" / name)
        assert np.all(albedo[~mask] == 0)
        base = scene.albedo(result["position"][both.ravel()])
        assert base.min() >= 0.15 and base.max() <= 0.95 and base.std() > 0.03
        np.testing.assert_allclose(albedo[both], np.clip(base * gains[i], 0, 1), atol=2e-5)


def test_albedo_function_range() -> None:
    values = albedo_canonical(np.random.default_rng(0).uniform(-1, 1, size=(100000, 3)))
    assert values.min() >= 0.15 - 1e-12 and values.max() <= 0.95 + 1e-12
    assert values.std() > 0.1


def test_no_jitter_records_no_gains(sphere_dir: Path) -> None:
    info = json.loads((sphere_dir / "scene.json").read_text())
    assert "albedo_gains" not in info and info["albedo_scale_jitter"] == 0.0
    assert info["pixel_center"] == 0.5 and info["generator_version"]
    assert sorted(p.name for p in (sphere_dir / "normal").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]


def test_gt_mesh_is_on_the_surface_in_world_units(blob_dir: Path) -> None:
    info, scene = _scene_of(blob_dir)
    mesh = trimesh.load(blob_dir / "gt_mesh.ply", process=False)
    assert mesh.is_watertight and mesh.volume > 0
    vertices = np.asarray(mesh.vertices)
    # Vertices were projected onto the exact surface; PLY stores float32, hence ~1e-7 and not 1e-15.
    assert np.abs(scene.shape.sdf(scene.to_canonical(vertices))).max() < 1e-6
    scale_mat = np.array(info["scale_mat"])
    normalised = (vertices - scale_mat[:3, 3]) / scale_mat[0, 0]
    assert np.linalg.norm(normalised, axis=1).max() < 1.0
    # World units, not canonical: the mesh extent matches the bounding radius.
    assert np.linalg.norm(vertices - info["object_center"], axis=1).max() > 0.8 * info["bounding_radius"]


def test_mask_bit_depths(tmp_path: Path, blob_dir: Path) -> None:
    raw8 = cv2.imread(str(blob_dir / "mask" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert raw8.dtype == np.uint8 and raw8.ndim == 2 and set(np.unique(raw8)) == {0, 255}
    raw_normal = cv2.imread(str(blob_dir / "normal" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert raw_normal.dtype == np.uint16 and raw_normal.shape[2] == 3
    folder = _write(tmp_path / "m16", "sphere", views=2, size=16, mesh_resolution=32, mask_bit_depth=16)
    raw16 = cv2.imread(str(folder / "mask" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert raw16.dtype == np.uint16 and set(np.unique(raw16)) == {0, 65535}


def test_writer_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        _write(out, "sphere", views=1, size=16, mesh_resolution=32)
    assert (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no temp folder left behind


def test_cli_writes_and_refuses_non_empty(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    command = [sys.executable, "-m", "recon_plugin.cli.synth", "rnb", str(out), "--views", "4", "--size", "32"]
    command += ["--mesh-resolution", "64", "--shape", "torus"]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout
    for sub in ("normal", "albedo", "mask"):
        assert len(list_images(out / sub)) == 4
    assert (out / "cameras.npz").is_file() and (out / "gt_mesh.ply").is_file()
    assert json.loads((out / "scene.json").read_text())["shape"] == "torus"

    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "not empty" in again.stderr

    forced = subprocess.run(command + ["--overwrite"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def test_cameras_are_deterministic_per_seed() -> None:
    scene = make_scene("blob")
    first, again = make_cameras(scene, 5, 32, seed=7), make_cameras(scene, 5, 32, seed=7)
    other = make_cameras(scene, 5, 32, seed=8)
    np.testing.assert_array_equal(first[2].world_mat, again[2].world_mat)
    assert not np.allclose(first[2].world_mat, other[2].world_mat)


# --- Shapes with thin parts and concavities ---------------------------------------------------------

NEW_SHAPES = ["knot", "figure", "bowl"]


@pytest.mark.parametrize("name", NEW_SHAPES)
def test_new_shapes_are_signed_distances(name: str) -> None:
    """|f| is the distance to the zero set (checked against the projected mesh), f < 0 exactly inside.

    The knot is exact within its reach of the curve and a lower bound beyond; the figure and the bowl
    are exact away from their smooth-union bands and a lower bound (by at most k / 4) inside them.
    """
    shape = get_shape(name)
    mesh = trimesh.Trimesh(*extract_mesh(shape, resolution=128), process=False)
    rng = np.random.default_rng(3)
    points = rng.uniform(-1, 1, size=(8000, 3)) * shape.bounding_radius
    points = points[np.abs(shape.sdf(points)) < 0.15][:500]
    values, gradients = shape.sdf_and_gradient(points)
    distance = trimesh.proximity.closest_point(mesh, points)[1]
    eps = 1e-6
    numeric = np.stack([(shape.sdf(points + eps * e) - shape.sdf(points - eps * e)) / (2 * eps) for e in np.eye(3)], 1)
    np.testing.assert_allclose(gradients, numeric, atol=1e-4)
    unit = np.abs(np.linalg.norm(numeric, axis=1) - 1.0) < 1e-5
    # Flat triangles between exact vertices sit up to ~1e-3 inside the curved surface.
    tolerance = 2e-3
    assert np.all(np.abs(values) <= distance + tolerance)  # never more than the distance
    exact = np.abs(np.abs(values) - distance) < tolerance
    if name == "knot":
        in_reach = (values < 0) | (distance + shape.tube_radius < shape.exact_reach - tolerance)
        assert in_reach.sum() > 150 and np.all(exact[in_reach]) and np.all(unit[in_reach])
    else:
        # Away from the blend bands |∇f| = 1, and outside the object f is then the distance itself;
        # inside a band the smooth minimum lies at most k / 4 below it.
        blend = max(shape.body_k, shape.limb_k) if name == "figure" else shape.foot_k
        assert unit.mean() > (0.5 if name == "figure" else 0.9)
        assert np.all(exact[unit & (values > 0)])
        assert np.all((distance - values)[values > 0] <= blend / 4.0 + tolerance)
    # Sign: negative exactly inside the closed mesh (ray-parity test, independent of the implicit).
    clear = distance > tolerance
    np.testing.assert_array_equal(values[clear] < 0, mesh.contains(points[clear]))
    assert (values < 0).sum() > 20


def test_new_shapes_have_thin_parts() -> None:
    knot, figure, bowl = (get_shape(n) for n in NEW_SHAPES)
    assert knot.tube_radius / knot.bounding_radius < 0.1
    thinnest = min(r for _, _, r in figure.limbs)
    assert thinnest / figure.bounding_radius <= 0.05
    assert bowl.thickness / bowl.bounding_radius < 0.06
    # The bowl is concave: a point in its cavity is outside the material but enclosed by the rim.
    cavity = np.array([[0.0, 0.0, -0.3]]) @ bowl.rotation.T
    assert bowl.sdf(cavity)[0] > 0.2


def test_knot_closest_point_matches_brute_force() -> None:
    knot = get_shape("knot")
    rng = np.random.default_rng(5)
    points = rng.uniform(-1, 1, size=(4000, 3)) * knot.bounding_radius
    points = points[np.abs(knot.sdf(points)) < 0.1][:200]
    dense = knot._curve(np.linspace(0.0, 2.0 * np.pi, 100_000, endpoint=False))[0]
    brute = np.array([np.linalg.norm(dense - p, axis=1).min() for p in points])
    values = knot.sdf(points) + knot.tube_radius
    in_reach = brute < knot.exact_reach - 1e-6
    assert in_reach.sum() > 100
    np.testing.assert_allclose(values[in_reach], brute[in_reach], atol=1e-6)
    assert np.all(values <= brute + 1e-6)  # beyond the reach: a lower bound


@pytest.mark.parametrize("name", NEW_SHAPES)
def test_new_shape_normal_maps_match_the_sdf_gradient(name: str, tmp_path: Path) -> None:
    folder = _write(tmp_path / name, name, views=3, size=48)
    info, scene = _scene_of(folder)
    mesh = trimesh.load(folder / "gt_mesh.ply", process=False)
    assert mesh.is_watertight
    assert np.abs(scene.shape.sdf(scene.to_canonical(np.asarray(mesh.vertices)))).max() < 1e-5
    for camera, name_png in zip(_cameras_from_npz(folder), info["images"], strict=True):
        result = cast_rays(scene, *_rays(camera, 48, 48))
        hit = result["hit"].reshape(48, 48)
        mask = read_image(folder / "mask" / name_png) > 0.5
        assert (mask != hit).sum() <= 2 and mask.sum() > 50
        both = mask & hit
        n_world = decode_normals(read_image(folder / "normal" / name_png))[both] @ np.diag([1.0, -1.0, -1.0])
        n_world = n_world @ camera["R"]
        gradient = scene.shape.normal(scene.to_canonical(result["position"][both.ravel()]))
        np.testing.assert_allclose(n_world / np.linalg.norm(n_world, axis=1, keepdims=True), gradient, atol=1e-4)


# --- Photometric-stereo realism ---------------------------------------------------------------------


def _world_normals(folder: Path, name: str, camera: dict) -> np.ndarray:
    """Decoded normals of one view, rotated to world (H, W, 3)."""
    n_gl = decode_normals(read_image(folder / "normal" / name))
    return (n_gl * np.array([1.0, -1.0, -1.0])) @ camera["R"]


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


@pytest.fixture(scope="module")
def clean_and_noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ps")
    options = {"views": 4, "size": 64}
    clean = _write(root / "clean", "blob", **options)
    noisy = _write(root / "noisy", "blob", normal_noise_deg=4.0, **options)
    return clean, noisy


def test_normal_noise_has_the_requested_mean_angle(clean_and_noisy: tuple[Path, Path]) -> None:
    clean, noisy = clean_and_noisy
    info = json.loads((noisy / "scene.json").read_text())
    assert info["ps_realism"]["normal_noise_deg"] == 4.0 and info["ps_realism"]["uncertainty_threshold_deg"] == 8.0
    cameras = _cameras_from_npz(noisy)
    angles = []
    for camera, name, record in zip(cameras, info["images"], info["per_view"], strict=True):
        mask = read_image(noisy / "mask" / name) > 0.5
        np.testing.assert_array_equal(mask, read_image(clean / "mask" / name) > 0.5)
        view = _angle_deg(_world_normals(noisy, name, camera), _world_normals(clean, name, camera))[mask]
        assert abs(view.mean() - record["noise_mean_deg"]) < 0.01
        angles.append(view)
    angles = np.concatenate(angles)
    assert len(angles) > 3000
    # Rayleigh with mean 4 deg: standard error of the mean ~0.04 deg here.
    assert abs(angles.mean() - 4.0) < 0.25
    # Rayleigh, not a constant tilt: the median is sqrt(ln 4 / (pi / 2)) ~ 0.94 of the mean.
    assert abs(np.median(angles) / angles.mean() - 0.94) < 0.05


def test_uncertainty_mask_marks_the_large_noise(clean_and_noisy: tuple[Path, Path]) -> None:
    clean, noisy = clean_and_noisy
    info = json.loads((noisy / "scene.json").read_text())
    threshold = info["ps_realism"]["uncertainty_threshold_deg"]
    assert not (clean / "mask_normal_uncertainty").exists()
    for camera, name, record in zip(_cameras_from_npz(noisy), info["images"], info["per_view"], strict=True):
        mask = read_image(noisy / "mask" / name) > 0.5
        trusted = read_image(noisy / "mask_normal_uncertainty" / name) > 0.5
        assert not trusted[~mask].any()  # no normal there
        angle = _angle_deg(_world_normals(noisy, name, camera), _world_normals(clean, name, camera))
        decided = mask & (np.abs(angle - threshold) > 0.02)  # 16-bit quantisation is ~0.002 deg
        np.testing.assert_array_equal(trusted[decided], angle[decided] <= threshold)
        assert 0.01 < 1.0 - trusted[mask].mean() < 0.1  # Rayleigh tail beyond twice the mean: e^-pi ~ 4 %
        assert abs((1.0 - trusted[mask].mean()) - record["untrusted_fraction"]) < 1e-9


def test_bias_is_a_smooth_recorded_rotation_field(tmp_path: Path, clean_and_noisy: tuple[Path, Path]) -> None:
    from recon_plugin.data.synthetic.ps_realism import BiasField, rotate_vectors

    clean = clean_and_noisy[0]
    biased = _write(tmp_path / "biased", "blob", views=4, size=64, normal_bias_deg=3.0)
    info = json.loads((biased / "scene.json").read_text())
    assert not (biased / "mask_normal_uncertainty").exists()
    for name, record in zip(info["images"], info["per_view"], strict=True):
        field = BiasField.from_json(record["bias_field"]).evaluate(64, 64)
        degrees = np.degrees(np.linalg.norm(field, axis=-1))
        assert abs(np.sqrt(np.mean(degrees**2)) - 3.0) < 1e-9 and record["bias_rms_deg"] == pytest.approx(3.0)
        # Smooth: neighbouring rotations differ by a small fraction of the bias (white noise: ~1.4x).
        steps = np.degrees(
            np.concatenate([np.diff(field, axis=0).reshape(-1, 3), np.diff(field, axis=1).reshape(-1, 3)])
        )
        steps = np.linalg.norm(steps, axis=1)
        assert steps.max() < 0.25 * 3.0 and steps.mean() < 0.08 * 3.0
        # The written normals are the clean ones rotated by the recorded field (camera frame).
        mask = read_image(biased / "mask" / name) > 0.5
        n_clean = decode_normals(read_image(clean / "normal" / name))[mask]
        n_biased = decode_normals(read_image(biased / "normal" / name))[mask]
        np.testing.assert_allclose(n_biased, rotate_vectors(n_clean, field[mask]), atol=1e-4)
        deviation = _angle_deg(n_biased, n_clean)
        assert 0.3 < deviation.mean() < 3.0 * 1.5


def test_realism_preset_and_overrides(tmp_path: Path) -> None:
    from recon_plugin.data.synthetic.ps_realism import REALISM_PRESETS, resolve_realism

    assert resolve_realism("none") == REALISM_PRESETS["none"]
    preset = REALISM_PRESETS["ps"]
    assert 3.0 <= preset.normal_noise_deg <= 5.0 and 0.0 < preset.normal_bias_deg and preset.albedo_scale_jitter > 0
    tweaked = resolve_realism("ps", normal_bias_deg=0.0, albedo_scale_jitter=None)
    assert tweaked.normal_bias_deg == 0.0 and tweaked.albedo_scale_jitter == preset.albedo_scale_jitter
    with pytest.raises(ValueError, match="unknown realism preset"):
        resolve_realism("studio")
    with pytest.raises(ValueError, match="normal_noise_deg"):
        _write(tmp_path / "bad", "sphere", normal_noise_deg=-1.0)
    assert not list(tmp_path.iterdir())  # nothing written


# --- Backdrops and captures without masks -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["box", "plane"])
def test_backdrop_fills_the_background_only(kind: str, tmp_path: Path) -> None:
    from recon_plugin.data.synthetic.backdrop import make_backdrop

    folder = _write(tmp_path / kind, "figure", views=4, size=48, backdrop=kind, albedo_scale_jitter=0.1)
    info, scene = _scene_of(folder)
    scale_mat = np.array(info["scale_mat"])
    backdrop = make_backdrop(kind, scene.center, scale_mat[0, 0])
    assert info["backdrop"]["kind"] == kind and info["backdrop"]["min_distance_in_normalised_units"] > 1.0
    gains = np.array(info["albedo_gains"])
    for i, (camera, name) in enumerate(zip(_cameras_from_npz(folder), info["images"], strict=True)):
        origins, dirs = _rays(camera, 48, 48)
        hit = cast_rays(scene, origins, dirs)["hit"].reshape(48, 48)
        mask = read_image(folder / "mask" / name) > 0.5
        assert (mask != hit).sum() <= 2  # the mask is the object's silhouette, not the backdrop
        ground = backdrop.intersect(origins, dirs)
        background = ~mask & ground["hit"].reshape(48, 48)
        assert background.mean() > (0.8 if kind == "box" else 0.1)
        # Backdrop pixels hold the backdrop's normals and a textured albedo; empty pixels hold zeros.
        n_world = _world_normals(folder, name, camera)
        np.testing.assert_allclose(n_world[background], ground["normal"].reshape(48, 48, 3)[background], atol=1e-4)
        albedo = read_image(folder / "albedo" / name)
        expected = np.clip(backdrop.albedo(ground["position"], ground["normal"]) * gains[i], 0, 1).reshape(48, 48, 3)
        np.testing.assert_allclose(albedo[background], expected[background], atol=1e-4)
        assert albedo[background].std() > 0.1
        empty = ~mask & ~background
        assert np.all(read_image(folder / "normal" / name)[empty] == 0)
        # The backdrop lies outside the normalisation sphere.
        points = ground["position"][background.ravel()]
        assert np.linalg.norm((points - scale_mat[:3, 3]) / scale_mat[0, 0], axis=1).min() > 1.0
    if kind == "plane":
        centers = np.array([c["center"] for c in _cameras_from_npz(folder)])
        assert np.all(centers[:, 2] > scene.center[2] - backdrop.extent)
    # The ground truth is the object alone.
    mesh = trimesh.load(folder / "gt_mesh.ply", process=False)
    normalised = (np.asarray(mesh.vertices) - scale_mat[:3, 3]) / scale_mat[0, 0]
    assert np.linalg.norm(normalised, axis=1).max() < 1.0


def test_cli_realism_preset_without_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from recon_plugin.cli.synth import entrypoint

    out = tmp_path / "noisy"
    command = ["rnb", str(out), "--views", "2", "--size", "24", "--mesh-resolution", "48", "--shape", "knot"]
    entrypoint(command + ["--realism", "ps", "--normal-bias-deg", "0", "--no-masks", "--backdrop", "box"])
    info = json.loads((out / "scene.json").read_text())
    assert info["realism"] == "ps" and info["masks"] is False and info["backdrop"]["kind"] == "box"
    assert info["ps_realism"]["normal_noise_deg"] == 4.0 and info["ps_realism"]["normal_bias_deg"] == 0.0
    assert len(info["albedo_gains"]) == 2 and "bias_field" not in info["per_view"][0]
    assert not (out / "mask").exists()
    assert len(list_images(out / "mask_normal_uncertainty")) == 2
    with pytest.raises(SystemExit):
        entrypoint(["rnb", str(tmp_path / "bad"), "--normal-noise-deg", "90"])
    assert "normal_noise_deg" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noisy"]


def test_cli_choices_match_registries() -> None:
    from recon_plugin.cli.synth import RnbCommand
    from recon_plugin.data.synthetic.backdrop import BACKDROP_KINDS
    from recon_plugin.data.synthetic.ps_realism import REALISM_PRESETS

    hints = typing.get_type_hints(RnbCommand)
    assert set(typing.get_args(hints["realism"])) == set(REALISM_PRESETS)
    assert set(typing.get_args(hints["backdrop"])) == set(BACKDROP_KINDS)
