"""Dataparser for glossy-object data (NeRO): GlossySynthetic, nerfstudio's transforms.json, NeuS/IDR or LLFF.

Layout (a), NeRO's GlossySynthetic (what ``recon-synth glossy`` writes)::

    DATA/
      0.png, 1.png, ...      sRGB images (any size; all views need not share it)
      0-camera.pkl, ...      pickle of (pose, K): pose 3x4 world->camera [R|t] in OpenCV axes, K 3x3
      0-depth.png, ...       optional uint16 camera-z depth, d = v / 65535 * 15; d >= 14.5 is background

Layout (b), nerfstudio's ``transforms.json`` (``ns-process-data`` output), read with nerfstudio's own
parser (intrinsics, distortion, downscaled image folders, split lists), optional ``mask_path`` per frame
and the sparse point cloud named by ``ply_file_path``.

Layouts (c) NeuS/IDR (``cameras_sphere.npz`` + ``image/`` + ``mask/``) and (d) LLFF (``poses_bounds.npy`` +
``images/`` + ``masks/``) are read by :mod:`.neus_layout` and :mod:`.llff_layout`; every layout ends as
:class:`~recon_plugin.data.photo_views.PhotoViews`, fitted to its images (EXIF orientation, ``--downscale-factor``).

The object's bounding sphere (centre c, radius r in world units) comes from ``--object-center`` and
``--object-radius``, else from the stored scale_mat_0 (NeuS), the depth maps (back-projected foreground), the point
cloud, the masks' visual hull, or the
cameras (the point closest to all optical axes; radius from the field of view). The model's frame puts
that sphere, enlarged by ``sphere_margin``, on the unit sphere; the map is recorded as nerfstudio's
``dataparser_transform`` / ``dataparser_scale`` (see :mod:`recon_plugin.data.transforms`), so exports
return to world units. For transforms.json the world is nerfstudio's "original data" frame: its
``applied_transform`` / ``applied_scale`` are folded in exactly as nerfstudio does.

The metadata records ``object_sphere``: the world sphere (margin included) that became the unit sphere,
and which source set it. Masks (depth-derived, ``mask_path`` files, or an RGBA image's alpha) reach the
batch as ``fg_mask`` through :class:`NeroDataset`; nerfstudio's own ``mask`` key would restrict ray
sampling to the object.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.data.utils.dataparsers_utils import (
    get_train_eval_split_all,
    get_train_eval_split_fraction,
    get_train_eval_split_interval,
)
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from recon_plugin.data.errors import NeroDataError
from recon_plugin.data.image_io import read_image
from recon_plugin.data.llff_layout import LLFF_POSES, llff_image_folder, read_llff_layout
from recon_plugin.data.neus_layout import neus_camera_file, read_neus_layout
from recon_plugin.data.normalisation import (
    SceneNormalisation,
    check_normalisation,
    identity_normalisation,
    read_point_cloud,
    sphere_from_cameras,
    sphere_from_points,
    sphere_from_silhouettes,
)
from recon_plugin.data.photo_views import PhotoViews, fit_to_images, image_sizes
from recon_plugin.data.transforms import world_to_normalized

__all__ = [
    "DEPTH_BACKGROUND",
    "DEPTH_RANGE",
    "NeroDataError",
    "NeroDataParser",
    "NeroDataParserConfig",
    "depth_to_points",
    "load_camera_pickle",
    "load_foreground_mask",
    "read_glossy_depth",
    "trim_outliers",
    "world_points_to_unit",
]

#: GlossySynthetic depth encoding: metres = uint16 / 65535 * DEPTH_RANGE; background at >= DEPTH_BACKGROUND.
DEPTH_RANGE = 15.0
DEPTH_BACKGROUND = 14.5

_VIEW_NAME = re.compile(r"(\d+)\.png")
# Globals a pickle of numpy arrays may reference; anything else is refused rather than executed.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


@dataclass
class NeroDataParserConfig(DataParserConfig):
    """Glossy objects: NeRO's GlossySynthetic layout (k.png, k-camera.pkl, k-depth.png) or a transforms.json."""

    _target: Type = field(default_factory=lambda: NeroDataParser)
    data: Path = Path("data/nero")
    """A GlossySynthetic folder, a nerfstudio folder holding transforms.json, or the .json file itself."""
    layout: Literal["auto", "glossy", "transforms", "neus", "llff"] = "auto"
    """The folder's layout. "auto": "glossy" when it holds k-camera.pkl files, "transforms" when it holds
    transforms.json (or is one), "neus" when it holds image/ and cameras_sphere.npz or cameras.npz (NeuS/IDR:
    DTU, BlendedMVS), "llff" when it holds poses_bounds.npy (LLFF, NeRD, Ref-NeRF real scenes)."""
    object_center: Tuple[float, float, float] | None = None
    """Centre of the object's bounding sphere in world units (with object_radius; overrides `bounds`)."""
    object_radius: float | None = None
    """Radius of the object's bounding sphere in world units (with object_center)."""
    bounds: Literal["auto", "scale-mat", "depth", "point-cloud", "silhouettes", "cameras", "unit"] = "auto"
    """Where the bounding sphere comes from: "scale-mat" the unit sphere stored with NeuS/IDR cameras (scale_mat_0,
    taken as it is, no margin), "depth" the depth maps, "point-cloud" the point cloud, "silhouettes" the visual hull
    of the masks, "cameras" the point the optical axes meet; "auto" takes the first of these the data has.
    "unit": the world already has the object inside the unit sphere (NeRO's own data); no normalisation."""
    point_cloud: Path | None = None
    """A .ply to bound the object (default: transforms.json's ply_file_path). Crop it to the object when
    the capture also reconstructed the surroundings."""
    point_cloud_trim: float = 0.01
    """Fraction of the point cloud dropped as outliers on each side of every axis before bounding it."""
    sphere_margin: float = 0.1
    """The unit sphere is the object's bounding sphere with its radius grown by this fraction."""
    use_masks: bool = True
    """Expose foreground masks (depth maps, mask_path, alpha) as `fg_mask` in the batch."""
    eval_mode: Literal["interval", "fraction", "all"] = "interval"
    """Held-out views: every eval_interval-th view, nerfstudio's train fraction, or none (eval = train).
    A transforms.json with train_filenames / val_filenames lists uses those instead."""
    eval_interval: int = 8
    train_split_fraction: float = 0.9
    downscale_factor: int | None = None
    """Divide the images' resolution by this. transforms.json: nerfstudio's images_N/ folders (its own rule picks
    one when unset); LLFF: images_N/ when it exists, else images/ resized; other layouts: the images resized
    on load (area averaging), intrinsics scaled to match. Unset: full resolution."""
    pixel_centers: Literal["auto", "half", "integer"] = "auto"
    """Where the camera file puts a pixel's centre: "half" at (u + 0.5, v + 0.5) (nerfstudio, COLMAP, NeRO),
    "integer" at (u, v) (OpenCV, and the rays NeuS/IDR cast). "auto": integer for the NeuS layout, half otherwise."""
    exif_orientation: Literal["auto", "apply", "ignore"] = "auto"
    """Per image, read the stored pixels or the picture turned upright by its EXIF orientation: "auto" takes the
    one whose shape fits the camera, and the stored pixels when both fit (COLMAP, which computes the poses of
    LLFF, ns-process-data and NeuS's preprocessing, ignores EXIF orientation); "apply"/"ignore" force one."""


