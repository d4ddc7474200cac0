"""Camera files of the RnB inputs, read into one form: pinhole cameras in the user's world frame.

Three files are understood:

- ``cameras.npz`` (IDR / RNb-NeuS): ``world_mat_i`` = K[R|t] (world -> pixels), optional ``scale_mat_i``
  (unit sphere -> world). Views are the normal maps in sorted order.
- ``transform.json`` (RNb-NeuS2's prepared data): ``frames`` with ``normal_path`` / ``albedo_path``,
  ``transform_matrix`` (OpenCV camera-to-world in the normalised frame), ``intrinsic_matrix``, and ``n2w``
  (normalised -> world). Only ``"from_na": true`` files (OpenCV axes) are accepted.
- SfMData JSON (``cameras.sfm``, ``sfm.json``; Meshroom / AliceVision), see :mod:`.sfm_json`. Views are
  matched to normal maps by the stem of the view's image path, then by view id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from recon_plugin.data.errors import RnbDataError
from recon_plugin.data.image_io import IMAGE_SUFFIXES, list_images
from recon_plugin.data.sfm_json import SfmView, read_sfm_json

#: Camera files looked for, in this order, when none is named.
CAMERA_FILES = ("cameras.npz", "transform.json", "cameras.sfm", "sfm.json")


@dataclass
class CameraSet:
    """Pinhole cameras of every view, in the world frame of the input."""

    intrinsics: np.ndarray
    """(N, 3, 3), principal point in the file's own pixel convention (see ``pixel_convention``)."""
    poses: np.ndarray
    """(N, 4, 4) camera-to-world, OpenCV axes (x right, y down, z forward), world units."""
    source: Path
    """The camera file."""
    pixel_convention: str
    """"file": as stored (the dataparser's ``pixel_centers`` option says which); "half": already nerfstudio's."""
    normal_files: list[Path] | None = None
    """Normal map of each view when the camera file decides it; None: the normal folder in sorted order."""
    albedo_files: list[Path] | None = None
    """Albedo of each view when the camera file names it."""
    recorded_normalisation: np.ndarray | None = None
    """(4, 4) unit sphere -> world similarity stored with the cameras (scale_mat_0, n2w), if any."""
    recorded_name: str = ""
    image_size: tuple[int, int] | None = None
    """(width, height) the intrinsics refer to, when the file says."""

    def __len__(self) -> int:
        return len(self.poses)


