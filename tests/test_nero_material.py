"""nero-material (NeRO stage II): the mesh ray caster against analytic shapes, the material model, and
`ns-train nero-material` end to end on a tiny `recon-synth glossy` scene."""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import trimesh
from browser import CHROMIUM, CHROMIUM_MISSING, headless_chromium
from cli_helpers import BIN, run
from gltf_validation import validate_glb
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from recon_plugin.components.environment import read_environment
from recon_plugin.components.raycast import MeshRayCaster, smoothed_vertex_normals
from recon_plugin.components.shading import linear_to_srgb, reflect, specular_albedo
from recon_plugin.data.image_io import read_image
from recon_plugin.data.nero_dataparser import DEPTH_BACKGROUND, read_glossy_depth
from recon_plugin.data.transforms import world_to_normalized
from recon_plugin.eval.material_metrics import material_errors, material_errors_of_run
from recon_plugin.export.gltf import read_glb_json
from recon_plugin.export.relight import Relighter
from recon_plugin.methods.nero.material import (
    MATERIAL_OUTPUTS,
    NeroMaterialModel,
    NeroMaterialModelConfig,
    background_error,
)
from recon_plugin.methods.nero.material_data import resolve_material_mesh, trace_pixels

# ------------------------------------------------------------------------------------------------------ ray caster


