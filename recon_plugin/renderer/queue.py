"""Progressive, cancellable render queue over any nerfstudio 1.x pipeline.

Every camera update becomes a *request* with a strictly increasing id. Worker threads always take the newest
request and render it level by level through the :class:`~recon_plugin.renderer.types.ResolutionLadder`; between
ray chunks they check whether a newer request arrived and, if so, abandon the stale one (a camera change costs
at most one chunk of latency, not one frame). Finished levels are published atomically under one lock into a
single slot keyed by ``(request_id, level)`` that only ever moves forward, and readers hand out a frame only if
its key is greater than the last one they returned: the *no-way-back* guarantee of the omni-nerf-extension
reference, without its check-then-write race.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from recon_plugin.renderer.camera import DataparserTransform, intrinsics_for, pose_to_c2w, validate_c2w
from recon_plugin.renderer.types import (
    Frame,
    RenderQueueClosed,
    RenderWorkerError,
    ResolutionLadder,
    check_fov,
)

if TYPE_CHECKING:
    from nerfstudio.models.base_model import Model
    from nerfstudio.pipelines.base_pipeline import Pipeline

__all__ = ["FrameReader", "RenderQueue", "WorldFrame"]

LOGGER = logging.getLogger(__name__)

WorldFrame = Literal["nerfstudio", "data"]

CPU_MAX_DEFAULT_CHUNK = 4096
"""On the CPU the default chunk is capped at this many rays (nerfacto's 32768 would take seconds per chunk)."""

_QUEUE_COUNTER = itertools.count()


@dataclass(frozen=True)
class _Request:
    request_id: int
    c2w: np.ndarray  # 4x4 float64, nerfstudio world frame
    horizontal_fov_deg: float
    aspect: float | None
    requested_at: float  # time.perf_counter()


class FrameReader:
    """An independent consumer of a queue's frames (each server connection has one).

    A reader hands out every frame at most once and only in strictly increasing ``(request_id, level)`` order.
    Obtain one with :meth:`RenderQueue.open_reader`.
    """

    def __init__(self, queue: RenderQueue) -> None:
        self._queue = queue
        self._last_key: tuple[int, int] = (-1, -1)
        self._errors_seen = queue._error_count

    def get_frame(self, timeout: float = 0.0) -> Frame | None:
        """Newest finished frame not yet returned by this reader, or None.

        Args:
            timeout: seconds to wait for such a frame (0 = return at once, ``math.inf`` = until one arrives or the
                queue closes).

        Raises:
            RenderWorkerError: a worker failed since this reader last looked (the original error is ``__cause__``).
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        queue = self._queue
        deadline = time.monotonic() + timeout if math.isfinite(timeout) else math.inf
        with queue._cond:
            while True:
                frame = queue._published
                if frame is not None and frame.key <= self._last_key:
                    frame = None
                if queue._error_count > self._errors_seen:
                    # Events in order: a frame published before the error is handed out first.
                    if frame is None or frame.sequence >= queue._frames_published_at_error:
                        self._errors_seen = queue._error_count
                        error = queue._last_error
                        assert error is not None
                        raise error
                if frame is not None:
                    self._last_key = frame.key
                    queue._frames_returned += 1
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or queue._closed:
                    return None
                queue._cond.wait(None if math.isinf(remaining) else remaining)

    def get_rgb_image(self) -> np.ndarray | None:
        """The image of :meth:`get_frame` (non-blocking), or None: the reference's simpler call."""
        frame = self.get_frame()
        return None if frame is None else frame.image


class RenderQueue:
    """Asynchronous progressive renderer of a nerfstudio pipeline for a moving camera.

    ``update_camera``/``update_camera_matrix`` return at once; worker threads render the newest camera at every
    level of the resolution ladder (coarse to fine) and ``get_frame`` picks up finished images.

    Args:
        pipeline: a loaded nerfstudio ``Pipeline`` (or a bare ``Model``) of any method. The queue renders on the
            model's device.
        ladder: resolution ladder; default :class:`ResolutionLadder()` (64x36 ... 1280x720 at 60 degrees). A path
            to a JSON file is read with :meth:`ResolutionLadder.from_file`.
        num_workers: render threads. One is enough for cancellation (stale work stops after one chunk); more let
            a new request start while the previous chunk finishes, at the cost of concurrent model calls.
        chunk_size: rays per forward pass, i.e. the granularity of cancellation. Default: the model's
            ``config.eval_num_rays_per_chunk``, capped at :data:`CPU_MAX_DEFAULT_CHUNK` on the CPU.
        output_name: model output used as the image (``rgb``; any (H, W, C) output such as ``depth`` works).
        render_lock: lock held around every chunk, e.g. ``trainer.train_lock`` to render a pipeline that is
            still training; the model is switched to eval mode for the chunk and back.
        world_frame: ``"nerfstudio"`` (poses in the trained model's world frame, the default) or ``"data"``
            (poses in the dataset's original frame; mapped with the dataparser's transform and scale).
        start: start the workers now (else call :meth:`start`).
    """

    def __init__(
        self,
        pipeline: Pipeline | Model,
        *,
        ladder: ResolutionLadder | str | Path | None = None,
        num_workers: int = 1,
        chunk_size: int | None = None,
        output_name: str = "rgb",
        render_lock: Any | None = None,
        world_frame: WorldFrame = "nerfstudio",
        start: bool = True,
    ) -> None:
        self.model = _resolve_model(pipeline)
        self.pipeline = pipeline
        if ladder is None:
            ladder = ResolutionLadder()
        elif isinstance(ladder, (str, Path)):
            ladder = ResolutionLadder.from_file(ladder)
        if not isinstance(ladder, ResolutionLadder):
            raise TypeError(f"ladder must be a ResolutionLadder or a JSON file path, got {type(ladder).__name__}")
        self.ladder = ladder
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        self.num_workers = num_workers
        self.device = self.model.device
        if chunk_size is None:
            chunk_size = int(getattr(self.model.config, "eval_num_rays_per_chunk", 4096))
            if self.device.type == "cpu":
                chunk_size = min(chunk_size, CPU_MAX_DEFAULT_CHUNK)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.output_name = output_name
        self.render_lock = render_lock
        if world_frame not in ("nerfstudio", "data"):
            raise ValueError(f"world_frame must be 'nerfstudio' or 'data', got {world_frame!r}")
        self.world_frame: WorldFrame = world_frame
        self.dataparser_transform: DataparserTransform | None = None
        if world_frame == "data":
            self.dataparser_transform = _find_dataparser_transform(pipeline)
            if self.dataparser_transform is None:
                raise ValueError(
                    "world_frame='data' needs the pipeline's dataparser transform "
                    "(pipeline.datamanager.train_dataparser_outputs), which this pipeline does not have"
                )
        # Models that render a whole camera themselves (e.g. splatfacto) cannot be chunked: they are cancelled
        # between levels only.
        from nerfstudio.models.base_model import Model

        self.renders_whole_cameras = type(self.model).get_outputs_for_camera is not Model.get_outputs_for_camera
        if self.model.training and render_lock is None:
            LOGGER.warning(
                "RenderQueue: the model is in training mode; call pipeline.eval() first, or pass render_lock "
                "(e.g. trainer.train_lock) to render a pipeline that is still training"
            )
        self.info: dict[str, Any] = {"method": type(self.model).__name__}

        self._name = f"recon-render-{next(_QUEUE_COUNTER)}"
        self._cond = threading.Condition(threading.Lock())
        self._next_id = 0
        self._latest_id = -1  # id of the newest accepted request; older ones are stale
        self._last_input: tuple | None = None
        self._pending: _Request | None = None
        self._published: Frame | None = None
        self._busy = 0
        self._closed = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._listeners: list[Callable[[], None]] = []
        self._error_count = 0
        self._last_error: RenderWorkerError | None = None
        self._frames_published_at_error = 0
        self._frames_published = 0
        self._frames_dropped = 0
        self._frames_returned = 0
        self._renders_cancelled = 0
        self._chunks_rendered = 0
        self._default_reader = FrameReader(self)
        if start:
            self.start()

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_config(
        cls,
        config_yml: str | Path,
        *,
        data_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        test_mode: Literal["test", "val", "inference"] = "inference",
        **options: Any,
    ) -> RenderQueue:
        """Loads a trained run with nerfstudio's ``eval_setup`` (any registered method) and wraps it in a queue.

        Args:
            config_yml: the run's ``config.yml``. Its checkpoint folder is looked up next to it when nerfstudio's
                cwd-relative ``output_dir`` does not lead there (a run moved, or loaded from another directory).
            data_dir: dataset folder, if it moved since training (nerfstudio's dataparser reads it even for
                rendering).
            device: where to render; default CUDA when available, else the CPU (nerfstudio's choice).
            test_mode: passed to ``eval_setup`` (``inference`` loads no images).
            **options: keyword arguments of :class:`RenderQueue`.
        """
        from recon_plugin.export.loading import load_pipeline

        config_path = Path(config_yml).expanduser().resolve()
        config, pipeline, checkpoint_path, step = load_pipeline(config_path, data=data_dir, test_mode=test_mode)
        if device is not None:
            pipeline.to(torch.device(device))
        queue = cls(pipeline, **options)
        queue.info.update(
            {"method": config.method_name, "config": str(config_path), "checkpoint": str(checkpoint_path), "step": step}
        )
        return queue

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Starts the worker threads (done by the constructor unless ``start=False``)."""
        with self._cond:
            if self._closed:
                raise RenderQueueClosed("the render queue was closed")
            if self._threads:
                return
            for index in range(self.num_workers):
                thread = threading.Thread(target=self._worker_main, name=f"{self._name}-worker-{index}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Cancels the running render (at the next chunk), stops and joins the workers. Idempotent.

        Raises:
            RenderQueueClosed: a worker did not stop within ``timeout`` seconds (a single chunk ran longer).
        """
        with self._cond:
            self._closed = True
            self._stopping = True
            self._pending = None
            self._cond.notify_all()
            threads = list(self._threads)
        self._notify_listeners()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in threads if thread.is_alive()]
        if alive:
            raise RenderQueueClosed(f"render workers did not stop within {timeout} s: {alive}")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> RenderQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ requests
    def update_camera(
        self,
        position: Sequence[float] | np.ndarray,
        rotation: Sequence[float] | np.ndarray,
        *,
        horizontal_fov_deg: float | None = None,
        aspect: float | None = None,
    ) -> int:
        """Requests a render from a new camera pose; returns at once with the request id.

        Args:
            position: camera centre (x, y, z) in the queue's world frame.
            rotation: Euler angles (rx, ry, rz) in **radians**, extrinsic rotations about the fixed X, then Y, then
                Z axes (``R = Rz @ Ry @ Rx``, SciPy ``from_euler("xyz")``) of an OpenGL camera (looks down -Z, +Y up).
            horizontal_fov_deg: horizontal field of view for this request (default: the ladder's).
            aspect: width / height for this request: every level keeps its width and gets
                ``round(width / aspect)`` rows (default: each level's own size).

        Returns:
            The id of the request; an update identical to the previous accepted one is ignored and returns the
            previous id.
        """
        return self.update_camera_matrix(
            pose_to_c2w(position, rotation), horizontal_fov_deg=horizontal_fov_deg, aspect=aspect
        )

    def update_camera_matrix(
        self,
        c2w: Sequence[Sequence[float]] | np.ndarray,
        *,
        horizontal_fov_deg: float | None = None,
        aspect: float | None = None,
    ) -> int:
        """Like :meth:`update_camera` with a 4x4 (or 3x4) OpenGL camera-to-world matrix (rigid, no scale)."""
        matrix = validate_c2w(c2w)  # a private copy: later changes to the caller's array cannot leak in
        fov = self.ladder.horizontal_fov_deg if horizontal_fov_deg is None else check_fov(horizontal_fov_deg)
        if aspect is not None:
            aspect = float(aspect)
            if not math.isfinite(aspect) or not 1e-3 <= aspect <= 1e3:
                raise ValueError(f"aspect must be a finite width/height ratio in [0.001, 1000], got {aspect!r}")
        key = (matrix.tobytes(), fov, aspect)
        if self.dataparser_transform is not None:
            matrix = self.dataparser_transform.to_world(matrix)
        now = time.perf_counter()
        with self._cond:
            if self._closed:
                raise RenderQueueClosed("the render queue was closed")
            if key == self._last_input:
                return self._latest_id
            request = _Request(self._next_id, matrix, fov, aspect, now)
            self._next_id += 1
            self._latest_id = request.request_id
            self._last_input = key
            self._pending = request
            self._cond.notify_all()
            return request.request_id

    # ------------------------------------------------------------------------------------------------ frames
    def get_frame(self, timeout: float = 0.0) -> Frame | None:
        """Newest finished frame not returned yet (by this call's default reader), or None.

        Once a frame of request k was published, no frame of an older request is ever returned, and frames of one
        request come in increasing ladder level. Each frame is returned once; use :meth:`open_reader` for more
        independent consumers.

        Args:
            timeout: seconds to wait for a new frame (0 = do not wait).

        Raises:
            RenderWorkerError: a worker failed since the last call; ``__cause__`` holds the original exception.
        """
        return self._default_reader.get_frame(timeout)

    def get_rgb_image(self) -> np.ndarray | None:
        """``get_frame().image`` or None (non-blocking): the omni-nerf-extension call."""
        return self._default_reader.get_rgb_image()

    def open_reader(self) -> FrameReader:
        """A new independent consumer that starts with the frame published most recently (if any)."""
        return FrameReader(self)

    def add_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback()`` after every published frame, every worker error and on :meth:`close`, so that
        event-driven consumers (the render server's event loop) can wait without a blocked thread.

        The callback runs in a worker thread (or the closing one) without the queue's lock held; it must return
        quickly and not raise (errors are logged), e.g. ``lambda: loop.call_soon_threadsafe(wake)``. Readers then
        look with ``get_frame(0)``; a notification may be spurious. Returns a function that removes the callback.
        """
        with self._cond:
            self._listeners.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return remove

    def _notify_listeners(self) -> None:
        with self._cond:
            listeners = tuple(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:  # a consumer's bug must not kill a render worker
                LOGGER.exception("RenderQueue: frame listener %r failed", callback)

    @property
    def latest_request_id(self) -> int:
        """Id of the newest accepted camera request (-1 before the first)."""
        return self._latest_id

    def stats(self) -> dict[str, int]:
        """Counters: requests, frames published/dropped/returned, cancelled renders, chunks rendered, errors."""
        with self._cond:
            return {
                "requests": self._next_id,
                "frames_published": self._frames_published,
                "frames_dropped": self._frames_dropped,
                "frames_returned": self._frames_returned,
                "renders_cancelled": self._renders_cancelled,
                "chunks_rendered": self._chunks_rendered,
                "errors": self._error_count,
                "busy_workers": self._busy,
            }

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Blocks until no request is pending or rendering; returns False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def scene_hint(self) -> dict[str, list]:
        """Where to look: ``target`` (point the training cameras look at), ``up`` and ``initial_c2w``, in the
        queue's world frame, estimated from the training cameras (fallback: origin, +Z up, a camera on -Y)."""
        hint = _scene_hint(self.pipeline)
        if self.dataparser_transform is not None:
            transform = self.dataparser_transform
            hint = {
                "target": transform.point_to_data(np.asarray(hint["target"])).tolist(),
                "up": transform.direction_to_data(np.asarray(hint["up"])).tolist(),
                "initial_c2w": transform.to_data(np.asarray(hint["initial_c2w"])).tolist(),
            }
        return hint

    # ------------------------------------------------------------------------------------------------ workers
    def _is_stale(self, request: _Request) -> bool:
        # Plain attribute reads (atomic under the GIL): checked before every chunk, so it must be cheap.
        return self._stopping or request.request_id < self._latest_id

    def _worker_main(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._pending is None:
                    self._cond.wait()
                if self._stopping:
                    return
                request, self._pending = self._pending, None
                self._busy += 1
            try:
                self._render_request(request)
            except Exception as error:  # a bug outside the model call: report it, keep the worker alive
                self._report_failure(request, -1, error)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _render_request(self, request: _Request) -> None:
        for level_index in range(len(self.ladder)):
            if self._is_stale(request):
                with self._cond:
                    self._renders_cancelled += 1
                return
            started = time.perf_counter()
            try:
                image = self._render_level(request, level_index)
            except Exception as error:  # reported to the caller through get_frame
                self._report_failure(request, level_index, error)
                return
            if image is None:
                with self._cond:
                    self._renders_cancelled += 1
                return
            finished = time.perf_counter()
            image.setflags(write=False)
            frame = Frame(
                image=image,
                request_id=request.request_id,
                level=level_index,
                width=image.shape[1],
                height=image.shape[0],
                render_seconds=finished - started,
                latency_seconds=finished - request.requested_at,
            )
            with self._cond:  # check and publish under one lock: the no-way-back guarantee
                published = self._published is None or frame.key > self._published.key
                if published:
                    self._published = dataclasses.replace(frame, sequence=self._frames_published)
                    self._frames_published += 1
                    self._cond.notify_all()
                else:
                    self._frames_dropped += 1
            if published:
                self._notify_listeners()

    def _report_failure(self, request: _Request, level_index: int, error: Exception) -> None:
        """Records a worker failure; the next ``get_frame`` of every reader raises it (once)."""
        where = "outside the model call"
        if 0 <= level_index < len(self.ladder):
            level = self.ladder[level_index]
            where = f"at ladder level {level_index} ({level.width}x{level.height})"
        failure = RenderWorkerError(
            f"rendering request {request.request_id} {where} failed: {type(error).__name__}: {error}",
            request_id=request.request_id,
            level=level_index,
        )
        failure.__cause__ = error
        LOGGER.error("%s", failure, exc_info=error)
        with self._cond:
            self._error_count += 1
            self._last_error = failure
            self._frames_published_at_error = self._frames_published
            self._cond.notify_all()
        self._notify_listeners()

    def _level_size(self, request: _Request, level_index: int) -> tuple[int, int]:
        level = self.ladder[level_index]
        if request.aspect is None:
            return level.width, level.height
        return level.width, max(1, round(level.width / request.aspect))

    @contextlib.contextmanager
    def _model_context(self) -> Iterator[None]:
        lock = self.render_lock if self.render_lock is not None else contextlib.nullcontext()
        with lock:
            was_training = self.render_lock is not None and self.model.training
            if was_training:
                self.model.eval()
            try:
                with torch.no_grad():
                    yield
            finally:
                if was_training:
                    self.model.train()

    def _render_level(self, request: _Request, level_index: int) -> np.ndarray | None:
        from nerfstudio.cameras.cameras import Cameras, CameraType

        width, height = self._level_size(request, level_index)
        fx, fy, cx, cy = intrinsics_for(width, height, request.horizontal_fov_deg)
        c2w = torch.from_numpy(request.c2w[None, :3, :4]).to(dtype=torch.float32)
        cameras = Cameras(
            camera_to_worlds=c2w,
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            width=width,
            height=height,
            camera_type=CameraType.PERSPECTIVE,
        ).to(self.device)
        if self.renders_whole_cameras:
            with self._model_context():
                outputs = self.model.get_outputs_for_camera(cameras)
            image = self._select_output(outputs).reshape(height, width, -1)
            with self._cond:
                self._chunks_rendered += 1
        else:
            ray_bundle = cameras.generate_rays(camera_indices=0, keep_shape=True).flatten()
            num_rays = height * width
            pieces = []
            for start in range(0, num_rays, self.chunk_size):
                if self._is_stale(request):
                    return None
                with self._model_context():
                    outputs = self.model.forward(ray_bundle=ray_bundle[start : start + self.chunk_size])
                    pieces.append(self._select_output(outputs).detach())
                with self._cond:
                    self._chunks_rendered += 1
            image = torch.cat(pieces).reshape(height, width, -1)
        if self.output_name.startswith("rgb"):
            image = image.clamp(0.0, 1.0)
        return np.ascontiguousarray(image.to(device="cpu", dtype=torch.float32).numpy())

    def _select_output(self, outputs: dict[str, Any]) -> torch.Tensor:
        value = outputs.get(self.output_name)
        if not isinstance(value, torch.Tensor):
            names = sorted(name for name, out in outputs.items() if isinstance(out, torch.Tensor))
            raise KeyError(
                f"model {type(self.model).__name__} has no tensor output {self.output_name!r}; it has {names}"
            )
        return value


def _resolve_model(pipeline: Any) -> Model:
    from nerfstudio.models.base_model import Model

    if isinstance(pipeline, Model):
        return pipeline
    model = getattr(pipeline, "model", None)
    if isinstance(model, Model):
        return model
    raise TypeError(
        f"RenderQueue needs a nerfstudio Pipeline (with a .model) or Model, got {type(pipeline).__name__}; "
        "use RenderQueue.from_config(config.yml) to load a trained run"
    )


def _train_dataparser_outputs(pipeline: Any) -> Any | None:
    datamanager = getattr(pipeline, "datamanager", None)
    return getattr(datamanager, "train_dataparser_outputs", None)


def _find_dataparser_transform(pipeline: Any) -> DataparserTransform | None:
    outputs = _train_dataparser_outputs(pipeline)
    transform = getattr(outputs, "dataparser_transform", None)
    if transform is None:
        return None
    scale = float(getattr(outputs, "dataparser_scale", 1.0))
    return DataparserTransform(np.asarray(transform.detach().cpu().numpy(), dtype=np.float64), scale)


def _scene_hint(pipeline: Any) -> dict[str, list]:
    outputs = _train_dataparser_outputs(pipeline)
    cameras = getattr(outputs, "cameras", None)
    c2ws = getattr(cameras, "camera_to_worlds", None)
    if c2ws is None or len(c2ws) == 0:
        return {"target": [0.0, 0.0, 0.0], "up": [0.0, 0.0, 1.0], "initial_c2w": _fallback_camera().tolist()}
    poses = c2ws.detach().cpu().numpy().astype(np.float64).reshape(-1, 3, 4)
    up = poses[:, :, 1].mean(axis=0)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    # Least-squares point nearest to every optical axis (origin o, direction -z).
    directions = -poses[:, :, 2] / np.linalg.norm(poses[:, :, 2], axis=1, keepdims=True)
    origins = poses[:, :, 3]
    projectors = np.eye(3)[None] - directions[:, :, None] * directions[:, None, :]
    lhs, rhs = projectors.sum(axis=0), np.einsum("nij,nj->i", projectors, origins)
    if np.linalg.cond(lhs) < 1e6:
        target = np.linalg.solve(lhs, rhs)
    else:
        target = np.zeros(3)
    initial = np.eye(4)
    initial[:3] = poses[0]
    return {"target": target.tolist(), "up": up.tolist(), "initial_c2w": initial.tolist()}


def _fallback_camera() -> np.ndarray:
    from recon_plugin.renderer.camera import look_at

    return look_at([0.0, -3.0, 1.5], [0.0, 0.0, 0.0])
