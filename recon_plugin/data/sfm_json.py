"""Reader for Meshroom / AliceVision ``SfMData`` JSON files (``cameras.sfm``, ``sfm.json``).

Layout (all numbers may be stored as strings)::

    {"version": ["1", "2", "5"],
     "views":      [{"viewId", "poseId", "intrinsicId", "path", ...}],
     "intrinsics": [{"intrinsicId", "type", "width", "height", "sensorWidth", "focalLength" (mm),
                     "pixelRatio", "principalPoint" (offset from the image centre, pixels),
                     "distortionParams", ...}],
     "poses":      [{"poseId", "pose": {"transform": {"rotation": [9], "center": [3]}}}]}

Conventions, from AliceVision's ``sfmDataIO`` (JSON writer and reader):

- A pose stores ``Pose3``: ``rotation`` R maps world to camera axes (x_cam = R (X - C)) and ``center`` C is
  the camera centre in world units. The writer flattens Eigen's column-major storage, so the nine values
  read row-major are Rᵀ, the camera-to-world rotation. Camera axes are OpenCV's (x right, y down, z forward).
- Focal length: ``pxFocalLength`` (pixels) before version 1.2.2; since then ``focalLength`` in mm with
  ``sensorWidth`` (fx = f_mm · width / sensorWidth). ``pixelRatio`` held fx / fy before 1.2.5 and the pixel
  aspect ratio (fy / fx) since.
- ``principalPoint`` is an offset from the image centre since 1.2.1 and absolute before. AliceVision puts
  the centre of pixel i at coordinate i; nerfstudio at i + 0.5, so 0.5 is added.

Files without a ``version`` are read with the current conventions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recon_plugin.data.errors import RnbDataError

#: Intrinsic types that are a pinhole projection once their distortion parameters are all zero.
PINHOLE_TYPES = frozenset(
    {"pinhole", "radial1", "radial3", "brown", "fisheye1", "fisheye4", "3deanamorphic4", "3declassicld", "3deradial4"}
)


@dataclass
class SfmView:
    """One posed view of an SfMData file, in nerfstudio's pixel convention and OpenCV camera axes."""

    view_id: str
    pose_id: str
    path: str
    """Image path as stored in the file (often the original photograph)."""
    intrinsics: np.ndarray
    """(3, 3) K with pixel centres at i + 0.5."""
    pose: np.ndarray
    """(4, 4) camera-to-world, OpenCV axes, world units."""
    width: int
    height: int


def _version(data: dict, where: str) -> tuple[int, int, int]:
    raw = data.get("version")
    if raw is None:
        return (99, 0, 0)
    try:
        parts = tuple(int(float(value)) for value in raw)
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{where}: 'version' is not a list of numbers ({raw!r})") from err
    major, minor, patch = (parts + (0, 0, 0))[:3]
    return major, minor, patch


def _number(entry: dict, key: str, where: str) -> float:
    if key not in entry:
        raise RnbDataError(f"{where}: missing '{key}'")
    try:
        value = float(entry[key])
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{where}: '{key}' is not a number ({entry[key]!r})") from err
    if not np.isfinite(value):
        raise RnbDataError(f"{where}: '{key}' is not finite ({value})")
    return value


