"""Photometric-stereo realism for synthetic normal and albedo maps.

Normal maps estimated by photometric stereo (SDM-UniPS, Uni-MS-PS, ...) differ from the truth in three
ways this module imitates, each per view and in the camera frame:

- **Per-pixel angular noise**: every normal is tilted by a random angle towards a random tangent
  direction. The tilt is an isotropic 2D Gaussian in the tangent plane, so its angle is Rayleigh
  distributed; ``normal_noise_deg`` is the *mean* angle (the Gaussian's sigma is that / sqrt(pi / 2)).
- **Smooth per-view bias**: a low-frequency field of rotation vectors over the image (a constant
  rotation plus a few long-wavelength cosine modes, as a light-calibration error would give);
  ``normal_bias_deg`` is the RMS rotation angle over the image. The field is a function of normalised
  image coordinates, so it does not depend on the resolution, and its parameters go to scene.json.
- **Per-view albedo scale**: per-channel gains in ``[1 - jitter, 1 + jitter]``.

A normal-uncertainty mask marks where the injected per-pixel noise exceeds a threshold (the bias
is not counted: it is smooth and invisible to an estimator's spread across light subsets, which is how
the DiLiGenT-MV uncertainty masks were made).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = [
    "REALISM_PRESETS",
    "BiasField",
    "PsRealism",
    "albedo_gains",
    "angle_between_deg",
    "angular_noise",
    "resolve_realism",
    "rotate_vectors",
]

#: Cosine modes of the bias field; frequencies in cycles per image side.
_BIAS_MODES = 4
_BIAS_FREQUENCY_RANGE = (0.25, 1.0)


@dataclass(frozen=True)
class PsRealism:
    """How far written normal and albedo maps depart from the exact ones (all zero: exact maps)."""

    normal_noise_deg: float = 0.0
    """Mean angle (degrees) of the independent per-pixel normal noise."""
    normal_bias_deg: float = 0.0
    """RMS rotation angle (degrees) of the smooth per-view bias field."""
    albedo_scale_jitter: float = 0.0
    """Per-view, per-channel albedo gains are drawn in [1 - jitter, 1 + jitter]."""
    uncertainty_threshold_deg: float | None = None
    """Pixels whose noise angle exceeds this are marked untrusted; None: twice ``normal_noise_deg``."""

    def __post_init__(self) -> None:
        for name in ("normal_noise_deg", "normal_bias_deg"):
            value = getattr(self, name)
            if not 0.0 <= value <= 45.0:
                raise ValueError(f"{name} must be in [0, 45] degrees, got {value}")
        if not 0.0 <= self.albedo_scale_jitter < 1.0:
            raise ValueError(f"albedo scale jitter must be in [0, 1), got {self.albedo_scale_jitter}")
        if self.uncertainty_threshold_deg is not None and self.uncertainty_threshold_deg <= 0.0:
            raise ValueError(f"uncertainty threshold must be > 0 degrees, got {self.uncertainty_threshold_deg}")

    @property
    def threshold_deg(self) -> float:
        """The uncertainty threshold in effect."""
        if self.uncertainty_threshold_deg is not None:
            return self.uncertainty_threshold_deg
        return 2.0 * self.normal_noise_deg

    def to_json(self) -> dict:
        """The settings, with the threshold in effect."""
        return {**asdict(self), "uncertainty_threshold_deg": self.threshold_deg}


#: Named combinations, so a benchmark row is one flag. "ps": typical of SDM-UniPS-class estimates on
#: real objects (a few degrees of noise, a small calibration bias, reflectance known up to ~15 % per view).
REALISM_PRESETS: dict[str, PsRealism] = {
    "none": PsRealism(),
    "ps": PsRealism(normal_noise_deg=4.0, normal_bias_deg=2.0, albedo_scale_jitter=0.15),
}


def resolve_realism(preset: str = "none", **overrides: float | None) -> PsRealism:
    """A preset with the given fields replaced; overrides that are None keep the preset's value.

    Raises:
        ValueError: unknown preset or field, or a value out of range.
    """
    if preset not in REALISM_PRESETS:
        raise ValueError(f"unknown realism preset {preset!r}; choose one of {sorted(REALISM_PRESETS)}")
    fields = set(asdict(REALISM_PRESETS[preset]))
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown realism settings {sorted(unknown)}; known: {sorted(fields)}")
    return replace(REALISM_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def albedo_gains(views: int, jitter: float, seed: int) -> np.ndarray:
    """Per-view, per-channel albedo factors (views, 3), uniform in [1 - jitter, 1 + jitter] (ones if 0)."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"albedo scale jitter must be in [0, 1), got {jitter}")
    if jitter == 0.0:
        return np.ones((views, 3))
    return np.random.default_rng([seed, 2]).uniform(1.0 - jitter, 1.0 + jitter, size=(views, 3))


