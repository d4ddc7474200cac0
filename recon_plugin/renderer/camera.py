"""Camera conventions of the render queue (NumPy only).

Poses are **camera-to-world** matrices in the OpenGL / nerfstudio camera convention: the camera looks down its
local -Z axis, +Y is up in the image and +X points right. The world frame is nerfstudio's (the frame of the trained
model, after the dataparser's orientation/centring/scale) unless a queue was created with ``world_frame="data"``,
which maps poses from the dataset's original coordinates (see :class:`DataparserTransform`).

``update_camera(position, rotation)`` keeps the omni-nerf-extension convention: ``rotation`` holds Euler angles in
**radians** for **extrinsic** rotations about the fixed world X, then Y, then Z axes, i.e.
``R = Rz(rz) @ Ry(ry) @ Rx(rx)`` (SciPy ``Rotation.from_euler("xyz", rotation)``, lowercase = extrinsic), and the
camera-to-world matrix is ``[[R, position], [0, 0, 0, 1]]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recon_plugin.data.transforms import normalized_to_world, world_to_normalized

__all__ = [
    "DataparserTransform",
    "c2w_to_pose",
    "euler_xyz_to_matrix",
    "intrinsics_for",
    "look_at",
    "matrix_to_euler_xyz",
    "pose_to_c2w",
    "validate_c2w",
]

ORTHONORMAL_TOLERANCE = 1e-3
"""Largest accepted deviation of a pose's rotation block from an orthonormal matrix (element-wise)."""


