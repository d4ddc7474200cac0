"""``recon-synth glossy``: the GlossySynthetic layout, its exact ground truth and the Monte-Carlo renderer.

The checks read the written files back (pickled cameras, 16-bit depth) and compare them with the analytic
shape, so the files are tested, not the writer's in-memory objects.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recon_plugin.cli.synth import entrypoint
from recon_plugin.components.environment import procedural_environment, read_environment
from recon_plugin.components.shading import split_sum_integrate
from recon_plugin.data.synthetic.glossy import (
    DEPTH_RANGE,
    MATERIAL_LAYOUTS,
    GlossyRenderer,
    glossy_materials,
    measure_noise,
    write_glossy_scene,
)
from recon_plugin.data.synthetic.scene import Camera, cast_rays, make_cameras, make_scene, render_gbuffer

VIEWS, SIZE = 4, 32


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("glossy") / "blob"
    write_glossy_scene(
        out, views=VIEWS, size=SIZE, samples=16, env_height=32, mesh_resolution=48, material_points=2000, log=None
    )
    return out


def _camera(folder: Path, index: int) -> Camera:
    pose, K = pickle.loads((folder / f"{index}-camera.pkl").read_bytes())
    return Camera(K=K, R=pose[:, :3], t=pose[:, 3], width=SIZE, height=SIZE)


def test_layout_is_complete_and_atomic(scene_dir: Path):
    info = json.loads((scene_dir / "scene.json").read_text())
    assert info["views"] == VIEWS and info["test_views"] == [0]
    for index in range(VIEWS):
        image = cv2.imread(str(scene_dir / f"{index}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        depth = cv2.imread(str(scene_dir / f"{index}-depth.png"), cv2.IMREAD_UNCHANGED)
        assert depth.shape == (SIZE, SIZE) and depth.dtype == np.uint16
        pose, K = pickle.loads((scene_dir / f"{index}-camera.pkl").read_bytes())
        assert pose.shape == (3, 4) and K.shape == (3, 3)
    assert (scene_dir / "relight" / "0.png").is_file() and not (scene_dir / "relight" / "1.png").exists()
    for name in ("environment.exr", "environment.hdr", "relight/environment.exr", "relight/environment.hdr"):
        env = read_environment(scene_dir / name)
        assert env.shape == (32, 64, 3) and float(env.max()) > 10.0  # HDR: small lights far above 1
    train_env, relight_env = (
        read_environment(scene_dir / "environment.exr"),
        read_environment(scene_dir / "relight/environment.exr"),
    )
    assert not torch.allclose(train_env, relight_env)
    relit = cv2.imread(str(scene_dir / "relight" / "0.png"))
    assert np.abs(relit.astype(int) - cv2.imread(str(scene_dir / "0.png")).astype(int)).mean() > 5
    # Nothing temporary is left beside the output.
    assert [p.name for p in scene_dir.parent.iterdir()] == [scene_dir.name]


def test_depth_and_cameras_put_every_object_pixel_on_the_true_surface(scene_dir: Path):
    info = json.loads((scene_dir / "scene.json").read_text())
    scene = make_scene(info["shape"], center=info["object_center"], scale=info["object_scale"])
    for index in range(VIEWS):
        camera = _camera(scene_dir, index)
        depth = cv2.imread(str(scene_dir / f"{index}-depth.png"), cv2.IMREAD_UNCHANGED) / 65535.0 * DEPTH_RANGE
        mask = depth < 14.5
        origins, dirs = camera.pixel_rays()
        hits = cast_rays(scene, origins.reshape(-1, 3), dirs.reshape(-1, 3))["hit"].reshape(SIZE, SIZE)
        assert np.array_equal(mask, hits), f"view {index}: depth mask differs from the object's silhouette"
        rows, cols = np.nonzero(mask)
        rays = np.stack([cols + 0.5, rows + 0.5, np.ones_like(rows)], -1) @ np.linalg.inv(camera.K).T
        points = (rays * depth[mask][:, None] - camera.t) @ camera.R
        # 16-bit depth over 15 units quantises to 1.1e-4; the surface is the implicit's zero set.
        assert np.abs(scene.sdf(points)).max() < 5e-4


def test_ground_truth_materials_sit_on_the_surface(scene_dir: Path):
    info = json.loads((scene_dir / "scene.json").read_text())
    scene = make_scene(info["shape"], center=info["object_center"], scale=info["object_scale"])
    data = np.load(scene_dir / "gt_materials.npz")
    points = data["points"].astype(np.float64)
    assert np.abs(scene.sdf(points)).max() < 1e-4
    assert np.allclose(data["normals"], scene.normal(points), atol=1e-4)
    albedo, roughness, metallic = glossy_materials(scene.to_canonical(points))
    assert np.allclose(data["albedo"], albedo, atol=1e-5) and np.allclose(data["roughness"], roughness, atol=1e-5)
    assert 0.04 < data["roughness"].min() and data["roughness"].max() < 0.61
    metal = data["metallic"] > 0.5
    assert 0.15 < metal.mean() < 0.85, "both metallic and dielectric patches must be present"
    assert data["albedo"].min() >= 0.0 and data["albedo"].max() <= 1.0


@pytest.mark.parametrize("layout", ["gradient", "bands", "spots"])
def test_other_material_layouts_reach_the_images_and_the_ground_truth(layout: str, tmp_path: Path):
    """``--materials`` layouts: ground truth from the same layout, both kinds of material present, full roughness
    ranges, and metal borders that are not the patches' (a method must not get them right by finding patches)."""
    out = tmp_path / layout
    entrypoint(["glossy", str(out), "--views", "2", "--size", "16", "--samples", "8", "--mesh-resolution", "40",
                "--materials", layout])  # fmt: skip
    info = json.loads((out / "scene.json").read_text())
    assert info["material_layout"] == layout
    scene = make_scene(info["shape"], center=info["object_center"], scale=info["object_scale"])
    data = np.load(out / "gt_materials.npz")
    canonical = scene.to_canonical(data["points"].astype(np.float64))
    albedo, roughness, metallic = MATERIAL_LAYOUTS[layout](canonical)
    assert np.allclose(data["albedo"], albedo, atol=1e-5) and np.allclose(data["metallic"], metallic, atol=1e-5)
    metal = metallic > 0.5
    assert 0.15 < metal.mean() < 0.85
    assert roughness.min() < 0.12 and roughness.max() > 0.45
    patch_metal = glossy_materials(canonical)[2] > 0.5
    assert (metal != patch_metal).mean() > 0.1, "the layout's metal must not follow the default patches"
    # The images are shaded with the layout: the same view of the default patches differs.
    default = tmp_path / "patches"
    entrypoint(["glossy", str(default), "--views", "2", "--size", "16", "--samples", "8", "--mesh-resolution", "40"])
    image, patches_image = (cv2.imread(str(folder / "1.png")).astype(float) for folder in (out, default))
    assert np.abs(image - patches_image).mean() > 2.0


