"""Equirect environment maps: mapping, lookup, solid angles, procedural HDR maps, prefiltering, file IO."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from recon_plugin.components.environment import (
    direction_to_equirect_uv,
    equirect_pixel_directions,
    equirect_solid_angles,
    equirect_uv_to_direction,
    prefilter_equirect_diffuse,
    prefilter_equirect_ggx,
    procedural_environment,
    read_environment,
    sample_equirect,
    sample_prefiltered,
    write_environment,
)
from recon_plugin.components.shading import sample_ggx_reflection

F64 = torch.float64


def test_mapping_convention_and_round_trip() -> None:
    axes = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=F64)
    uv = direction_to_equirect_uv(axes)
    assert torch.allclose(uv[:, 1], torch.tensor([0, 0.5, 0.5, 0.5, 0.5], dtype=F64))  # zenith on row 0
    assert torch.allclose(uv[1:, 0], torch.tensor([0.5, 0.25, 0.0, 0.75], dtype=F64))  # +x centre, +y to its left
    directions = torch.nn.functional.normalize(torch.randn(100, 3, dtype=F64), dim=-1)
    assert torch.allclose(equirect_uv_to_direction(direction_to_equirect_uv(directions)), directions, atol=1e-12)


def test_lookups_at_the_poles_are_continuous_and_independent_of_longitude() -> None:
    env = torch.rand(8, 16, 3, dtype=F64)
    # straight up and down: the mean of the first/last row, whatever longitude atan2 gives the direction
    for z, row in ((1.0, 0), (-1.0, 7)):
        for x, y in ((0.0, 0.0), (1e-9, 0.0), (0.0, 1e-9), (-1e-9, -1e-9)):
            pole = torch.nn.functional.normalize(torch.tensor([x, y, z], dtype=F64), dim=0)
            assert torch.allclose(sample_equirect(env, pole), env[row].mean(0), atol=1e-12)
    # approaching the zenith along a meridian: no jump at the first row's centre, the pole value at the pole
    u = 5.5 / 16
    v = torch.linspace(0.0, 1.5 / 8, 401, dtype=F64)
    values = sample_equirect(env, equirect_uv_to_direction(torch.stack([torch.full_like(v, u), v], -1)))
    assert float((values[1:] - values[:-1]).abs().max()) < 0.05
    assert torch.allclose(values[-1], sample_equirect(env, equirect_uv_to_direction(torch.tensor([u, 1.5 / 8]))))
    # a constant map stays constant everywhere
    flat = torch.full((8, 16, 3), 0.7, dtype=F64)
    directions = torch.nn.functional.normalize(torch.randn(1000, 3, dtype=F64), dim=-1)
    assert torch.allclose(sample_equirect(flat, directions), torch.full((1000, 3), 0.7, dtype=F64))


def test_solid_angles_cover_the_sphere() -> None:
    solid = equirect_solid_angles(32, 64, F64)
    assert float(solid.sum()) == pytest.approx(4 * math.pi, rel=1e-12)
    theta = (torch.arange(32, dtype=F64) + 0.5) * math.pi / 32
    approx = torch.sin(theta) * (math.pi / 32) * (2 * math.pi / 64)
    assert torch.allclose(solid[:, 0], approx, rtol=2e-3)


def test_bilinear_lookup_hits_texels_and_wraps_in_longitude() -> None:
    env = torch.rand(8, 16, 3, dtype=F64, requires_grad=True)
    assert torch.allclose(sample_equirect(env, equirect_pixel_directions(8, 16, F64)), env)
    # on the seam u = 0 the lookup blends the last and the first column
    seam = equirect_uv_to_direction(torch.tensor([[0.0, 2.5 / 8]], dtype=F64))
    expected = 0.5 * (env[2, 15] + env[2, 0])
    assert torch.allclose(sample_equirect(env, seam)[0], expected)
    # differentiable w.r.t. the map
    sample_equirect(env, seam).sum().backward()
    assert env.grad is not None and float(env.grad[2, 15].sum()) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="env must be"):
        sample_equirect(torch.ones(8, 16), seam)


def test_procedural_environments_are_seeded_hdr_and_distinct() -> None:
    outdoor = procedural_environment("outdoor", 64, 128, seed=3)
    assert outdoor.shape == (64, 128, 3) and outdoor.dtype == torch.float32
    assert torch.equal(outdoor, procedural_environment("outdoor", 64, 128, seed=3))
    assert not torch.equal(outdoor, procedural_environment("outdoor", 64, 128, seed=4))
    studio = procedural_environment("studio", 64, 128, seed=3)
    solid = equirect_solid_angles(64, 128)[..., None]
    for env in (outdoor, studio):
        assert bool(torch.isfinite(env).all()) and float(env.min()) > 0
        luminance = env.mean(-1)
        assert float(luminance.max()) > 100 * float(luminance.median())  # small, very bright lights
        bright = (luminance > 5).float()[..., None]
        assert float((bright * solid).sum()) < 0.01 * 4 * math.pi  # ... that cover under 1 % of the sphere
    # the two kinds light an object differently: mean colour and where the light comes from
    mean = [(env * solid).sum((0, 1)) / (4 * math.pi) for env in (outdoor, studio)]
    assert float((mean[0] - mean[1]).abs().max()) > 0.1
    with pytest.raises(ValueError, match="kind"):
        procedural_environment("indoor")  # type: ignore[arg-type]


def test_ggx_prefilter_matches_importance_sampled_average() -> None:
    # a smooth map with a strong directional gradient, so the Monte-Carlo reference has little noise
    texels = equirect_pixel_directions(64, 128, F64)
    axis = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8], dtype=F64), dim=0)
    env = torch.exp(3 * texels @ axis)[..., None] * torch.tensor([1.0, 0.6, 0.3], dtype=F64)
    levels = [0.0, 0.5, 1.0]
    prefiltered = prefilter_equirect_ggx(env, levels, height=16)
    assert prefiltered.shape == (3, 16, 32, 3)
    constant = prefilter_equirect_ggx(torch.full((16, 32, 3), 0.7, dtype=F64), [0.3], height=8)
    assert torch.allclose(constant, torch.full_like(constant, 0.7))
    # UE4's estimator with n = v = r: GGX samples around r weighted by n.l
    rows, columns = [3, 8, 12], [5, 20, 30]
    directions = equirect_pixel_directions(16, 32, F64)[rows, columns]
    u = torch.rand(200_000, 2, generator=torch.Generator().manual_seed(2), dtype=F64)  # standard error ~0.25 %
    for index, roughness in ((1, 0.5), (2, 1.0)):
        for k, r in enumerate(directions):
            light, _ = sample_ggx_reflection(r, r, torch.tensor([roughness], dtype=F64), u)
            weight = (light @ r).clamp(min=0)[:, None]
            estimate = (sample_equirect(env, light) * weight).sum(0) / weight.sum()
            reference = prefiltered[index, rows[k], columns[k]]
            assert torch.allclose(reference, estimate, rtol=0.01), (roughness, reference, estimate)
    # a lookup at a level's roughness returns that level; between levels it interpolates linearly
    rough = torch.tensor([[0.5], [0.75]], dtype=F64)
    looked_up = sample_prefiltered(prefiltered, levels, directions[:2], rough)
    assert torch.allclose(looked_up[0], sample_equirect(prefiltered[1], directions[0]))
    both = [sample_equirect(prefiltered[k], directions[1]) for k in (1, 2)]
    assert torch.allclose(looked_up[1], 0.5 * (both[0] + both[1]))


def test_diffuse_prefilter_of_a_white_upper_hemisphere() -> None:
    height = 64
    directions = equirect_pixel_directions(height, 2 * height, F64)
    env = (directions[..., 2:] > 0).to(F64).expand(height, 2 * height, 3)
    diffuse = prefilter_equirect_diffuse(env, height=8)
    normals = equirect_pixel_directions(8, 16, F64)
    # at normal n with elevation e the lit fraction of the cosine lobe is (1 + sin e) / 2
    expected = 0.5 * (1 + normals[..., 2])
    assert torch.allclose(diffuse[..., 0], expected, atol=0.02)


@pytest.mark.parametrize("suffix", [".exr", ".hdr"])
def test_files_round_trip(tmp_path: Path, suffix: str) -> None:
    env = procedural_environment("outdoor", 32, 64, seed=5)
    path = write_environment(tmp_path / f"sub/env{suffix}", env)
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == [path.name]
    loaded = read_environment(path)
    assert loaded.shape == env.shape
    if suffix == ".exr":
        assert torch.equal(loaded, env)
    else:  # RGBE: an 8-bit mantissa shared by the three channels
        assert bool(((loaded - env).abs() <= 0.01 * env.max(-1, keepdim=True).values).all())


def test_bad_files_and_values_are_reported(tmp_path: Path) -> None:
    env = torch.ones(8, 16, 3)
    with pytest.raises(ValueError, match=r"env\.png.*\.hdr"):
        write_environment(tmp_path / "env.png", env)
    target = tmp_path / "neg.exr"
    with pytest.raises(ValueError, match="neg.exr.*negative"):
        write_environment(target, -env)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(FileNotFoundError, match="missing.hdr"):
        read_environment(tmp_path / "missing.hdr")
    (tmp_path / "corrupt.exr").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt.exr"):
        read_environment(tmp_path / "corrupt.exr")
    with pytest.raises(ValueError, match="square.hdr.*twice as wide"):
        write_environment(tmp_path / "square.hdr", torch.ones(8, 8, 3))
    cv2.imwrite(str(tmp_path / "square.hdr"), np.ones((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="square.hdr.*twice as wide"):
        read_environment(tmp_path / "square.hdr")
