"""Python client of ``recon-render-server`` with the calls of :class:`RenderQueue`.

Needs only NumPy and ``websockets`` (>= 13; Pillow only for ``encoding="png"``): it does not import torch or
nerfstudio, so it runs in another interpreter than the server (a DCC application's Python, a simulator, ...).
Nothing is pickled: requests are JSON and frames raw pixels (:mod:`recon_plugin.renderer.protocol`).
"""

from __future__ import annotations

import inspect
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from recon_plugin.renderer.camera import pose_to_c2w, validate_c2w
from recon_plugin.renderer.protocol import ENCODINGS, decode_frame_message, is_loopback_host
from recon_plugin.renderer.types import Frame, RenderError, RenderQueueClosed, RenderWorkerError

__all__ = ["RenderClient", "RenderServerError"]


class RenderServerError(RenderError):
    """The server answered with an error reply; ``code`` is one of ``protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RenderClient:
    """Synchronous client of a render server: ``update_camera``, ``update_camera_matrix``, ``get_frame``,
    ``get_rgb_image`` and ``info``, with the semantics of :class:`RenderQueue` (frames never go back in time).

    Args:
        url: ``ws://HOST:PORT/ws`` of the server.
        token: the server's token, or ``token_file`` to read it from (whitespace stripped).
        encoding: frame payload: ``"u8"`` (8-bit, default), ``"f32"`` (exact float32) or ``"png"``.
        timeout: seconds for connecting and for each reply (on top of a ``get_frame`` wait).
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8765/ws",
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        encoding: str = "u8",
        timeout: float = 30.0,
    ) -> None:
        from websockets.sync.client import connect

        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if token_file is not None:
            token = Path(token_file).expanduser().read_text().strip()
        self.url = url
        self.encoding = encoding
        self.timeout = timeout
        self._ids = itertools.count(1)
        options: dict[str, Any] = {"open_timeout": timeout, "max_size": 2**28, "compression": None}
        host = urlsplit(url).hostname or ""
        if is_loopback_host(host) and "proxy" in inspect.signature(connect).parameters:
            options["proxy"] = None  # websockets >= 15 honours HTTP(S)_PROXY; never for loopback
        # Frames can be large (1280x720 f32 = 11 MB); the server sends nothing else of size. Entering the
        # context manager works on every websockets version (17 deprecates using connect()'s result directly).
        self._context = connect(url, **options)
        self._connection = self._context.__enter__()
        try:
            if token is not None:
                self._call({"op": "auth", "token": token})
            self._info = self._call({"op": "info"})
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------ calls
    def info(self) -> dict[str, Any]:
        """Server description: protocol, model (method, step), ladder, world frame, scene hint, limits."""
        return self._call({"op": "info"})

    def update_camera(
        self,
        position: Sequence[float] | np.ndarray,
        rotation: Sequence[float] | np.ndarray,
        *,
        horizontal_fov_deg: float | None = None,
        aspect: float | None = None,
    ) -> int:
        """As :meth:`RenderQueue.update_camera` (radians, extrinsic XYZ Euler, OpenGL camera); returns the id."""
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
        """As :meth:`RenderQueue.update_camera_matrix`; returns the request id."""
        message: dict[str, Any] = {"op": "update_camera", "c2w": validate_c2w(c2w).tolist()}
        if horizontal_fov_deg is not None:
            message["horizontal_fov_deg"] = float(horizontal_fov_deg)
        if aspect is not None:
            message["aspect"] = float(aspect)
        return int(self._call(message)["request_id"])

    def get_frame(self, timeout: float = 0.0) -> Frame | None:
        """Newest frame not yet returned to this client, or None after ``timeout`` seconds (0 = do not wait).

        Long waits are split into server-side waits of at most the server's ``max_wait_seconds``.

        Raises:
            RenderWorkerError: a render failed on the server.
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        limit = float(self._info.get("max_wait_seconds", 5.0))
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.0, min(deadline - time.monotonic(), limit))
            reply = self._call({"op": "get_frame", "encoding": self.encoding, "timeout": wait}, wait)
            if isinstance(reply, Frame):
                return reply
            if time.monotonic() >= deadline:
                return None

    def get_rgb_image(self) -> np.ndarray | None:
        """``get_frame().image`` or None (non-blocking)."""
        frame = self.get_frame()
        return None if frame is None else frame.image

    def close(self) -> None:
        """Closes the connection (the server keeps running). Idempotent."""
        self._context.__exit__(None, None, None)

    def __enter__(self) -> RenderClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ transport
    def _call(self, message: dict[str, Any], extra_wait: float = 0.0) -> Any:
        from websockets.exceptions import ConnectionClosed

        message_id = next(self._ids)
        try:
            self._connection.send(json.dumps({**message, "id": message_id}))
            data = self._connection.recv(timeout=self.timeout + extra_wait)
        except ConnectionClosed as error:
            raise RenderQueueClosed(f"connection to {self.url} closed: {error}") from error
        except TimeoutError as error:
            raise RenderError(f"no reply from {self.url} within {self.timeout + extra_wait:.1f} s") from error
        if isinstance(data, bytes):
            header, frame = decode_frame_message(data)
            if header.get("id") != message_id:
                raise RenderError(f"reply id {header.get('id')} does not match request id {message_id}")
            return frame
        reply = json.loads(data)
        if reply.get("id") != message_id:
            raise RenderError(f"reply id {reply.get('id')} does not match request id {message_id}")
        if not reply.get("ok"):
            error = reply.get("error") or {}
            code, text = str(error.get("code", "internal")), str(error.get("message", ""))
            if code == "render_failed":
                raise RenderWorkerError(text)
            raise RenderServerError(code, text)
        return reply