def test_monte_carlo_noise_falls_with_samples():
    scene = make_scene("blob")
    camera = make_cameras(scene, 1, 20)[0]
    gbuffer = render_gbuffer(scene, camera)
    env = procedural_environment("outdoor", 32, 64, seed=0)
    few = measure_noise(GlossyRenderer(scene, env, 16), gbuffer, seed=1)["rms_8bit"]
    many = measure_noise(GlossyRenderer(scene, env, 128), gbuffer, seed=1)["rms_8bit"]
    # Independent samples would give a factor sqrt(8) ~ 2.8 for 8x the samples; the quasi-random sets do better.
    assert many < few / 2.5, (few, many)


def test_white_rough_dielectric_reflects_a_uniform_environment():
    """Under a uniform environment L the Lambert part returns L exactly and the specular part L (F0 A + B)."""
    scene = make_scene("sphere")
    camera = make_cameras(scene, 1, 16)[0]
    gbuffer = render_gbuffer(scene, camera)
    radiance = 0.5
    env = torch.full((16, 32, 3), radiance)

    def white_rough(canonical: np.ndarray):
        count = len(canonical)
        return np.ones((count, 3)), np.full(count, 0.9), np.zeros(count)

    renderer = GlossyRenderer(scene, env, 128, materials=white_rough)
    image = renderer.render(gbuffer, seed=3)
    mask = gbuffer["mask"]
    n_dot_v = np.einsum("ij,ij->i", gbuffer["normal"][mask], -gbuffer["ray_direction"][mask])
    scale, bias = split_sum_integrate(torch.from_numpy(n_dot_v).float(), torch.tensor(0.9), samples=2048)
    expected = radiance * (1.0 + 0.04 * scale.numpy() + bias.numpy())
    assert np.allclose(image[~mask], radiance, atol=1e-6)  # the environment behind the object
    error = np.abs(image[mask] - expected[:, None])
    assert error.mean() < 0.003 * radiance and error.max() < 0.015 * radiance, (error.mean(), error.max())


def test_cli_refuses_a_non_empty_folder_and_writes_nothing(tmp_path: Path, capsys):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(SystemExit):
        entrypoint(["glossy", str(out), "--views", "1", "--size", "8", "--samples", "4"])
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]


def _black_rough(canonical: np.ndarray):
    count = len(canonical)
    return np.zeros((count, 3)), np.full(count, 0.3), np.zeros(count)


def test_interreflection_occludes_only_where_the_object_sees_itself():
    env = torch.ones(8, 16, 3)  # uniform unit environment; black rough dielectric: specular reflection only
    # Inner equator of the torus, looking across the hole: its mirror lobe lands on the opposite wall,
    # which sends back only its own dim reflection instead of the environment's unit radiance.
    torus = make_scene("torus")
    canonical = np.array([[torus.shape.major_radius - torus.shape.minor_radius, 0.0, 0.0]])
    normal = np.array([[-1.0, 0.0, 0.0]])
    args = (torus.to_world(canonical), normal, normal, canonical)
    open_sky = GlossyRenderer(torus, env, 64, materials=_black_rough).shade(*args, seed=1)
    bounced = GlossyRenderer(torus, env, 64, interreflection=True, materials=_black_rough).shade(*args, seed=2)
    assert 0.03 < open_sky.mean() < 0.06 and bounced.mean() < 0.3 * open_sky.mean()
    # A convex sphere never sees itself: tracing changes nothing beyond Monte-Carlo noise.
    sphere = make_scene("sphere")
    gbuffer = render_gbuffer(sphere, make_cameras(sphere, 1, 12)[0])
    mask = gbuffer["mask"]
    plain = GlossyRenderer(sphere, env, 64, materials=_black_rough).render(gbuffer, seed=1)[mask]
    traced = GlossyRenderer(sphere, env, 64, interreflection=True, materials=_black_rough).render(gbuffer, seed=2)[mask]
    assert abs(traced.mean() - plain.mean()) < 0.02 * plain.mean()
