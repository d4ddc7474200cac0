"""rnb-sdf model behaviour that needs no training run: eval-mode losses, rays that miss the unit sphere, the
clamped-light option, the mask loss (gradient when saturated, mixed precision)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from recon_plugin.components.shading import fixed_triplet_world
from recon_plugin.methods.rnb_sdf.model import RnbSDFModelConfig


def small_model(**overrides):
    config = RnbSDFModelConfig(num_render_samples=8, cache_resolution=24, num_eikonal_points=16, **overrides)
    config.sdf_field.num_levels = 2
    config.sdf_field.max_resolution = 32
    config.sdf_field.log2_hashmap_size = 14
    metadata = {"rnb_albedo_filenames": ["a.png", "b.png"], "rnb_camera_rotations": torch.eye(3).expand(2, 3, 3)}
    scene_box = SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3]))
    return config.setup(scene_box=scene_box, num_train_data=2, metadata=metadata)


def bundle(origins: torch.Tensor, directions: torch.Tensor) -> RayBundle:
    count = origins.shape[0]
    return RayBundle(
        origins=origins,
        directions=F.normalize(directions, dim=-1),
        pixel_area=torch.ones(count, 1),
        camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )


def batch_for(count: int) -> dict:
    normals = torch.tensor([[0.0, 0.0, 1.0]]).expand(count, 3)
    return {
        "normal": normals,
        "albedo": torch.full((count, 3), 0.5),
        "fg_mask": torch.ones(count, 1),
        "image": torch.zeros(count, 3),
    }


def test_eval_mode_returns_the_training_loss_terms_without_a_graph():
    torch.manual_seed(0)
    model = small_model()
    rays = bundle(torch.tensor([[0.0, 0.0, 3.0]]).expand(32, 3), torch.randn(32, 3) * 0.05 + torch.tensor([0, 0, -1.0]))
    batch = batch_for(32)
    model.train()
    train_losses = model.get_loss_dict(model(rays), batch)
    model.eval()
    eval_outputs = model(rays)  # autograd is on, as in nerfstudio's eval-batch step
    eval_losses = model.get_loss_dict(eval_outputs, batch)
    assert set(eval_losses) == set(train_losses) == {"rnb_loss", "eikonal_loss", "mask_loss", "surface_smoothness_loss"}
    for name, value in eval_losses.items():
        assert torch.isfinite(value) and not value.requires_grad, name
    assert all(not v.requires_grad for v in eval_outputs.values() if isinstance(v, torch.Tensor))


def test_rays_that_miss_the_unit_sphere_are_not_evaluated_and_render_empty():
    model = small_model()
    model.train()
    origins = torch.tensor([[0.0, 0.0, 3.0], [5.0, 0.0, 3.0], [0.0, 0.3, 3.0], [0.0, 5.0, 3.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0]]).expand(4, 3)
    evaluated = []
    original = model.field.get_sdf_and_gradient

    def counting(points, create_graph):
        evaluated.append(points.shape[0])
        return original(points, create_graph=create_graph)

    model.field.get_sdf_and_gradient = counting
    outputs = model(bundle(origins, directions))
    render_points = evaluated[0]
    assert render_points == 2 * model.config.num_render_samples  # only the two rays through the sphere
    missed = torch.tensor([1, 3])
    assert torch.all(outputs["accumulation"][missed] == 0) and torch.all(outputs["rgb"][missed] == 0)
    assert float(outputs["accumulation"][0]) > 0.9  # the initial sphere (radius 0.5) is hit head-on
    # the loss still reaches the field through the hit rays
    losses = model.get_loss_dict(outputs, batch_for(4))
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.field.parameters())
    # A chunk in which no ray meets the sphere (a viewer camera looking away) renders empty instead of failing.
    model.eval()
    with torch.no_grad():
        away = model(bundle(origins[[1, 3]], directions[:2]))
    assert torch.all(away["accumulation"] == 0) and torch.all(away["rgb"] == 0)


def test_clamped_fixed_lights_shade_each_sample_with_max_zero():
    torch.manual_seed(0)
    model = small_model(light_mode="fixed", clamp_fixed_lights=True, fixed_slant_deg=30.0, per_view_gain=False)
    model.train()
    rays = bundle(torch.tensor([[0.0, 0.0, 3.0]]).expand(16, 3), torch.randn(16, 3) * 0.1 + torch.tensor([0, 0, -1.0]))
    outputs = model(rays)
    terms = outputs["loss_terms"]
    linear = torch.einsum("rcx,rlx->rlc", terms["albedo_gradient"], fixed_triplet_world(30.0, torch.eye(3)[None]))
    clamped = terms["clamped_prediction"]
    assert clamped.shape == linear.shape
    assert torch.all(clamped >= -1e-6)  # every per-sample cosine was clamped, so no negative shading survives
    assert torch.all(clamped >= linear - 1e-5)  # clamping only removes negative contributions
    # A target normal facing away from a light gets zero, not a negative value, under that light.
    batch = batch_for(16)
    batch["normal"] = torch.tensor([[1.0, 0.0, 0.0]]).expand(16, 3)
    _, target, _ = model.rnb_terms(outputs, batch)
    assert torch.all(target >= 0) and torch.any(target == 0)
    # Outside the fixed phase there is nothing to clamp: the linear prediction is used.
    model.config.light_mode = "optimal"
    assert "clamped_prediction" not in model(rays)["loss_terms"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA autocast needs a GPU")
def test_mask_loss_runs_under_cuda_autocast():
    model = small_model().cuda()
    model.train()
    rays = bundle(torch.tensor([[0.0, 0.0, 3.0]]).expand(8, 3), torch.tensor([[0.0, 0.0, -1.0]]).expand(8, 3))
    rays = rays.to("cuda")
    batch = {k: v.cuda() for k, v in batch_for(8).items()}
    with torch.autocast("cuda"):
        losses = model.get_loss_dict(model(rays), batch)
    assert torch.isfinite(losses["mask_loss"])


def test_mask_loss_carves_opaque_surface_outside_silhouette():
    """An opaque surface (accumulation 1) on a background ray must still be pushed away: the log(0) guard clamps
    the value, not the gradient (a plain clamp left the start sphere sticking out of a bowl's opening)."""
    model = small_model()
    for opacity in (0.5, 1.0):
        accumulation = torch.full((4, 1), opacity, requires_grad=True)
        loss = model.mask_loss({"accumulation": accumulation}, {"fg_mask": torch.zeros(4, 1)})
        loss.backward()
        assert torch.isfinite(loss)
        assert (accumulation.grad > 0).all(), f"no push towards transparency at accumulation {opacity}"
    accumulation = torch.zeros(4, 1, requires_grad=True)  # and an empty silhouette ray is pushed to fill
    model.mask_loss({"accumulation": accumulation}, {"fg_mask": torch.ones(4, 1)}).backward()
    assert (accumulation.grad < 0).all()
