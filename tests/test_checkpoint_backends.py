"""Hash-grid checkpoints are backend-neutral, the backend follows the device, and loads are strict.

tinycudann is not installable here, so its side is checked against the parameter layout it uses: a
tinycudann-backed module holds one flat parameter ``_tcnn_encoding.params`` (levels in order, each
level's entries x-fastest, dense levels padded to a multiple of 8, hashed levels indexed by tcnn's
XOR-of-primes hash in uint32 arithmetic). ``tcnn_lookup`` below evaluates that layout directly, written
from tiny-cuda-nn's grid encoding, independently of the module's own torch path. A stand-in for
``tinycudann.Encoding`` (same constructor, the same single ``params`` parameter) lets the module build
its tinycudann backend without CUDA, so saving from and loading into that backend runs too.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from recon_plugin.components import encodings
from recon_plugin.components.encodings import HashGridEncoding, select_backend
from recon_plugin.components.sdf_field import ReconSDFFieldConfig

# Small, with two dense levels (8^3 and 12^3 entries fit in 2^12) and two hashed ones.
GRID = dict(num_levels=4, features_per_level=2, log2_hashmap_size=12, base_resolution=8, max_resolution=27)


def tcnn_levels(num_levels, log2_hashmap_size, base_resolution, per_level_scale):
    """(scale, resolution, entries) per level, as tiny-cuda-nn's grid encoding sizes its parameter table."""
    levels = []
    for level in range(num_levels):
        scale = base_resolution * per_level_scale**level - 1.0
        resolution = math.ceil(scale) + 1
        entries = min(2**log2_hashmap_size, (resolution**3 + 7) // 8 * 8)
        levels.append((scale, resolution, entries))
    return levels


def grid_levels(config: dict) -> list[tuple[float, int, int]]:
    per_level_scale = (config["max_resolution"] / config["base_resolution"]) ** (1.0 / (config["num_levels"] - 1))
    return tcnn_levels(config["num_levels"], config["log2_hashmap_size"], config["base_resolution"], per_level_scale)


def tcnn_lookup(params: torch.Tensor, config: dict, point: list[float]) -> list[float]:
    """Trilinear hash-grid features of one point, read from a flat tinycudann parameter vector."""
    features = config["features_per_level"]
    out, offset = [], 0
    for scale, resolution, entries in grid_levels(config):
        pos = [x * scale + 0.5 for x in point]
        cell = [math.floor(p) for p in pos]
        frac = [p - c for p, c in zip(pos, cell, strict=True)]
        level_features = [0.0] * features
        for corner in range(8):
            c = [cell[d] + ((corner >> d) & 1) for d in range(3)]
            weight = math.prod(frac[d] if (corner >> d) & 1 else 1.0 - frac[d] for d in range(3))
            if resolution**3 <= entries:
                index = c[0] + resolution * (c[1] + resolution * c[2])
            else:
                index = ((c[0] * 1) ^ (c[1] * 2654435761) ^ (c[2] * 805459861)) & 0xFFFFFFFF
            index %= entries
            for f in range(features):
                level_features[f] += weight * float(params[(offset + index) * features + f])
        out += level_features
        offset += entries
    return out


class FakeTcnnEncoding(nn.Module):
    """Stands in for ``tinycudann.Encoding``: same constructor, same single flat ``params`` parameter."""

    def __init__(self, n_input_dims: int, encoding_config: dict, seed: int = 1337, dtype=None) -> None:
        super().__init__()
        levels = tcnn_levels(
            encoding_config["n_levels"],
            encoding_config["log2_hashmap_size"],
            encoding_config["base_resolution"],
            encoding_config["per_level_scale"],
        )
        count = sum(entries for _, _, entries in levels) * encoding_config["n_features_per_level"]
        self.params = nn.Parameter(torch.empty(count).uniform_(-1e-4, 1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("HashGridEncoding must not call tinycudann on a CPU tensor")


def build_tcnn_backed(monkeypatch, build):
    """Whatever ``build()`` constructs gets the (stand-in) tinycudann backend for its hash grid."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=FakeTcnnEncoding))
        patch.setattr(encodings, "select_backend", lambda implementation, device: "tcnn")
        return build()


def random_points(count: int, seed: int) -> torch.Tensor:
    """Points in [0.05, 0.9]^3. Nearer the upper faces tinycudann's dense levels read a corner one past the
    last vertex (index arithmetic wraps into the next row), where the torch path clamps: a border quirk,
    not a layout question, and outside the unit sphere in the SDF field's mapping."""
    return torch.rand(count, 3, generator=torch.Generator().manual_seed(seed)) * 0.85 + 0.05


def randomised(grid: HashGridEncoding, seed: int) -> HashGridEncoding:
    generator = torch.Generator().manual_seed(seed)
    grid.load_flat_table(torch.randn(grid.num_table_entries, grid.features_per_level, generator=generator))
    return grid


# ---------------------------------------------------------------- the neutral table and tcnn's layout


def test_layout_mirrors_tinycudann_parameter_count():
    grid = HashGridEncoding(**GRID, implementation="torch")
    levels = grid_levels(GRID)
    assert grid.level_sizes_list == [entries for _, _, entries in levels]
    assert grid.level_is_dense_list == [True, True, False, False], "the config must exercise both kinds of level"


def test_state_dict_holds_only_the_neutral_table():
    grid = randomised(HashGridEncoding(**GRID, implementation="torch"), seed=0)
    state = grid.state_dict()
    assert list(state) == ["table"]
    assert state["table"].shape == (grid.num_table_entries, 2)
    assert torch.equal(state["table"], grid.flat_table())


@pytest.mark.parametrize("key", ["_tcnn_encoding.params", "table"])
def test_tinycudann_checkpoint_loads_into_the_torch_backend(key):
    """A state dict as a tinycudann-backed module writes it (old raw params, or the neutral table)."""
    params = torch.randn(sum(e for _, _, e in grid_levels(GRID)) * 2, generator=torch.Generator().manual_seed(1))
    stored = params if key == "_tcnn_encoding.params" else params.reshape(-1, 2)
    grid = HashGridEncoding(**GRID, implementation="torch")
    grid.load_state_dict({key: stored})
    assert torch.equal(grid.flat_table().reshape(-1), params)
    points = random_points(40, seed=2)
    expected = torch.tensor([tcnn_lookup(params, GRID, p) for p in points.tolist()])
    assert torch.allclose(grid(points), expected, atol=1e-5)
    grid.force_gather = True  # dense levels through the gather path give the same values
    assert torch.allclose(grid(points), expected, atol=1e-5)


def test_torch_backend_round_trips_through_the_tinycudann_backend(monkeypatch):
    source = randomised(HashGridEncoding(**GRID, implementation="torch"), seed=3)
    points = random_points(500, seed=4)
    before = source(points)
    tcnn_grid = build_tcnn_backed(monkeypatch, lambda: HashGridEncoding(**GRID))
    assert tcnn_grid.backend == "tcnn" and tcnn_grid.tables is None
    tcnn_grid.load_state_dict(source.state_dict())
    # In the tinycudann backend the table *is* its parameter vector.
    assert torch.equal(tcnn_grid._tcnn_encoding.params.detach(), source.flat_table().reshape(-1))
    saved = tcnn_grid.state_dict()
    assert list(saved) == ["table"]
    target = HashGridEncoding(**GRID, implementation="torch")
    target.load_state_dict(saved)
    assert torch.equal(target(points), before)


def test_old_torch_checkpoint_with_per_level_keys_loads_into_the_tinycudann_backend(monkeypatch):
    source = randomised(HashGridEncoding(**GRID, implementation="torch"), seed=12)
    old_state = {f"tables.{level}": table.detach().clone() for level, table in enumerate(source.tables)}
    tcnn_grid = build_tcnn_backed(monkeypatch, lambda: HashGridEncoding(**GRID))
    tcnn_grid.load_state_dict(old_state)
    assert torch.equal(tcnn_grid.flat_table(), source.flat_table())


def test_old_torch_checkpoint_loads_into_the_torch_backend():
    source = randomised(HashGridEncoding(**GRID, implementation="torch"), seed=5)
    old_state = {f"tables.{level}": table.detach().clone() for level, table in enumerate(source.tables)}
    target = HashGridEncoding(**GRID, implementation="torch")
    target.load_state_dict(old_state)
    points = random_points(300, seed=6)
    assert torch.equal(target(points), source(points))


def test_table_of_another_configuration_is_an_error_naming_the_key():
    other = HashGridEncoding(**{**GRID, "num_levels": 3}, implementation="torch")
    grid = HashGridEncoding(**GRID, implementation="torch")
    with pytest.raises(RuntimeError, match=r"size mismatch for table: .*another hash-grid configuration"):
        grid.load_state_dict(other.state_dict())
    with pytest.raises(RuntimeError, match=r"size mismatch for table: tables\.1 has shape \(1, 2, 15, 15, 15\)"):
        grid.load_state_dict({f"tables.{level}": t.detach() for level, t in enumerate(other.tables)})


def test_missing_table_is_reported_once_under_its_own_key():
    grid = HashGridEncoding(**GRID, implementation="torch")
    before = grid.flat_table()
    result = grid.load_state_dict({}, strict=False)
    assert result.missing_keys == ["table"] and result.unexpected_keys == []
    assert torch.equal(grid.flat_table(), before)
    with pytest.raises(RuntimeError, match="more than once"):
        grid.load_state_dict({"table": before, "_tcnn_encoding.params": before.reshape(-1)})


def test_sdf_field_moves_between_backends_with_the_same_sdf(monkeypatch):
    config = ReconSDFFieldConfig(num_levels=4, features_per_level=2, log2_hashmap_size=12, max_resolution=48)
    torch_field = config.setup()
    randomised(torch_field.grid, seed=7)
    nn.init.normal_(torch_field.layers[-1].weight, std=0.1)  # the SDF row starts at zero (an exact sphere)
    points = (torch.rand(800, 3, generator=torch.Generator().manual_seed(8)) * 2.0 - 1.0) * 0.9
    sdf = torch_field.get_sdf(points)
    tcnn_field = build_tcnn_backed(monkeypatch, config.setup)
    tcnn_field.load_state_dict(torch_field.state_dict())
    assert set(tcnn_field.state_dict()) == set(torch_field.state_dict()), "the checkpoint keys name no backend"
    fresh = config.setup()
    fresh.load_state_dict(tcnn_field.state_dict())
    assert torch.equal(fresh.get_sdf(points), sdf)
    assert not torch.equal(config.setup().get_sdf(points), sdf), "a fresh field must differ, or the check is void"


# ---------------------------------------------------------------- backend choice


def test_backend_follows_the_device_not_cuda_availability(monkeypatch):
    monkeypatch.setattr(encodings, "tcnn_importable", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_backend("auto", "cpu") == "torch"
    assert select_backend("auto", torch.device("cpu")) == "torch"
    assert select_backend("auto", None) == "torch"  # torch's default device, the CPU here
    assert select_backend("auto", "cuda:0") == "tcnn"
    assert select_backend("torch", "cuda") == "torch"
    with pytest.raises(ValueError, match="needs a CUDA device, but the model runs on cpu"):
        select_backend("tcnn", "cpu")
    monkeypatch.setattr(encodings, "tcnn_importable", lambda: False)
    assert select_backend("auto", "cuda") == "torch"
    with pytest.raises(RuntimeError, match="tiny-cuda-nn/#subdirectory=bindings/torch"):
        select_backend("tcnn", "cuda")
    with pytest.raises(ValueError, match="'auto', 'tcnn' or 'torch'"):
        select_backend("cuda", "cuda")


def test_a_cpu_field_builds_the_torch_path_even_when_tinycudann_imports(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", types.SimpleNamespace(Encoding=FakeTcnnEncoding))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert encodings.tcnn_importable()
    field = ReconSDFFieldConfig(num_levels=2, max_resolution=16).setup(device="cpu")
    assert field.grid.backend == "torch" and field.grid.tables is not None


def test_tinycudann_backend_on_cpu_fails_with_a_clear_message(monkeypatch):
    grid = build_tcnn_backed(monkeypatch, lambda: HashGridEncoding(**GRID))
    with pytest.raises(RuntimeError, match="runs on CUDA only.*checkpoints are backend-neutral"):
        grid(random_points(10, seed=9))


# ---------------------------------------------------------------- strict pipeline loading


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    from recon_plugin.data.synthetic.rnb import write_rnb_scene

    path = tmp_path_factory.mktemp("scene")
    write_rnb_scene(path, shape="sphere", views=3, size=16, mesh_resolution=24, log=None)
    return path


def make_pipeline(scene: Path, num_levels: int = 3):
    from recon_plugin.methods.rnb_sdf.config import rnb_sdf_config

    config = rnb_sdf_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.model.sdf_field.num_levels = num_levels
    config.pipeline.model.sdf_field.max_resolution = 32
    config.pipeline.model.sdf_field.log2_hashmap_size = 12  # the finest level is hashed
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_pipeline_passes_its_device_to_the_hash_grid_and_loads_strictly(scene, monkeypatch):
    requested = []

    def recording_select_backend(implementation, device):
        requested.append(device)
        return "torch"

    monkeypatch.setattr(encodings, "select_backend", recording_select_backend)
    source = make_pipeline(scene)
    assert requested == ["cpu"], "the model must build its field for nerfstudio's device"
    monkeypatch.undo()
    randomised(source.model.field.grid, seed=10)
    nn.init.normal_(source.model.field.layers[-1].weight, std=0.1)
    points = (torch.rand(500, 3, generator=torch.Generator().manual_seed(11)) * 2.0 - 1.0) * 0.9
    expected = source.model.field.get_sdf(points)
    state = source.state_dict()
    assert "_model.field.grid.table" in state

    target = make_pipeline(scene)
    target.load_pipeline(state, step=0)
    assert torch.equal(target.model.field.get_sdf(points), expected)

    # Saved from a DDP-wrapped model, and from before the neutral table: both load.
    grid_key = "_model.field.grid.table"
    old = {key: value for key, value in state.items() if key != grid_key}
    for level, values in enumerate(source.model.field.grid._flat_to_levels(state[grid_key])):
        old[f"_model.field.grid.tables.{level}"] = values
    ddp = {key.replace("_model.", "_model.module.", 1): value for key, value in old.items()}
    fresh = make_pipeline(scene)
    fresh.load_pipeline(ddp, step=0)
    assert torch.equal(fresh.model.field.get_sdf(points), expected)

    with pytest.raises(RuntimeError, match=r"unexpected keys \['_model\.field\.extra'\]"):
        fresh.load_pipeline({**state, "_model.field.extra": torch.zeros(1)}, step=0)
    without = {key: value for key, value in state.items() if key != "_model.field.layers.0.weight"}
    with pytest.raises(RuntimeError, match=r"missing keys \['_model\.field\.layers\.0\.weight'\]"):
        fresh.load_pipeline(without, step=0)
    with pytest.raises(RuntimeError, match=r"unexpected keys \['datamanager\.bogus'\]"):
        fresh.load_pipeline({**state, "datamanager.bogus": torch.zeros(1)}, step=0)
    with pytest.raises(RuntimeError, match="size mismatch for field.grid.table"):
        make_pipeline(scene, num_levels=2).load_pipeline(state, step=0)
