"""Real spherical harmonics of any degree and Ref-NeRF's integrated directional encoding (components/encodings.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ive

from recon_plugin.components.encodings import IntegratedDirectionalEncoding, real_spherical_harmonics
from recon_plugin.components.shading import orthonormal_tangents

F64 = torch.float64


def _sphere_quadrature(n_z: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre in z times uniform phi: exact for polynomials up to degree min(2 n_z - 1, n_phi - 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_z)
    z = torch.from_numpy(nodes)[:, None].expand(n_z, n_phi)
    phi = (torch.arange(n_phi, dtype=F64) * 2 * math.pi / n_phi)[None].expand(n_z, n_phi)
    radius = torch.sqrt(1 - z**2)
    directions = torch.stack([radius * torch.cos(phi), radius * torch.sin(phi), z], -1).reshape(-1, 3)
    return directions, (torch.from_numpy(weights)[:, None] * (2 * math.pi / n_phi)).expand(n_z, n_phi).reshape(-1)


def _random_directions(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=F64), dim=-1)


def test_low_degrees_match_closed_forms() -> None:
    d = _random_directions(50, seed=0)
    x, y, z = d.unbind(-1)
    harmonics = real_spherical_harmonics(d, [0, 1, 2])
    c1 = math.sqrt(3 / (4 * math.pi))
    expected = [
        torch.full_like(x, 0.5 / math.sqrt(math.pi)),
        c1 * y,
        c1 * z,
        c1 * x,
        0.5 * math.sqrt(15 / math.pi) * x * y,
        0.5 * math.sqrt(15 / math.pi) * y * z,
        0.25 * math.sqrt(5 / math.pi) * (3 * z**2 - 1),
        0.5 * math.sqrt(15 / math.pi) * x * z,
        0.25 * math.sqrt(15 / math.pi) * (x**2 - y**2),
    ]
    assert torch.allclose(harmonics, torch.stack(expected, -1), atol=1e-12)


def test_orthonormal_up_to_degree_sixteen() -> None:
    directions, weights = _sphere_quadrature(40, 80)
    harmonics = real_spherical_harmonics(directions, list(range(17)))
    assert harmonics.shape[-1] == 17**2
    gram = harmonics.T @ (harmonics * weights[:, None])
    assert torch.allclose(gram, torch.eye(17**2, dtype=F64), atol=1e-10)


def test_addition_theorem_at_high_degree() -> None:
    # sum_m Y_lm(a) Y_lm(b) = (2l + 1) / (4 pi) P_l(a.b): checks every degree independently of sign conventions
    a, b = _random_directions(30, seed=1), _random_directions(30, seed=2)
    for degree in (4, 8, 16):
        pairs = (real_spherical_harmonics(a, [degree]) * real_spherical_harmonics(b, [degree])).sum(-1)
        legendre = np.polynomial.legendre.Legendre.basis(degree)((a * b).sum(-1).numpy())
        assert np.allclose(pairs.numpy(), (2 * degree + 1) / (4 * math.pi) * legendre, atol=1e-10)


def test_float32_stays_accurate_at_degree_sixteen() -> None:
    d = _random_directions(200, seed=3)
    reference = real_spherical_harmonics(d, [16])
    single = real_spherical_harmonics(d.float(), [16]).double()
    assert float((single - reference).abs().max()) < 1e-4


def _vmf_expectation(mean: torch.Tensor, kappa: float, degrees: list[int]) -> torch.Tensor:
    """Integral over the sphere of the SH times the normalised vMF lobe around ``mean``, by quadrature in a frame
    aligned with the lobe (Gauss-Legendre in t = 1 - cos, which the lobe exp(-kappa t) concentrates near 0)."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t_max = min(2.0, 60.0 / kappa)
    t = torch.from_numpy((nodes + 1) * t_max / 2)
    w_t = torch.from_numpy(weights * t_max / 2)
    n_phi = 96
    phi = torch.arange(n_phi, dtype=F64) * 2 * math.pi / n_phi
    cos = 1 - t
    sin = torch.sqrt((1 - cos**2).clamp(min=0))
    t1, t2 = orthonormal_tangents(mean)
    local = (sin[:, None, None] * (torch.cos(phi)[None, :, None] * t1 + torch.sin(phi)[None, :, None] * t2)) + cos[
        :, None, None
    ] * mean
    # normalised vMF density kappa / (2 pi (1 - exp(-2 kappa))) exp(-kappa t), in the overflow-free form
    density = kappa / (2 * math.pi * (1 - math.exp(-2 * kappa))) * torch.exp(-kappa * t)
    weights = (w_t * density)[:, None] * (2 * math.pi / n_phi)
    harmonics = real_spherical_harmonics(local.reshape(-1, 3), degrees).reshape(len(t), n_phi, -1)
    return (harmonics * weights[..., None]).sum(dim=(0, 1))


