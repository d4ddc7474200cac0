"""nero-shape (NeRO stage I): shading gradients into the SDF, the occlusion target, outputs, eval losses, the plain
ablation, and `ns-train nero-shape` end to end on a tiny `recon-synth glossy` scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh
from cli_helpers import BIN, run
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from recon_plugin.components.sdf_visibility import sdf_ray_opacity
from recon_plugin.components.shading import linear_to_srgb
from recon_plugin.methods.nero.model import MATERIAL_OUTPUTS, NeroShapeModel, NeroShapeModelConfig
from recon_plugin.methods.nero.shading import PlainColourShading, SplitSumShading


def make_model(shading: str = "split-sum", step: int = 50, total: int = 100) -> NeroShapeModel:
    torch.manual_seed(0)
    # A coarser SDF cache than the default (64^3) keeps the model's set-up fast; it only guides the sampler.
    model = NeroShapeModelConfig(shading=shading, cache_resolution=32).setup(
        scene_box=SceneBox(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
        num_train_data=4,
        metadata={},
        device="cpu",
    )
    model.total_steps = total
    model.set_step(step)
    return model


def rays_at_origin(count: int, seed: int = 0) -> RayBundle:
    """Rays from a camera 3 units away aimed near the centre: most hit the initial sphere (radius 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.tensor([0.0, 0.0, 3.0]).expand(count, 3) + 0.2 * torch.randn(count, 3, generator=generator)
    targets = 0.6 * (torch.rand(count, 3, generator=generator) - 0.5)
    directions = F.normalize(targets - origins, dim=-1)
    return RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.ones(count, 1),
        camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )


def test_colour_loss_reaches_the_sdf_through_the_normal_alone():
    model = make_model()
    with torch.no_grad():  # the SDF row starts at zero (exact sphere); as after a few steps, let the grid count
        model.field.layers[-1].weight[:1].normal_(std=0.01)
    generator = torch.Generator().manual_seed(1)
    points = F.normalize(torch.randn(256, 3, generator=generator), dim=-1) * 0.5
    _, features, gradient = model.field.get_sdf_and_gradient(points, create_graph=True)
    normals = F.normalize(gradient, dim=-1)
    normals.retain_grad()
    view = F.normalize(torch.tensor([0.0, 0.0, 1.0]) - points, dim=-1)
    # Features detached and points constant: the normal (autograd SDF gradient) is the only route to the SDF.
    shaded = model.shading(features.detach(), points, normals, view)
    target = torch.rand(256, 3, generator=generator)
    loss = torch.sqrt(((shaded["rgb"] - target) ** 2).sum(-1) + 1e-3).mean()
    loss.backward()
    assert normals.grad is not None and float(normals.grad.abs().sum()) > 0.0
    sdf_layer_grads = [p.grad for p in model.field.layers.parameters() if p.grad is not None]
    assert sdf_layer_grads and sum(float(g.abs().sum()) for g in sdf_layer_grads) > 0.0
    grid_grads = [p.grad for p in model.field.grid.parameters() if p.grad is not None]
    assert grid_grads and sum(float(g.abs().sum()) for g in grid_grads) > 0.0


def test_occlusion_target_blocked_inside_a_cavity_and_free_outside_a_sphere():
    def cavity(x):  # empty ball of radius 0.8 inside solid: its wall is a closed concave bowl
        return 0.8 - x.norm(dim=-1)

    def ball(x):
        return x.norm(dim=-1) - 0.5

    generator = torch.Generator().manual_seed(2)
    # Points on the cavity's wall, leaving along random directions into the cavity (against the outward position).
    wall = F.normalize(torch.randn(64, 3, generator=generator), dim=-1) * 0.8
    into = F.normalize(-wall + 0.5 * torch.randn(64, 3, generator=generator), dim=-1)
    into = torch.where(((into * wall).sum(-1, keepdim=True) < 0), into, -into)
    blocked = sdf_ray_opacity(cavity, wall, into, inv_s=400.0)
    assert float(blocked.min()) > 0.95, blocked.min()
    # Points on a convex sphere, leaving outwards: nothing to hit.
    surface = F.normalize(torch.randn(64, 3, generator=generator), dim=-1) * 0.5
    outward = F.normalize(surface + 0.3 * torch.randn(64, 3, generator=generator), dim=-1)
    outward = torch.where(((outward * surface).sum(-1, keepdim=True) > 0), outward, -outward)
    free = sdf_ray_opacity(ball, surface, outward, inv_s=400.0)
    assert float(free.max()) < 0.05, free.max()
    # The same point facing into the ball is blocked: the target measures the SDF, not the direction alone.
    assert float(sdf_ray_opacity(ball, surface * 1.02, -surface / 0.5, inv_s=400.0).min()) > 0.95
    # Surface samples lie within the band |sdf| < 0.01, on either side. One just inside, leaving outwards at a
    # sharpness a long run reaches, only exits the object: its exit must not count as a hit.
    for inv_s in (400.0, 3000.0):
        assert float(sdf_ray_opacity(ball, surface * 0.982, outward, inv_s=inv_s).max()) < 0.05, inv_s


