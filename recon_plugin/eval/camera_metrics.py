"""Camera poses estimated from photos (COLMAP through ``ns-process-data``) against the calibrated ones.

Structure from motion recovers the cameras up to a similarity (scale, rotation, translation). The estimate is
aligned to the reference by the least-squares similarity between the camera centres (Umeyama), then compared:
the centres' distances in the reference's units, and the angle of each relative rotation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SimilarityAlignment", "align_similarity", "camera_errors"]


@dataclass
class SimilarityAlignment:
    """``x_reference ~ scale * rotation @ x_estimate + translation``."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of the estimate's frame in the reference's frame."""
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation


def align_similarity(source: np.ndarray, target: np.ndarray) -> SimilarityAlignment:
    """The similarity mapping (N, 3) ``source`` points onto ``target`` in the least-squares sense (Umeyama, 1991);
    needs at least three points not on one line."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) < 3:
        raise ValueError(f"need two (N >= 3, 3) point sets of the same shape, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1.0
    rotation = u @ sign @ vt
    variance = (source_centred**2).sum() / len(source)
    if variance <= 0 or singular[1] <= 1e-12 * max(singular[0], 1e-300):
        raise ValueError("the points are (nearly) collinear: the similarity is not determined")
    scale = float(np.trace(np.diag(singular) @ sign) / variance)
    translation = target_mean - scale * rotation @ source_mean
    return SimilarityAlignment(scale, rotation, translation)


def camera_errors(estimate_c2w: np.ndarray, reference_c2w: np.ndarray) -> tuple[dict, SimilarityAlignment]:
    """Errors of estimated camera-to-world poses (N, 3 or 4, 4; same camera axes convention as the reference)
    after the similarity that best maps the estimated centres onto the reference's.

    Returns the errors (the alignment's scale, the centre errors in reference units and the rotation errors in
    degrees: mean, median, max, and per view) and the alignment itself.
    """
    estimate, reference = np.asarray(estimate_c2w, np.float64), np.asarray(reference_c2w, np.float64)
    alignment = align_similarity(estimate[:, :3, 3], reference[:, :3, 3])
    centres = alignment.points(estimate[:, :3, 3])
    centre_errors = np.linalg.norm(centres - reference[:, :3, 3], axis=-1)
    aligned_rotations = alignment.rotation @ estimate[:, :3, :3]
    relative = np.einsum("nji,njk->nik", reference[:, :3, :3], aligned_rotations)
    cosine = np.clip((np.trace(relative, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rotation_errors = np.degrees(np.arccos(cosine))

    def summary(values: np.ndarray) -> dict:
        return {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max())}

    errors = {
        "scale": alignment.scale,
        "centre_error": summary(centre_errors),
        "rotation_error_deg": summary(rotation_errors),
        "per_view": [
            {"centre_error": float(c), "rotation_error_deg": float(r)}
            for c, r in zip(centre_errors, rotation_errors, strict=True)
        ],
    }
    return errors, alignment