def rotate_vectors(vectors: np.ndarray, rotvecs: np.ndarray) -> np.ndarray:
    """Rotates vectors (..., 3) by rotation vectors (..., 3) (axis times angle in radians), Rodrigues."""
    angle = np.linalg.norm(rotvecs, axis=-1, keepdims=True)
    axis = rotvecs / np.maximum(angle, 1e-300)
    cos, sin = np.cos(angle), np.sin(angle)
    along = np.sum(axis * vectors, axis=-1, keepdims=True)
    return vectors * cos + np.cross(axis, vectors) * sin + axis * along * (1.0 - cos)


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees between unit vectors (..., 3); atan2 form, accurate for tiny angles."""
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


def angular_noise(normals: np.ndarray, mean_deg: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tilts unit normals (N, 3) by Rayleigh-distributed angles with mean ``mean_deg`` towards random tangents.

    Returns:
        (noisy unit normals (N, 3), tilt angles in degrees (N,)).
    """
    if mean_deg == 0.0:
        return normals.copy(), np.zeros(len(normals))
    sigma = np.radians(mean_deg) / np.sqrt(np.pi / 2.0)
    # An isotropic 3D Gaussian projected on the tangent plane is an isotropic 2D Gaussian there.
    tilt = rng.normal(scale=sigma, size=normals.shape)
    tilt -= np.sum(tilt * normals, axis=-1, keepdims=True) * normals
    angle = np.linalg.norm(tilt, axis=-1, keepdims=True)
    direction = tilt / np.maximum(angle, 1e-300)
    noisy = normals * np.cos(angle) + direction * np.sin(angle)
    return noisy / np.linalg.norm(noisy, axis=-1, keepdims=True), np.degrees(angle[:, 0])


@dataclass(frozen=True)
class BiasField:
    """A smooth field of rotation vectors over the image, in radians.

    ``ω(x) = scale · (offset + Σ_k amplitude_k cos(2π frequency_k · x + phase_k))`` with ``x`` the
    normalised image position of the pixel centre ((u + 0.5) / W, (v + 0.5) / H), so the field is
    the same function at every resolution.
    """

    offset: np.ndarray
    """(3,) constant rotation direction (before scaling)."""
    amplitudes: np.ndarray
    """(K, 3) rotation-vector amplitude of each mode."""
    frequencies: np.ndarray
    """(K, 2) cycles per image side along (x, y)."""
    phases: np.ndarray
    """(K,) radians."""
    scale: float
    """Normalises the field to the requested RMS angle (at the resolution it was drawn for)."""

    @classmethod
    def random(cls, rms_deg: float, height: int, width: int, rng: np.random.Generator) -> BiasField:
        """Draws a field whose RMS rotation angle over an ``height`` x ``width`` image is ``rms_deg``."""
        magnitude = rng.uniform(*_BIAS_FREQUENCY_RANGE, size=_BIAS_MODES)
        heading = rng.uniform(0.0, 2.0 * np.pi, size=_BIAS_MODES)
        unscaled = cls(
            offset=rng.normal(size=3),
            amplitudes=rng.normal(size=(_BIAS_MODES, 3)),
            frequencies=magnitude[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=-1),
            phases=rng.uniform(0.0, 2.0 * np.pi, size=_BIAS_MODES),
            scale=1.0,
        )
        rms = np.sqrt(np.mean(np.sum(unscaled.evaluate(height, width) ** 2, axis=-1)))
        return replace(unscaled, scale=float(np.radians(rms_deg) / max(rms, 1e-12)))

    def evaluate(self, height: int, width: int) -> np.ndarray:
        """Rotation vectors (H, W, 3) in radians at the pixel centres."""
        x = (np.arange(width) + 0.5) / width
        y = (np.arange(height) + 0.5) / height
        grid = np.stack(np.meshgrid(x, y), axis=-1)  # (H, W, 2): (x, y)
        phase = 2.0 * np.pi * grid @ self.frequencies.T + self.phases  # (H, W, K)
        return self.scale * (self.offset + np.cos(phase) @ self.amplitudes)

    def to_json(self) -> dict:
        """Parameters that rebuild the field with :meth:`from_json`."""
        return {
            "offset": self.offset.tolist(),
            "amplitudes": self.amplitudes.tolist(),
            "frequencies": self.frequencies.tolist(),
            "phases": self.phases.tolist(),
            "scale": self.scale,
        }

    @classmethod
    def from_json(cls, data: dict) -> BiasField:
        """Inverse of :meth:`to_json`."""
        return cls(
            offset=np.asarray(data["offset"], dtype=np.float64),
            amplitudes=np.asarray(data["amplitudes"], dtype=np.float64),
            frequencies=np.asarray(data["frequencies"], dtype=np.float64),
            phases=np.asarray(data["phases"], dtype=np.float64),
            scale=float(data["scale"]),
        )