def _load_pickle(path: Path) -> object:
    class _ArraysOnly(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _PICKLE_ALLOWED:
                raise NeroDataError(f"{path}: refuses to unpickle {module}.{name} (only numpy arrays are expected)")
            return super().find_class(module, name)

    try:
        with open(path, "rb") as handle:
            return _ArraysOnly(handle).load()
    except NeroDataError:
        raise
    except Exception as err:
        raise NeroDataError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from err


def load_camera_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads a GlossySynthetic ``k-camera.pkl``: (pose 3x4 world->camera [R|t] OpenCV, K 3x3), validated."""
    path = Path(path)
    if not path.is_file():
        raise NeroDataError(f"{path}: camera file missing (pickle of (3x4 world->camera pose, 3x3 K))")
    content = _load_pickle(path)
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise NeroDataError(f"{path}: expected a pickled (pose, K) pair, got {type(content).__name__}")
    pose, intrinsics = (np.asarray(item, dtype=np.float64) for item in content)
    if pose.shape == (4, 4):
        pose = pose[:3]
    if pose.shape != (3, 4) or intrinsics.shape != (3, 3):
        raise NeroDataError(f"{path}: pose has shape {pose.shape} (want 3x4) and K {intrinsics.shape} (want 3x3)")
    if not (np.all(np.isfinite(pose)) and np.all(np.isfinite(intrinsics))):
        raise NeroDataError(f"{path}: pose or K contains NaN or infinite values")
    rotation = pose[:, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise NeroDataError(f"{path}: the pose's 3x3 part is not a rotation (world->camera [R|t] expected)")
    return pose, intrinsics


def _check_intrinsics(intrinsics: np.ndarray, width: int, height: int, where: str, image: Path) -> None:
    """Rejects a K that cannot belong to an image of this size (e.g. K of the full-size image on a downscaled one)."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    if not np.allclose(intrinsics[2], [0.0, 0.0, 1.0], atol=1e-6) or abs(intrinsics[1, 0]) > 1e-6:
        raise NeroDataError(f"{where}: K's last row must be [0, 0, 1] and K[1, 0] zero, got\n{intrinsics}")
    if abs(intrinsics[0, 1]) > 1e-6 * abs(fx):
        raise NeroDataError(f"{where}: K has skew {intrinsics[0, 1]:.4g}; nerfstudio cameras have none")
    if fx <= 0 or fy <= 0:
        raise NeroDataError(f"{where}: focal lengths must be positive, got fx={fx:.4g}, fy={fy:.4g}")
    # A principal point outside the middle half of the image means K was calibrated for another size.
    if not (0.25 * width <= cx <= 0.75 * width and 0.25 * height <= cy <= 0.75 * height):
        raise NeroDataError(
            f"{where}: principal point ({cx:.1f}, {cy:.1f}) does not fit {image} ({width}x{height} px); "
            "K must be given for this image size"
        )


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as stored, checking it can be decoded; the error names the file."""
    return image_sizes(path)[0]


def read_glossy_depth(path: Path) -> np.ndarray:
    """Camera-z depth (H, W) float32 from a GlossySynthetic uint16 PNG (``v / 65535 * 15``)."""
    import cv2

    path = Path(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if raw is None:
        raise NeroDataError(f"{path}: depth image missing or unreadable")
    if raw.dtype != np.uint16:
        raise NeroDataError(f"{path}: depth must be a 16-bit PNG (v / 65535 * 15), got {raw.dtype}")
    if raw.ndim == 3:
        raw = raw[..., 0]
    return raw.astype(np.float32) * np.float32(DEPTH_RANGE / 65535.0)


def depth_to_points(depth: np.ndarray, intrinsics: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points (N, 3) of the foreground pixels (depth < 14.5) of a camera-z depth map.

    Pixel (u, v) is the ray through (u + 0.5, v + 0.5), NeRO's and nerfstudio's pixel-centre convention.
    """
    rows, cols = np.nonzero(depth < DEPTH_BACKGROUND)
    z = depth[rows, cols].astype(np.float64)
    pixels = np.stack([cols + 0.5, rows + 0.5, np.ones_like(z)], axis=-1)
    camera_points = (pixels @ np.linalg.inv(intrinsics).T) * z[:, None]
    rotation, translation = pose[:, :3], pose[:, 3]
    return (camera_points - translation) @ rotation  # R^T (x - t) for row vectors


def trim_outliers(points: np.ndarray, fraction: float) -> np.ndarray:
    """Drops the points outside the [fraction, 1 - fraction] quantiles of any axis (stray points of a sparse cloud)."""
    if fraction <= 0:
        return points
    low, high = np.quantile(points, [fraction, 1.0 - fraction], axis=0)
    return points[np.all((points >= low) & (points <= high), axis=1)]


@dataclass
class NeroDataParser(DataParser):
    """Reads a GlossySynthetic folder or a transforms.json and normalises the object into the unit sphere."""

    config: NeroDataParserConfig

    def _layout(self) -> str:
        data = self.config.data
        if not data.exists():
            raise NeroDataError(f"{data}: data folder not found")
        if self.config.layout != "auto":
            return self.config.layout
        if data.is_file():
            return "transforms"
        if any(data.glob("*-camera.pkl")):
            return "glossy"
        if (data / "transforms.json").is_file():
            return "transforms"
        if neus_camera_file(data) is not None:
            return "neus"
        if (data / LLFF_POSES).is_file():
            return "llff"
        raise NeroDataError(
            f"{data}: no views: none of k.png + k-camera.pkl (GlossySynthetic), transforms.json (nerfstudio), "
            f"image/ + cameras_sphere.npz (NeuS/IDR), {LLFF_POSES} + images/ (LLFF)"
        )

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        config = self.config
        if (config.object_center is None) != (config.object_radius is None):
            raise NeroDataError("give --object-center and --object-radius together")
        if config.object_radius is not None and not config.object_radius > 0:
            raise NeroDataError(f"--object-radius must be positive, got {config.object_radius}")
        if not config.sphere_margin >= 0.0:
            raise NeroDataError(
                f"sphere_margin must be >= 0 (the unit sphere must contain the object), got {config.sphere_margin}"
            )
        layout = self._layout()
        readers = {
            "glossy": self._read_glossy,
            "transforms": self._read_transforms,
            "neus": self._read_neus,
            "llff": self._read_llff,
        }
        views = readers[layout]()

        normalisation = self._normalisation(views)
        center, radius, axes = normalisation.centre, normalisation.radius, normalisation.rotation
        # Poses' frame -> normalised is R^T (x - c) / r; composed with transforms.json's original -> poses' frame
        # map x_poses = s (W x + w).
        world_rotation, world_translation = views.world_transform[:, :3], views.world_transform[:, 3]
        transform = np.concatenate(
            [axes.T @ world_rotation, (axes.T @ (world_translation - center / views.world_scale))[:, None]], axis=1
        )
        scale = views.world_scale / radius

        indices = self._split_indices(views, split)
        poses = normalisation.poses_to_normalised(
            np.concatenate([views.camera_to_worlds, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (len(views), 1, 1))], axis=1)
        )[:, :3, :4]
        index_tensor = torch.from_numpy(indices).long()
        intrinsics = torch.from_numpy(views.intrinsics).float()
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(poses).float()[index_tensor],
            fx=intrinsics[index_tensor, 0:1],
            fy=intrinsics[index_tensor, 1:2],
            cx=intrinsics[index_tensor, 2:3],
            cy=intrinsics[index_tensor, 3:4],
            width=torch.from_numpy(views.widths).long()[index_tensor, None],
            height=torch.from_numpy(views.heights).long()[index_tensor, None],
            distortion_params=None if views.distortion is None else views.distortion[index_tensor],
            camera_type=views.camera_type,
            metadata=views.camera_metadata,
        )
        use_masks = config.use_masks and views.mask_kind != "none"
        metadata = {
            "fg_mask_filenames": (
                [views.mask_filenames[i] for i in indices] if use_masks and views.mask_filenames else None
            ),
            "fg_mask_kind": views.mask_kind if use_masks else "none",
            "object_sphere": {"center": center.tolist(), "radius": radius, "source": normalisation.mode},
            "photo_upright": [bool(views.upright[i]) for i in indices] if views.upright else None,
        }
        return DataparserOutputs(
            image_filenames=[views.image_filenames[i] for i in indices],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=float(scale),
            metadata=metadata,
        )

    # ------------------------------------------------------------------ layouts

    def _read_glossy(self) -> PhotoViews:
        root = self.config.data
        names = sorted(
            (int(match.group(1)), path)
            for path in root.iterdir()
            if (match := _VIEW_NAME.fullmatch(path.name)) is not None
        )
        if not names:
            raise NeroDataError(f"{root}: no views (no images named <k>.png next to <k>-camera.pkl)")
        filenames, poses, intrinsics, widths, heights, depth_files = [], [], [], [], [], []
        points = []
        for view_id, image_path in names:
            camera_path = root / f"{view_id}-camera.pkl"
            pose, k = load_camera_pickle(camera_path)
            width, height = _image_size(image_path)
            _check_intrinsics(k, width, height, str(camera_path), image_path)
            depth_path = root / f"{view_id}-depth.png"
            if depth_path.is_file():
                depth = read_glossy_depth(depth_path)
                if depth.shape != (height, width):
                    raise NeroDataError(
                        f"{depth_path}: size {depth.shape[1]}x{depth.shape[0]} differs from {image_path} "
                        f"({width}x{height})"
                    )
                points.append(depth_to_points(depth, k, pose))
                depth_files.append(depth_path)
            rotation, translation = pose[:, :3], pose[:, 3]
            c2w = np.concatenate([rotation.T, (-rotation.T @ translation)[:, None]], axis=1)
            poses.append(c2w @ np.diag([1.0, -1.0, -1.0, 1.0]))  # OpenCV -> OpenGL camera axes
            intrinsics.append([k[0, 0], k[1, 1], k[0, 2], k[1, 2]])
            filenames.append(image_path)
            widths.append(width)
            heights.append(height)
        if depth_files and len(depth_files) != len(filenames):
            missing = next(root / f"{i}-depth.png" for i, _ in names if not (root / f"{i}-depth.png").is_file())
            raise NeroDataError(f"{missing}: missing, while other views have depth maps (all or none)")
        foreground = np.concatenate(points) if points else None
        if foreground is not None and len(foreground) == 0:
            raise NeroDataError(f"{root}: every depth map is background (>= {DEPTH_BACKGROUND}); no object in view")
        views = PhotoViews(
            image_filenames=filenames,
            camera_to_worlds=np.stack(poses),
            intrinsics=np.asarray(intrinsics, dtype=np.float64),
            widths=np.asarray(widths, dtype=np.float64),
            heights=np.asarray(heights, dtype=np.float64),
            mask_filenames=depth_files or None,
            mask_kind="depth" if depth_files else "none",
            sphere_points=foreground,
            sphere_points_source="depth",
        )
        self._fit(views, "its k-camera.pkl", self.config.downscale_factor or 1)
        return views

    def _read_neus(self) -> PhotoViews:
        pixel_centers = "integer" if self.config.pixel_centers == "auto" else self.config.pixel_centers
        views = read_neus_layout(self.config.data, pixel_centers)
        self._fit(views, "its world_mat_i", self.config.downscale_factor or 1)
        return views

    def _read_llff(self) -> PhotoViews:
        folder, remaining = llff_image_folder(self.config.data, self.config.downscale_factor or 1)
        views = read_llff_layout(self.config.data, folder)
        if self.config.pixel_centers == "integer":
            views.intrinsics[:, 2:] += 0.5
        self._fit(views, f"its row of {LLFF_POSES}", remaining, scaled_copies=True)
        return views

    def _fit(self, views: PhotoViews, where: str, downscale_factor: int, scaled_copies: bool = False) -> None:
        fit_to_images(views, where, downscale_factor, self.config.exif_orientation, scaled_copies)

    def _read_transforms(self) -> PhotoViews:
        config = self.config
        json_path = config.data if config.data.is_file() else config.data / "transforms.json"
        data_dir = json_path.parent
        if not json_path.is_file():
            raise NeroDataError(f"{json_path}: missing (nerfstudio transforms.json expected)")
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as err:
            raise NeroDataError(f"{json_path}: not readable JSON ({err})") from err
        frames = meta.get("frames") if isinstance(meta, dict) else None
        if not frames:
            raise NeroDataError(f"{json_path}: no views ('frames' is missing or empty)")
        for number, frame in enumerate(frames):
            where = f"{json_path}: frame {number} ({frame.get('file_path', '?')})"
            if "file_path" not in frame:
                raise NeroDataError(f"{json_path}: frame {number} has no file_path")
            if "transform_matrix" not in frame:
                raise NeroDataError(f"{where}: missing pose (transform_matrix)")
            matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
            if matrix.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(matrix)):
                raise NeroDataError(f"{where}: transform_matrix must be a finite 4x4 camera-to-world matrix")
            for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
                if key not in meta and key not in frame:
                    raise NeroDataError(f"{where}: intrinsic '{key}' is neither global nor given for this frame")

        # nerfstudio's parser handles per-frame intrinsics, distortion, images_N/ folders and split lists;
        # with orientation, centring and scaling off it returns the poses as stored. Every split is read,
        # so the bounding sphere (and hence the normalisation) is the same for train and eval.
        _image_size(data_dir / frames[0]["file_path"])  # nerfstudio opens it to choose the downscale factor
        listed = [name for name in ("train", "val", "test") if f"{name}_filenames" in meta]
        parts = {name: self._nerfstudio_outputs(json_path, name) for name in listed or ["train"]}
        filenames: List[Path] = []
        poses, intrinsics, sizes, distortion, mask_files = [], [], [], [], []
        split_indices: Dict[str, np.ndarray] | None = {} if listed else None
        for name, outputs in parts.items():
            cameras = outputs.cameras
            if split_indices is not None:
                split_indices[name] = np.arange(len(filenames), len(filenames) + len(cameras))
            filenames += [Path(p) for p in outputs.image_filenames]
            poses.append(cameras.camera_to_worlds.double().numpy())
            intrinsics.append(torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=1).double().numpy())
            sizes.append(torch.cat([cameras.width, cameras.height], dim=1).numpy())
            distortion.append(cameras.distortion_params)
            if outputs.mask_filenames:
                mask_files += [Path(p) for p in outputs.mask_filenames]
        intrinsics_np = np.concatenate(intrinsics)
        if self.config.pixel_centers == "integer":
            intrinsics_np[:, 2:] += 0.5
        sizes_np = np.concatenate(sizes).astype(np.float64)
        for path in mask_files:
            _image_size(path)
        if mask_files and len(mask_files) != len(filenames):
            raise NeroDataError(f"{json_path}: mask_path is given for some frames only (all or none)")
        mask_kind = "image" if mask_files else "none"
        if not mask_files:
            with Image.open(filenames[0]) as image:
                if image.mode in ("RGBA", "LA"):
                    mask_kind, mask_files = "alpha", list(filenames)

        points, points_source = None, ""
        ply = config.point_cloud or (data_dir / meta["ply_file_path"] if "ply_file_path" in meta else None)
        if ply is not None:
            points, points_source = read_point_cloud(Path(ply)), "point-cloud"

        outputs = next(iter(parts.values()))
        cameras = outputs.cameras
        transform = outputs.dataparser_transform.double().numpy()
        has_distortion = all(d is not None for d in distortion)
        views = PhotoViews(
            image_filenames=filenames,
            camera_to_worlds=np.concatenate(poses),
            intrinsics=intrinsics_np,
            widths=sizes_np[:, 0],
            heights=sizes_np[:, 1],
            mask_filenames=mask_files or None,
            mask_kind=mask_kind,
            world_transform=transform[:3, :4],
            world_scale=float(outputs.dataparser_scale),
            split_indices=split_indices,
            distortion=torch.cat(distortion) if has_distortion else None,
            camera_type=CameraType(int(cameras.camera_type.view(-1)[0])),
            camera_metadata=cameras.metadata,
            sphere_points=points,
            sphere_points_source=points_source,
        )
        # nerfstudio's parser already scaled w, h and the intrinsics to its images_N/ folder.
        self._fit(views, f"{json_path} (w, h after downscaling)", 1)
        for index, path in enumerate(filenames):
            fx, fy, cx, cy = views.intrinsics[index]
            k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            width, height = int(views.widths[index]), int(views.heights[index])
            _check_intrinsics(k, width, height, f"{json_path} (intrinsics of {path.name})", path)
        return views

    def _nerfstudio_outputs(self, json_path: Path, split: str) -> DataparserOutputs:
        ns_config = NerfstudioDataParserConfig(
            data=self.config.data,
            downscale_factor=self.config.downscale_factor,
            orientation_method="none",
            center_method="none",
            auto_scale_poses=False,
            scale_factor=1.0,
            # Every frame, without nerfstudio's warning for eval_mode "all"; the split is made afterwards.
            eval_mode="fraction",
            train_split_fraction=1.0,
        )
        try:
            return ns_config.setup()._generate_dataparser_outputs(split)
        except (AssertionError, KeyError, RuntimeError, ValueError, OSError) as err:
            raise NeroDataError(f"{json_path}: nerfstudio's parser rejected it ({type(err).__name__}: {err})") from err

    # ------------------------------------------------------------------ bounds and split

    def _normalisation(self, views: PhotoViews) -> SceneNormalisation:
        """The object's bounding sphere (grown by the margin) in the poses' frame, checked against the views."""
        config = self.config
        where = str(config.data)
        margin = config.sphere_margin
        masks = _view_masks(views)
        if config.object_center is not None and config.object_radius is not None:
            centre = np.asarray(config.object_center, dtype=np.float64)
            radius = float(config.object_radius) * (1.0 + margin)
            normalisation = SceneNormalisation("given", centre, radius, np.eye(3), "--object-center/--object-radius")
        elif config.bounds == "unit":
            normalisation = identity_normalisation()
        else:
            bounds = config.bounds
            if bounds == "auto":
                if views.recorded_normalisation is not None:
                    bounds = "scale-mat"
                else:
                    bounds = views.sphere_points_source or ("silhouettes" if masks is not None else "cameras")
            if bounds == "scale-mat":
                if views.recorded_normalisation is None:
                    raise NeroDataError(f"{where}: --bounds scale-mat, but the cameras store no scale_mat_0")
                normalisation = views.recorded_normalisation
            elif bounds == "silhouettes":
                if masks is None:
                    raise NeroDataError(f"{where}: --bounds silhouettes, but the data has no masks")
                normalisation = sphere_from_silhouettes(
                    _intrinsic_matrices(views), _opencv_poses(views), masks, margin, 64, where
                )
            elif bounds == "cameras":
                size = (int(views.widths.max()), int(views.heights.max()))
                normalisation = sphere_from_cameras(_intrinsic_matrices(views), _opencv_poses(views), size, where)
                normalisation.radius *= 1.0 + margin
            elif views.sphere_points is None or views.sphere_points_source != bounds:
                wanted = "depth maps" if bounds == "depth" else "point cloud (ply_file_path or --point-cloud)"
                raise NeroDataError(f"{where}: --bounds {bounds}, but the data has no {wanted}")
            else:
                trim = config.point_cloud_trim if bounds == "point-cloud" else 0.0
                normalisation = sphere_from_points(trim_outliers(views.sphere_points, trim), margin, where)
                normalisation.mode = bounds  # "depth" or "point-cloud"
        CONSOLE.print(f"nero-data: unit sphere from '{normalisation.mode}': {normalisation.detail}")
        # The transforms.json poses may carry distortion; the silhouette-ray test uses the pinhole part only.
        check_normalisation(
            normalisation,
            _intrinsic_matrices(views),
            _opencv_poses(views),
            views.image_filenames,
            masks if views.distortion is None or not bool(views.distortion.abs().gt(0).any()) else None,
        )
        return normalisation

    def _split_indices(self, views: PhotoViews, split: str) -> np.ndarray:
        names = views.image_filenames
        if views.split_indices is not None:
            lists = views.split_indices
            key = split if split in lists else next((k for k in ("val", "test") if k in lists and split != "train"), "")
            if key not in lists:
                raise NeroDataError(f"{self.config.data}: the transforms.json split lists have no '{split}' list")
            indices = lists[key]
        else:
            if self.config.eval_mode == "interval":
                train, evaluation = get_train_eval_split_interval(names, self.config.eval_interval)
            elif self.config.eval_mode == "fraction":
                train, evaluation = get_train_eval_split_fraction(names, self.config.train_split_fraction)
            else:
                train, evaluation = get_train_eval_split_all(names)
            indices = train if split == "train" else evaluation
        if len(indices) == 0:
            raise NeroDataError(f"{self.config.data}: the '{split}' split is empty (eval_mode {self.config.eval_mode})")
        return np.asarray(indices, dtype=np.int64)


