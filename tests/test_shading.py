"""GGX Cook-Torrance BRDF, importance sampling, Monte-Carlo shading and the split-sum LUT (components/shading.py).

The BRDF is checked against closed forms, the samplers against their own pdfs by histogram, and every integral
(LUT entries, Monte-Carlo estimators) against an independent brute-force quadrature over the hemisphere.
"""

from __future__ import annotations

import math

import pytest
import torch

from recon_plugin.components.shading import (
    base_reflectance,
    cook_torrance,
    cosine_hemisphere_pdf,
    fresnel_schlick,
    ggx_ndf,
    ggx_reflection_pdf,
    reflect,
    sample_cosine_hemisphere,
    sample_ggx_reflection,
    shade_monte_carlo,
    shade_split_sum,
    smith_g1_ggx,
    smith_g_ggx,
    specular_albedo,
    split_sum_integrate,
    split_sum_lookup,
    split_sum_lut,
)

F64 = torch.float64
UP = torch.tensor([0.0, 0.0, 1.0], dtype=F64)


def _view(n_dot_v: float) -> torch.Tensor:
    return torch.tensor([math.sqrt(1.0 - n_dot_v**2), 0.0, n_dot_v], dtype=F64)


def _hemisphere_grid(n_theta: int, n_phi: int, full_sphere: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoint quadrature: directions (T, P, 3) and their solid angles (T, P)."""
    top = math.pi if full_sphere else math.pi / 2
    theta = (torch.arange(n_theta, dtype=F64) + 0.5) * top / n_theta
    phi = (torch.arange(n_phi, dtype=F64) + 0.5) * 2 * math.pi / n_phi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    directions = torch.stack([torch.sin(t) * torch.cos(p), torch.sin(t) * torch.sin(p), torch.cos(t)], -1)
    return directions, torch.sin(t) * (top / n_theta) * (2 * math.pi / n_phi)


def _brute_force_albedo(n_dot_v: float, roughness: float, f0: float, n_theta: int = 400, n_phi: int = 800) -> float:
    """Integral over the hemisphere of f_spec(v, l) (n.l) dl with F0 = f0, straight from cook_torrance."""
    light, solid = _hemisphere_grid(n_theta, n_phi)
    _, specular = cook_torrance(
        UP,
        _view(n_dot_v),
        light,
        torch.full((3,), f0, dtype=F64),
        torch.full((1,), roughness, dtype=F64),
        torch.ones(1, dtype=F64),
    )
    return float((specular[..., 0] * light[..., 2] * solid).sum())


def _random_frames(count: int, seed: int, min_n_dot_v: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    normal = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=F64), dim=-1)
    view = torch.nn.functional.normalize(normal + torch.randn(count, 3, generator=generator, dtype=F64), dim=-1)
    view = torch.where((normal * view).sum(-1, keepdim=True) > min_n_dot_v, view, normal)
    return normal, view


# --- BRDF terms ---------------------------------------------------------------------------------------------------


def test_ggx_ndf_uses_alpha_roughness_squared_and_is_normalised() -> None:
    roughness = torch.tensor([0.3, 0.6, 1.0], dtype=F64)
    # peak value 1 / (pi alpha^2) with alpha = roughness^2
    assert torch.allclose(ggx_ndf(torch.ones(3, dtype=F64), roughness), 1 / (math.pi * roughness**4))
    below = ggx_ndf(torch.tensor([-0.2], dtype=F64), torch.tensor([0.5], dtype=F64))
    assert torch.equal(below, torch.zeros(1, dtype=F64))
    direction, solid = _hemisphere_grid(2000, 4)  # D depends on theta only: few phi steps suffice
    for value in (0.3, 0.6, 1.0):
        projected = ggx_ndf(direction[..., 2], torch.tensor(value, dtype=F64)) * direction[..., 2]
        assert float((projected * solid).sum()) == pytest.approx(1.0, abs=2e-3)


def test_smith_height_correlated_bounds() -> None:
    cos = torch.linspace(0.05, 1.0, 20, dtype=F64)
    nv, nl = torch.meshgrid(cos, cos, indexing="ij")
    roughness = torch.tensor(0.7, dtype=F64)
    g2 = smith_g_ggx(nv, nl, roughness)
    assert torch.allclose(g2, smith_g_ggx(nl, nv, roughness))
    # height correlation: G1(v) G1(l) <= G2 <= min(G1(v), G1(l))
    g1v, g1l = smith_g1_ggx(nv, roughness), smith_g1_ggx(nl, roughness)
    assert bool((g2 >= g1v * g1l - 1e-12).all()) and bool((g2 <= torch.minimum(g1v, g1l) + 1e-12).all())
    assert float(smith_g_ggx(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0))) == pytest.approx(1.0)
    assert float(smith_g_ggx(torch.tensor(0.0), torch.tensor(0.5), torch.tensor(0.5))) == 0.0
    # alpha = 1: Lambda(mu) = (1 - mu) / (2 mu) in closed form
    mu = torch.tensor(0.4, dtype=F64)
    assert float(smith_g1_ggx(mu, torch.tensor(1.0, dtype=F64))) == pytest.approx(2 * 0.4 / 1.4)


def test_fresnel_and_base_reflectance() -> None:
    f0 = torch.tensor([0.04, 0.5, 1.0], dtype=F64)
    assert torch.allclose(fresnel_schlick(f0, torch.ones(1, dtype=F64)), f0)
    assert torch.allclose(fresnel_schlick(f0, torch.zeros(1, dtype=F64)), torch.ones(3, dtype=F64))
    albedo = torch.tensor([0.9, 0.5, 0.1], dtype=F64)
    assert torch.allclose(base_reflectance(albedo, torch.zeros(1, dtype=F64)), torch.full((3,), 0.04, dtype=F64))
    assert torch.allclose(base_reflectance(albedo, torch.ones(1, dtype=F64)), albedo)


def test_cook_torrance_values_reciprocity_and_horizon() -> None:
    normal, view = _random_frames(64, seed=1)
    light = torch.nn.functional.normalize(normal + torch.randn(64, 3, dtype=F64), dim=-1)
    albedo = torch.rand(64, 3, dtype=F64)
    roughness = 0.1 + 0.9 * torch.rand(64, 1, dtype=F64)
    metallic = torch.rand(64, 1, dtype=F64)
    diffuse, specular = cook_torrance(normal, view, light, albedo, roughness, metallic)
    swapped_diffuse, swapped_specular = cook_torrance(normal, light, view, albedo, roughness, metallic)
    assert torch.allclose(specular, swapped_specular) and torch.allclose(diffuse, swapped_diffuse)
    front = ((normal * light).sum(-1, keepdim=True) > 0).expand(-1, 3)
    assert torch.allclose(diffuse[front], ((1 - metallic) * albedo / math.pi).expand(-1, 3)[front])
    assert bool((diffuse[~front] == 0).all()) and bool((specular[~front] == 0).all())
    # at a mirror configuration the specular lobe is D G F / (4 n.v n.l) with h = n
    v = _view(0.6)
    mirror = reflect(v, UP)
    r = torch.tensor([0.5], dtype=F64)
    _, spec = cook_torrance(UP, v, mirror, torch.ones(3, dtype=F64), r, torch.ones(1, dtype=F64))
    cos = torch.tensor(0.6, dtype=F64)
    expected = ggx_ndf(torch.tensor(1.0, dtype=F64), r) * smith_g_ggx(cos, cos, r) / (4 * 0.36)
    assert float(spec[0]) == pytest.approx(float(expected), rel=1e-9)


# --- samplers -----------------------------------------------------------------------------------------------------


def _histogram_check(directions: torch.Tensor, pdf_fn, n_theta: int = 8, n_phi: int = 8) -> None:
    """Sample frequencies per (theta, phi) bin of the full sphere against the pdf integrated over each bin."""
    count = directions.shape[0]
    theta = torch.acos(directions[:, 2].clamp(-1, 1))
    phi = torch.remainder(torch.atan2(directions[:, 1], directions[:, 0]), 2 * math.pi)
    bins = (theta / math.pi * n_theta).long().clamp(max=n_theta - 1) * n_phi + (phi / (2 * math.pi) * n_phi).long()
    observed = torch.bincount(bins, minlength=n_theta * n_phi).to(F64) / count
    grid, solid = _hemisphere_grid(n_theta * 32, n_phi * 16, full_sphere=True)
    density = pdf_fn(grid.reshape(-1, 3)).reshape(solid.shape) * solid
    expected = density.reshape(n_theta, 32, n_phi, 16).sum(dim=(1, 3)).reshape(-1)
    assert float(expected.sum()) == pytest.approx(1.0, abs=5e-3)  # the pdf is normalised over the sphere
    sigma = torch.sqrt(expected.clamp(min=1e-6) / count)
    assert bool(((observed - expected).abs() <= 5 * sigma + 3e-3).all()), (observed - expected).abs().max()


def test_cosine_sampler_matches_its_pdf() -> None:
    normal = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8], dtype=F64), dim=-1)
    u = torch.rand(40_000, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    directions, pdf = sample_cosine_hemisphere(normal, u)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(1, dtype=F64))
    assert torch.allclose(pdf, cosine_hemisphere_pdf(normal, directions))
    _histogram_check(directions, lambda d: cosine_hemisphere_pdf(normal, d)[..., 0])
    # importance-sampled estimates of known integrals: cos over the hemisphere = pi, cos^3 = pi / 2
    cos = directions @ normal
    assert float((cos / pdf[:, 0]).mean()) == pytest.approx(math.pi, rel=1e-9)
    assert float((cos**3 / pdf[:, 0]).mean()) == pytest.approx(math.pi / 2, rel=1e-2)


@pytest.mark.parametrize(("roughness", "n_dot_v"), [(0.3, 0.9), (0.6, 0.4), (1.0, 0.15)])
def test_ggx_sampler_matches_its_pdf(roughness: float, n_dot_v: float) -> None:
    view = _view(n_dot_v)
    r = torch.tensor([roughness], dtype=F64)
    u = torch.rand(40_000, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    light, pdf = sample_ggx_reflection(UP, view, r, u)
    assert torch.allclose(light.norm(dim=-1), torch.ones(1, dtype=F64))
    assert torch.allclose(pdf, ggx_reflection_pdf(UP, view, light, r))
    _histogram_check(light, lambda d: ggx_reflection_pdf(UP, view, d, r)[..., 0])


def test_ggx_sampler_estimates_ndf_normalisation() -> None:
    # integral of D(h) (n.h) over microfacet normals = 1, estimated through light directions (dh = dl / (4 v.h))
    u = torch.rand(20_000, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    for roughness in (0.2, 0.5, 0.9):
        r = torch.tensor([roughness], dtype=F64)
        light, pdf = sample_ggx_reflection(UP, UP, r, u)
        half = torch.nn.functional.normalize(light + UP, dim=-1)
        integrand = ggx_ndf(half[:, 2], r) * half[:, 2] / (4 * half[:, 2])
        values = integrand / pdf[:, 0]
        assert float(values.mean()) == pytest.approx(1.0, abs=4 * float(values.std()) / math.sqrt(20_000) + 1e-9)


def test_ggx_sampler_at_zero_roughness_is_the_mirror() -> None:
    normal, view = _random_frames(256, seed=5)
    u = torch.rand(256, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    light, pdf = sample_ggx_reflection(normal, view, torch.zeros(256, 1, dtype=F64), u)
    # alpha is floored at 1e-3 like the NDF: directions gather within a few alpha of the mirror direction
    # (GGX's heavy tail sends a rare sample further, with a correspondingly tiny pdf)
    deviation = (light - reflect(view, normal)).norm(dim=-1)
    assert float(deviation.median()) < 4e-3 and float(deviation.quantile(0.9)) < 0.02
    assert bool(torch.isfinite(pdf).all())


@pytest.mark.parametrize(("roughness", "n_dot_v"), [(0.25, 0.8), (0.5, 0.5), (0.9, 0.3)])
def test_brdf_cosine_estimator_matches_quadrature(roughness: float, n_dot_v: float) -> None:
    # a coloured, partly metallic material under a non-uniform environment: both MIS estimators vs quadrature
    view = _view(n_dot_v)
    albedo = torch.tensor([0.8, 0.4, 0.2], dtype=F64)
    r, m = torch.tensor([roughness], dtype=F64), torch.tensor([0.5], dtype=F64)

    def radiance(d: torch.Tensor) -> torch.Tensor:
        return (1.0 + d[..., :1] + 0.5 * d[..., 1:2] ** 2).expand(*d.shape[:-1], 3)

    light, solid = _hemisphere_grid(200, 400)
    diffuse, specular = cook_torrance(UP, view, light, albedo, r, m)
    weight = (radiance(light) * light[..., 2:] * solid[..., None]).reshape(-1, 3)
    expected_diffuse = (diffuse.reshape(-1, 3) * weight).sum(0)
    expected_specular = (specular.reshape(-1, 3) * weight).sum(0)
    points = 2000
    est_diffuse, est_specular = shade_monte_carlo(
        UP.expand(points, 3),
        view.expand(points, 3),
        albedo.expand(points, 3),
        r.expand(points, 1),
        m.expand(points, 1),
        radiance,
        num_diffuse=8,
        num_specular=8,
        generator=torch.Generator().manual_seed(6),
    )
    for estimate, expected in ((est_diffuse, expected_diffuse), (est_specular, expected_specular)):
        error = (estimate.mean(0) - expected).abs()
        standard_error = estimate.std(0) / math.sqrt(points)
        assert bool((error <= 4 * standard_error + 1e-3 * expected).all()), (error, standard_error)


def test_light_sampling_of_a_small_lamp_is_unbiased_and_less_noisy() -> None:
    """A rough metal under a dim sky with one small bright lamp: adding environment-light samples (rotated into
    the caller's frame) keeps the estimate on the quadrature and cuts its spread, since the BRDF lobes alone
    rarely find the lamp."""
    from recon_plugin.components.environment import EnvironmentSampler, sample_equirect

    env = torch.full((32, 64, 3), 0.05)
    env[5:7, 20:22] = 400.0  # about 6 degrees across, ~25 degrees from the zenith
    rotation = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    sampler = EnvironmentSampler(env, rotation=rotation)
    assert not sampler.empty

    def radiance(d: torch.Tensor) -> torch.Tensor:  # the map seen from the rotated frame
        return sample_equirect(env, (d.float() @ rotation)).to(d.dtype)

    view, albedo = _view(0.7), torch.tensor([0.9, 0.6, 0.3], dtype=F64)
    r, m = torch.tensor([0.6], dtype=F64), torch.tensor([1.0], dtype=F64)
    light, solid = _hemisphere_grid(400, 800)
    _, specular = cook_torrance(UP, view, light, albedo, r, m)
    expected = (specular * (radiance(light) * light[..., 2:] * solid[..., None])).reshape(-1, 3).sum(0)
    points, spreads = 4000, {}
    for name, extra in (("brdf only", {}), ("with the lamp", {"light_sampler": sampler, "num_light": 8})):
        _, estimate = shade_monte_carlo(
            UP.expand(points, 3),
            view.expand(points, 3),
            albedo.expand(points, 3),
            r.expand(points, 1),
            m.expand(points, 1),
            radiance,
            num_diffuse=2,
            num_specular=6,
            generator=torch.Generator().manual_seed(11),
            **extra,
        )
        error = (estimate.mean(0) - expected).abs()
        standard_error = estimate.std(0) / math.sqrt(points)
        assert bool((error <= 4 * standard_error + 2e-3 * expected).all()), (name, error, standard_error)
        spreads[name] = float(estimate[:, 0].std())
    assert spreads["with the lamp"] < 0.5 * spreads["brdf only"], spreads


# --- energy -------------------------------------------------------------------------------------------------------


def test_white_furnace_lambert_returns_one() -> None:
    normal, view = _random_frames(1000, seed=7)
    ones = torch.ones(1000, 3, dtype=F64)
    for roughness in (0.05, 0.6):
        for counts in ((16, 16), (0, 32), (32, 0)):
            diffuse, _ = shade_monte_carlo(
                normal,
                view,
                ones,
                torch.full((1000, 1), roughness, dtype=F64),
                torch.zeros(1000, 1, dtype=F64),
                torch.ones_like,
                *counts,
                generator=torch.Generator().manual_seed(8),
            )
            mean, error = float(diffuse.mean()), float(diffuse[:, 0].std()) / math.sqrt(1000)
            assert mean == pytest.approx(1.0, abs=4 * error + 1e-9), (roughness, counts, mean, error)


def test_ggx_with_unit_fresnel_loses_only_the_multiple_scattering_energy() -> None:
    normal, view = _random_frames(3000, seed=9, min_n_dot_v=0.1)
    roughness = 0.05 + 0.95 * torch.rand(3000, 1, generator=torch.Generator().manual_seed(10), dtype=F64)
    ones = torch.ones(3000, 3, dtype=F64)
    diffuse, specular = shade_monte_carlo(  # albedo 1, metallic 1 -> F0 = 1 -> F = 1, no diffuse
        normal,
        view,
        ones,
        roughness,
        torch.ones(3000, 1, dtype=F64),
        torch.ones_like,
        16,
        16,
        generator=torch.Generator().manual_seed(11),
    )
    assert float(diffuse.abs().max()) == 0.0
    scale, bias = split_sum_integrate((normal * view).sum(-1), roughness[:, 0])
    albedo = scale + bias  # single-scattering directional albedo of the GGX microsurface
    assert bool((albedo <= 1.0 + 1e-9).all())
    residual = specular[:, 0] - albedo
    for part in (roughness[:, 0] < 0.3, roughness[:, 0] >= 0.3):  # mirror-like and rough points separately
        values = residual[part]
        assert float(values.mean()) == pytest.approx(0.0, abs=4 * float(values.std()) / math.sqrt(len(values)))


# --- split-sum LUT ------------------------------------------------------------------------------------------------


def test_split_sum_closed_forms() -> None:
    cos = torch.linspace(0.05, 1.0, 12, dtype=F64)
    # alpha = 1, n.v = 1: E = integral over h within 45 degrees of 2 cos(2t) tan(t) dt = 1 - ln 2
    scale, bias = split_sum_integrate(torch.tensor(1.0, dtype=F64), torch.tensor(1.0, dtype=F64), samples=4096)
    assert float(scale + bias) == pytest.approx(1 - math.log(2), abs=2e-4)
    # mirror limit: A + B -> 1 and B -> (1 - cos)^5 (Schlick at h = n)
    errors = []
    for roughness in (0.3, 0.1, 0.03, 0.0):
        scale, bias = split_sum_integrate(cos, torch.tensor(roughness, dtype=F64))
        errors.append(float(torch.maximum((scale + bias - 1).abs(), (bias - (1 - cos) ** 5).abs()).max()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-9 and errors[-2] < 2e-3


def test_split_sum_lut_range_trends_and_edges() -> None:
    lut = split_sum_lut()
    assert lut.shape == (64, 64, 2) and lut.dtype == torch.float32
    assert split_sum_lut() is lut  # cached in memory
    assert bool((lut >= 0).all()) and bool((lut.sum(-1) <= 1 + 1e-6).all())
    grid = torch.linspace(0, 1, 64)
    assert torch.allclose(lut[:, 0].sum(-1), torch.ones(64), atol=1e-6)  # roughness 0 column
    assert torch.allclose(lut[1:, 0, 1], (1 - grid[1:]) ** 5, atol=1e-6)
    albedo = lut.sum(-1)
    # away from grazing views rougher surfaces reflect less (more energy goes to multiple scattering)
    assert bool((albedo[32:, 1:] <= albedo[32:, :-1] + 1e-5).all())
    # the Fresnel bias falls as the view turns towards the normal, at every roughness (n.v >= 0.1: at grazing
    # views it first dips, a real feature of the Smith model, confirmed at 64x the sample count)
    assert bool((lut[7:, :, 1] <= lut[6:-1, :, 1] + 1e-5).all())


@pytest.mark.parametrize(("n_dot_v", "roughness"), [(0.5, 0.5), (0.9, 0.8), (0.2, 1.0), (0.3, 0.35)])
def test_split_sum_matches_brute_force_quadrature(n_dot_v: float, roughness: float) -> None:
    bias = _brute_force_albedo(n_dot_v, roughness, f0=0.0)
    scale = _brute_force_albedo(n_dot_v, roughness, f0=1.0) - bias
    integrated = split_sum_integrate(torch.tensor(n_dot_v, dtype=F64), torch.tensor(roughness, dtype=F64))
    assert float(integrated[0]) == pytest.approx(scale, abs=1.5e-3)
    assert float(integrated[1]) == pytest.approx(bias, abs=1.5e-3)
    looked_up = split_sum_lookup(torch.tensor(n_dot_v), torch.tensor(roughness))
    assert float(looked_up[0]) == pytest.approx(scale, abs=3e-3)
    assert float(looked_up[1]) == pytest.approx(bias, abs=3e-3)


def test_split_sum_lookup_is_bilinear_and_differentiable() -> None:
    lut = split_sum_lut()
    step = 1 / 63
    scale, bias = split_sum_lookup(torch.tensor([10 * step, 10 * step]), torch.tensor([20 * step, 20.5 * step]))
    assert float(scale[0]) == pytest.approx(float(lut[10, 20, 0]), abs=1e-6)
    assert float(bias[1]) == pytest.approx(float(lut[10, 20:22, 1].mean()), abs=1e-6)
    roughness = torch.tensor([[0.13], [0.52], [0.91]], dtype=F64, requires_grad=True)
    n_dot_v = torch.tensor([[0.31], [0.64], [0.77]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda nv, r: split_sum_lookup(nv, r), (n_dot_v, roughness))
    scale, _ = split_sum_lookup(n_dot_v, roughness)
    (grad,) = torch.autograd.grad(scale.sum(), roughness)
    assert bool((grad != 0).all())


def test_shade_split_sum_matches_monte_carlo_under_uniform_light() -> None:
    normal, view = _random_frames(500, seed=12, min_n_dot_v=0.2)
    albedo = torch.rand(500, 3, generator=torch.Generator().manual_seed(13), dtype=F64)
    roughness = 0.2 + 0.8 * torch.rand(500, 1, generator=torch.Generator().manual_seed(14), dtype=F64)
    metallic = torch.rand(500, 1, generator=torch.Generator().manual_seed(15), dtype=F64)
    light = torch.full((500, 3), 2.0, dtype=F64)
    n_dot_v = (normal * view).sum(-1, keepdim=True)
    diffuse, specular = shade_split_sum(albedo, roughness, metallic, n_dot_v, light, light)
    mc_diffuse, mc_specular = shade_monte_carlo(
        normal,
        view,
        albedo,
        roughness,
        metallic,
        lambda d: torch.full_like(d, 2.0),
        64,
        64,
        generator=torch.Generator().manual_seed(16),
    )
    assert torch.allclose(diffuse, (1 - metallic) * albedo * 2.0)
    assert float((specular - mc_specular).mean()) == pytest.approx(0.0, abs=3e-3)
    assert float((diffuse - mc_diffuse).mean()) == pytest.approx(0.0, abs=3e-3)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="resolution"):
        split_sum_lut(resolution=1)
    with pytest.raises(ValueError, match="num_diffuse"):
        shade_monte_carlo(UP, UP, UP, UP[:1], UP[:1], torch.ones_like, 0, 0)


def test_broadcasting_and_gradients_for_training() -> None:
    # one view and one light against many normals and materials, as a shading head uses them
    normal, _ = _random_frames(5, seed=17)
    view = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    light = torch.nn.functional.normalize(torch.tensor([0.3, 0.0, 1.0], dtype=F64), dim=0)
    diffuse, specular = cook_torrance(normal, view, light, torch.rand(3, dtype=F64), torch.rand(5, 1), torch.zeros(1))
    assert diffuse.shape == specular.shape == (5, 3)
    assert ggx_reflection_pdf(normal, view, light, torch.tensor([0.5], dtype=F64)).shape == (5, 1)
    # the colour loss reaches the materials and the normal (NeRO shapes the surface through it)
    normal = torch.nn.functional.normalize(torch.tensor([[0.1, 0.2, 1.0], [-0.3, 0.1, 1.0]], dtype=F64), dim=-1)
    inputs = (
        normal.requires_grad_(True),
        torch.tensor([[0.7, 0.5, 0.2], [0.1, 0.9, 0.4]], dtype=F64, requires_grad=True),
        torch.tensor([[0.3], [0.8]], dtype=F64, requires_grad=True),
        torch.tensor([[0.2], [0.9]], dtype=F64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(
        lambda n, a, r, m: torch.cat(cook_torrance(n, view, light, a, r, m), dim=-1), inputs
    )


def test_energy_conserving_white_dielectric_returns_the_uniform_light() -> None:
    normal, view = _random_frames(1000, seed=18, min_n_dot_v=0.1)
    white = torch.ones(1000, 3, dtype=F64)
    roughness = 0.3 + 0.7 * torch.rand(1000, 1, generator=torch.Generator().manual_seed(19), dtype=F64)
    dielectric = torch.zeros(1000, 1, dtype=F64)
    light = torch.full((1000, 3), 1.7, dtype=F64)
    n_dot_v = (normal * view).sum(-1, keepdim=True)
    diffuse, specular = shade_split_sum(white, roughness, dielectric, n_dot_v, light, light, energy_conserving=True)
    assert torch.allclose(diffuse + specular, light, atol=1e-6)
    plain = shade_split_sum(white, roughness, dielectric, n_dot_v, light, light)
    assert bool(((plain[0] + plain[1]) > light).all())  # the default (NeRO's) adds the specular on top
    # the specular share is the LUT albedo F0 A + B: a few percent, rising towards grazing views (Fresnel)
    albedo = specular_albedo(white, dielectric, n_dot_v, roughness)
    assert torch.allclose(specular, albedo * light)
    assert float(albedo[n_dot_v[:, 0] > 0.7].max()) < 0.06 < float(albedo[n_dot_v[:, 0] < 0.2].max())
    mc_diffuse, mc_specular = shade_monte_carlo(
        normal,
        view,
        white,
        roughness,
        dielectric,
        lambda d: torch.full_like(d, 1.7),
        16,
        16,
        generator=torch.Generator().manual_seed(20),
        energy_conserving=True,
    )
    total = (mc_diffuse + mc_specular)[:, 0] / 1.7
    assert float(total.mean()) == pytest.approx(1.0, abs=4 * float(total.std()) / math.sqrt(1000) + 3e-3)


@pytest.mark.parametrize("roughness", [0.0, 0.5])
def test_degenerate_configurations_give_finite_values_and_gradients(roughness: float) -> None:
    # view along the normal, grazing view, view below the surface, light opposite the view (zero half vector)
    normal = torch.tensor([[0, 0, 1.0], [0, 0, 1], [0, 0, 1], [0, 0, -1], [1, 0, 0]])
    view = torch.tensor([[0, 0, 1.0], [1, 0, 0], [0, 0, -1], [0, 0, -1], [1, 0, 0]])
    light = torch.nn.functional.normalize(torch.tensor([[0.3, 0, 1.0], [0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0.1]]))
    rough = torch.full((5, 1), roughness, requires_grad=True)
    albedo = torch.full((5, 3), 0.5, requires_grad=True)
    metallic = torch.full((5, 1), 0.5)
    outputs = [
        *cook_torrance(normal, view, light, albedo, rough, metallic),
        ggx_reflection_pdf(normal, view, light, rough),
        *shade_monte_carlo(normal, view, albedo, rough, metallic, torch.ones_like, 8, 8),
        *shade_split_sum(albedo, rough, metallic, (normal * view).sum(-1, keepdim=True), albedo, albedo),
    ]
    assert all(bool(torch.isfinite(output).all()) for output in outputs)
    sum(output.sum() for output in outputs).backward()
    assert bool(torch.isfinite(rough.grad).all()) and bool(torch.isfinite(albedo.grad).all())
