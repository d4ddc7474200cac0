"""The fixed geometry of nero-material and the rays it trains on.

- :func:`resolve_material_mesh`: the stage-I mesh in the dataparser's normalised frame, from a nero-shape run
  (extracted once with :mod:`recon_plugin.export.mesh` and cached next to that run) or from a mesh file in
  world units.
- :class:`NeroMaterialDataManager`: traces every training pixel once against the mesh; batches are drawn from the
  hits (NeRO stage II), plus a few opaque pixels that miss it, which show the environment itself. Full eval
  images still go through nerfstudio's loaders.
- :class:`NeroMaterialPipeline`: loads the mesh after the datamanager and the model exist and hands it to both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from recon_plugin.components.raycast import MeshRayCaster
from recon_plugin.data.nero_dataset import NeroDataset
from recon_plugin.data.transforms import world_to_normalized
from recon_plugin.engine import ReconPipeline, ReconPipelineConfig

#: File name of the mesh cached next to a nero-shape run (outside nerfstudio_models/, which holds checkpoints only).
CACHED_MESH_NAME = "nero_material_mesh_{resolution}.ply"


def _newest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / "nerfstudio_models").glob("step-*.ckpt"))
    return checkpoints[-1] if checkpoints else None


def stage_one_mesh(shape_config: Path, resolution: int) -> Path:
    """World-unit mesh of a nero-shape run, extracted at ``resolution`` and cached as
    ``<run>/nero_material_mesh_<resolution>.ply``; re-extracted when the run has a newer checkpoint."""
    shape_config = Path(shape_config).expanduser().resolve()
    if not shape_config.is_file():
        raise FileNotFoundError(f"--pipeline.model.shape-config {shape_config}: not found (a nero-shape config.yml)")
    cached = shape_config.parent / CACHED_MESH_NAME.format(resolution=resolution)
    checkpoint = _newest_checkpoint(shape_config.parent)
    if cached.is_file() and (checkpoint is None or cached.stat().st_mtime >= checkpoint.stat().st_mtime):
        return cached
    from recon_plugin.export.loading import load_pipeline
    from recon_plugin.export.mesh import extract_world_mesh, write_mesh_atomic

    CONSOLE.print(f"nero-material: extracting the stage-I mesh of {shape_config} at resolution {resolution}")
    config, pipeline, _, _ = load_pipeline(shape_config)
    if config.method_name != "nero-shape" or not hasattr(pipeline.model, "field"):
        raise ValueError(f"--pipeline.model.shape-config {shape_config}: a {config.method_name} run, not nero-shape")
    mesh = extract_world_mesh(pipeline, resolution=resolution, vertex_colors=False, log=None)
    write_mesh_atomic(mesh, cached)
    return cached


def read_world_mesh(path: Path) -> trimesh.Trimesh:
    """A triangle mesh file; errors name the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for unreadable files
        raise ValueError(f"{path}: cannot read the mesh ({type(err).__name__}: {err})") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"{path}: holds no triangles")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{path}: vertices hold non-finite values")
    return mesh


def resolve_material_mesh(
    shape_config: Path | None, mesh_path: Path | None, resolution: int, outputs: DataparserOutputs
) -> Tuple[np.ndarray, np.ndarray, Path]:
    """(vertices in the normalised frame (V, 3), faces (F, 3), source file) of the geometry nero-material uses."""
    if (shape_config is None) == (mesh_path is None):
        raise ValueError(
            "nero-material needs exactly one geometry source: --pipeline.model.shape-config <nero-shape run>/"
            "config.yml or --pipeline.model.mesh-path <mesh in world units>"
            + (" (both were given)" if shape_config is not None else "")
        )
    source = stage_one_mesh(shape_config, resolution) if shape_config is not None else Path(mesh_path)  # type: ignore[arg-type]
    mesh = read_world_mesh(source)
    transform = outputs.dataparser_transform.double().cpu().numpy()
    vertices = world_to_normalized(np.asarray(mesh.vertices), transform, float(outputs.dataparser_scale))
    outside = float((np.linalg.norm(vertices, axis=-1) > 1.5).mean())
    if outside > 0.5:
        raise ValueError(
            f"{source}: {outside:.0%} of the vertices lie far outside the object's bounding sphere; the mesh must be "
            "in the world units of the training data (what recon-extract-mesh and recon-synth's gt_mesh.ply give)"
        )
    return vertices.astype(np.float32), np.asarray(mesh.faces, dtype=np.int64), source


