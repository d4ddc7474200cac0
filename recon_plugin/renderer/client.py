"""Python client of ``recon-render-server`` with the calls of :class:`RenderQueue`.

Needs only NumPy and ``websockets`` (>= 13; Pillow only for ``encoding="png"``): it does not import torch or
nerfstudio, so it runs in another interpreter than the server (a DCC application's Python, a simulator, ...).
Nothing is pickled: requests are JSON and frames raw pixels (:mod:`recon_plugin.renderer.protocol`).
"""

from __future__ import annotations

import inspect
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from recon_plugin.renderer.camera import pose_to_c2w, validate_c2w
from recon_plugin.renderer.protocol import ENCODINGS, decode_frame_message, is_loopback_host
from recon_plugin.renderer.types import Frame, RenderError, RenderQueueClosed, RenderTimeoutError, RenderWorkerError

__all__ = ["RenderClient", "RenderServerError"]


class RenderServerError(RenderError):
    """The server answered with an error reply; ``code`` is one of ``protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RenderClient:
    """Synchronous client of a render server: ``update_camera``, ``update_camera_matrix``, ``get_frame``,
    ``get_rgb_image`` and ``info``, with the semantics of :class:`RenderQueue` (frames never go back in time).

    Thread safety: one client may be shared by several threads. Each request/reply exchange holds the client's
    lock, so calls are serialised; a long ``get_frame`` wait is split into server-side waits of at most the
    server's ``max_wait_seconds``, and other threads get their turn between them. Threads that each need to
    wait for frames at the same time should each open their own client (the server keeps one frame reader per
    connection, so clients sharing a connection also share which frames have been handed out).

    Timeouts: a reply that does not come within ``timeout`` raises :class:`RenderTimeoutError` (a
    ``TimeoutError``); the request may still take effect on the server. The connection stays usable: a late
    reply is recognised by its id and drained by the next call. A late frame is returned by the next
    ``get_frame`` (unless a newer one is available) and a late render error is raised by it, so nothing the
    server handed to this connection is lost.

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
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.url = url
        self.encoding = encoding
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one request/reply exchange at a time
        self._abandoned: set[int] = set()  # ids of requests that timed out; their replies are drained
        self._late: deque[Frame | RenderWorkerError] = deque()  # outcomes of late get_frame replies, in order
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
            RenderTimeoutError: the server did not answer in time (see the class docstring).
        """
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        limit = float(self._info.get("max_wait_seconds", 5.0))
        deadline = time.monotonic() + timeout
        while True:
            wait = max(0.0, min(deadline - time.monotonic(), limit))
            frame = self._get_frame_once(wait)
            if frame is not None or time.monotonic() >= deadline:
                return frame

    def _get_frame_once(self, wait: float) -> Frame | None:
        # Late outcomes and the reply are resolved under one lock hold: a thread must not hand out a late frame
        # after another thread returned a newer one.
        with self._lock:
            if self._late:
                wait = 0.0  # something to return already; only ask whether a newer frame exists
            message = {"op": "get_frame", "encoding": self.encoding, "timeout": wait}
            try:
                reply = self._exchange(message, wait)
            except RenderWorkerError as error:
                self._late.append(error)
            else:
                if isinstance(reply, Frame):
                    self._late.append(reply)
            return self._pop_late()

    def _pop_late(self) -> Frame | None:
        """The newest pending frame (older ones are superseded), or raises the first pending render error.

        The server sends a connection's frames in increasing order, so a later entry is always newer. An error
        is raised in its place in the sequence (frames before it are skipped, as frames may be; an error never is)
        and what follows it stays pending for the next call.
        """
        newest = None
        while self._late:
            item = self._late.popleft()
            if isinstance(item, RenderWorkerError):
                raise item
            newest = item
        return newest

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
        with self._lock:
            return self._exchange(message, extra_wait)

    def _exchange(self, message: dict[str, Any], extra_wait: float) -> Any:
        """Sends ``message`` and returns its reply; the caller holds ``self._lock``."""
        from websockets.exceptions import ConnectionClosed

        message_id = next(self._ids)
        limit = self.timeout + extra_wait
        deadline = time.monotonic() + limit
        answered = False
        try:
            self._connection.send(json.dumps({**message, "id": message_id}))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                reply_id, reply = _parse_reply(self._connection.recv(timeout=remaining))
                if reply_id == message_id:
                    answered = True
                    break
                if reply_id not in self._abandoned:
                    raise RenderError(  # a protocol violation, not a late reply
                        f"reply id {reply_id!r} answers no request of this client (expected {message_id})"
                    )
                self._abandoned.discard(reply_id)
                self._keep_late(reply)
        except ConnectionClosed as error:
            raise RenderQueueClosed(f"connection to {self.url} closed: {error}") from error
        except TimeoutError as error:
            raise RenderTimeoutError(f"no reply from {self.url} within {limit:.1f} s") from error
        finally:
            if not answered:  # timed out, or interrupted (e.g. KeyboardInterrupt): drain the reply when it comes
                self._abandoned.add(message_id)
        if isinstance(reply, Frame):
            return reply
        if not reply.get("ok"):
            raise _reply_error(reply)
        return reply

    def _keep_late(self, reply: Frame | dict[str, Any]) -> None:
        """Keeps what a late reply carried that would otherwise be lost: a frame or a render error."""
        if isinstance(reply, Frame):
            self._late.append(reply)
        elif not reply.get("ok"):
            error = _reply_error(reply)
            if isinstance(error, RenderWorkerError):
                self._late.append(error)


def _parse_reply(data: str | bytes) -> tuple[Any, Frame | dict[str, Any]]:
    """(id, frame or JSON reply) of one server message."""
    if isinstance(data, bytes):
        header, frame = decode_frame_message(data)
        return header.get("id"), frame
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise RenderError(f"malformed reply from the server: {data[:200]!r}")
    return reply.get("id"), reply


def _reply_error(reply: dict[str, Any]) -> RenderError:
    error = reply.get("error") or {}
    code, text = str(error.get("code", "internal")), str(error.get("message", ""))
    if code == "render_failed":
        return RenderWorkerError(text)
    return RenderServerError(code, text)