def _numbers(entry: dict, key: str, count: int, where: str) -> np.ndarray:
    raw = entry.get(key)
    if raw is None:
        raise RnbDataError(f"{where}: missing '{key}'")
    if not isinstance(raw, list):
        raw = [raw]
    try:
        values = np.array([float(value) for value in raw], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{where}: '{key}' holds a non-numeric value ({raw!r})") from err
    if values.size != count or not np.all(np.isfinite(values)):
        raise RnbDataError(f"{where}: '{key}' needs {count} finite numbers, got {raw!r}")
    return values


def _optional_numbers(entry: dict, key: str, where: str) -> np.ndarray:
    """Distortion lists: AliceVision writes an empty string when there are none."""
    raw = entry.get(key, [])
    if raw in ("", None):
        return np.zeros(0)
    if not isinstance(raw, list):
        raw = [raw]
    try:
        return np.array([float(value) for value in raw], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{where}: '{key}' holds a non-numeric value ({raw!r})") from err


def parse_intrinsic(entry: dict, version: tuple[int, int, int], where: str) -> tuple[np.ndarray, int, int]:
    """(K, width, height) of one ``intrinsics`` entry; rejects lens distortion."""
    kind = str(entry.get("type", "pinhole"))
    distortion = _optional_numbers(entry, "distortionParams", where)
    undistortion = _optional_numbers(entry, "undistortionParams", where)
    if kind not in PINHOLE_TYPES:
        raise RnbDataError(
            f"{where}: camera type '{kind}' is not supported; only pinhole cameras are (undistort the images "
            "in Meshroom and export the SfMData of the undistorted images)"
        )
    if np.any(distortion != 0.0) or np.any(undistortion != 0.0):
        raise RnbDataError(
            f"{where}: lens distortion is present (type '{kind}', distortionParams {distortion.tolist()}) but "
            "unsupported; undistort the normal maps first and export the SfMData of the undistorted images"
        )
    width, height = int(_number(entry, "width", where)), int(_number(entry, "height", where))
    if width <= 0 or height <= 0:
        raise RnbDataError(f"{where}: image size {width}x{height} is not positive")
    if version < (1, 2, 2) or ("focalLength" not in entry and "pxFocalLength" in entry):
        focal = _optional_numbers(entry, "pxFocalLength", where)
        if focal.size not in (1, 2):
            raise RnbDataError(f"{where}: missing 'pxFocalLength' (focal length in pixels)")
        fx, fy = float(focal[0]), float(focal[-1])
    else:
        focal_mm = _number(entry, "focalLength", where)
        if "sensorWidth" not in entry:
            raise RnbDataError(f"{where}: 'focalLength' is in mm but 'sensorWidth' is missing")
        fx = focal_mm * width / _number(entry, "sensorWidth", where)
        ratio = _number(entry, "pixelRatio", where) if "pixelRatio" in entry else 1.0
        fy = fx / ratio if version < (1, 2, 5) else fx * ratio
    if not (fx > 0 and fy > 0):
        raise RnbDataError(f"{where}: focal length must be positive (fx {fx}, fy {fy})")
    principal = _numbers(entry, "principalPoint", 2, where) if "principalPoint" in entry else np.zeros(2)
    if version >= (1, 2, 1):
        principal = principal + np.array([width, height]) / 2.0
    intrinsics = np.array([[fx, 0.0, principal[0] + 0.5], [0.0, fy, principal[1] + 0.5], [0.0, 0.0, 1.0]])
    return intrinsics, width, height


def parse_pose(entry: dict, where: str) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world of one ``poses`` entry."""
    try:
        transform = entry["pose"]["transform"]
    except (KeyError, TypeError) as err:
        raise RnbDataError(f"{where}: missing 'pose.transform'") from err
    camera_to_world = _numbers(transform, "rotation", 9, where).reshape(3, 3)
    if not np.allclose(camera_to_world @ camera_to_world.T, np.eye(3), atol=1e-5) or np.linalg.det(camera_to_world) < 0:
        raise RnbDataError(f"{where}: 'rotation' is not a rotation matrix: {camera_to_world.round(6).tolist()}")
    pose = np.eye(4)
    pose[:3, :3] = camera_to_world
    pose[:3, 3] = _numbers(transform, "center", 3, where)
    return pose


def parse_sfm_data(data: Any, path: Path) -> list[SfmView]:
    """Every view of an SfMData dictionary with its intrinsics and pose.

    Raises:
        RnbDataError: naming ``path`` and the view, intrinsic or pose that is missing or unsupported.
    """
    if not isinstance(data, dict) or not isinstance(data.get("views"), list) or not data["views"]:
        raise RnbDataError(f"{path}: not an SfMData file (no 'views' list)")
    version = _version(data, str(path))
    intrinsics = {}
    for entry in data.get("intrinsics", []) or []:
        key = str(entry.get("intrinsicId"))
        intrinsics[key] = parse_intrinsic(entry, version, f"{path}: intrinsic {key}")
    poses = {}
    for entry in data.get("poses", []) or []:
        key = str(entry.get("poseId"))
        poses[key] = parse_pose(entry, f"{path}: pose {key}")

    views = []
    for entry in data["views"]:
        view_id = str(entry.get("viewId"))
        image = str(entry.get("path", ""))
        where = f"{path}: view {view_id} ({image or 'no path'})"
        if "rigId" in entry:
            raise RnbDataError(f"{where}: camera rigs (rigId/subPoseId) are not supported")
        intrinsic_id, pose_id = str(entry.get("intrinsicId")), str(entry.get("poseId"))
        if intrinsic_id not in intrinsics:
            raise RnbDataError(f"{where}: unknown intrinsicId {intrinsic_id} (no such entry in 'intrinsics')")
        if pose_id not in poses:
            raise RnbDataError(f"{where}: missing pose {pose_id} (the view was not reconstructed)")
        k, width, height = intrinsics[intrinsic_id]
        views.append(SfmView(view_id, pose_id, image, k, poses[pose_id], width, height))
    return views


def read_sfm_json(path: Path) -> list[SfmView]:
    """Reads an SfMData ``.sfm``/``.json`` file; see :func:`parse_sfm_data`."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise RnbDataError(f"{path}: file not found") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RnbDataError(f"{path}: not a JSON file ({err})") from err
    return parse_sfm_data(data, Path(path))