@dataclass
class PixelPool:
    """Training pixels of one kind: ray origins/directions (N, 3), pixel areas (N, 1), camera indices (N,),
    pixel (camera, row, column) indices (N, 3) and target colours (N, 3) as uint8."""

    origins: Tensor
    directions: Tensor
    pixel_area: Tensor
    camera_indices: Tensor
    indices: Tensor
    rgb: Tensor

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    @classmethod
    def of_view(cls, rays: RayBundle, image: Tensor, view: int, keep: Tensor) -> PixelPool:
        """The pixels ``keep`` (flat indices) of one view, from its rays (H, W) and image (H, W, 3)."""
        width = image.shape[1]
        view_index = torch.full_like(keep, view)
        return cls(
            origins=rays.origins.reshape(-1, 3)[keep],
            directions=rays.directions.reshape(-1, 3)[keep],
            pixel_area=rays.pixel_area.reshape(-1, 1)[keep],
            camera_indices=view_index,
            indices=torch.stack([view_index, keep // width, keep % width], dim=-1),
            rgb=image.reshape(-1, 3)[keep],
        )

    @classmethod
    def concatenate(cls, pools: List[PixelPool]) -> PixelPool:
        return cls(**{name: torch.cat([getattr(pool, name) for pool in pools]) for name in cls.__dataclass_fields__})


def trace_pixels(
    dataset: NeroDataset, caster: MeshRayCaster, silhouette_margin: int = 2
) -> Tuple[PixelPool, PixelPool, int]:
    """Traces every pixel of every view of ``dataset`` once; returns (the pixels whose ray hits the mesh, the
    opaque pixels whose ray misses it by more than ``silhouette_margin`` pixels, i.e. the visible background,
    the pixel count). The margin keeps the object's own edge, where a reconstructed mesh may fall short of the
    real silhouette, out of the background."""
    hits_per_view, background_per_view, total = [], [], 0
    for view in range(len(dataset)):
        rays = dataset.cameras.generate_rays(camera_indices=view, keep_shape=True)
        image, opaque = dataset.get_image_uint8_and_opaque_mask(view)
        height, width = image.shape[:2]
        total += height * width
        hits = caster.cast(rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3))
        hit_image = hits.hit.reshape(1, 1, height, width).float()
        near_object = F.max_pool2d(hit_image, 2 * silhouette_margin + 1, stride=1, padding=silhouette_margin)
        background = (near_object.reshape(-1) == 0) & opaque.reshape(-1)
        hits_per_view.append(PixelPool.of_view(rays, image, view, hits.hit.nonzero().squeeze(-1)))
        background_per_view.append(PixelPool.of_view(rays, image, view, background.nonzero().squeeze(-1)))
    return PixelPool.concatenate(hits_per_view), PixelPool.concatenate(background_per_view), total


@dataclass
class NeroMaterialDataManagerConfig(VanillaDataManagerConfig):
    """Batches of training pixels that hit the mesh, plus some of the visible background (the mesh comes from the
    model config, via the pipeline)."""

    _target: Type = field(default_factory=lambda: NeroMaterialDataManager)
    background_rays_per_batch: int = 128
    """Background pixels (rays that miss the mesh) added to every batch: they show the environment itself, which
    pins the light's colour (the model's ``background_light_loss_mult``). Cheap: no Monte Carlo. 0 trains on the
    object alone."""


class NeroMaterialDataManager(VanillaDataManager[NeroDataset]):
    """Samples rays among pixels on the object (and the visible background): every pixel is traced once when the
    mesh is attached."""

    config: NeroMaterialDataManagerConfig
    train_pool: PixelPool | None = None
    eval_pool: PixelPool | None = None
    train_background: PixelPool | None = None
    eval_background: PixelPool | None = None

    def setup_train(self) -> None:
        # No image loader: the hit pool holds the training pixels' colours.
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))

    def setup_eval(self) -> None:
        # Whole eval images (eval-image step, ns-eval) through nerfstudio's loaders; eval batches from a hit pool.
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )

    def attach_caster(self, caster: MeshRayCaster) -> None:
        """Traces the training and eval pixels against the mesh (nothing to do in inference mode)."""
        if self.test_mode == "inference":
            return
        self.train_pool, self.train_background, total = trace_pixels(self.train_dataset, caster)
        if len(self.train_pool) == 0:
            raise ValueError(
                f"{self.get_datapath()}: no training pixel sees the mesh; is the mesh in the world units of this data?"
            )
        CONSOLE.print(
            f"nero-material: {len(self.train_pool):,} of {total:,} training pixels hit the mesh "
            f"({len(self.train_pool) / total:.1%}), {len(self.train_background):,} show the background"
        )
        if self.config.background_rays_per_batch > 0 and len(self.train_background) == 0:
            CONSOLE.print(
                "nero-material: no opaque background pixels (transparent or fully covered images): the light's "
                "colour comes from the neutral-light prior alone"
            )
        self.eval_pool, self.eval_background, _ = trace_pixels(self.eval_dataset, caster)

    def _batch(self, pool: PixelPool | None, background: PixelPool | None, count: int) -> Tuple[RayBundle, Dict]:
        if pool is None or len(pool) == 0:
            raise RuntimeError("nero-material: no hit pixels to sample (the pipeline attaches the mesh at setup)")
        picks = [(pool, torch.randint(len(pool), (count,)))]
        if background is not None and len(background) and self.config.background_rays_per_batch > 0:
            picks.append((background, torch.randint(len(background), (self.config.background_rays_per_batch,))))

        def gather(name: str) -> Tensor:
            return torch.cat([getattr(source, name)[pick] for source, pick in picks]).to(self.device)

        ray_bundle = RayBundle(
            origins=gather("origins"),
            directions=gather("directions"),
            pixel_area=gather("pixel_area"),
            camera_indices=gather("camera_indices")[:, None],
        )
        batch = {"image": gather("rgb").float() / 255.0, "indices": gather("indices").cpu()}
        return ray_bundle, batch

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        return self._batch(self.train_pool, self.train_background, self.config.train_num_rays_per_batch)

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        self.eval_count += 1
        return self._batch(self.eval_pool, self.eval_background, self.config.eval_num_rays_per_batch)


@dataclass
class NeroMaterialPipelineConfig(ReconPipelineConfig):
    """ReconPipelineConfig that loads nero-material's mesh."""

    _target: Type = field(default_factory=lambda: NeroMaterialPipeline)


class NeroMaterialPipeline(ReconPipeline):
    """ReconPipeline that, once the datamanager (the normalisation) and the model exist, reads the mesh named in
    the model config, maps it to the normalised frame and gives it to the model and the datamanager."""

    def __init__(
        self,
        config: NeroMaterialPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: torch.cuda.amp.GradScaler | None = None,
    ) -> None:
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        model_config = config.model
        vertices, faces, source = resolve_material_mesh(
            model_config.shape_config,
            model_config.mesh_path,
            model_config.mesh_resolution,
            self.datamanager.train_dataparser_outputs,
        )
        CONSOLE.print(f"nero-material: mesh {source} ({len(vertices):,} vertices, {len(faces):,} faces)")
        self.model.set_mesh(torch.from_numpy(vertices), torch.from_numpy(faces))
        if isinstance(self.datamanager, NeroMaterialDataManager):
            self.datamanager.attach_caster(self.model.caster)
