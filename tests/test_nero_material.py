"""nero-material (NeRO stage II): the mesh ray caster against analytic shapes, the material model, and
`ns-train nero-material` end to end on a tiny `recon-synth glossy` scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from recon_plugin.components.raycast import MeshRayCaster

# ------------------------------------------------------------------------------------------------------ ray caster


def _sphere_distance(origins: torch.Tensor, directions: torch.Tensor, radius: float) -> torch.Tensor:
    """Nearest positive root of |o + t d| = r for unit d (inf where the ray misses)."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    t = -b - torch.sqrt(disc.clamp(min=0.0))
    return torch.where(disc > 0, t, torch.full_like(t, math.inf))


def test_ray_caster_matches_an_analytic_sphere():
    radius = 0.8
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    caster = MeshRayCaster(sphere.vertices, sphere.faces)
    generator = torch.Generator().manual_seed(0)
    origins = torch.nn.functional.normalize(torch.randn(2000, 3, generator=generator), dim=-1) * 3.0
    targets = (torch.rand(2000, 3, generator=generator) * 2.0 - 1.0) * 1.2
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    hits = caster.cast(origins.reshape(40, 50, 3), directions.reshape(40, 50, 3))  # batched leading dims

    expected = _sphere_distance(origins, directions, radius)
    # Rays that pass well inside or well outside the silhouette (the tessellation decides near the rim).
    closest = (origins + (-(origins * directions).sum(-1, keepdim=True)) * directions).norm(dim=-1)
    clear_hit, clear_miss = closest < radius * 0.97, closest > radius * 1.01
    assert clear_hit.sum() > 300 and clear_miss.sum() > 300
    assert hits.hit[clear_hit].all() and not hits.hit[clear_miss].any()
    # An icosphere of 20k faces lies within 1e-3 of the sphere it approximates.
    torch.testing.assert_close(hits.distance[clear_hit], expected[clear_hit], atol=2e-3, rtol=0)
    assert torch.isinf(hits.distance[clear_miss]).all() and (hits.triangle[clear_miss] == -1).all()
    analytic_normal = torch.nn.functional.normalize(hits.position[clear_hit], dim=-1)
    smooth_angle = torch.rad2deg(torch.acos((hits.normal[clear_hit] * analytic_normal).sum(-1).clamp(max=1.0)))
    face_angle = torch.rad2deg(torch.acos((hits.face_normal[clear_hit] * analytic_normal).sum(-1).clamp(max=1.0)))
    assert smooth_angle.max() < 0.3 and face_angle.max() < 1.5  # outward, and interpolation beats the facets
    # The barycentrics rebuild the hit point from the hit triangle's corners.
    faces = torch.as_tensor(sphere.faces)[hits.triangle[clear_hit]]
    corners = torch.as_tensor(sphere.vertices, dtype=torch.float32)[faces]
    rebuilt = (hits.barycentric[clear_hit][..., None] * corners).sum(1)
    torch.testing.assert_close(rebuilt, hits.position[clear_hit], atol=1e-5, rtol=0)


def test_ray_caster_on_a_plane_is_exact_and_orients_by_winding():
    vertices = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +z
    caster = MeshRayCaster(vertices, faces, num_threads=1)
    origins = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.5, -1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 1.0]])
    directions = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    hits = caster.cast(origins, directions)
    assert hits.hit.tolist() == [True, True, False, False]
    # Distances are in units of the direction's length (the first direction has length 2).
    torch.testing.assert_close(hits.distance[:2], torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(hits.position[:2], torch.tensor([[0.3, -0.2, 0.0], [-0.5, 0.5, 0.0]]))
    torch.testing.assert_close(hits.face_normal[:2], torch.tensor([[0.0, 0.0, 1.0]] * 2))  # seen from both sides
    torch.testing.assert_close(hits.barycentric.sum(-1)[:2], torch.ones(2))
    assert hits.triangle[:2].tolist() == [0, 1]


def test_ray_caster_rejects_bad_meshes_and_rays():
    with pytest.raises(ValueError, match="face indices"):
        MeshRayCaster(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="vertices"):
        MeshRayCaster(np.zeros((0, 3)), np.array([[0, 1, 2]]))
    caster = MeshRayCaster(np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="origins and directions"):
        caster.cast(torch.zeros(4, 3), torch.zeros(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ray_caster_returns_results_on_the_rays_device():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    caster = MeshRayCaster(sphere.vertices, sphere.faces)
    origins = torch.tensor([[0.0, 0.0, 3.0]], device="cuda")
    hits = caster.cast(origins, torch.tensor([[0.0, 0.0, -1.0]], device="cuda"))
    assert hits.distance.device.type == "cuda" and bool(hits.hit[0])
