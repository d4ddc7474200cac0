"""The torch hash-grid path on a CUDA device: same values, gradients and double backward as on the CPU,
and checkpoints that move between the devices. Skipped where no CUDA device exists (CI).

Only ``recon_plugin.components.encodings`` is imported at module level (no nerfstudio), so the file runs on
a bare GPU machine; the SDF-field check needs nerfstudio and skips without it.
"""

from __future__ import annotations

import io

import pytest
import torch

from recon_plugin.components.encodings import HashGridEncoding, select_backend, tcnn_importable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Three dense levels (8^3, 14^3, 24^3 entries fit in 2^14) and three hashed ones.
CONFIG = dict(num_levels=6, features_per_level=2, log2_hashmap_size=14, base_resolution=8, max_resolution=128)


def grid_pair(dtype: torch.dtype) -> tuple[HashGridEncoding, HashGridEncoding]:
    """The same random table in a CPU and a CUDA torch-backend grid."""
    cpu = HashGridEncoding(**CONFIG, implementation="torch").to(dtype)
    generator = torch.Generator().manual_seed(0)
    cpu.load_flat_table(torch.randn(cpu.num_table_entries, 2, generator=generator, dtype=dtype))
    cuda = HashGridEncoding(**CONFIG, implementation="torch", device="cuda").to(device="cuda", dtype=dtype)
    cuda.load_state_dict(cpu.state_dict())
    return cpu, cuda


def eikonal_like(grid: HashGridEncoding, points: torch.Tensor) -> list[torch.Tensor]:
    """Features, their spatial gradient (create_graph) and the table gradients of a loss on both."""
    for table in grid.tables:
        table.grad = None
    points = points.detach().requires_grad_(True)
    features = grid(points)
    (spatial,) = torch.autograd.grad(features.square().sum(), points, create_graph=True)
    (spatial.square().sum() + features.sum()).backward()
    return [features.detach(), spatial.detach()] + [table.grad for table in grid.tables]


def points_on(count: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.rand(count, 3, generator=torch.Generator().manual_seed(1), dtype=dtype) * 0.9 + 0.05


@pytest.mark.parametrize("force_gather", [False, True])
def test_cuda_matches_cpu_to_double_precision(force_gather):
    cpu, cuda = grid_pair(torch.float64)
    cpu.force_gather = cuda.force_gather = force_gather
    points = points_on(20000, torch.float64)
    for on_cpu, on_cuda in zip(eikonal_like(cpu, points), eikonal_like(cuda, points.cuda()), strict=True):
        assert on_cuda.is_cuda
        assert torch.allclose(on_cuda.cpu(), on_cpu, rtol=1e-9, atol=1e-9)


def test_cuda_matches_cpu_in_float32():
    cpu, cuda = grid_pair(torch.float32)
    points = points_on(20000, torch.float32)
    for on_cpu, on_cuda in zip(eikonal_like(cpu, points), eikonal_like(cuda, points.cuda()), strict=True):
        # float32 sums in another order (atomic adds on the GPU): compare relative to the magnitude.
        scale = float(on_cpu.abs().max())
        assert float((on_cuda.cpu() - on_cpu).abs().max()) <= 1e-4 * scale


def test_checkpoint_moves_between_cuda_and_cpu():
    cpu, cuda = grid_pair(torch.float32)
    points = points_on(5000, torch.float32)
    state = cuda.state_dict()
    assert list(state) == ["table"] and state["table"].is_cuda
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location="cpu", weights_only=True)
    fresh_cpu = HashGridEncoding(**CONFIG, implementation="torch")
    fresh_cpu.load_state_dict(loaded)
    with torch.no_grad():
        expected = cuda(points.cuda()).cpu()
        assert torch.allclose(fresh_cpu(points), expected, atol=1e-6)
        fresh_cuda = HashGridEncoding(**CONFIG, device="cuda").cuda()
        fresh_cuda.load_state_dict(loaded)
        assert torch.allclose(fresh_cuda(points.cuda()).cpu(), expected, atol=1e-6)


def test_auto_backend_on_cuda_is_tinycudann_only_when_it_imports():
    expected = "tcnn" if tcnn_importable() else "torch"
    assert select_backend("auto", "cuda") == expected
    assert select_backend("auto", "cpu") == "torch"
    assert HashGridEncoding(**CONFIG, device="cuda").backend == expected


def test_sdf_field_eikonal_on_cuda_matches_cpu():
    pytest.importorskip("nerfstudio")
    from recon_plugin.components.sdf_field import ReconSDFFieldConfig

    config = ReconSDFFieldConfig(num_levels=4, max_resolution=64, log2_hashmap_size=15, implementation="torch")
    cpu = config.setup(device="cpu")
    torch.nn.init.normal_(cpu.layers[-1].weight, std=0.1)
    cpu.grid.load_flat_table(torch.randn(cpu.grid.num_table_entries, 4, generator=torch.Generator().manual_seed(2)))
    cuda = config.setup(device="cuda").cuda()
    cuda.load_state_dict(cpu.state_dict())
    points = (torch.rand(4000, 3, generator=torch.Generator().manual_seed(3)) * 2.0 - 1.0) * 0.9
    results = []
    for field, device in ((cpu, "cpu"), (cuda, "cuda")):
        _, _, gradient = field.get_sdf_and_gradient(points.to(device), create_graph=True)
        ((gradient.norm(dim=-1) - 1.0) ** 2).mean().backward()
        results.append([gradient.detach().cpu(), field.layers[0].weight.grad.cpu()])
    for on_cpu, on_cuda in zip(*results, strict=True):
        assert float((on_cuda - on_cpu).abs().max()) <= 1e-4 * float(on_cpu.abs().max())