def _sphere_distance(origins: torch.Tensor, directions: torch.Tensor, radius: float) -> torch.Tensor:
    """Nearest positive root of |o + t d| = r for unit d (inf where the ray misses)."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp(min=0.0))
    return torch.where(disc > 0, t, torch.full_like(t, math.inf))


def test_ray_caster_matches_an_analytic_sphere():
    radius = 0.8
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    caster = MeshRayCaster(sphere.vertices, sphere.faces)
    generator = torch.Generator().manual_seed(0)
    origins = torch.nn.functional.normalize(torch.randn(2000, 3, generator=generator), dim=-1) * 3.0
    targets = (torch.rand(2000, 3, generator=generator) * 2.0 - 1.0) * 1.2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    hits = caster.cast(origins.reshape(40, 50, 3), directions.reshape(40, 50, 3))  # batched leading dims

    expected = _sphere_distance(origins, directions, radius)
    # Rays that pass well inside or well outside the silhouette (the tessellation decides near the rim).
    closest = (origins + (-(origins * directions).sum(-1, keepdim=True)) * directions).norm(dim=-1)
    clear_hit, clear_miss = closest < radius * 0.97, closest > radius * 1.01
    assert clear_hit.sum() > 300 and clear_miss.sum() > 300
    assert hits.hit[clear_hit].all() and not hits.hit[clear_miss].any()
    # An icosphere of 20k faces lies within 1e-3 of the sphere it approximates.
    torch.testing.assert_close(hits.distance[clear_hit], expected[clear_hit], atol=2e-3, rtol=0)
    assert torch.isinf(hits.distance[clear_miss]).all() and (hits.triangle[clear_miss] == -1).all()
    analytic_normal = torch.nn.functional.normalize(hits.position[clear_hit], dim=-1)
    smooth_angle = torch.rad2deg(torch.acos((hits.normal[clear_hit] * analytic_normal).sum(-1).clamp(max=1.0)))
    face_angle = torch.rad2deg(torch.acos((hits.face_normal[clear_hit] * analytic_normal).sum(-1).clamp(max=1.0)))
    assert smooth_angle.max() < 0.3 and face_angle.max() < 1.5  # outward, and interpolation beats the facets
    # The barycentrics rebuild the hit point from the hit triangle's corners.
    faces = torch.as_tensor(sphere.faces)[hits.triangle[clear_hit]]
    corners = torch.as_tensor(sphere.vertices, dtype=torch.float32)[faces]
    rebuilt = (hits.barycentric[clear_hit][..., None] * corners).sum(1)
    torch.testing.assert_close(rebuilt, hits.position[clear_hit], atol=1e-5, rtol=0)


def test_ray_caster_on_a_plane_is_exact_and_orients_by_winding():
    vertices = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +z
    caster = MeshRayCaster(vertices, faces, num_threads=1)
    origins = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.5, -1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 1.0]])
    directions = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    hits = caster.cast(origins, directions)
    assert hits.hit.tolist() == [True, True, False, False]
    # Distances are in units of the direction's length (the first direction has length 2).
    torch.testing.assert_close(hits.distance[:2], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(hits.position[:2], torch.tensor([[0.3, -0.2, 0.0], [-0.5, 0.5, 0.0]]))
    torch.testing.assert_close(hits.face_normal[:2], torch.tensor([[0.0, 0.0, 1.0]] * 2))  # seen from both sides
    torch.testing.assert_close(hits.barycentric.sum(-1)[:2], torch.ones(2))
    assert hits.triangle[:2].tolist() == [0, 1]


def test_smoothed_shading_normals_undo_small_bumps_and_leave_the_surface_in_place():
    """A sphere with bumps of 0.2 % of its radius at the scale of its edges: its own normals tilt by degrees, the
    Taubin-smoothed ones point back along the radius; hits (positions, distances) do not move."""
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    generator = np.random.default_rng(0)
    vertices = sphere.vertices * (1.0 + 0.002 * generator.standard_normal((len(sphere.vertices), 1)))
    radial = vertices / np.linalg.norm(vertices, axis=-1, keepdims=True)

    def mean_tilt_deg(normals: torch.Tensor) -> float:
        cosine = (normals.double().numpy() * radial).sum(-1).clip(-1.0, 1.0)
        return float(np.degrees(np.arccos(cosine)).mean())

    raw = MeshRayCaster(vertices, sphere.faces)
    smooth = MeshRayCaster(vertices, sphere.faces, vertex_normals=smoothed_vertex_normals(vertices, sphere.faces, 50))
    assert mean_tilt_deg(raw.vertex_normals) > 2.0 and mean_tilt_deg(smooth.vertex_normals) < 0.5
    rays = rays_towards_origin(256)
    before, after = raw.cast(rays.origins, rays.directions), smooth.cast(rays.origins, rays.directions)
    assert torch.equal(before.hit, after.hit) and torch.equal(before.distance, after.distance)
    torch.testing.assert_close(smoothed_vertex_normals(vertices, sphere.faces, 0), raw.vertex_normals)
    # A lone open quad collapses under Taubin's filter (no boundary handling): it keeps its own normals.
    quad = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    quad_normals = smoothed_vertex_normals(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), 150)
    torch.testing.assert_close(quad_normals, torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3))
    with pytest.raises(ValueError, match="vertex_normals"):
        MeshRayCaster(vertices, sphere.faces, vertex_normals=np.zeros((3, 3)))


def test_ray_caster_rejects_bad_meshes_and_rays():
    with pytest.raises(ValueError, match="face indices"):
        MeshRayCaster(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="vertices"):
        MeshRayCaster(np.zeros((0, 3)), np.array([[0, 1, 2]]))
    caster = MeshRayCaster(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="origins and directions"):
        caster.cast(torch.zeros(4, 3), torch.zeros(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ray_caster_returns_results_on_the_rays_device():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    caster = MeshRayCaster(sphere.vertices, sphere.faces)
    origins = torch.tensor([[0.0, 0.0, 3.0]], device="cuda")
    hits = caster.cast(origins, torch.tensor([[0.0, 0.0, -1.0]], device="cuda"))
    assert hits.distance.device.type == "cuda" and bool(hits.hit[0])


# ---------------------------------------------------------------------------------------------------- the model
def make_model(mesh: trimesh.Trimesh, **options) -> NeroMaterialModel:
    config = NeroMaterialModelConfig(num_diffuse_samples=8, num_specular_samples=8, **options)
    model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={})
    model.set_mesh(torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces))
    return model


def rays_towards_origin(count: int, spread: float = 0.3, seed: int = 0) -> RayBundle:
    generator = torch.Generator().manual_seed(seed)
    origins = torch.tensor([[0.0, 0.0, 3.0]]).expand(count, 3)
    directions = torch.randn(count, 3, generator=generator) * spread + torch.tensor([0.0, 0.0, -3.0])
    return RayBundle(
        origins=origins,
        directions=torch.nn.functional.normalize(directions, dim=-1),
        pixel_area=torch.ones(count, 1),
        camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )


def test_outputs_losses_and_gradients_into_materials_and_light():
    model = make_model(trimesh.creation.icosphere(subdivisions=3, radius=0.5))
    model.total_steps, model.step = 100, 0  # the range hinge is active early only
    model.train()
    rays = rays_towards_origin(64)
    outputs = model(rays)
    for name in ("rgb", "accumulation", "depth", "normal", *MATERIAL_OUTPUTS):
        assert name in outputs and outputs[name].shape[0] == 64, name
    assert list(outputs)[0] == "rgb"
    hit = outputs["accumulation"][:, 0] > 0
    assert 0 < hit.sum() < 64  # some rays pass beside the sphere
    # Hits: depth to the sphere; misses: the environment in sRGB, no materials.
    expected_depth = _sphere_distance(rays.origins, rays.directions, 0.5)
    torch.testing.assert_close(outputs["depth"][hit, 0], expected_depth[hit], atol=0.02, rtol=0)
    with torch.no_grad():
        background = linear_to_srgb(model.environment_radiance(rays.directions[~hit]))
    torch.testing.assert_close(outputs["rgb"][~hit], background)
    assert (outputs["albedo"][~hit] == 0).all()
    losses = model.get_loss_dict(outputs, {"image": torch.rand(64, 3)})
    assert set(losses) == {"rgb_loss", "smoothness_loss", "range_loss", "neutral_light_loss", "background_light_loss"}
    sum(losses.values()).backward()
    for name, module in (("material grid", model.material.grid), ("material mlp", model.material.mlp),
                         ("environment", model.environment)):  # fmt: skip
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    model.step = 50
    assert "range_loss" not in model.get_loss_dict(model(rays), {"image": torch.rand(64, 3)})


def test_eval_rendering_is_deterministic():
    model = make_model(trimesh.creation.icosphere(subdivisions=3, radius=0.5)).eval()
    rays = rays_towards_origin(32)
    first, second = model(rays), model(rays)
    torch.testing.assert_close(first["rgb"], second["rgb"])


def test_secondary_rays_read_the_environment_on_a_miss_and_the_indirect_light_on_a_hit():
    # A floor at z = 0 and a smaller ceiling at z = 0.5 facing down.
    floor = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    ceiling = trimesh.Trimesh([[-0.2, -0.2, 0.5], [0.2, -0.2, 0.5], [0.2, 0.2, 0.5], [-0.2, 0.2, 0.5]],
                              [[0, 2, 1], [0, 3, 2]])  # fmt: skip
    model = make_model(trimesh.util.concatenate([floor, ceiling]))
    up = torch.tensor([0.0, 0.0, 1.0])
    sideways = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.3]), dim=0)
    with torch.no_grad():
        radiance = model.incident_radiance(torch.zeros(1, 3), up[None], torch.stack([up, sideways])[None])[0]
        expected_miss = model.environment_radiance(sideways[None])[0]
        outgoing = reflect(-up[None], torch.tensor([[0.0, 0.0, -1.0]]))  # mirror of the light's way back
        ide = model.ide(outgoing, torch.zeros(1, 1))
        expected_hit = model.indirect(torch.tensor([[0.0, 0.0, 0.5]]), ide)[0]
    torch.testing.assert_close(radiance[1], expected_miss)
    torch.testing.assert_close(radiance[0], expected_hit, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(expected_hit, expected_miss)


def test_the_mesh_source_is_checked():
    outputs = SimpleNamespace(dataparser_transform=torch.eye(4)[:3], dataparser_scale=1.0)
    with pytest.raises(ValueError, match="exactly one geometry source"):
        resolve_material_mesh(None, None, 64, outputs)
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        resolve_material_mesh(None, Path("missing.ply"), 64, outputs)
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.5)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mesh.ply"
        mesh.export(path)
        vertices, faces, _ = resolve_material_mesh(None, path, 64, outputs)
        assert len(faces) == len(mesh.faces) and np.abs(np.linalg.norm(vertices, axis=-1) - 0.5).max() < 1e-5
        # The same file read against a normalisation that shrinks the world by 100: the mesh is in other units.
        small = SimpleNamespace(dataparser_transform=torch.eye(4)[:3], dataparser_scale=100.0)
        with pytest.raises(ValueError, match="world units"):
            resolve_material_mesh(None, path, 64, small)
    with pytest.raises(RuntimeError, match="mesh-path"):
        config = NeroMaterialModelConfig()
        bare = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata={})
        bare(rays_towards_origin(4))


class _FrontView:
    """One 32 x 32 pinhole view of the unit-sphere frame from +z, RGBA or RGB, for :func:`trace_pixels`."""

    def __init__(self, alpha: np.ndarray | None = None) -> None:
        from nerfstudio.cameras.cameras import Cameras

        pose = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0]]])
        self.cameras = Cameras(camera_to_worlds=pose, fx=40.0, fy=40.0, cx=16.0, cy=16.0, width=32, height=32)
        self.image = torch.arange(32 * 32 * 3, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(32, 32, 3)
        self.alpha = alpha

    def __len__(self) -> int:
        return 1

    def get_image_uint8_and_opaque_mask(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        opaque = torch.ones(32, 32, dtype=torch.bool) if self.alpha is None else torch.from_numpy(self.alpha == 255)
        return self.image, opaque


def test_pixel_pools_split_object_and_background_with_a_margin_and_skip_transparent_pixels():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    caster = MeshRayCaster(torch.as_tensor(sphere.vertices, dtype=torch.float32), torch.as_tensor(sphere.faces))
    hits, background, total = trace_pixels(_FrontView(), caster, silhouette_margin=2)
    assert total == 32 * 32 and len(hits) > 50 and len(background) > 300
    assert bool(caster.cast(hits.origins, hits.directions).hit.all())
    assert not bool(caster.cast(background.origins, background.directions).hit.any())
    # Colours are the pixels' own; background pixels lie more than 2 pixels (Chebyshev) from every hit pixel.
    image = _FrontView().image
    for pool in (hits, background):
        assert torch.equal(pool.rgb, image[pool.indices[:, 1], pool.indices[:, 2]])
    gap = (background.indices[:, None, 1:] - hits.indices[None, :, 1:]).abs().amax(-1).amin(-1)
    assert int(gap.min()) == 3
    assert len(hits) + len(background) < total  # the ring around the silhouette is in neither pool
    # A transparent pixel's colour is not the scene's: pixels with alpha < 255 never reach the background pool.
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :16] = 0
    _, opaque_only, _ = trace_pixels(_FrontView(alpha), caster, silhouette_margin=2)
    assert len(opaque_only) > 0 and bool((opaque_only.indices[:, 2] >= 16).all())


def test_background_error_counts_saturated_pixels_only_from_below():
    radiance = torch.tensor([[0.2, 2.0, 0.5], [0.2, 2.0, 0.5]])
    pixel = torch.tensor([[float(linear_to_srgb(torch.tensor(0.2))), 1.0, 1.0], [0.5, 1.0, 0.2]])
    error = background_error(radiance, pixel)
    # Exact where the radiance encodes to the pixel; a light brighter than a saturated pixel is no error, a
    # dimmer one is; light above 1 against an unsaturated pixel is an error with a gradient (no clip).
    assert abs(float(error[0, 0])) < 1e-5 and float(error[0, 1]) == 0.0 and float(error[0, 2]) > 0.2
    assert float(error[1, 1]) == 0.0 and float(error[1, 0]) < 0 and float(error[1, 2]) > 0
    radiance_above = torch.tensor([[3.0, 3.0, 3.0]], requires_grad=True)
    background_error(radiance_above, torch.full((1, 3), 0.5)).sum().backward()
    assert bool((radiance_above.grad > 0).all())


# ---------------------------------------------------------------------------------------------------- end to end
ITERATIONS = 12
EVAL_EVERY = 5
SAVE_EVERY = 10


@pytest.fixture(scope="module")
def trained(tiny_glossy_scene, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nero_material_e2e")
    scene = tiny_glossy_scene
    run(
        [
            str(BIN / "ns-train"), "nero-material",
            "--data", str(scene),
            "--pipeline.model.mesh-path", str(scene / "gt_mesh.ply"),
            "--output-dir", str(root / "runs"),
            "--timestamp", "e2e",
            "--max-num-iterations", str(ITERATIONS),
            # The default cadence (eval batch 500, eval image 1000, save 1000) lies past the end of a 12-step
            # run; shortened so that an eval batch, an eval image and a save all happen.
            "--steps-per-eval-batch", str(EVAL_EVERY),
            "--steps-per-eval-image", str(SAVE_EVERY),
            "--steps-per-save", str(SAVE_EVERY),
            # Small batches and sample counts: this checks the plumbing, not the fit (defaults 512 rays, 32 + 32).
            "--pipeline.datamanager.train-num-rays-per-batch", "64",
            "--pipeline.datamanager.eval-num-rays-per-batch", "64",
            "--pipeline.model.num-diffuse-samples", "8",
            "--pipeline.model.num-specular-samples", "8",
            # tensorboard instead of the viewer: evaluation only runs with a logger, and the test reads it.
            "--vis", "tensorboard",
        ],
        cwd=root,
    )  # fmt: skip
    config = next((root / "runs").glob("*/nero-material/e2e/config.yml"))
    return {"root": root, "scene": scene, "config": config}


def test_ns_train_samples_hit_pixels_evaluates_and_saves(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["config"].parent)).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("Eval Loss Dict/rgb_loss", "Eval Loss Dict/neutral_light_loss", "Eval Images Metrics/psnr",
                "Train Loss Dict/smoothness_loss", "Train Loss Dict/background_light_loss"):  # fmt: skip
        assert tag in tags, sorted(tags)
        assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    assert [e.step for e in events.Scalars("Eval Loss Dict/rgb_loss")] == [EVAL_EVERY, 2 * EVAL_EVERY]
    # Each batch: 64 pixels that see the mesh and the default 128 background pixels, which all miss it.
    assert all(abs(e.value - 64 / 192) < 1e-6 for e in events.Scalars("Train Metrics Dict/hit_fraction"))
    assert {"Eval Images/img", "Eval Images/materials"} <= set(events.Tags()["images"])
    checkpoints = sorted((trained["config"].parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in checkpoints] == [f"step-{ITERATIONS - 1:09d}.ckpt"]


def test_ns_train_from_a_nero_shape_run_extracts_and_caches_its_mesh(nero_shape_run, tmp_path):
    """The README's first command: stage II on a stage-I run, whose mesh is extracted once and cached beside it."""
    resolution = 48  # the default (512) extracts for minutes on a CPU; the path is the same
    run(
        [
            str(BIN / "ns-train"), "nero-material",
            "--data", str(nero_shape_run["scene"]),
            "--pipeline.model.shape-config", str(nero_shape_run["config"]),
            "--pipeline.model.mesh-resolution", str(resolution),
            "--output-dir", str(tmp_path / "runs"),
            "--timestamp", "e2e",
            "--max-num-iterations", "2",
            # Plumbing only, as in the mesh-path run above.
            "--pipeline.datamanager.train-num-rays-per-batch", "64",
            "--pipeline.model.num-diffuse-samples", "8",
            "--pipeline.model.num-specular-samples", "8",
            "--vis", "tensorboard",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    cached = nero_shape_run["config"].parent / f"nero_material_mesh_{resolution}.ply"
    mesh = trimesh.load(cached, force="mesh")
    assert len(mesh.faces) > 100
    # World units: the 12-step stage-I surface is still near the initial sphere, inside the scene's bounds.
    gt = trimesh.load(nero_shape_run["scene"] / "gt_mesh.ply", force="mesh")
    assert np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]) < 4.0 * np.linalg.norm(gt.bounds[1] - gt.bounds[0])
    checkpoints = list((tmp_path / "runs").glob("*/nero-material/e2e/nerfstudio_models/step-*.ckpt"))
    assert len(checkpoints) == 1


