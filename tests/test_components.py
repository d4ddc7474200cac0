"""Shared building blocks: lights, RGB+, SDF field init, hash grid, NeuS sampling, schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recon_plugin.components.encodings import HashGridEncoding, tcnn_importable
from recon_plugin.components.neus import (
    SDFGridCache,
    alpha_to_weights,
    intersect_unit_sphere,
    neus_alpha,
    surface_sample_distances,
)
from recon_plugin.components.schedules import WarmupCosineSchedulerConfig, warmup_cosine_factor
from recon_plugin.components.sdf_field import ReconSDFFieldConfig
from recon_plugin.components.shading import (
    OPTIMAL_SLANT_DEG,
    fixed_triplet_camera,
    fixed_triplet_world,
    optimal_triplet,
    orthonormal_tangents,
    rgb_plus,
)


def random_unit(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, 3, generator=generator), dim=-1)


# ---------------------------------------------------------------- lights


def test_optimal_triplet_is_orthonormal_and_symmetric_about_the_normal():
    normals = torch.cat([random_unit(2000), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])])
    lights = optimal_triplet(normals)
    gram = lights @ lights.transpose(-1, -2)
    assert torch.allclose(gram, torch.eye(3).expand_as(gram), atol=1e-5)
    cosines = (lights * normals[:, None, :]).sum(-1)
    assert torch.allclose(cosines, torch.full_like(cosines, 1.0 / math.sqrt(3.0)), atol=1e-5)


def test_tangent_frame_is_right_handed_everywhere():
    normals = torch.cat([random_unit(1000, seed=1), torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])])
    t1, t2 = orthonormal_tangents(normals)
    assert torch.allclose(torch.linalg.cross(t1, t2), normals, atol=1e-5)
    assert torch.allclose((t1 * normals).sum(-1), torch.zeros(len(normals)), atol=1e-5)


def test_fixed_triplet_points_back_at_the_camera_and_rotates_to_world():
    lights = fixed_triplet_camera(30.0)
    # OpenGL camera axes: +z points towards the viewer; a frontal normal sees cos(slant).
    frontal = torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(lights @ frontal, torch.full((3,), math.cos(math.radians(30.0))), atol=1e-6)
    optimal = fixed_triplet_camera(OPTIMAL_SLANT_DEG)
    assert torch.allclose(optimal @ optimal.T, torch.eye(3), atol=1e-5)

    angle = 0.7
    rotation = torch.tensor(
        [[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0], [-math.sin(angle), 0.0, math.cos(angle)]]
    )
    world = fixed_triplet_world(30.0, rotation[None])[0]
    assert torch.allclose(world, (rotation @ lights.T).T, atol=1e-6)
    # A normal facing the camera in world coordinates gets the same shading as in the camera frame.
    assert torch.allclose(world @ (rotation @ frontal), lights @ frontal, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_rgb_plus_fourth_channel_fixes_the_norm(loss_type):
    albedo = torch.rand(500, 3, generator=torch.Generator().manual_seed(3))
    extended = rgb_plus(albedo, loss_type)
    assert extended.shape == (500, 4)
    if loss_type == "l2":
        assert torch.allclose(extended.norm(dim=-1), torch.full((500,), math.sqrt(3.0)), atol=1e-4)
    else:
        assert torch.allclose(extended.abs().sum(-1), torch.full((500,), 3.0), atol=1e-5)
    # A dark pixel keeps a strong signal in the fourth channel.
    assert rgb_plus(torch.zeros(1, 3), loss_type)[0, 3] > 1.5


# ---------------------------------------------------------------- SDF field and encodings


def test_geometric_init_is_a_sphere():
    field = ReconSDFFieldConfig(init_radius=0.5).setup()
    points = (torch.rand(4000, 3, generator=torch.Generator().manual_seed(0)) * 2.0 - 1.0) * 0.95
    sdf = field.get_sdf(points)[:, 0]
    assert torch.allclose(sdf, points.norm(dim=-1) - 0.5, atol=1e-5)
    _, _, gradient = field.get_sdf_and_gradient(points[points.norm(dim=-1) > 0.1], create_graph=False)
    assert torch.allclose(gradient.norm(dim=-1), torch.ones(len(gradient)), atol=1e-4)


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_hash_grid_dense_fast_path_equals_reference_gather(interpolation):
    """Values, spatial derivatives and the eikonal term's double backward of the grid_sample path equal the
    gather path's (smoothstep through a warp of the lookup position). Compared in float64: in float32 the table
    gradients of the two summation orders differ by about 1e-3 of their largest entry (cancellation), which
    would hide nothing and flag noise."""
    torch.manual_seed(0)
    grid = HashGridEncoding(
        num_levels=4,
        features_per_level=2,
        log2_hashmap_size=18,
        max_resolution=64,
        interpolation=interpolation,
        implementation="torch",
    )
    grid.double()
    for table in grid.tables:
        torch.nn.init.normal_(table, std=0.1)
    points = (torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05).double()

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        grid.zero_grad()
        positions = points.clone().requires_grad_(True)
        values = grid(positions)
        (spatial,) = torch.autograd.grad(values[:, ::3].sum(), positions, create_graph=True)
        (spatial**2).sum().backward()
        return values.detach(), spatial.detach(), [table.grad.clone() for table in grid.tables]

    fast = run()
    grid.force_gather = True
    reference = run()
    assert torch.allclose(fast[0], reference[0], atol=1e-10)
    assert torch.allclose(fast[1], reference[1], atol=1e-9 * float(reference[1].abs().max()))
    for fast_grad, reference_grad in zip(fast[2], reference[2], strict=True):
        assert torch.allclose(fast_grad, reference_grad, atol=1e-9 * float(reference_grad.abs().max()))


def test_hash_grid_hashed_levels_and_flat_table_roundtrip():
    grid = HashGridEncoding(
        num_levels=6,
        features_per_level=2,
        log2_hashmap_size=12,
        base_resolution=8,
        max_resolution=128,
        implementation="torch",
    )
    assert not all(grid.level_is_dense_list), "the config must exercise true hashing"
    for table in grid.tables:
        torch.nn.init.normal_(table, std=0.1)
    points = torch.rand(2000, 3, generator=torch.Generator().manual_seed(2))
    before = grid(points)
    flat = grid.flat_table()
    assert flat.shape == (sum(grid.level_sizes_list), 2)
    grid.load_flat_table(torch.zeros_like(flat))
    assert grid(points).abs().max() == 0
    grid.load_flat_table(flat)
    assert torch.allclose(grid(points), before)


@pytest.mark.skipif(
    not (torch.cuda.is_available() and tcnn_importable()),
    reason="tinycudann and a CUDA device are needed for the parity check",
)
def test_hash_grid_torch_matches_tinycudann():
    config = dict(num_levels=8, features_per_level=2, log2_hashmap_size=15, base_resolution=16, max_resolution=512)
    fast = HashGridEncoding(**config, implementation="tcnn", device="cuda").cuda()
    reference = HashGridEncoding(**config, implementation="torch").cuda()
    reference.load_flat_table(fast.flat_table())
    points = torch.rand(10000, 3, device="cuda") * 0.9 + 0.05
    assert torch.allclose(fast(points), reference(points), atol=1e-3)
    reference.force_gather = True
    assert torch.allclose(fast(points), reference(points), atol=1e-3)


def test_eikonal_double_backward_reaches_grid_and_mlp():
    field = ReconSDFFieldConfig(num_levels=3, max_resolution=32, log2_hashmap_size=16).setup()
    for table in field.grid.tables:
        torch.nn.init.normal_(table, std=0.05)
    torch.nn.init.normal_(field.layers[-1].weight, std=0.1)  # the SDF row starts at zero (exact sphere)
    points = (torch.rand(256, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1) * 0.8
    _, _, gradient = field.get_sdf_and_gradient(points, create_graph=True)
    loss = ((gradient.norm(dim=-1) - 1.0) ** 2).mean()
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in field.grid.tables)
    assert field.layers[0].weight.grad.abs().sum() > 0

    # The autograd gradient is the true spatial derivative (compare with central differences).
    with torch.no_grad():
        delta = 1e-4
        offsets = torch.eye(3) * delta
        numeric = torch.stack(
            [(field.get_sdf(points + o)[:, 0] - field.get_sdf(points - o)[:, 0]) / (2 * delta) for o in offsets], -1
        )
    # (trilinear features have kinks at cell faces, where a central difference straddles two cells)
    close = ((gradient.detach() - numeric).abs() < 1e-2).all(dim=-1)
    assert float(close.float().mean()) > 0.95


def test_double_backward_of_grid_lookup_is_exact():
    from torch.autograd import gradgradcheck

    grid = HashGridEncoding(
        num_levels=2,
        features_per_level=2,
        log2_hashmap_size=12,
        base_resolution=4,
        max_resolution=6,
        implementation="torch",
    ).double()
    points = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.1
    points.requires_grad_(True)
    tables = list(grid.tables)
    assert gradgradcheck(lambda p, *t: grid(p), (points, *tables), eps=1e-6, atol=1e-4)


def test_dense_levels_use_the_gather_path_where_grid_sample_has_no_double_backward(monkeypatch):
    from recon_plugin.components import encodings

    grid = HashGridEncoding(
        num_levels=2, features_per_level=2, log2_hashmap_size=15, base_resolution=8, max_resolution=16
    ).double()  # float32 sums differ in the last bits between the two paths
    assert all(grid.level_is_dense_list)
    for table in grid.tables:
        torch.nn.init.normal_(table, std=0.1)
    points = torch.rand(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 0.8 + 0.1
    points.requires_grad_(True)

    def eikonal_like_gradients():
        """Spatial gradient of the features, and the table gradients of a loss on it (double backward)."""
        for table in grid.tables:
            table.grad = None
        (spatial,) = torch.autograd.grad(grid(points).square().sum(), points, create_graph=True)
        spatial.square().sum().backward()
        return [spatial.detach()] + [table.grad.clone() for table in grid.tables]

    dense_calls = []
    dense_level = grid._dense_level
    monkeypatch.setattr(grid, "_dense_level", lambda *args: dense_calls.append(1) or dense_level(*args))
    reference = eikonal_like_gradients()  # through grid_sample where this torch differentiates it twice
    monkeypatch.setattr(encodings, "grid_sample_double_backward_supported", lambda: False)
    dense_calls.clear()
    fallback = eikonal_like_gradients()
    assert not dense_calls, "with autograd on, grid_sample must not be used where it cannot differentiate twice"
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-10) for a, b in zip(reference, fallback, strict=True))
    with torch.no_grad():
        grid(points)
    assert len(dense_calls) == 2, "without autograd the fast path still reads dense levels"


# ---------------------------------------------------------------- NeuS


def test_sphere_intersection():
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.0, 2.0, -3.0], [0.0, 0.0, 0.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    near, far, hit = intersect_unit_sphere(origins, directions)
    assert hit.tolist() == [True, False, True]
    assert torch.allclose(near[[0, 2]], torch.tensor([2.0, 0.0]))
    assert torch.allclose(far[[0, 2]], torch.tensor([4.0, 1.0]))


def test_neus_weights_peak_at_the_surface_and_sum_to_one():
    t = torch.linspace(0.0, 2.0, 401)[None]
    sdf = 1.0 - t  # plane crossed at t = 1, walking straight into it
    mids = (t[:, 1:] + t[:, :-1]) / 2
    deltas = t[:, 1:] - t[:, :-1]
    alpha = neus_alpha(1.0 - mids, -torch.ones_like(mids), deltas, torch.tensor(200.0), 1.0)
    weights = alpha_to_weights(alpha)
    assert abs(float(weights.sum()) - 1.0) < 1e-3
    assert abs(float(mids[0, weights.argmax()]) - 1.0) < 0.01
    assert sdf.shape == t.shape


def test_surface_sampling_concentrates_samples_at_the_surface():
    radius = 0.6

    def sphere_sdf(points: torch.Tensor) -> torch.Tensor:
        return points.norm(dim=-1) - radius

    cache = SDFGridCache(resolution=32)
    cache.refresh(sphere_sdf)
    origins = torch.tensor([[0.0, 0.0, -3.0]]).repeat(64, 1)
    origins[:, 0] = torch.linspace(-0.3, 0.3, 64)
    directions = torch.tensor([[0.0, 0.0, 1.0]]).repeat(64, 1)
    near, far, _ = intersect_unit_sphere(origins, directions)
    boundaries = surface_sample_distances(
        origins, directions, near, far, cache, sphere_sdf, inv_s=800.0, num_render=16, deterministic=True
    )
    true_hit = 3.0 - torch.sqrt(radius**2 - origins[:, 0] ** 2)
    mids = (boundaries[:, 1:] + boundaries[:, :-1]) / 2
    distance_to_hit = (mids - true_hit[:, None]).abs()
    assert bool((distance_to_hit.min(dim=-1).values < 0.01).all())
    assert float((distance_to_hit < 0.1).float().mean()) > 0.75


# ---------------------------------------------------------------- schedules


def test_warmup_cosine_schedule_follows_run_length_and_returns_floats():
    factors = [warmup_cosine_factor(step, 1000, 20, 0.05) for step in range(1001)]
    assert all(type(f) is float for f in factors)
    assert factors[0] == pytest.approx(1 / 20) and factors[19] == pytest.approx(1.0)
    assert factors[1000] == pytest.approx(0.05)
    assert factors[510] == pytest.approx(0.05 + 0.95 * 0.5, abs=0.01)

    config = WarmupCosineSchedulerConfig(max_steps=100)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = config.setup().get_scheduler(optimizer, 1.0)
    for _ in range(100):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert all(type(v) is float for v in scheduler.state_dict()["_last_lr"])
    with pytest.raises(ValueError, match="max_steps"):
        WarmupCosineSchedulerConfig().setup().get_scheduler(optimizer, 1.0)
