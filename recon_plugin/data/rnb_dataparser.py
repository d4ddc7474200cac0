"""Dataparser for RnB data: per-view normal maps (+ albedo, silhouettes) with IDR, RNb-NeuS2 or Meshroom cameras.

```
DATA/
  cameras.npz | transform.json | cameras.sfm   cameras (see rnb_cameras.py)
  normal/000.png     camera-frame normals, OpenGL axes, encoded (n + 1) / 2, 8/16-bit PNG or EXR;
                     RGBA (RNb-NeuS2): alpha = silhouette
  albedo/000.png     optional reflectance, 8/16-bit; RGBA (RNb-NeuS2): alpha = normal-uncertainty mask
  mask/000.png       optional silhouette, any bit depth (foreground > half range)
  mask_normal_uncertainty/000.png   optional: pixels whose normal is trusted
```
RNb-NeuS2's folder names ``normals/`` and ``albedos/`` are accepted too. With ``cameras.npz`` views are
matched by sorted file order; the other camera files name or match each view's files.

Cameras come out in nerfstudio's OpenGL convention in the normalised frame (object inside the unit
sphere, cameras outside it, both checked); the normalisation is recorded as ``dataparser_transform`` /
``dataparser_scale`` so exports return to the input's world units, and its mode name is in the metadata.
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

from recon_plugin.data import normalisation as norm
from recon_plugin.data.errors import RnbDataError
from recon_plugin.data.image_io import decode_normals, list_images, read_image
from recon_plugin.data.rnb_cameras import (
    CameraSet,
    decompose_projection,
    find_by_stem,
    find_camera_file,
    read_cameras,
    split_similarity,
)

__all__ = [
    "RnbDataError",
    "RnbDataParser",
    "RnbDataParserConfig",
    "decompose_projection",
    "foreground_mask",
    "normal_image_to_vectors",
]

#: RNb-NeuS2 writes its prepared data into these folders.
FOLDER_ALIASES = {"normal": "normals", "albedo": "albedos"}


@dataclass
class RnbDataParserConfig(DataParserConfig):
    """RnB data: normal maps (+ albedo, silhouettes) with cameras.npz, transform.json or an SfMData file."""

    _target: Type = field(default_factory=lambda: RnbDataParser)
    data: Path = Path("data/rnb")
    """Folder holding the camera file and the image folders."""
    camera_file: Path | None = None
    """Camera file, relative to ``data`` unless absolute: ``cameras.npz`` (IDR), ``transform.json`` (RNb-NeuS2)
    or an SfMData ``.sfm``/``.json`` (Meshroom). Default: the first of cameras.npz, transform.json,
    cameras.sfm, sfm.json found in ``data``."""
    normal_dir: str = "normal"
    """Normal folder (RNb-NeuS2's ``normals`` is used when ``normal`` is absent)."""
    albedo_dir: str = "albedo"
    """Reflectance folder (or RNb-NeuS2's ``albedos``); ignored when absent or when use_albedo is False."""
    mask_dir: str = "mask"
    uncertainty_dir: str = "mask_normal_uncertainty"
    """Optional folder of masks marking trusted normals (photometric loss only there)."""
    use_albedo: bool = True
    use_mask: bool = True
    """False ignores every silhouette source (same as ``silhouette="none"``)."""
    silhouette: Literal["auto", "mask", "normal-alpha", "zero-normal", "none"] = "auto"
    """Source of the silhouette, delivered to the model as the batch key ``fg_mask`` (it trains the mask term):
    "mask" = the mask folder, "normal-alpha" = the alpha channel of RGBA normal maps (RNb-NeuS2), "zero-normal" =
    pixels whose normal is encoded as all-zero or as a zero vector, (0.5, 0.5, 0.5), are background
    (photometric-stereo output without masks), "none" = no silhouette (the batch then carries ``valid_normal``).
    "auto" takes the mask folder when present, else the normal maps' alpha when they have one, else the zero code
    when at least 1 % of the first map uses it, else none (maps whose background holds a backdrop's normals: the
    model's background field takes those). The choice is logged and recorded as ``rnb_silhouette_source`` in the
    dataparser outputs' metadata."""
    silhouette_threshold: float = 0.5
    """A mask or normal-alpha value above this (as a fraction of the bit depth's range) is foreground."""
    uncertainty_alpha_threshold: float = 0.99
    """With RGBA albedo maps (RNb-NeuS2) and no uncertainty folder, a normal is trusted where the albedo's
    alpha exceeds this (RNb-NeuS2's value). The uncertainty folder's masks use 0.5."""
    normalisation: Literal["auto", "scale-mat", "silhouettes", "cameras", "point-cloud", "none"] = "auto"
    """How the unit sphere is placed around the object. "scale-mat": the matrix stored with the cameras
    (scale_mat_0 of cameras.npz, n2w of transform.json); "silhouettes": the visual hull of the silhouettes and its
    enclosing sphere with a margin; "cameras": the point closest to all optical axes, radius from the camera
    distances and fields of view; "point-cloud": the bounding sphere of ``point_cloud``; "none": identity.
    "auto": scale-mat if stored, else silhouettes if any, else cameras."""
    point_cloud: Path | None = None
    """A .ply of the object (e.g. SfM landmarks cropped to it) for ``normalisation="point-cloud"``."""
    normalisation_margin: float = 0.1
    """Relative margin added to the silhouette and point-cloud spheres."""
    hull_resolution: int = 64
    """Grid resolution of the visual hull carved for ``normalisation="silhouettes"``."""
    camera_image_size: tuple[int, int] | None = None
    """Width and height of the images the cameras were calibrated on, when the maps were resized since
    (cameras.npz does not say); the intrinsics are scaled to the maps. transform.json and SfMData state it."""
    pixel_centers: Literal["half", "integer"] = "half"
    """"half": rays through pixel centres (u + 0.5), nerfstudio's convention and that of our synthetic
    scenes. "integer": rays through (u, v) as in the RNb-NeuS v1 code, for data calibrated that way.
    Applies to cameras.npz and transform.json; SfMData follows AliceVision's convention (converted)."""
    eval_mode: Literal["all", "interval"] = "all"
    """RnB uses every view for training; "interval" holds out every eval_interval-th view."""
    eval_interval: int = 8
    max_invalid_normal_fraction: float = 0.05
    """A normal map fails validation when more masked pixels than this have |n| outside [0.5, 1.5]."""


@dataclass
class _Views:
    """The files of every view and what reading them found."""

    normal: list[Path]
    albedo: list[Path] | None
    mask: list[Path] | None
    uncertainty: list[Path] | None
    silhouette_source: str | None
    uncertainty_source: str | None


@dataclass
class RnbDataParser(DataParser):
    """Reads and validates RnB data."""

    config: RnbDataParserConfig

    def _folder(self, name: str) -> Path | None:
        """The folder ``name`` under data, or RNb-NeuS2's name for it when only that exists."""
        folder = self.config.data / name
        if folder.is_dir():
            return folder
        alias = FOLDER_ALIASES.get(name)
        if alias and (self.config.data / alias).is_dir():
            return self.config.data / alias
        return None

    def _companions(self, name: str, normal_files: list[Path], by_stem: bool) -> list[Path] | None:
        """Per-view files of an optional folder: sorted order (cameras.npz) or the normal map's file stem."""
        folder = self._folder(name)
        if folder is None:
            return None
        files = list_images(folder)
        if not files:
            raise RnbDataError(f"{folder}: no images (.png/.exr) in this folder")
        if not by_stem:
            if len(files) != len(normal_files):
                raise RnbDataError(f"{folder}: {len(files)} images but {len(normal_files)} normal maps")
            return files
        matched = []
        for normal in normal_files:
            found = find_by_stem(folder, normal.stem)
            if found is None:
                raise RnbDataError(f"{folder}: no image named {normal.stem}.* for the normal map {normal}")
            matched.append(found)
        return matched

    def _view_files(self, cameras: CameraSet) -> _Views:
        config = self.config
        if cameras.normal_files is not None:
            normal_files, by_stem = cameras.normal_files, True
        else:
            folder = self._folder(config.normal_dir)
            if folder is None:
                raise RnbDataError(
                    f"{config.data / config.normal_dir}: folder not found (expected {config.normal_dir}/ with one "
                    "image per view)"
                )
            normal_files, by_stem = list_images(folder), False
            if not normal_files:
                raise RnbDataError(f"{folder}: no images (.png/.exr) in this folder")
            if len(cameras) != len(normal_files):
                raise RnbDataError(
                    f"{cameras.source}: {len(cameras)} world_mat_i entries but {len(normal_files)} normal maps in "
                    f"{folder}"
                )
        albedo = None
        if config.use_albedo:
            albedo = cameras.albedo_files or self._companions(config.albedo_dir, normal_files, by_stem)
        mask = self._companions(config.mask_dir, normal_files, by_stem)
        uncertainty = self._companions(config.uncertainty_dir, normal_files, by_stem)

        first_normal = read_image(normal_files[0])
        has_alpha = first_normal.ndim == 3 and first_normal.shape[2] == 4
        source = config.silhouette if config.use_mask else "none"
        if source == "auto":
            if mask is not None:
                source = "mask"
            elif has_alpha:
                source = "normal-alpha"
            else:
                source = "zero-normal" if has_zero_coded_background(normal_files[0], first_normal) else "none"
        if source == "mask" and mask is None:
            raise RnbDataError(f"{config.data / config.mask_dir}: folder not found (silhouette 'mask' needs it)")
        if source == "normal-alpha" and not has_alpha:
            raise RnbDataError(f"{normal_files[0]}: silhouette 'normal-alpha' needs RGBA normal maps; this has none")
        uncertainty_source = "folder" if uncertainty is not None else None
        if uncertainty is None and albedo is not None:
            albedo_image = read_image(albedo[0])
            if albedo_image.ndim == 3 and albedo_image.shape[2] == 4:
                uncertainty_source = "albedo-alpha"
        return _Views(
            normal=normal_files,
            albedo=albedo,
            mask=mask if source == "mask" else None,
            uncertainty=uncertainty,
            silhouette_source=None if source == "none" else source,
            uncertainty_source=uncertainty_source,
        )

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        config = self.config
        root = config.data
        if not root.is_dir():
            raise RnbDataError(f"{root}: data folder not found")
        camera_path = find_camera_file(root, config.camera_file)
        cameras = read_cameras(camera_path, self._folder(config.normal_dir))
        views = self._view_files(cameras)
        height, width, silhouettes = self._validate_images(views)
        CONSOLE.print(
            f"rnb-data: {len(cameras)} views from {camera_path.name}; silhouette: "
            f"{views.silhouette_source or 'none'}; normal uncertainty: {views.uncertainty_source or 'none'}"
        )

        intrinsics = cameras.intrinsics.copy()
        if cameras.pixel_convention == "file" and config.pixel_centers == "integer":
            intrinsics[:, :2, 2] += 0.5
        intrinsics = self._resize_intrinsics(intrinsics, cameras, (width, height), views.normal[0])
        principal = intrinsics[:, :2, 2]
        off_image = np.nonzero((principal < 0).any(-1) | (principal[:, 0] > width) | (principal[:, 1] > height))[0]
        if off_image.size:
            # Legal for shifted crops, but mostly the sign of maps resized without scaling the intrinsics.
            CONSOLE.print(
                f"[yellow]{camera_path}: the principal point {np.round(principal[off_image[0]], 1).tolist()} of view "
                f"{off_image[0]} lies outside the {width}x{height} maps; maps resized? (see --camera-image-size)"
            )
        normalisation = self._normalisation(cameras, intrinsics, silhouettes, (width, height))
        CONSOLE.print(f"rnb-data: normalisation '{normalisation.mode}': {normalisation.detail}")
        norm.check_normalisation(normalisation, intrinsics, cameras.poses, views.normal, silhouettes)

        poses_gl = normalisation.poses_to_normalised(cameras.poses) @ np.diag([1.0, -1.0, -1.0, 1.0])
        indices = np.arange(len(cameras))
        if config.eval_mode == "interval" and len(cameras) > 1:
            is_eval = indices % config.eval_interval == 0
            indices = indices[~is_eval] if split == "train" else indices[is_eval]

        nerfstudio_cameras = Cameras(
            camera_to_worlds=torch.from_numpy(poses_gl[indices, :3, :4]).float(),
            fx=torch.from_numpy(intrinsics[indices, 0, 0]).float()[:, None],
            fy=torch.from_numpy(intrinsics[indices, 1, 1]).float()[:, None],
            cx=torch.from_numpy(intrinsics[indices, 0, 2]).float()[:, None],
            cy=torch.from_numpy(intrinsics[indices, 1, 2]).float()[:, None],
            width=width,
            height=height,
            camera_type=CameraType.PERSPECTIVE,
        )

        def pick(files: list[Path] | None) -> list[Path] | None:
            return None if files is None else [files[i] for i in indices]

        metadata = {
            "rnb_normal_filenames": pick(views.normal),
            "rnb_albedo_filenames": pick(views.albedo),
            "rnb_mask_filenames": pick(views.mask),
            "rnb_uncertainty_filenames": pick(views.uncertainty),
            "rnb_silhouette_source": views.silhouette_source,
            "rnb_silhouette_threshold": config.silhouette_threshold,
            "rnb_uncertainty_source": views.uncertainty_source,
            "rnb_uncertainty_alpha_threshold": config.uncertainty_alpha_threshold,
            "rnb_normalisation": normalisation.mode,
            # The model builds the fixed light triplets of each training view from these rotations.
            "rnb_camera_rotations": torch.from_numpy(poses_gl[indices, :3, :3]).float(),
        }
        return DataparserOutputs(
            image_filenames=[views.normal[i] for i in indices],
            cameras=nerfstudio_cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            dataparser_transform=torch.from_numpy(normalisation.transform).float(),
            dataparser_scale=float(normalisation.scale),
            metadata=metadata,
        )

    def _resize_intrinsics(
        self, intrinsics: np.ndarray, cameras: CameraSet, size: tuple[int, int], first_map: Path
    ) -> np.ndarray:
        """Scales K from the images the cameras describe to the maps' size (pixel centres at +0.5)."""
        described = tuple(self.config.camera_image_size) if self.config.camera_image_size else cameras.image_size
        if described is None or tuple(described) == size:
            return intrinsics
        scale = np.array([size[0] / described[0], size[1] / described[1]])
        if not np.isclose(scale[0], scale[1], rtol=0.02) and self.config.camera_image_size is None:
            raise RnbDataError(
                f"{first_map}: size {size[0]}x{size[1]} has another aspect ratio than the {described[0]}x"
                f"{described[1]} images that {cameras.source} describes"
            )
        CONSOLE.print(
            f"rnb-data: intrinsics scaled from {described[0]}x{described[1]} images to the {size[0]}x{size[1]} maps"
        )
        resized = intrinsics.copy()
        resized[:, 0, :] *= scale[0]
        resized[:, 1, :] *= scale[1]
        return resized

    def _normalisation(
        self,
        cameras: CameraSet,
        intrinsics: np.ndarray,
        silhouettes: list[np.ndarray] | None,
        size: tuple[int, int],
    ) -> norm.SceneNormalisation:
        config = self.config
        mode = config.normalisation
        if mode == "auto":
            if cameras.recorded_normalisation is not None:
                mode = "scale-mat"
            else:
                mode = "silhouettes" if silhouettes is not None else "cameras"
                CONSOLE.print(
                    f"[yellow]rnb-data: {cameras.source} stores no normalisation (scale_mat_0 / n2w); "
                    f"placing the unit sphere from the {mode}"
                )
        if config.point_cloud is not None and mode != "point-cloud":
            CONSOLE.print(f"[yellow]rnb-data: point_cloud {config.point_cloud} is unused with normalisation '{mode}'")
        where = str(cameras.source)
        if mode == "scale-mat":
            if cameras.recorded_normalisation is None:
                raise RnbDataError(f"{cameras.source}: normalisation 'scale-mat' but the file stores no scale_mat/n2w")
            name = f"{cameras.source.name}:{cameras.recorded_name}"
            scale, rotation, translation = split_similarity(cameras.recorded_normalisation, name)
            return norm.from_similarity(scale, rotation, translation, name)
        if mode == "silhouettes":
            if silhouettes is None:
                raise RnbDataError(f"{config.data}: normalisation 'silhouettes' needs masks or RGBA normal maps")
            return norm.sphere_from_silhouettes(
                intrinsics, cameras.poses, silhouettes, config.normalisation_margin, config.hull_resolution, where
            )
        if mode == "cameras":
            return norm.sphere_from_cameras(intrinsics, cameras.poses, size, where)
        if mode == "point-cloud":
            if config.point_cloud is None:
                raise RnbDataError("normalisation 'point-cloud' needs --point-cloud PATH.ply")
            path = config.point_cloud if config.point_cloud.is_absolute() else config.data / config.point_cloud
            return norm.sphere_from_points(norm.read_point_cloud(path), config.normalisation_margin, str(path))
        return norm.identity_normalisation()

    def _validate_images(self, views: _Views) -> tuple[int, int, list[np.ndarray] | None]:
        """Reads every map once: same size everywhere, real normal maps, finite values, usable alphas.

        Returns the image height, width and the silhouette of each view (None without a silhouette source).
        """
        config = self.config
        size: tuple[int, int] | None = None
        silhouettes: list[np.ndarray] = []
        for index, normal_path in enumerate(views.normal):
            paths = [normal_path]
            for files in (views.albedo, views.mask):
                if files is not None:
                    paths.append(files[index])
            images = [read_image(path) for path in paths]
            for path, image in zip(paths, images, strict=True):
                if size is None:
                    size = image.shape[:2]
                if image.shape[:2] != size:
                    raise RnbDataError(
                        f"{path}: size {image.shape[1]}x{image.shape[0]} differs from {size[1]}x{size[0]} "
                        f"({views.normal[0]})"
                    )
                if not np.all(np.isfinite(image)):
                    raise RnbDataError(f"{path}: contains NaN or infinite values")
            normal_image = images[0]
            if normal_image.ndim != 3 or normal_image.shape[2] < 3:
                raise RnbDataError(f"{normal_path}: a normal map needs 3 channels, got shape {normal_image.shape}")
            if views.silhouette_source == "normal-alpha" and normal_image.shape[2] != 4:
                raise RnbDataError(f"{normal_path}: has no alpha channel, unlike {views.normal[0]}")
            mask = view_silhouette(normal_image, images[-1], views.silhouette_source, config.silhouette_threshold)
            if mask is None:
                mask = coded_normal_present(normal_image)
            else:
                silhouettes.append(mask)
            norms = np.linalg.norm(normal_image_to_vectors(normal_path, normal_image), axis=-1)[mask]
            if norms.size:
                invalid = np.mean((norms < 0.5) | (norms > 1.5))
                if invalid > config.max_invalid_normal_fraction:
                    raise RnbDataError(
                        f"{normal_path}: {invalid:.0%} of the masked pixels decode to |n| outside [0.5, 1.5] "
                        "(expected a normal map encoded as (n + 1) / 2)"
                    )
            if views.uncertainty_source == "albedo-alpha" and mask.any():
                assert views.albedo is not None
                albedo = images[1]
                if albedo.ndim != 3 or albedo.shape[2] != 4:
                    raise RnbDataError(f"{views.albedo[index]}: has no alpha channel, unlike {views.albedo[0]}")
                if not np.any(albedo[..., 3][mask] > config.uncertainty_alpha_threshold):
                    raise RnbDataError(
                        f"{views.albedo[index]}: its alpha (normal-uncertainty mask) trusts no foreground pixel at "
                        f"threshold {config.uncertainty_alpha_threshold} (an 8-bit alpha stored in a 16-bit PNG "
                        "reads as nearly transparent); fix the file or set --uncertainty-alpha-threshold"
                    )
        assert size is not None
        if views.silhouette_source is not None and not any(mask.any() for mask in silhouettes):
            raise RnbDataError(f"{views.normal[0].parent}: every silhouette is empty (no foreground pixel)")
        return int(size[0]), int(size[1]), silhouettes if views.silhouette_source is not None else None


def view_silhouette(
    normal_image: np.ndarray, mask_image: np.ndarray, source: str | None, threshold: float
) -> np.ndarray | None:
    """Boolean silhouette of one view from its source ("mask": the mask image, "normal-alpha"), or None."""
    if source == "mask":
        return foreground_mask(mask_image, threshold)
    if source == "normal-alpha" and normal_image.ndim == 3 and normal_image.shape[2] == 4:
        return normal_image[..., 3] > threshold
    if source == "zero-normal":
        return coded_normal_present(normal_image)
    return None


def coded_normal_present(normal_image: np.ndarray) -> np.ndarray:
    """Pixels of a PNG-coded normal map ((n + 1) / 2) that hold a normal. Photometric-stereo output marks the rest
    with the all-zero code, or with the code of a zero vector, (0.5, 0.5, 0.5) (DiLiGenT-MV's background); no unit
    normal encodes to either, so a pixel holds one when it is not all-zero and decodes to a vector of length at
    least 0.5."""
    code = normal_image[..., :3]
    return (code.max(axis=-1) > 0) & (np.linalg.norm(code * 2.0 - 1.0, axis=-1) >= 0.5)


def has_zero_coded_background(path: Path, normal_image: np.ndarray, min_fraction: float = 0.01) -> bool:
    """Whether a PNG normal map marks background with a code no normal has (see :func:`coded_normal_present`)."""
    if path.suffix.lower() == ".exr":
        return False
    return float(np.mean(~coded_normal_present(normal_image))) >= min_fraction


def foreground_mask(mask_image: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean silhouette from a mask image already scaled to [0, 1] by its bit depth."""
    if mask_image.ndim == 3:
        mask_image = mask_image[..., :3].max(axis=-1)
    return mask_image > threshold


def normal_image_to_vectors(path: Path, image: np.ndarray) -> np.ndarray:
    """Normal vectors from a decoded image: PNGs hold (n + 1) / 2, EXRs hold n itself."""
    if path.suffix.lower() == ".exr":
        return image[..., :3].astype(np.float32)
    return decode_normals(image).astype(np.float32)