# ---------------------------------------------------------------------------------------------------- exports
TEXTURE_SIZE = 64


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    out = trained["root"] / "materials"
    run(
        [str(BIN / "recon-export-materials"), "--load-config", str(trained["config"]), "--output-dir", str(out),
         "--texture-size", str(TEXTURE_SIZE), "--environment-height", "16"],
        cwd=trained["root"],
    )  # fmt: skip
    return out


def _accessor(document: dict, blob: bytes, index: int) -> np.ndarray:
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[accessor["type"]]
    data = np.frombuffer(blob, dtype=dtype, count=accessor["count"] * width, offset=view["byteOffset"])
    return data.reshape(accessor["count"], width)


def _texture(document: dict, blob: bytes, index: int) -> np.ndarray:
    image = document["images"][document["textures"][index]["source"]]
    view = document["bufferViews"][image["bufferView"]]
    encoded = np.frombuffer(blob, np.uint8, count=view["byteLength"], offset=view["byteOffset"])
    return cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.float64) / 255.0  # BGR -> RGB


def test_export_writes_a_valid_glb_in_world_units_vertex_materials_and_the_environment(trained, exported, tmp_path):
    for name in ("model.glb", "materials.ply", "environment.exr", "environment.hdr", "environment.png"):
        assert (exported / name).is_file(), name
    assert not list(exported.glob(".*"))  # no staging leftovers
    issues = validate_glb(exported / "model.glb", tmp_path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    document, blob = read_glb_json(exported / "model.glb")
    primitive = document["meshes"][0]["primitives"][0]
    pbr = document["materials"][0]["pbrMetallicRoughness"]
    assert "baseColorTexture" in pbr and "metallicRoughnessTexture" in pbr
    # The mesh given in world units comes back in world units (through the normalised frame and back).
    gt = trimesh.load(trained["scene"] / "gt_mesh.ply", force="mesh")
    positions = _accessor(document, blob, primitive["attributes"]["POSITION"])
    np.testing.assert_allclose(positions.min(0), gt.vertices.min(0), atol=1e-4)
    np.testing.assert_allclose(positions.max(0), gt.vertices.max(0), atol=1e-4)
    vertices = trimesh.load(exported / "materials.ply", process=False).metadata["_ply_raw"]["vertex"]["data"]
    assert len(vertices) == len(gt.vertices)
    for column in ("albedo_r", "albedo_g", "albedo_b", "roughness", "metallic"):
        assert (vertices[column] >= 0).all() and (vertices[column] <= 1).all(), column
    environment = read_environment(exported / "environment.exr")
    assert environment.shape == (16, 32, 3) and bool((environment > 0).all())
    torch.testing.assert_close(read_environment(exported / "environment.hdr"), environment, rtol=0.02, atol=1e-3)


def test_export_decimates_the_textured_model_to_the_face_budget_and_says_so(trained, tmp_path):
    """A stage-I mesh has about a million faces, and xatlas's unwrap time grows faster than that: model.glb gets a
    decimated copy (the textures carry the materials), materials.ply keeps every face, and each stage is printed."""
    gt = trimesh.load(trained["scene"] / "gt_mesh.ply", force="mesh")
    budget = len(gt.faces) // 3
    out = tmp_path / "decimated"
    result = run(
        [str(BIN / "recon-export-materials"), "--load-config", str(trained["config"]), "--output-dir", str(out),
         "--texture-size", str(TEXTURE_SIZE), "--environment-height", "16", "--max-faces", str(budget)],
        cwd=trained["root"],
    )  # fmt: skip
    for stage in ("per-vertex materials of", "decimating", "UV atlas (xatlas) of", "baking", "model.glb:", "done in"):
        assert stage in result.stdout, (stage, result.stdout)
    issues = validate_glb(out / "model.glb", tmp_path)
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    document, blob = read_glb_json(out / "model.glb")
    primitive = document["meshes"][0]["primitives"][0]
    faces = _accessor(document, blob, primitive["indices"]).reshape(-1, 3)
    assert budget // 2 < len(faces) <= budget
    positions = _accessor(document, blob, primitive["attributes"]["POSITION"]).astype(np.float64)
    # The decimated surface stays on the original one (world units).
    distances = np.abs(trimesh.proximity.signed_distance(gt, positions[:: max(1, len(positions) // 500)]))
    assert distances.max() < 0.01 * gt.extents.max(), distances.max()
    vertices = trimesh.load(out / "materials.ply", process=False).metadata["_ply_raw"]["vertex"]["data"]
    assert len(vertices) == len(gt.vertices)
    summary = json.loads((out / "materials.json").read_text())
    assert summary["faces"] == len(gt.faces) and summary["model_glb_faces"] == len(faces)


def test_exported_textures_hold_the_field_values_at_surface_points(trained, exported):
    from recon_plugin.export.loading import load_pipeline
    from recon_plugin.export.materials import query_materials

    _, pipeline, _, _ = load_pipeline(trained["config"])
    outputs = pipeline.datamanager.train_dataparser_outputs
    document, blob = read_glb_json(exported / "model.glb")
    primitive = document["meshes"][0]["primitives"][0]
    positions = _accessor(document, blob, primitive["attributes"]["POSITION"]).astype(np.float64)
    uvs = _accessor(document, blob, primitive["attributes"]["TEXCOORD_0"]).astype(np.float64)
    faces = _accessor(document, blob, primitive["indices"]).reshape(-1, 3).astype(np.int64)
    pbr = document["materials"][0]["pbrMetallicRoughness"]
    base = _texture(document, blob, pbr["baseColorTexture"]["index"])
    packed = _texture(document, blob, pbr["metallicRoughnessTexture"]["index"])

    # For sampled faces: the texel holding the face's UV centroid, its centre's barycentrics in the UV triangle,
    # and through them the surface point that texel stands for.
    generator = np.random.default_rng(0)
    picked = generator.choice(len(faces), size=min(400, len(faces)), replace=False)
    corners_uv = uvs[faces[picked]]
    texel = np.floor(corners_uv.mean(1) * TEXTURE_SIZE).astype(int).clip(0, TEXTURE_SIZE - 1)
    centre = (texel + 0.5) / TEXTURE_SIZE
    a, b, c = corners_uv[:, 0], corners_uv[:, 1], corners_uv[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    w1 = ((centre[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (centre[:, 1] - a[:, 1])) / area
    w2 = ((b[:, 0] - a[:, 0]) * (centre[:, 1] - a[:, 1]) - (centre[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / area
    weights = np.stack([1.0 - w1 - w2, w1, w2], axis=-1)
    inside = (weights > 1e-3).all(-1)
    assert inside.sum() >= 30, inside.sum()
    world = (weights[inside, :, None] * positions[faces[picked[inside]]]).sum(1)
    points = world_to_normalized(world, outputs.dataparser_transform.numpy(), float(outputs.dataparser_scale))
    field = query_materials(pipeline.model, points)
    rows, columns = texel[inside, 1], texel[inside, 0]  # row 0 at v = 0 (glTF: the image's top)
    expected_base = linear_to_srgb(torch.from_numpy(field["albedo"])).numpy()
    # 8-bit textures: half a step of rounding, plus float32 round trips through the world frame.
    np.testing.assert_allclose(base[rows, columns], expected_base, atol=0.6 / 255)
    np.testing.assert_allclose(packed[rows, columns, 1], field["roughness"], atol=0.6 / 255)
    np.testing.assert_allclose(packed[rows, columns, 2], field["metallic"], atol=0.6 / 255)


# ---------------------------------------------------------------------------------------------------- relighting
class _ConstantMaterial(torch.nn.Module):
    def __init__(self, albedo: float, roughness: float, metallic: float) -> None:
        super().__init__()
        self.values = (albedo, roughness, metallic)

    def forward(self, positions: torch.Tensor) -> dict:
        albedo, roughness, metallic = (torch.full_like(positions[:, :1], v) for v in self.values)
        return {"albedo": albedo.expand(-1, 3), "roughness": roughness, "metallic": metallic}


def test_relighting_a_convex_object_under_a_uniform_environment_gives_its_albedos():
    """Furnace through the relighting path: under L = 1 everywhere a convex object (no secondary hit) reflects
    (1 - m) a + (F0 A + B), the diffuse and specular directional albedos."""
    model = make_model(trimesh.creation.icosphere(subdivisions=4, radius=0.5)).eval()
    model.material = _ConstantMaterial(albedo=0.5, roughness=0.5, metallic=0.0)
    relighter = Relighter(model, torch.ones(16, 32, 3), np.eye(3), num_diffuse=256, num_specular=256)
    rays = rays_towards_origin(8, spread=0.05)
    radiance = relighter.render_rays(rays.origins, rays.directions)
    _, index, _, normals = model.surface_hits(rays.origins, rays.directions)
    assert index.numel() == 8
    n_dot_v = (normals * -rays.directions).sum(-1, keepdim=True)
    expected = 0.5 + specular_albedo(torch.full((8, 3), 0.5), torch.zeros(8, 1), n_dot_v, torch.full((8, 1), 0.5))
    torch.testing.assert_close(radiance, expected, atol=0.02, rtol=0)


def test_recon_relight_renders_the_test_views_in_the_world_frame(trained, tmp_path):
    out = tmp_path / "relit"
    scene = trained["scene"]
    run(
        [str(BIN / "recon-relight"), "--load-config", str(trained["config"]), "--env",
         str(scene / "relight" / "environment.exr"), "--output-dir", str(out), "--num-diffuse-samples", "4",
         "--num-specular-samples", "4", "--num-light-samples", "4"],
        cwd=tmp_path,
    )  # fmt: skip
    expected = sorted(p.name for p in (scene / "relight").glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == expected
    for name in expected:
        ours, truth = read_image(out / name), read_image(scene / "relight" / name)
        background = read_glossy_depth(scene / name.replace(".png", "-depth.png")) >= DEPTH_BACKGROUND
        assert ours.shape == truth.shape and background.any()
        # Off the object both show the new environment: equal only if the world frame is restored exactly.
        assert np.abs(ours - truth)[background].max() <= 1.0 / 255 + 1e-6
    result = run([str(BIN / "recon-eval"), "relight", str(out), str(scene)], cwd=tmp_path)
    metrics = json.loads(result.stdout)  # one JSON line on stdout
    assert metrics["num_views"] == len(expected) and math.isfinite(metrics["psnr_object"])
    assert metrics["psnr_image"] > metrics["psnr_object"]  # the background matches exactly, the object does not


def test_recon_relight_orbit_circles_the_object_upright_and_writes_a_video(trained, tmp_path):
    from recon_plugin.export.loading import load_pipeline
    from recon_plugin.export.relight import orbit_cameras

    out = tmp_path / "orbit"
    run(
        [str(BIN / "recon-relight"), "--load-config", str(trained["config"]), "--env",
         str(trained["scene"] / "relight" / "environment.exr"), "--output-dir", str(out), "--cameras", "orbit",
         "--orbit-views", "4", "--num-diffuse-samples", "2", "--num-specular-samples", "2",
         "--num-light-samples", "2"],
        cwd=tmp_path,
    )  # fmt: skip
    frames = sorted(p.name for p in out.glob("*.png"))
    assert frames == [f"orbit_{i:03d}.png" for i in range(4)]
    assert read_image(out / frames[0]).shape[:2] == (24, 24)  # the training views' size
    if shutil.which("ffmpeg"):  # make install puts it there; the video is optional otherwise
        assert (out / "orbit.mp4").stat().st_size > 0
    # Every orbit camera looks at the object (its centre ray hits the mesh), keeps world z up in the image,
    # and the ring is evenly spaced.
    _, pipeline, _, _ = load_pipeline(trained["config"])
    rotation = pipeline.datamanager.train_dataparser_outputs.dataparser_transform[:3, :3].float()
    up = rotation[:, 2]
    cameras = orbit_cameras(pipeline.datamanager.train_dataset.cameras, up, num_views=4, elevation_deg=30.0)
    centres = cameras.camera_to_worlds[:, :3, 3]
    forward = -cameras.camera_to_worlds[:, :3, 2]
    assert bool(pipeline.model.caster.cast(centres, forward).hit.all())
    assert bool(((cameras.camera_to_worlds[:, :3, 1] @ up) > 0.8).all())  # image up ~ world up (30 deg tilt)
    heights = (centres @ up) / centres.norm(dim=-1)
    torch.testing.assert_close(heights, torch.full((4,), 0.5), atol=1e-4, rtol=0)  # sin 30 degrees
    with pytest.raises(ValueError, match="orbit views"):
        orbit_cameras(pipeline.datamanager.train_dataset.cameras, up, num_views=0)
    # --orbit-size bounds the frames (the Monte-Carlo cost) and keeps the training cameras' field of view.
    small = orbit_cameras(pipeline.datamanager.train_dataset.cameras, up, num_views=4, max_size=12)
    assert (int(small.width[0]), int(small.height[0])) == (12, 12)
    torch.testing.assert_close(small.fx / small.width, cameras.fx / cameras.width)
    with pytest.raises(ValueError, match="frame size"):
        orbit_cameras(pipeline.datamanager.train_dataset.cameras, up, max_size=4)


def test_material_errors_fit_the_albedo_scale_per_channel():
    generator = np.random.default_rng(0)
    truth = {
        "albedo": generator.uniform(0.1, 0.9, (500, 3)),
        "roughness": generator.uniform(0.05, 0.6, 500),
        "metallic": (generator.uniform(size=500) > 0.5).astype(float),
    }
    # The albedo/light ambiguity: a per-channel scale of the albedo is not an error.
    predicted = {"albedo": truth["albedo"] / np.array([2.0, 1.0, 0.5]), "roughness": truth["roughness"] + 0.05,
                 "metallic": np.where(np.arange(500) < 50, 1.0 - truth["metallic"], truth["metallic"])}  # fmt: skip
    errors = material_errors(predicted, truth)
    assert errors["albedo_mae_after_scale"] < 1e-9
    np.testing.assert_allclose(errors["albedo_scale"], [2.0, 1.0, 0.5])
    assert errors["roughness_mae"] == pytest.approx(0.05)
    assert errors["metallic_accuracy"] == pytest.approx(0.9)


def test_material_errors_of_a_run_at_the_ground_truth_points(trained):
    errors = material_errors_of_run(trained["config"], trained["scene"])
    assert errors["num_points"] == 20000 and errors["step"] == ITERATIONS - 1
    assert 0.0 <= errors["roughness_mae"] <= 1.0 and 0.0 <= errors["metallic_accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------------- glTF viewer
_VIEWER_PAGE = """<!doctype html>
<html><body style="margin:0; background:#336699">
<script type="importmap">
{"imports": {"three": "./three/build/three.module.js", "three/addons/": "./three/examples/jsm/"}}
</script>
<script type="module">
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setSize(window.innerWidth, window.innerHeight);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x336699);
scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.0));
const sun = new THREE.DirectionalLight(0xffffff, 2.0); sun.position.set(1, 2, 3); scene.add(sun);
new GLTFLoader().load('model.glb', (gltf) => {
  scene.add(gltf.scene);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const centre = box.getCenter(new THREE.Vector3()), size = box.getSize(new THREE.Vector3()).length();
  const camera = new THREE.PerspectiveCamera(40, window.innerWidth / window.innerHeight, size / 100, size * 10);
  camera.position.copy(centre).add(new THREE.Vector3(0.6, 0.5, 1.0).multiplyScalar(size));
  camera.lookAt(centre);
  renderer.render(scene, camera);
  window.viewerState = 'rendered';
}, undefined, (error) => { window.viewerState = 'error: ' + error; });
</script></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's signature)
        pass


def _three_js() -> Path:
    """three.js from npm, installed once into the user cache (skips the test when npm cannot fetch it)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not available: cannot install three.js")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recon_plugin" / "threejs"
    package = cache / "node_modules" / "three"
    if not (package / "build" / "three.module.js").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        install = subprocess.run([npm, "install", "--silent", "three"], cwd=cache, capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
        if install.returncode != 0:
            pytest.skip(f"npm install three failed (offline?): {install.stderr[-300:]}")
    return package


@pytest.mark.skipif(not CHROMIUM.exists(), reason=CHROMIUM_MISSING)
def test_model_glb_opens_in_a_three_js_viewer_in_headless_chromium(exported, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(exported / "model.glb", site / "model.glb")
    (site / "three").symlink_to(_three_js(), target_is_directory=True)
    (site / "index.html").write_text(_VIEWER_PAGE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with headless_chromium(f"http://127.0.0.1:{server.server_address[1]}/index.html", window=(480, 360)) as page:
            state = page.wait_for("window.viewerState", lambda value: bool(value), timeout=120)
            assert state == "rendered", state
            screenshot = page.screenshot()
    finally:
        server.shutdown()
    background = np.array([0x33, 0x66, 0x99])
    differs = np.abs(screenshot.astype(int) - background).max(-1) > 8
    # The object fills a good part of the frame around its centre, and the page background surrounds it.
    assert 0.05 < differs.mean() < 0.9, differs.mean()
    height, width = differs.shape
    assert differs[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3].mean() > 0.5