def _vector(values: Sequence[float] | np.ndarray, length: int, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be {length} numbers, got {values!r}") from error
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def euler_xyz_to_matrix(rotation: Sequence[float] | np.ndarray) -> np.ndarray:
    """3x3 rotation for extrinsic X-then-Y-then-Z Euler angles in radians: ``Rz(rz) @ Ry(ry) @ Rx(rx)``."""
    rx, ry, rz = _vector(rotation, 3, "rotation")
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rot_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rot_z @ rot_y @ rot_x


def matrix_to_euler_xyz(rotation_matrix: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_xyz_to_matrix`: angles (rx, ry, rz) in radians with ry in [-pi/2, pi/2].

    At gimbal lock (ry = +-pi/2) only rx -+ rz is defined; rx is then reported as 0.
    """
    matrix = np.asarray(rotation_matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"rotation matrix must be 3x3, got shape {matrix.shape}")
    sin_y = float(np.clip(-matrix[2, 0], -1.0, 1.0))
    ry = math.asin(sin_y)
    if abs(sin_y) < 1.0 - 1e-9:
        rx = math.atan2(matrix[2, 1], matrix[2, 2])
        rz = math.atan2(matrix[1, 0], matrix[0, 0])
    else:  # gimbal lock: R = Rz(rz) Ry(+-pi/2) Rx(rx) depends on rz -+ rx only
        rx = 0.0
        rz = math.atan2(-matrix[0, 1], matrix[1, 1])
    return np.array([rx, ry, rz])


def pose_to_c2w(position: Sequence[float] | np.ndarray, rotation: Sequence[float] | np.ndarray) -> np.ndarray:
    """4x4 camera-to-world matrix from a position and extrinsic XYZ Euler angles in radians (module docstring)."""
    c2w = np.eye(4)
    c2w[:3, :3] = euler_xyz_to_matrix(rotation)
    c2w[:3, 3] = _vector(position, 3, "position")
    return c2w


def c2w_to_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, rotation) with ``pose_to_c2w(*c2w_to_pose(c2w)) == c2w`` for any rigid camera-to-world matrix."""
    matrix = validate_c2w(c2w)
    return matrix[:3, 3].copy(), matrix_to_euler_xyz(matrix[:3, :3])


def validate_c2w(c2w: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Checks a rigid 3x4 or 4x4 camera-to-world matrix and returns it as a float64 4x4 copy.

    The rotation block must be orthonormal with determinant +1 up to :data:`ORTHONORMAL_TOLERANCE` (scaled or
    mirrored cameras would silently distort the rays); small float32 round-off is removed by re-orthonormalising.
    """
    try:
        matrix = np.array(c2w, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"camera-to-world matrix must be a 4x4 (or 3x4) array of numbers: {error}") from error
    if matrix.shape == (3, 4):
        matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
    if matrix.shape != (4, 4):
        raise ValueError(f"camera-to-world matrix must be 4x4 (or 3x4), got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("camera-to-world matrix contains NaN or infinity")
    if np.max(np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0])) > 1e-6:
        raise ValueError(f"last row of a camera-to-world matrix must be [0, 0, 0, 1], got {matrix[3].tolist()}")
    rotation = matrix[:3, :3]
    deviation = float(np.max(np.abs(rotation.T @ rotation - np.eye(3))))
    if deviation > ORTHONORMAL_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise ValueError(
            "rotation block of the camera-to-world matrix must be a proper rotation (orthonormal, det +1, no scale); "
            f"max |R^T R - I| = {deviation:.3g}, det = {np.linalg.det(rotation):.4g}"
        )
    u, _, vt = np.linalg.svd(rotation)
    matrix[:3, :3] = u @ vt
    return matrix


def look_at(
    eye: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    up: Sequence[float] | np.ndarray = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target``, image-up as close to ``up`` as possible."""
    eye_v, target_v, up_v = _vector(eye, 3, "eye"), _vector(target, 3, "target"), _vector(up, 3, "up")
    forward = target_v - eye_v
    if np.linalg.norm(forward) < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up_v)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at: the viewing direction is parallel to the up vector")
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(right, forward), -forward, eye_v
    return c2w


def intrinsics_for(width: int, height: int, horizontal_fov_deg: float) -> tuple[float, float, float, float]:
    """Pinhole (fx, fy, cx, cy) for square pixels and the given horizontal field of view, principal point centred."""
    fx = 0.5 * width / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    return fx, fx, width / 2.0, height / 2.0


@dataclass(frozen=True)
class DataparserTransform:
    """Maps camera poses from a dataset's original frame into nerfstudio's world frame.

    nerfstudio dataparsers orient, centre and scale the input poses: ``c2w_ns = [[A, s * (A p + t)]]`` for an input
    ``c2w = [[R, p]]`` where ``[A | t]`` is ``dataparser_transform`` (3x4, ``dataparser_transforms.json``) and ``s``
    ``dataparser_scale``; the rotation becomes ``A R``. (``recon_plugin.data.transforms``, which does the point
    maps, calls the dataset's frame "world" and nerfstudio's "normalised".)
    """

    transform: np.ndarray
    scale: float = 1.0

    def __post_init__(self) -> None:
        transform = np.asarray(self.transform, dtype=np.float64)
        if transform.shape == (4, 4):
            transform = transform[:3]
        if transform.shape != (3, 4):
            raise ValueError(f"dataparser transform must be 3x4, got shape {transform.shape}")
        if not math.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"dataparser scale must be positive, got {self.scale}")
        object.__setattr__(self, "transform", transform)

    def to_world(self, c2w_data: np.ndarray) -> np.ndarray:
        """Dataset-frame camera-to-world -> nerfstudio world frame."""
        out = np.eye(4)
        out[:3, :3] = self.transform[:, :3] @ c2w_data[:3, :3]
        out[:3, 3] = world_to_normalized(np.asarray(c2w_data)[None, :3, 3], self.transform, self.scale)[0]
        return out

    def to_data(self, c2w_world: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_world`."""
        out = np.eye(4)
        out[:3, :3] = np.linalg.inv(self.transform[:, :3]) @ c2w_world[:3, :3]
        out[:3, 3] = self.point_to_data(c2w_world[:3, 3])
        return out

    def point_to_data(self, point: np.ndarray) -> np.ndarray:
        """A world-frame point in dataset coordinates."""
        return normalized_to_world(np.asarray(point)[None], self.transform, self.scale)[0]

    def direction_to_data(self, direction: np.ndarray) -> np.ndarray:
        """A world-frame direction in dataset coordinates (unit length)."""
        out = np.linalg.inv(self.transform[:, :3]) @ np.asarray(direction, dtype=np.float64)
        return out / np.linalg.norm(out)
