"""Mesh and normal metrics on cases with known answers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from recon_plugin.data.image_io import encode_normals, write_png
from recon_plugin.data.transforms import world_to_normalized
from recon_plugin.eval.mesh_metrics import (
    MeshLoadError,
    evaluate_mesh_files,
    evaluate_meshes,
    load_mesh,
    sample_surface,
)
from recon_plugin.eval.normal_metrics import evaluate_normal_dirs, normal_angular_error

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = 20_000


def _sphere(radius: float, center=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    mesh.apply_translation(center)
    return mesh


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "recon_plugin.cli.evaluate", *args]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_self_comparison_is_zero_even_far_from_the_origin() -> None:
    mesh = trimesh.creation.torus(major_radius=2.0, minor_radius=0.6)
    mesh.apply_translation([150.0, -80.0, 40.0])
    size = np.linalg.norm(mesh.extents)
    result = evaluate_meshes(mesh, mesh, num_samples=SAMPLES)
    assert result["chamfer"] < 1e-3 * size
    assert result["chamfer"] < 1e-5  # the origin shift keeps the float32 query precise
    assert result["fscore"]["0.005"] == 1.0


def test_concentric_spheres() -> None:
    inner, outer = _sphere(1.0, (3.0, 1.0, -2.0)), _sphere(1.01, (3.0, 1.0, -2.0))
    result = evaluate_meshes(outer, inner, thresholds=(0.005, 0.02), num_samples=SAMPLES)
    assert result["chamfer"] == pytest.approx(0.01, abs=5e-4)
    assert result["accuracy"] == pytest.approx(0.01, abs=5e-4)
    assert result["completeness"] == pytest.approx(0.01, abs=5e-4)
    # Threshold above the offset: everything matches; below it: nothing does.
    assert result["fscore"]["0.02"] == 1.0 and result["precision"]["0.02"] == 1.0 and result["recall"]["0.02"] == 1.0
    assert result["fscore"]["0.005"] == 0.0
    # Relative metrics and thresholds follow the scale.
    scaled = evaluate_meshes(outer, inner, scale=2.0, thresholds=(0.004, 0.01), num_samples=SAMPLES)
    assert scaled["chamfer_rel"] == pytest.approx(scaled["chamfer"] / 2.0)
    assert scaled["thresholds_world"] == [0.008, 0.02]
    assert scaled["fscore"]["0.004"] == 0.0 and scaled["fscore"]["0.01"] == 1.0


def test_partial_reconstruction_hurts_recall_not_precision() -> None:
    full = _sphere(1.0)
    keep = full.triangles_center[:, 2] > 0.0
    half = trimesh.Trimesh(full.vertices, full.faces[keep], process=False)
    result = evaluate_meshes(half, full, thresholds=(0.01,), num_samples=SAMPLES)
    assert result["precision"]["0.01"] == 1.0
    assert 0.45 < result["recall"]["0.01"] < 0.56
    assert result["accuracy"] < 1e-5 and result["completeness"] > 0.2


def test_sampling_is_seeded_and_on_the_surface() -> None:
    mesh = _sphere(1.0)
    a, b = sample_surface(mesh, 1000, seed=3), sample_surface(mesh, 1000, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_surface(mesh, 1000, seed=4))
    assert np.abs(np.linalg.norm(a, axis=1) - 1.0).max() < 1e-3


def test_transform_round_trip(tmp_path: Path) -> None:
    gt = _sphere(0.8, (2.0, -1.0, 5.0))
    angle = 0.6
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    transform = np.concatenate([rotation, np.array([[0.3], [-0.2], [0.1]])], axis=1)
    factor = 0.7
    pred = trimesh.Trimesh(world_to_normalized(gt.vertices, transform, factor), gt.faces, process=False)
    gt.export(tmp_path / "gt.ply")
    pred.export(tmp_path / "pred.ply")
    transform_path = tmp_path / "dataparser_transforms.json"
    transform_path.write_text(json.dumps({"transform": transform.tolist(), "scale": factor}))

    mapped = evaluate_mesh_files(
        tmp_path / "pred.ply", tmp_path / "gt.ply", num_samples=SAMPLES, transform=transform_path
    )
    assert mapped["chamfer"] < 1e-5
    assert mapped["transform"] == str(transform_path) and mapped["scale_source"] == "default (world units)"
    raw = evaluate_mesh_files(tmp_path / "pred.ply", tmp_path / "gt.ply", num_samples=SAMPLES)
    assert raw["chamfer"] > 1.0


def test_scale_from_scene_json(tmp_path: Path) -> None:
    _sphere(1.0).export(tmp_path / "gt_mesh.ply")
    _sphere(1.01).export(tmp_path / "pred.ply")
    (tmp_path / "scene.json").write_text(json.dumps({"bounding_radius": 2.0}))
    result = evaluate_mesh_files(tmp_path / "pred.ply", tmp_path / "gt_mesh.ply", num_samples=SAMPLES)
    assert result["scale"] == 2.0 and "scene.json" in result["scale_source"]
    assert result["chamfer_rel"] == pytest.approx(result["chamfer"] / 2.0)
    explicit = evaluate_mesh_files(tmp_path / "pred.ply", tmp_path / "gt_mesh.ply", scale=1.0, num_samples=SAMPLES)
    assert explicit["scale"] == 1.0 and explicit["scale_source"] == "argument"


def test_bad_mesh_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pred.ply"
    with pytest.raises(MeshLoadError, match="nowhere/pred.ply: mesh file not found"):
        load_mesh(missing)
    empty = tmp_path / "empty.ply"
    empty.write_bytes(b"")
    with pytest.raises(MeshLoadError, match="empty.ply"):
        load_mesh(empty)
    garbage = tmp_path / "garbage.ply"
    garbage.write_text("this is not a mesh\n")
    with pytest.raises(MeshLoadError, match="garbage.ply"):
        load_mesh(garbage)
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(cloud)
    with pytest.raises(MeshLoadError, match="cloud.ply: no triangles"):
        load_mesh(cloud)


def test_cli_mesh_prints_one_json_line(tmp_path: Path) -> None:
    _sphere(1.0).export(tmp_path / "gt.ply")
    _sphere(1.01).export(tmp_path / "pred.ply")
    run = _run_cli(
        "mesh", str(tmp_path / "pred.ply"), str(tmp_path / "gt.ply"),
        "--scale", "0.5", "--thresholds", "0.01", "0.04", "--num-samples", "5000",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["chamfer"] == pytest.approx(0.01, abs=5e-4)
    assert result["chamfer_rel"] == pytest.approx(0.02, abs=1e-3)
    assert result["fscore"] == {"0.01": 0.0, "0.04": 1.0}
    assert result["scale_source"] == "argument"

    missing = _run_cli("mesh", str(tmp_path / "missing.ply"), str(tmp_path / "gt.ply"))
    assert missing.returncode != 0
    assert "missing.ply" in missing.stderr and not missing.stdout.strip()


def test_normal_angular_error_known_angle() -> None:
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2, 8, 9, 3))
    gt /= np.linalg.norm(gt, axis=-1, keepdims=True)
    axis = np.cross(gt, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = np.radians(10.0)
    # Rodrigues rotation of each normal by 10 degrees about an axis orthogonal to it.
    pred = gt * np.cos(angle) + np.cross(axis, gt) * np.sin(angle)
    mask = np.ones((2, 8, 9), dtype=bool)
    result = normal_angular_error(3.0 * pred, gt, mask)  # scale is removed by renormalisation
    assert result["mean_deg"] == pytest.approx(10.0, abs=1e-6)
    assert result["median_deg"] == pytest.approx(10.0, abs=1e-6)
    assert result["num_pixels"] == 144 and len(result["per_view"]) == 2
    assert result["within_11.25deg"] == 1.0

    mask[1] = False
    wrong = pred.copy()
    wrong[1] = -gt[1]  # ignored: outside the mask
    result = normal_angular_error(wrong, gt, mask)
    assert result["mean_deg"] == pytest.approx(10.0, abs=1e-6)
    assert result["per_view"][1]["num_pixels"] == 0 and result["per_view"][1]["mean_deg"] is None

    single = normal_angular_error(gt[0], gt[0], np.ones((8, 9)))
    assert single["mean_deg"] == pytest.approx(0.0, abs=1e-9)
    zero = normal_angular_error(np.zeros((8, 9, 3)), gt[0], np.ones((8, 9)))
    assert zero["mean_deg"] == pytest.approx(90.0)


def test_cli_normals_on_png_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    pred = tmp_path / "pred"
    flip = np.array([-1.0, 1.0, 1.0])
    for i in range(2):
        normals = rng.normal(size=(6, 7, 3)) + [0.0, 0.0, 3.0]
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        mask = np.zeros((6, 7))
        mask[1:5, 2:6] = 1.0
        write_png(data / "normal" / f"{i:03d}.png", encode_normals(normals) * mask[..., None], bit_depth=16)
        write_png(data / "mask" / f"{i:03d}.png", mask, bit_depth=8)
        # Prediction: exact in view 0; x mirrored in view 1 (8-bit, so quantisation is exercised too).
        predicted = normals if i == 0 else normals * flip
        write_png(pred / f"{i:03d}.png", encode_normals(predicted), bit_depth=8)
    direct = evaluate_normal_dirs(pred, data)
    assert direct["per_view"][0]["mean_deg"] < 0.5
    assert direct["per_view"][1]["mean_deg"] > 5.0
    assert direct["num_pixels"] == 32 and direct["per_view"][0]["name"] == "000.png"

    run = _run_cli("normals", str(pred), str(data))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["mean_deg"] == pytest.approx(direct["mean_deg"])

    (pred / "001.png").unlink()
    with pytest.raises(ValueError, match="image counts differ"):
        evaluate_normal_dirs(pred, data)


def test_camera_errors_undo_a_similarity_and_measure_what_remains():
    from scipy.spatial.transform import Rotation

    from recon_plugin.eval.camera_metrics import camera_errors

    rng = np.random.default_rng(0)
    reference = np.tile(np.eye(4), (12, 1, 1))
    reference[:, :3, :3] = Rotation.random(12, random_state=1).as_matrix()
    reference[:, :3, 3] = rng.normal(size=(12, 3)) * 100.0
    # The estimate: the same rig in another frame (scale 0.01, rotated, moved), one view perturbed.
    rotation = Rotation.from_euler("xyz", [10, -40, 70], degrees=True).as_matrix()
    estimate = reference.copy()
    estimate[:, :3, :3] = rotation @ reference[:, :3, :3]
    estimate[:, :3, 3] = 0.01 * reference[:, :3, 3] @ rotation.T + np.array([1.0, 2.0, 3.0])
    errors, alignment = camera_errors(estimate, reference)
    assert abs(errors["scale"] - 100.0) < 1e-6
    assert errors["centre_error"]["max"] < 1e-6 and errors["rotation_error_deg"]["max"] < 1e-5
    np.testing.assert_allclose(alignment.points(estimate[:, :3, 3]), reference[:, :3, 3], atol=1e-6)
    estimate[4, :3, :3] = estimate[4, :3, :3] @ Rotation.from_euler("z", 3, degrees=True).as_matrix()
    errors, _ = camera_errors(estimate, reference)
    assert abs(errors["per_view"][4]["rotation_error_deg"] - 3.0) < 1e-6
    assert errors["rotation_error_deg"]["median"] < 1e-5
