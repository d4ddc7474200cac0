"""Dataparser for the RNb-NeuS layout: IDR cameras + per-view normal, albedo and mask maps.

```
DATA/
  cameras.npz        world_mat_i (K[R|t], world -> pixels), scale_mat_i (unit sphere -> world)
  normal/000.png     camera-frame normals, OpenGL axes, encoded (n + 1) / 2, 8/16-bit PNG or EXR
  albedo/000.png     optional reflectance, 8/16-bit
  mask/000.png       optional silhouette, any bit depth (foreground > half range)
  mask_normal_uncertainty/000.png   optional: pixels whose normal is trusted
```
Views are matched by sorted file order. Cameras come out in nerfstudio's OpenGL convention in the
normalised frame (object inside the unit sphere); the normalisation is recorded as
``dataparser_transform`` / ``dataparser_scale`` so exports return to the input's world units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE

from recon_plugin.data.image_io import decode_normals, list_images, read_image


class RnbDataError(ValueError):
    """The RnB data folder is incomplete or inconsistent; the message names the file."""


@dataclass
class RnbDataParserConfig(DataParserConfig):
    """RNb-NeuS data: cameras.npz + normal/ (+ albedo/, mask/)."""

    _target: Type = field(default_factory=lambda: RnbDataParser)
    data: Path = Path("data/rnb")
    """Folder holding cameras.npz and the image folders."""
    normal_dir: str = "normal"
    albedo_dir: str = "albedo"
    """Reflectance folder; ignored when absent or when use_albedo is False."""
    mask_dir: str = "mask"
    uncertainty_dir: str = "mask_normal_uncertainty"
    """Optional folder of masks marking trusted normals (photometric loss only there)."""
    use_albedo: bool = True
    use_mask: bool = True
    pixel_centers: Literal["half", "integer"] = "half"
    """"half": rays through pixel centres (u + 0.5), nerfstudio's convention and that of our synthetic
    scenes. "integer": rays through (u, v) as in the RNb-NeuS v1 code, for data calibrated that way."""
    eval_mode: Literal["all", "interval"] = "all"
    """RnB uses every view for training; "interval" holds out every eval_interval-th view."""
    eval_interval: int = 8
    max_invalid_normal_fraction: float = 0.05
    """A normal map fails validation when more masked pixels than this have |n| outside [0.5, 1.5]."""


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


def _split_scale_mat(scale_mat: np.ndarray, where: str) -> tuple[float, np.ndarray, np.ndarray]:
    """scale_mat = [s R | t]: returns (s, R, t)."""
    if not np.all(np.isfinite(scale_mat)):
        raise RnbDataError(f"{where}: contains NaN or infinite values")
    linear = scale_mat[:3, :3].astype(np.float64)
    det = np.linalg.det(linear)
    if det <= 1e-15:
        raise RnbDataError(f"{where}: not an invertible similarity (det {det:.3g})")
    scale = det ** (1.0 / 3.0)
    rotation = linear / scale
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4):
        raise RnbDataError(f"{where}: not a uniform scale + rotation + translation")
    return scale, rotation, scale_mat[:3, 3].astype(np.float64)


@dataclass
class RnbDataParser(DataParser):
    """Reads and validates an RnB folder."""

    config: RnbDataParserConfig

    def _folder_files(self, name: str, required: bool) -> list[Path] | None:
        folder = self.config.data / name
        if not folder.is_dir():
            if required:
                raise RnbDataError(f"{folder}: folder not found (expected {name}/ with one image per view)")
            return None
        files = list_images(folder)
        if not files:
            raise RnbDataError(f"{folder}: no images (.png/.exr) in this folder")
        return files

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        root = self.config.data
        if not root.is_dir():
            raise RnbDataError(f"{root}: data folder not found")
        cameras_path = root / "cameras.npz"
        if not cameras_path.is_file():
            raise RnbDataError(f"{cameras_path}: missing (IDR cameras with world_mat_i and scale_mat_i)")
        try:
            camera_data = dict(np.load(cameras_path))
        except Exception as err:  # zipfile/pickle errors from a corrupt file
            raise RnbDataError(f"{cameras_path}: not a readable .npz file ({err})") from err

        normal_files = self._folder_files(self.config.normal_dir, required=True)
        assert normal_files is not None
        albedo_files = self._folder_files(self.config.albedo_dir, required=False) if self.config.use_albedo else None
        mask_files = self._folder_files(self.config.mask_dir, required=False) if self.config.use_mask else None
        uncertainty_files = self._folder_files(self.config.uncertainty_dir, required=False)

        num_views = len(normal_files)
        world_keys = sorted((k for k in camera_data if k.startswith("world_mat_")), key=lambda k: int(k.split("_")[-1]))
        if len(world_keys) != num_views:
            raise RnbDataError(
                f"{cameras_path}: {len(world_keys)} world_mat_i entries but {num_views} normal maps in "
                f"{root / self.config.normal_dir}"
            )
        for name, files in (
            (self.config.albedo_dir, albedo_files),
            (self.config.mask_dir, mask_files),
            (self.config.uncertainty_dir, uncertainty_files),
        ):
            if files is not None and len(files) != num_views:
                raise RnbDataError(f"{root / name}: {len(files)} images but {num_views} normal maps")

        height, width, has_mask_pixels = self._validate_images(normal_files, albedo_files, mask_files)

        intrinsics, poses, scale_params = [], [], None
        for index in range(num_views):
            world_key, scale_key = f"world_mat_{index}", f"scale_mat_{index}"
            if world_key not in camera_data:
                raise RnbDataError(f"{cameras_path}: missing {world_key}")
            scale_mat = camera_data.get(scale_key, np.eye(4))
            params = _split_scale_mat(np.asarray(scale_mat), f"{cameras_path}:{scale_key}")
            if scale_params is None:
                scale_params = params
            elif not (
                np.isclose(params[0], scale_params[0], rtol=1e-4) and np.allclose(params[2], scale_params[2], atol=1e-4)
            ):
                CONSOLE.print(f"[yellow]{cameras_path}: {scale_key} differs from scale_mat_0; using scale_mat_0")
            projection = np.asarray(camera_data[world_key], dtype=np.float64) @ np.asarray(scale_mat, np.float64)
            k, pose = decompose_projection(projection, f"{cameras_path}:{world_key}")
            intrinsics.append(k)
            poses.append(pose)
        assert scale_params is not None
        scale, rotation, translation = scale_params

        intrinsics_np = np.stack(intrinsics)
        poses_gl = np.stack(poses) @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> OpenGL camera axes
        offset = 0.5 if self.config.pixel_centers == "integer" else 0.0

        indices = np.arange(num_views)
        if self.config.eval_mode == "interval" and num_views > 1:
            is_eval = indices % self.config.eval_interval == 0
            indices = indices[~is_eval] if split == "train" else indices[is_eval]

        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(poses_gl[indices, :3, :4]).float(),
            fx=torch.from_numpy(intrinsics_np[indices, 0, 0]).float()[:, None],
            fy=torch.from_numpy(intrinsics_np[indices, 1, 1]).float()[:, None],
            cx=torch.from_numpy(intrinsics_np[indices, 0, 2] + offset).float()[:, None],
            cy=torch.from_numpy(intrinsics_np[indices, 1, 2] + offset).float()[:, None],
            width=width,
            height=height,
            camera_type=CameraType.PERSPECTIVE,
        )
        transform = np.concatenate([rotation.T, (-rotation.T @ translation)[:, None]], axis=1)

        def pick(files: list[Path] | None) -> list[Path] | None:
            return None if files is None else [files[i] for i in indices]

        metadata = {
            "rnb_normal_filenames": pick(normal_files),
            "rnb_albedo_filenames": pick(albedo_files),
            "rnb_mask_filenames": pick(mask_files) if has_mask_pixels else None,
            "rnb_uncertainty_filenames": pick(uncertainty_files),
            # The model builds the fixed light triplets of each training view from these rotations.
            "rnb_camera_rotations": torch.from_numpy(poses_gl[indices, :3, :3]).float(),
        }
        return DataparserOutputs(
            image_filenames=[normal_files[i] for i in indices],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=float(1.0 / scale),
            metadata=metadata,
        )

    def _validate_images(
        self, normal_files: list[Path], albedo_files: list[Path] | None, mask_files: list[Path] | None
    ) -> tuple[int, int, bool]:
        """Reads every map once: same size everywhere, real normal maps, finite values."""
        size: tuple[int, int] | None = None
        any_foreground = False
        for index, normal_path in enumerate(normal_files):
            paths = [normal_path]
            if albedo_files is not None:
                paths.append(albedo_files[index])
            if mask_files is not None:
                paths.append(mask_files[index])
            images = [read_image(path) for path in paths]
            for path, image in zip(paths, images, strict=True):
                if size is None:
                    size = image.shape[:2]
                if image.shape[:2] != size:
                    raise RnbDataError(
                        f"{path}: size {image.shape[1]}x{image.shape[0]} differs from {size[1]}x{size[0]} "
                        f"({normal_files[0]})"
                    )
                if not np.all(np.isfinite(image)):
                    raise RnbDataError(f"{path}: contains NaN or infinite values")
            normal_image = images[0]
            if normal_image.ndim != 3 or normal_image.shape[2] < 3:
                raise RnbDataError(f"{normal_path}: a normal map needs 3 channels, got shape {normal_image.shape}")
            if mask_files is not None:
                mask = foreground_mask(images[-1])
            else:
                mask = normal_image[..., :3].max(axis=-1) > 0
            any_foreground |= bool(mask.any())
            norms = np.linalg.norm(normal_image_to_vectors(normal_path, normal_image), axis=-1)[mask]
            if norms.size:
                invalid = np.mean((norms < 0.5) | (norms > 1.5))
                if invalid > self.config.max_invalid_normal_fraction:
                    raise RnbDataError(
                        f"{normal_path}: {invalid:.0%} of the masked pixels decode to |n| outside [0.5, 1.5] "
                        "(expected a normal map encoded as (n + 1) / 2)"
                    )
        assert size is not None
        if mask_files is not None and not any_foreground:
            raise RnbDataError(f"{mask_files[0].parent}: every mask is empty (no foreground pixel)")
        return int(size[0]), int(size[1]), mask_files is not None


def foreground_mask(mask_image: np.ndarray) -> np.ndarray:
    """Boolean silhouette from a mask image already scaled to [0, 1] by its bit depth."""
    if mask_image.ndim == 3:
        mask_image = mask_image[..., :3].max(axis=-1)
    return mask_image > 0.5


def normal_image_to_vectors(path: Path, image: np.ndarray) -> np.ndarray:
    """Normal vectors from a decoded image: PNGs hold (n + 1) / 2, EXRs hold n itself."""
    if path.suffix.lower() == ".exr":
        return image[..., :3].astype(np.float32)
    return decode_normals(image).astype(np.float32)