def decompose_projection(projection: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Splits a 3x4 projection into intrinsics K (K[2,2] = 1) and an OpenCV camera-to-world 4x4 pose."""
    if not np.all(np.isfinite(projection)):
        raise RnbDataError(f"{where}: contains NaN or infinite values")
    projection = projection[:3, :4].astype(np.float64)
    m = projection[:, :3]
    det = np.linalg.det(m)
    if abs(det) < 1e-12 * max(1.0, np.abs(m).max() ** 3):
        raise RnbDataError(f"{where}: the 3x3 part of the projection is singular (det {det:.3g}); not a camera matrix")
    projection = projection * np.sign(det)
    m = projection[:, :3]
    # RQ decomposition through QR of the flipped, transposed matrix.
    flip = np.eye(3)[::-1]
    q, r = np.linalg.qr((flip @ m).T)
    intrinsics = flip @ r.T @ flip
    rotation = flip @ q.T
    signs = np.diag(np.sign(np.diag(intrinsics)))
    intrinsics = intrinsics @ signs
    rotation = signs @ rotation
    if np.linalg.det(rotation) < 0:
        raise RnbDataError(f"{where}: projection has a reflection (left-handed camera frame)")
    intrinsics = intrinsics / intrinsics[2, 2]
    centre = -np.linalg.solve(m, projection[:, 3])
    pose = np.eye(4)
    pose[:3, :3] = rotation.T
    pose[:3, 3] = centre
    return intrinsics, pose


def split_similarity(matrix: np.ndarray, where: str) -> tuple[float, np.ndarray, np.ndarray]:
    """A 4x4 ``[s R | t]`` (unit sphere -> world) split into (s, R, t)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise RnbDataError(f"{where}: expected a 4x4 matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise RnbDataError(f"{where}: contains NaN or infinite values")
    linear = matrix[:3, :3]
    det = np.linalg.det(linear)
    if det <= 1e-15:
        raise RnbDataError(f"{where}: not an invertible similarity (det {det:.3g})")
    scale = det ** (1.0 / 3.0)
    rotation = linear / scale
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
        raise RnbDataError(f"{where}: not a uniform scale + rotation + translation")
    return float(scale), rotation, matrix[:3, 3].copy()


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RnbDataError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(data, dict):
        raise RnbDataError(f"{path}: expected a JSON object at the top level")
    return data


def read_idr_cameras(path: Path) -> CameraSet:
    """``cameras.npz``: world_mat_i decomposed in world units; scale_mat_0 kept as the recorded normalisation."""
    try:
        data = dict(np.load(path))
    except Exception as err:  # zipfile/pickle errors from a corrupt file
        raise RnbDataError(f"{path}: not a readable .npz file ({err})") from err
    # NeuS's files also hold world_mat_inv_i, which is not a view of its own.
    indices = sorted(int(match.group(1)) for key in data if (match := re.fullmatch(r"world_mat_(\d+)", key)))
    if not indices:
        raise RnbDataError(f"{path}: no world_mat_i entries (IDR cameras)")
    if indices != list(range(len(indices))):
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        raise RnbDataError(f"{path}: missing world_mat_{missing[0]} (world_mat_i must be numbered 0..N-1)")
    intrinsics, poses = [], []
    for index in indices:
        k, pose = decompose_projection(np.asarray(data[f"world_mat_{index}"]), f"{path}:world_mat_{index}")
        intrinsics.append(k)
        poses.append(pose)

    recorded = None
    if "scale_mat_0" in data:
        recorded = np.asarray(data["scale_mat_0"], dtype=np.float64)
        reference = split_similarity(recorded, f"{path}:scale_mat_0")
        for index in indices[1:]:
            key = f"scale_mat_{index}"
            if key not in data:
                continue
            other = split_similarity(np.asarray(data[key]), f"{path}:{key}")
            same = np.isclose(other[0], reference[0], rtol=1e-4) and np.allclose(
                other[2], reference[2], atol=1e-4 * reference[0]
            )
            if not same:
                CONSOLE.print(
                    f"[yellow]{path}: {key} differs from scale_mat_0; every view is normalised with scale_mat_0 "
                    "(one unit sphere per scene)"
                )
    elif any(key.startswith("scale_mat_") for key in data):
        raise RnbDataError(f"{path}: scale_mat_i entries exist but scale_mat_0 is missing")
    return CameraSet(
        intrinsics=np.stack(intrinsics),
        poses=np.stack(poses),
        source=path,
        pixel_convention="file",
        recorded_normalisation=recorded,
        recorded_name="scale_mat_0",
    )


def _matrix(entry: dict, key: str, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(entry[key], dtype=np.float64)
    except KeyError as err:
        raise RnbDataError(f"{where}: missing '{key}'") from err
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{where}: '{key}' is not a numeric matrix") from err
    if matrix.shape not in ((4, 4), (3, 3), (3, 4)) or not np.all(np.isfinite(matrix)):
        raise RnbDataError(f"{where}: '{key}' must be a finite 3x3, 3x4 or 4x4 matrix, got shape {matrix.shape}")
    return matrix


def read_neus2_transform(path: Path) -> CameraSet:
    """RNb-NeuS2's ``transform.json``: normalised OpenCV poses mapped back to world units with ``n2w``."""
    data = _load_json(path)
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise RnbDataError(f"{path}: no 'frames' list")
    if not data.get("from_na", False):
        raise RnbDataError(
            f'{path}: only RNb-NeuS2/NeuS2 files with "from_na": true (OpenCV camera axes) are supported; '
            "this one uses instant-ngp's NeRF axes"
        )
    recorded = None
    if "n2w" in data:
        recorded = _matrix(data, "n2w", str(path))
        if recorded.shape != (4, 4):
            raise RnbDataError(f"{path}: 'n2w' must be 4x4")
    scale, rotation, translation = (
        split_similarity(recorded, f"{path}:n2w")
        if recorded is not None
        else (
            1.0,
            np.eye(3),
            np.zeros(3),
        )
    )
    intrinsics, poses, normals, albedos = [], [], [], []
    for index, frame in enumerate(frames):
        where = f"{path}: frame {index}"
        if not isinstance(frame, dict) or "normal_path" not in frame:
            raise RnbDataError(f"{where}: missing 'normal_path'")
        normal = path.parent / frame["normal_path"]
        if not normal.is_file():
            raise RnbDataError(f"{where}: normal map {normal} not found")
        normals.append(normal)
        if frame.get("albedo_path"):
            albedo = path.parent / frame["albedo_path"]
            if not albedo.is_file():
                raise RnbDataError(f"{where}: albedo {albedo} not found")
            albedos.append(albedo)
        pose_normalised = _matrix(frame, "transform_matrix", where)
        k = _matrix(frame, "intrinsic_matrix", where)[:3, :3]
        if pose_normalised.shape[0] < 3 or pose_normalised.shape[1] != 4:
            raise RnbDataError(f"{where}: 'transform_matrix' must be 3x4 or 4x4")
        rotation_normalised = pose_normalised[:3, :3]
        if not np.allclose(rotation_normalised @ rotation_normalised.T, np.eye(3), atol=1e-4):
            raise RnbDataError(f"{where}: 'transform_matrix' has no rotation in its 3x3 part")
        pose = np.eye(4)
        pose[:3, :3] = rotation @ rotation_normalised
        pose[:3, 3] = scale * (rotation @ pose_normalised[:3, 3]) + translation
        intrinsics.append(k / k[2, 2])
        poses.append(pose)
    if albedos and len(albedos) != len(frames):
        raise RnbDataError(f"{path}: {len(albedos)} of {len(frames)} frames name an 'albedo_path'")
    try:
        size = (int(data["w"]), int(data["h"])) if "w" in data and "h" in data else None
    except (TypeError, ValueError) as err:
        raise RnbDataError(f"{path}: 'w' and 'h' must be integers ({data['w']!r}, {data['h']!r})") from err
    return CameraSet(
        intrinsics=np.stack(intrinsics),
        poses=np.stack(poses),
        source=path,
        pixel_convention="file",
        normal_files=normals,
        albedo_files=albedos or None,
        recorded_normalisation=recorded,
        recorded_name="n2w",
        image_size=size,
    )


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The image of ``folder`` whose name without suffix is ``stem`` (None when absent)."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_sfm_cameras(path: Path, normal_folder: Path | None) -> CameraSet:
    """SfMData views matched to normal maps: ``normal/<image stem>.*``, then ``normal/<viewId>.*``; without a
    normal folder the view's own path (relative to the SfMData file) must be the normal map."""
    views = read_sfm_json(path)
    matched: list[tuple[Path, SfmView]] = []
    for view in views:
        stem = Path(view.path.replace("\\", "/")).stem
        where = f"{path}: view {view.view_id} ({view.path or 'no path'})"
        if normal_folder is not None:
            found = (find_by_stem(normal_folder, stem) if stem else None) or find_by_stem(normal_folder, view.view_id)
            if found is None:
                raise RnbDataError(
                    f"{where}: image not found: no {normal_folder}/{stem or view.view_id}.png (or .exr, ...) "
                    f"and no {normal_folder}/{view.view_id}.png"
                )
        else:
            found = Path(view.path) if Path(view.path).is_absolute() else path.parent / view.path
            if not view.path or not found.is_file():
                raise RnbDataError(f"{where}: image not found at {found} (and there is no normal/ folder)")
        matched.append((found, view))
    files = [file for file, _ in matched]
    if len(set(files)) != len(files):
        duplicate = next(file for file in files if files.count(file) > 1)
        raise RnbDataError(f"{path}: several views match the same normal map {duplicate}")
    if normal_folder is not None:
        unused = sorted(set(list_images(normal_folder)) - set(files))
        if unused:
            CONSOLE.print(
                f"[yellow]{path}: {len(unused)} normal maps have no view in this file and are ignored "
                f"(first: {unused[0].name})"
            )
    matched.sort(key=lambda item: item[0].name)
    sizes = {(view.width, view.height) for _, view in matched}
    if len(sizes) != 1:
        raise RnbDataError(f"{path}: views have different image sizes {sorted(sizes)}; expected one size")
    return CameraSet(
        intrinsics=np.stack([view.intrinsics for _, view in matched]),
        poses=np.stack([view.pose for _, view in matched]),
        source=path,
        pixel_convention="half",
        normal_files=[file for file, _ in matched],
        image_size=sizes.pop(),
    )


def find_camera_file(root: Path, camera_file: Path | None) -> Path:
    """The named camera file (relative to ``root`` unless absolute), else the first of :data:`CAMERA_FILES`,
    else the only ``*.sfm`` file of ``root``."""
    if camera_file is not None:
        path = camera_file if camera_file.is_absolute() else root / camera_file
        if not path.is_file():
            raise RnbDataError(f"{path}: camera file not found")
        return path
    for name in CAMERA_FILES:
        if (root / name).is_file():
            return root / name
    sfm_files = sorted(root.glob("*.sfm"))
    if len(sfm_files) == 1:
        return sfm_files[0]
    if len(sfm_files) > 1:
        names = ", ".join(path.name for path in sfm_files)
        raise RnbDataError(f"{root}: several SfMData files ({names}); choose one with --camera-file")
    raise RnbDataError(
        f"{root / 'cameras.npz'}: missing (IDR cameras with world_mat_i); also looked for "
        f"{', '.join(CAMERA_FILES[1:])} (RNb-NeuS2 transform.json, Meshroom SfMData)"
    )


def read_cameras(path: Path, normal_folder: Path | None) -> CameraSet:
    """Reads any supported camera file, chosen by suffix (and by content for ``.json``)."""
    if path.suffix == ".npz":
        return read_idr_cameras(path)
    if path.suffix == ".sfm":
        return read_sfm_cameras(path, normal_folder)
    if path.suffix == ".json":
        data = _load_json(path)
        if "frames" in data:
            return read_neus2_transform(path)
        if "views" in data:
            return read_sfm_cameras(path, normal_folder)
        raise RnbDataError(f"{path}: neither an RNb-NeuS2 transform.json ('frames') nor an SfMData file ('views')")
    raise RnbDataError(f"{path}: unknown camera file type (expected .npz, .sfm or .json)")
