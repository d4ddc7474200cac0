"""The outer NeRF++ background field and its use in rnb-sdf."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from recon_plugin.components.background import (
    background_sample_distances,
    contract_inverted_sphere,
)
from recon_plugin.methods.rnb_sdf.model import RnbSDFModelConfig


def test_inverted_sphere_contraction_is_bounded_and_continuous_at_the_unit_sphere():
    directions = F.normalize(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    on_sphere = contract_inverted_sphere(directions)
    assert torch.allclose(on_sphere[:, :3], directions, atol=1e-6)
    assert torch.allclose(on_sphere[:, 3], torch.ones(100))
    radii = torch.tensor([1.5, 10.0, 1e4])[:, None, None]
    far = contract_inverted_sphere(directions[None] * radii)
    assert torch.allclose(far[..., :3], directions[None].expand_as(far[..., :3]), atol=1e-5)
    assert torch.allclose(far[..., 3], 1.0 / radii[..., 0].expand(3, 100))
    assert float(far.abs().max()) <= 1.0 + 1e-6


def test_background_samples_start_where_the_ray_leaves_the_sphere_and_are_uniform_in_disparity():
    origins = torch.tensor([[0.0, 0.0, -3.0], [2.0, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bins = background_sample_distances(origins, directions, 16, 1000.0, deterministic=True)
    assert bins.shape == (2, 17)
    # Through the centre: leaves the unit sphere at t = 4; missing ray: starts at closest approach t = 3.
    assert torch.allclose(bins[:, 0], torch.tensor([4.0, 3.0]))
    assert torch.allclose(bins[:, -1], torch.full((2,), 1000.0), rtol=1e-4)
    assert bool((bins[:, 1:] > bins[:, :-1]).all())
    disparity_steps = (1.0 / bins).diff(dim=1)
    assert torch.allclose(disparity_steps, disparity_steps[:, :1].expand_as(disparity_steps), atol=1e-6)
    jittered = background_sample_distances(origins, directions, 16, 1000.0, deterministic=False)
    assert bool((jittered[:, 1:] >= jittered[:, :-1]).all())
    assert torch.allclose(jittered[:, 0], bins[:, 0]) and torch.allclose(jittered[:, -1], bins[:, -1])


def _model(use_background: bool):
    config = RnbSDFModelConfig(use_background_field=use_background, num_render_samples=8, cache_resolution=24)
    config.sdf_field.num_levels = 2
    config.sdf_field.max_resolution = 32
    config.sdf_field.log2_hashmap_size = 14
    metadata = {"rnb_albedo_filenames": ["a.png"], "rnb_camera_rotations": torch.eye(3)[None]}
    return config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1, metadata=metadata)


def _bundle(origins: torch.Tensor, directions: torch.Tensor) -> RayBundle:
    count = origins.shape[0]
    return RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.ones(count, 1),
        camera_indices=torch.zeros(count, 1, dtype=torch.long),
    )


def test_rnb_background_fills_what_the_object_leaves_transparent_and_is_trained_by_the_rnb_loss():
    torch.manual_seed(0)
    model = _model(use_background=True)
    model.set_step(0)
    model.variance.set_floor(500.0)  # a sharp surface: the initial sphere (r = 0.5) is opaque
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.8, -3.0]])  # through the sphere / past it
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    outputs = model.get_outputs(_bundle(origins, directions))
    foreground = outputs["accumulation"][:, 0]
    background = outputs["background_accumulation"][:, 0]
    assert foreground[0] > 0.99 and foreground[1] < 0.01
    assert background[0] < 0.01 and background[1] > 0.5
    assert bool((foreground + background <= 1.0 + 1e-5).all())

    batch = {
        "normal": torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
        "albedo": torch.full((2, 3), 0.5),
        "image": torch.zeros(2, 3),
    }
    loss = sum(model.get_loss_dict(outputs, batch).values())
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.background.parameters())
    assert any(p is model.background.trunk[0].weight for p in model.get_param_groups()["fields"])


def test_rnb_background_is_off_by_default():
    model = _model(use_background=False)
    assert model.background is None
    model.set_step(0)
    outputs = model.get_outputs(_bundle(torch.tensor([[0.0, 0.8, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])))
    assert "background_accumulation" not in outputs
    assert float(outputs["rgb"].abs().max()) < 1e-3
