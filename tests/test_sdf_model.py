"""The SDF-model scaffolding shared by rnb-sdf and nero-shape: schedules that follow the run length, the
per-method option defaults users' command lines and saved configs rely on, eval mode without a graph."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from recon_plugin.components.schedules import run_length_callbacks
from recon_plugin.components.sdf_model import SDFModel
from recon_plugin.methods.nero.model import NeroShapeModelConfig
from recon_plugin.methods.rnb_sdf.model import RnbSDFModelConfig

CONFIGS = {"rnb-sdf": RnbSDFModelConfig, "nero-shape": NeroShapeModelConfig}


def small_model(name: str) -> SDFModel:
    torch.manual_seed(0)
    config = CONFIGS[name](num_render_samples=8, cache_resolution=16, num_eikonal_points=8)
    config.sdf_field.num_levels = 4
    config.sdf_field.max_resolution = 32
    config.sdf_field.log2_hashmap_size = 15
    scene_box = SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3]))
    return config.setup(scene_box=scene_box, num_train_data=2, metadata={}, device="cpu")


def test_method_defaults_are_kept_where_the_methods_differ():
    # Options moved into SDFModelConfig keep each method's own default (saved config.yml files and command lines).
    rnb, nero = RnbSDFModelConfig(), NeroShapeModelConfig()
    assert (rnb.sharpness_floor_end, nero.sharpness_floor_end) == (1000.0, 400.0)
    assert (rnb.cos_anneal_fraction, nero.cos_anneal_fraction) == (0.0, 50_000 / 300_000)
    assert (rnb.num_eikonal_points, nero.num_eikonal_points) == (512, 256)
    assert (rnb.mask_loss_mult, nero.mask_loss_mult) == (1.0, 0.0)
    assert (rnb.eval_num_rays_per_chunk, nero.eval_num_rays_per_chunk) == (2048, 1024)
    for config in (rnb, nero):
        assert not config.enable_collider and config.num_render_samples == 24 and config.cache_resolution == 64


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_schedules_follow_the_run_length_given_by_the_trainer(name):
    model = small_model(name)
    trainer = SimpleNamespace(config=SimpleNamespace(max_num_iterations=200))
    (callback,) = run_length_callbacks(model, SimpleNamespace(trainer=trainer))
    assert model.total_steps == 200
    config = model.config
    callback.run_callback_at_location(0, callback.where_to_run[0])
    assert int(model.field.level_mask.sum()) == config.coarse_to_fine_start_levels
    assert float(model.variance.floor) == pytest.approx(config.sharpness_floor_start)
    # Levels are all on at coarse_to_fine_fraction of the run, the floor at its end value at its fraction.
    model.set_step(math.ceil(config.coarse_to_fine_fraction * 200))
    assert int(model.field.level_mask.sum()) == config.sdf_field.num_levels
    model.set_step(int(config.sharpness_floor_fraction * 200))
    assert float(model.variance.floor) == pytest.approx(config.sharpness_floor_end, rel=1e-5)
    halfway = model.fraction_step(config.sharpness_floor_fraction) // 2
    model.set_step(halfway)
    expected = config.sharpness_floor_start * (config.sharpness_floor_end / config.sharpness_floor_start) ** (
        halfway / model.fraction_step(config.sharpness_floor_fraction)
    )
    assert float(model.variance.floor) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eval_outputs_carry_no_graph_and_empty_rays_end_behind_the_scene_box(name):
    model = small_model(name)
    model.set_step(0)
    model.variance.set_floor(500.0)  # a sharp surface: the initial sphere (r = 0.5) is opaque
    model.eval()
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 5.0, 3.0]])  # through the initial sphere / past the unit sphere
    directions = F.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]), dim=-1)
    bundle = RayBundle(
        origins=origins,
        directions=directions,
        pixel_area=torch.ones(2, 1),
        camera_indices=torch.zeros(2, 1, dtype=torch.long),
    )
    outputs = model(bundle)
    assert list(outputs)[:3] == ["rgb", "accumulation", "depth"]
    assert all(not v.requires_grad for v in outputs.values() if isinstance(v, torch.Tensor))
    assert float(outputs["accumulation"][0]) > 0.99 and float(outputs["accumulation"][1]) == 0.0
    # The missed ray never meets the sqrt(3) sphere around the box either: it ends where it is closest to it.
    assert float(outputs["depth"][1]) == pytest.approx(3.0, abs=1e-4)
    assert float(outputs["depth"][0]) == pytest.approx(2.5, abs=0.05)  # the initial sphere is met at z = 0.5


def test_surface_smoothness_compares_normals_on_the_surface_and_trains_the_field():
    """The term is the squared difference of unit normals at each opaque ray's surface point and a neighbour: small
    on the smooth initial sphere, larger once the SDF carries bumps, and its gradient reaches the grid."""
    model = small_model("rnb-sdf")
    model.config.surface_smoothness_loss_mult = 1.0
    model.config.surface_smoothness_radius = 0.02
    model.set_step(0)
    model.variance.set_floor(500.0)
    model.train()
    generator = torch.Generator().manual_seed(0)
    targets = F.normalize(torch.randn(256, 3, generator=generator), dim=-1) * 0.3
    origins = targets * 0 + torch.tensor([0.0, 0.0, 3.0])
    directions = F.normalize(targets - origins, dim=-1)
    bundle = RayBundle(origins=origins, directions=directions, pixel_area=torch.ones(256, 1))

    def loss() -> torch.Tensor:
        volume, value = model.regulariser_gradients(model.sample(bundle))
        assert value is not None and volume.shape == (model.config.num_eikonal_points, 3)
        return value

    # On the sphere of radius 0.5, neighbours 0.02 apart have normals about 0.02 / 0.5 rad apart.
    smooth = float(loss())
    assert smooth < 3 * (0.02 / 0.5) ** 2
    model.field.set_active_levels(model.config.sdf_field.num_levels)
    with torch.no_grad():
        for table in model.field.grid.tables:
            table.normal_(std=0.2)
        model.field.layers[-1].weight.normal_(std=0.2)
    bumpy = loss()
    assert float(bumpy) > 5 * smooth
    bumpy.backward()
    assert all(table.grad is not None and table.grad.abs().sum() > 0 for table in model.field.grid.tables)
    model.config.surface_smoothness_loss_mult = 0.0
    assert model.regulariser_gradients(model.sample(bundle))[1] is None