def test_occlusion_field_is_fitted_by_its_target_not_by_the_colour():
    model = make_model(step=50)
    rays = rays_at_origin(64)
    batch = {"image": torch.rand(64, 3)}
    occlusion_params = list(model.shading.occlusion.parameters())
    losses = model.get_loss_dict(model.get_outputs(rays), batch)
    losses["rgb_loss"].backward()
    # The default: the colour loss cannot raise the occlusion to hand reflections to the near-field light.
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in occlusion_params)
    assert float(model.shading.indirect_light.mlp[0].weight.grad.abs().sum()) > 0.0  # weighted by s, not cut

    # An occlusion field that overshot below 0 (clamped output 0, no gradient through the clamp) is still
    # pulled back by its loss.
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.shading.occlusion.mlp[-1].bias.fill_(-3.0)
    outputs = model.get_outputs(rays)
    assert float(outputs["occlusion"].detach().max()) == 0.0
    model.get_loss_dict(outputs, batch)["occlusion_loss"].backward()
    bias_grad = model.shading.occlusion.mlp[-1].bias.grad
    assert bias_grad is not None and float(bias_grad) < 0.0  # descending raises the prediction towards ~0

    # NeRO's variant: the colour loss trains the occlusion field as well.
    nero = NeroShapeModelConfig(occlusion_from_colour=True, cache_resolution=32).setup(
        scene_box=SceneBox(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=4, metadata={},
        device="cpu",
    )  # fmt: skip
    nero.total_steps = 100
    nero.set_step(50)
    nero.get_loss_dict(nero.get_outputs(rays), batch)["rgb_loss"].backward()
    assert float(nero.shading.occlusion.mlp[-1].weight.grad.abs().sum()) > 0.0


def test_outputs_losses_and_eval_mode():
    model = make_model(step=50)  # past the occlusion start (6.7 % of the run), after the init regulariser
    rays = rays_at_origin(96)
    batch = {"image": torch.rand(96, 3)}
    model.train()
    outputs = model.get_outputs(rays)
    assert list(outputs)[0] == "rgb"
    three = ("rgb", "normal", "normals", "albedo", "diffuse", "specular")
    one = ("depth", "accumulation", "roughness", "metallic", "occlusion")
    for name in three + one:
        assert outputs[name].shape == (96, 3 if name in three else 1), (name, outputs[name].shape)
        assert torch.isfinite(outputs[name]).all(), name
    assert set(MATERIAL_OUTPUTS) <= set(outputs)
    assert float(outputs["accumulation"].max()) > 0.9  # the initial sphere is hit
    assert 0.0 <= float(outputs["normals"].min()) and float(outputs["normals"].max()) <= 1.0
    losses = model.get_loss_dict(outputs, batch)
    assert set(losses) == {"rgb_loss", "eikonal_loss", "occlusion_loss", "background_light_loss"}
    # The initial SDF is a convex sphere: no reflected ray comes back to it.
    target = outputs["loss_terms"]["occlusion_target"]
    assert target.numel() > 0 and float(target.max()) < 0.05
    sum(losses.values()).backward()
    assert model.shading.occlusion.mlp[0].weight.grad is not None

    model.eval()
    eval_outputs = model.get_outputs(rays)
    eval_losses = model.get_loss_dict(eval_outputs, batch)
    assert set(eval_losses) == set(losses)
    for name, value in eval_losses.items():
        assert torch.isfinite(value) and not value.requires_grad, name
    metrics, images = model.get_image_metrics_and_images(
        {k: v.reshape(8, 12, -1) for k, v in eval_outputs.items() if torch.is_tensor(v)},
        {"image": batch["image"].reshape(8, 12, 3)},
    )
    assert math.isfinite(metrics["psnr"]) and "ssim" in metrics
    assert images["img"].shape == (8, 24, 3)


def test_background_light_loss_fits_the_distant_light_to_the_background_only():
    model = make_model(step=50)
    # Rays leaving the scene away from the object: nothing is hit, each pixel is the environment along its ray.
    origins = torch.tensor([0.0, 0.0, 3.0]).expand(32, 3)
    directions = F.normalize(torch.randn(32, 3, generator=torch.Generator().manual_seed(4)).abs() + 0.5, dim=-1)
    away = RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.ones(32, 1),
        camera_indices=torch.zeros(32, 1, dtype=torch.long),
    )
    image = torch.rand(32, 3)
    outputs = model.get_outputs(away)
    assert float(outputs["accumulation"].max()) < 1e-3
    loss = model.get_loss_dict(outputs, {"image": image})["background_light_loss"]
    with torch.no_grad():
        sky = linear_to_srgb(model.shading.distant_radiance(directions))
    expected = 0.1 * (sky - image).abs().sum(-1).mean()
    assert torch.allclose(loss, expected, rtol=1e-3), (loss, expected)
    # It trains the distant light and nothing of the geometry (its weight, 1 - accumulation, is a constant).
    loss.backward()
    assert float(model.shading.direct_light.mlp[0].weight.grad.abs().sum()) > 0.0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.field.parameters())
    # Pixels of rays that hit the object barely count: changing them moves the loss far less than changing the
    # background's pixels by as much.
    hit = rays_at_origin(32)
    both = RayBundle(
        origins=torch.cat([away.origins, hit.origins]),
        directions=torch.cat([away.directions, hit.directions]),
        pixel_area=torch.ones(64, 1),
        camera_indices=torch.zeros(64, 1, dtype=torch.long),
    )
    with torch.no_grad():
        outputs = model.get_outputs(both)
        assert float(outputs["accumulation"][32:].min()) > 0.5
        grey = torch.full((64, 3), 0.5)

        def loss_with(changed: slice) -> float:
            changed_image = grey.clone()
            changed_image[changed] = 0.0
            return float(model.get_loss_dict(outputs, {"image": changed_image})["background_light_loss"])

        base = loss_with(slice(0, 0))
        assert abs(loss_with(slice(32, 64)) - base) < 0.3 * abs(loss_with(slice(0, 32)) - base)
    # NeRO's behaviour: no such term.
    nero = NeroShapeModelConfig(background_light_loss_mult=0.0, cache_resolution=32).setup(
        scene_box=SceneBox(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=4, metadata={},
        device="cpu",
    )  # fmt: skip
    nero.total_steps = 100
    nero.set_step(50)
    assert "background_light_loss" not in nero.get_loss_dict(nero.get_outputs(away), {"image": image})


def test_init_regulariser_only_early_and_only_on_violations():
    model = make_model(step=0, total=1000)  # fades over the first 1 % = 10 steps
    rays = rays_at_origin(16)
    batch = {"image": torch.rand(16, 3)}
    losses = model.get_loss_dict(model.get_outputs(rays), batch)
    assert float(losses["init_sdf_loss"]) == 0.0  # the initial sphere satisfies both bounds
    with torch.no_grad():  # a shifted sphere leaves the centre outside: violated
        model.field.layers[-1].bias[0] = 0.7
    losses = model.get_loss_dict(model.get_outputs(rays), batch)
    assert float(losses["init_sdf_loss"]) > 0.0
    model.set_step(10)
    assert "init_sdf_loss" not in model.get_loss_dict(model.get_outputs(rays), batch)


def test_plain_ablation_switches_the_colour_head():
    split = make_model("split-sum")
    plain = make_model("plain")
    assert isinstance(split.shading, SplitSumShading) and isinstance(plain.shading, PlainColourShading)
    assert plain.albedo_head is None and split.albedo_head is not None
    rays = rays_at_origin(32)
    outputs = plain.get_outputs(rays)
    assert not set(MATERIAL_OUTPUTS) & set(outputs)
    losses = plain.get_loss_dict(outputs, {"image": torch.rand(32, 3)})
    assert set(losses) == {"rgb_loss", "eikonal_loss"}  # no occlusion field to fit
    # Same SDF field and sampler configuration.
    assert type(plain.field) is type(split.field)
    assert sum(p.numel() for p in plain.field.parameters()) == sum(p.numel() for p in split.field.parameters())


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(nero_shape_run) -> dict:
    """The session's ``ns-train nero-shape`` run (tests/conftest.py), shared with nero-material's tests."""
    return nero_shape_run


def test_ns_train_evaluates_saves_and_gives_a_mesh(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["config"].parent)).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("Eval Loss Dict/rgb_loss", "Eval Loss Dict/eikonal_loss", "Eval Images Metrics/psnr"):
        assert tag in tags, sorted(tags)
        assert all(math.isfinite(e.value) for e in events.Scalars(tag)), tag
    # Occlusion starts at 6.7 % of the run (step 0 of 12): eval batches at 5 and 10 include it.
    eval_every = trained["eval_every"]
    assert [e.step for e in events.Scalars("Eval Loss Dict/occlusion_loss")] == [eval_every, 2 * eval_every]
    checkpoints = sorted((trained["config"].parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert [c.name for c in checkpoints] == [f"step-{trained['iterations'] - 1:09d}.ckpt"]

    mesh_path = trained["root"] / "mesh.ply"
    run(
        [str(BIN / "recon-extract-mesh"), "--load-config", str(trained["config"]), "--output-path", str(mesh_path),
         "--resolution", "64"],
        cwd=trained["root"],
    )  # fmt: skip
    # 12 steps cannot carve the glossy blob out of the initial sphere (a full run is ~3000 steps); this checks
    # the export path: a closed surface in world units, around the ground truth's centre and of its size.
    mesh = trimesh.load(mesh_path, force="mesh")
    gt = trimesh.load(trained["scene"] / "gt_mesh.ply", force="mesh")
    assert len(mesh.faces) > 100 and np.isfinite(mesh.vertices).all()
    gt_radius = np.linalg.norm(gt.vertices - gt.centroid, axis=1).max()
    assert np.linalg.norm(mesh.centroid - gt.centroid) < 0.3 * gt_radius
    mesh_radius = np.linalg.norm(mesh.vertices - mesh.centroid, axis=1).max()
    assert 0.2 * gt_radius < mesh_radius < 1.5 * gt_radius
    assert mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)  # albedo from the split-sum materials


#: A 400-step default run on the small scene measured 2.36 % (2026-12-04, one thread, ~2 min with the extraction);
#: the limit leaves room for other CPUs' arithmetic while staying far below the initial sphere's 17 %.
ACCURACY_RUN_STEPS = 400
ACCURACY_CHAMFER_LIMIT = 0.04


@pytest.fixture(scope="module")
def small_glossy_scene(tmp_path_factory):
    """The default glossy blob at a test's scale: 24 views of 48 px (the bench's scene: 48 views of 128 px)."""
    root = tmp_path_factory.mktemp("glossy_small")
    scene = root / "scene"
    run(
        [str(BIN / "recon-synth"), "glossy", str(scene), "--views", "24", "--size", "48", "--samples", "32",
         "--mesh-resolution", "96"],
        cwd=root,
    )  # fmt: skip
    return scene


def test_ns_train_with_the_defaults_recovers_the_glossy_shape(small_glossy_scene, tmp_path):
    import json

    # The user's commands with the method's defaults; only the run length is shorter (schedules are fractions of
    # it). The initial sphere is 17 % of the radius away from the blob (Chamfer), the 3000-step bench run 0.17 %.
    run(
        [str(BIN / "ns-train"), "nero-shape", "--data", str(small_glossy_scene), "--output-dir", str(tmp_path),
         "--timestamp", "accuracy", "--max-num-iterations", str(ACCURACY_RUN_STEPS), "--vis", "tensorboard"],
        cwd=tmp_path,
    )  # fmt: skip
    config = next(tmp_path.glob("*/nero-shape/accuracy/config.yml"))
    mesh_path = tmp_path / "mesh.ply"
    extract = [str(BIN / "recon-extract-mesh"), "--load-config", str(config), "--output-path", str(mesh_path)]
    run([*extract, "--resolution", "128"], cwd=tmp_path)
    output = run([str(BIN / "recon-eval"), "mesh", str(mesh_path), str(small_glossy_scene / "gt_mesh.ply")]).stdout
    metrics = json.loads(output.strip().splitlines()[-1])
    assert metrics["chamfer_rel"] < ACCURACY_CHAMFER_LIMIT, metrics
