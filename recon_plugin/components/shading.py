"""Lights and shading: the RnB virtual-light triplets, RGB+, Lambert shading, sRGB transfer.

Conventions: vectors are in the world frame of the model (nerfstudio's normalised frame) unless a
name says ``camera``; camera frames use OpenGL axes (x right, y up, z towards the viewer).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

OPTIMAL_SLANT_DEG = math.degrees(math.acos(1.0 / math.sqrt(3.0)))
"""Slant at which the three lights of a triplet are mutually orthogonal (54.7356 degrees)."""

_AZIMUTHS = (0.0, 2.0 * math.pi / 3.0, 4.0 * math.pi / 3.0)


def fixed_triplet_camera(slant_deg: float) -> Tensor:
    """Three lights (3, 3) in OpenGL camera axes, 120 degrees apart, tilted by ``slant_deg`` from the
    viewing axis and pointing back towards the camera (rows are light directions)."""
    slant = math.radians(slant_deg)
    return torch.tensor(
        [[-math.sin(slant) * math.cos(a), math.sin(slant) * math.sin(a), math.cos(slant)] for a in _AZIMUTHS],
        dtype=torch.float32,
    )


def fixed_triplet_world(slant_deg: float, camera_rotations: Tensor) -> Tensor:
    """The fixed triplet rotated into the world by each camera-to-world rotation: (..., 3, 3) -> (..., 3 lights, 3)."""
    lights = fixed_triplet_camera(slant_deg).to(camera_rotations)
    return torch.einsum("...ij,lj->...li", camera_rotations, lights)


def orthonormal_tangents(normals: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit tangents (t1, t2) completing unit ``normals`` to a right-handed frame, without branches
    on the normal's direction (Duff et al. 2017)."""
    x, y, z = normals.unbind(-1)
    sign = torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))
    a = -1.0 / (sign + z)
    b = x * y * a
    t1 = torch.stack([1.0 + sign * x * x * a, sign * b, -sign * x], dim=-1)
    t2 = torch.stack([b, sign + y * y * a, -y], dim=-1)
    return t1, t2


def optimal_triplet(normals: Tensor) -> Tensor:
    """Per-pixel orthogonal triplet (..., 3 lights, 3) symmetric about each unit normal: n . l = 1/sqrt(3) for all."""
    t1, t2 = orthonormal_tangents(normals)
    along = 1.0 / math.sqrt(3.0)
    across = math.sqrt(2.0 / 3.0)
    lights = [along * normals + across * (math.cos(a) * t1 + math.sin(a) * t2) for a in _AZIMUTHS]
    return torch.stack(lights, dim=-2)


def identity_lights(shape: torch.Size, device: torch.device) -> Tensor:
    """ "Supernormal" lights: the world axes, so each shaded channel is one component of albedo * n."""
    return torch.eye(3, device=device).expand(*shape, 3, 3)


def rgb_plus(albedo: Tensor, loss_type: str) -> Tensor:
    """Appends RNb-NeuS2's fourth channel, which keeps dark albedos from silencing the geometry signal.

    For L2 the 4-vector has norm sqrt(3); for L1 its components sum to 3.
    """
    if loss_type == "l2":
        fourth = torch.sqrt((3.0 - (albedo * albedo).sum(-1, keepdim=True)).clamp(min=0.0) + 1e-12)
    else:
        fourth = 3.0 - albedo.abs().sum(-1, keepdim=True)
    return torch.cat([albedo, fourth], dim=-1)


def lambert(albedo: Tensor, normals: Tensor, lights: Tensor, clamp: bool) -> Tensor:
    """Shading albedo * (n . l) for every light.

    Shapes: albedo (..., C), normals (..., 3), lights (..., L, 3) -> (..., L, C).
    """
    cosine = (lights * normals[..., None, :]).sum(-1)
    if clamp:
        cosine = cosine.clamp(min=0.0)
    return cosine[..., None] * albedo[..., None, :]


def linear_to_srgb(linear: Tensor) -> Tensor:
    """sRGB transfer curve (for display of linear radiance)."""
    linear = linear.clamp(0.0, 1.0)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp(min=1e-8) ** (1.0 / 2.4) - 0.055)


def srgb_to_linear(srgb: Tensor) -> Tensor:
    """Inverse of :func:`linear_to_srgb`."""
    srgb = srgb.clamp(0.0, 1.0)
    return torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