@pytest.mark.parametrize(("kappa", "tolerance"), [(1.0, 0.07), (4.0, 0.04), (20.0, 0.007), (100.0, 0.0012)])
def test_ide_matches_the_vmf_integral_of_the_harmonics(kappa: float, tolerance: float) -> None:
    """Ref-NeRF's attenuation exp(-l(l+1) / (2 kappa)) is the large-kappa form of the exact factor
    A_l(kappa) = I_{l+1/2}(kappa) / I_{1/2}(kappa); the tolerance is the largest gap between them at this kappa."""
    encoding = IntegratedDirectionalEncoding(num_levels=5)
    degrees = list(encoding.degrees)
    for mean in _random_directions(3, seed=4):
        integral = _vmf_expectation(mean, kappa, degrees)
        harmonics = real_spherical_harmonics(mean, degrees)
        # the quadrature itself reproduces the exact Bessel-ratio attenuation
        orders = np.repeat(degrees, [2 * d + 1 for d in degrees])
        exact = torch.from_numpy(ive(orders + 0.5, kappa) / ive(0.5, kappa)) * harmonics
        assert torch.allclose(integral, exact, atol=1e-8)
        ide = encoding(mean, torch.tensor([1.0 / kappa], dtype=F64))
        assert bool(((ide - integral).abs() <= tolerance * harmonics.abs() + 1e-8).all())


def test_ide_shape_and_roughness_convention() -> None:
    encoding = IntegratedDirectionalEncoding()
    assert encoding.degrees == (1, 2, 4, 8, 16) and encoding.output_dim == 3 + 5 + 9 + 17 + 33
    d = _random_directions(8, seed=5).float().reshape(2, 4, 3)
    features = encoding(d, torch.zeros(2, 4, 1))
    assert features.shape == (2, 4, 67)
    assert torch.allclose(features, real_spherical_harmonics(d, [1, 2, 4, 8, 16]))  # rho = 0: no attenuation
    rough = encoding(d, torch.full((2, 4, 1), 0.5))
    assert torch.allclose(rough[..., :3], features[..., :3] * math.exp(-0.5))  # l = 1: exp(-l (l + 1) rho / 2)
    with pytest.raises(ValueError, match="num_levels"):
        IntegratedDirectionalEncoding(num_levels=0)


def test_gradients_flow_into_direction_and_roughness() -> None:
    encoding = IntegratedDirectionalEncoding(num_levels=5)
    # a fixed random projection of the 67 features keeps gradcheck's one-backward-per-output cost small
    projection = torch.randn(encoding.output_dim, 3, generator=torch.Generator().manual_seed(7), dtype=F64)
    directions = _random_directions(3, seed=6).requires_grad_(True)
    roughness = torch.tensor([[0.02], [0.1], [0.6]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, r: encoding(d, r) @ projection, (directions, roughness))
    # including at the poles, where an angle-based parameterisation would break
    pole = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: real_spherical_harmonics(d, [1, 16]) @ projection[:36], (pole,))
    (grad,) = torch.autograd.grad(encoding(directions, roughness)[..., -33:].square().sum(), directions)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