def _view_masks(views: PhotoViews) -> list[np.ndarray] | None:
    """Every view's foreground mask at the view's (possibly downscaled) size, or None without masks."""
    if views.mask_filenames is None:
        return None
    import cv2

    masks = []
    for index, path in enumerate(views.mask_filenames):
        mask = load_foreground_mask(path, views.mask_kind)
        size = (int(views.widths[index]), int(views.heights[index]))
        if mask.shape[::-1] != size:
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        masks.append(mask)
    return masks


def _intrinsic_matrices(views: PhotoViews) -> np.ndarray:
    fx, fy, cx, cy = views.intrinsics.T
    matrices = np.zeros((len(fx), 3, 3))
    matrices[:, 0, 0], matrices[:, 1, 1], matrices[:, 0, 2], matrices[:, 1, 2], matrices[:, 2, 2] = fx, fy, cx, cy, 1
    return matrices


def _opencv_poses(views: PhotoViews) -> np.ndarray:
    """(N, 4, 4) camera-to-world poses with OpenCV camera axes, as the normalisation code takes them."""
    poses = np.tile(np.eye(4), (len(views.camera_to_worlds), 1, 1))
    poses[:, :3, :4] = views.camera_to_worlds
    return poses @ np.diag([1.0, -1.0, -1.0, 1.0])


def world_points_to_unit(points: np.ndarray, outputs: DataparserOutputs) -> np.ndarray:
    """World (N, 3) points in the model's normalised frame, through the recorded dataparser transform."""
    return world_to_normalized(points, outputs.dataparser_transform.numpy(), outputs.dataparser_scale)


def load_foreground_mask(path: Path, kind: str) -> np.ndarray:
    """Boolean (H, W) foreground from a depth map (depth < 14.5), a mask image (> 0.5) or an image's alpha."""
    if kind == "depth":
        return read_glossy_depth(path) < DEPTH_BACKGROUND
    image = read_image(path)
    if kind == "alpha":
        return image[..., 3] > 0.5
    if image.ndim == 3:
        image = image[..., :3].max(axis=-1)
    return image > 0.5
