"""WebSocket render server: a :class:`RenderQueue` behind an explicit, authenticated operation allow-list.

Security model (compare omni-nerf-extension's rpyc *classic* server, which executes any Python a client sends):

- only the operations of :mod:`recon_plugin.renderer.protocol` exist (auth, info, update_camera, get_frame);
  requests are size-limited JSON, validated field by field; replies are JSON or raw image bytes, never pickles;
- binds to loopback by default; any other address requires a token (>= 16 characters), compared in constant
  time; a connection is closed after ``max_auth_failures`` wrong tokens;
- browsers: WebSocket handshakes with an ``Origin`` other than the server's own are refused (cross-site
  WebSocket hijacking), and without a token the ``Host`` header must be a loopback name (DNS rebinding);
- every bad message gets an error reply and the connection (and server) keep serving; messages far over the
  limit are refused by the WebSocket layer (close code 1009) without being buffered.

Waiting ``get_frame`` requests hold no thread: they await an asyncio event that the queue's frame listener sets
(from its worker thread, through ``loop.call_soon_threadsafe``), so every connection can wait at once while frame
encoding still gets the default thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from recon_plugin.renderer.preview_page import PREVIEW_HTML, PREVIEW_SCRIPT
from recon_plugin.renderer.protocol import (
    ENCODINGS,
    OPS,
    PROTOCOL_VERSION,
    encode_frame_message,
    error_reply,
    is_loopback_host,
)
from recon_plugin.renderer.types import Frame, RenderWorkerError

if TYPE_CHECKING:
    from recon_plugin.renderer.queue import FrameReader, RenderQueue

__all__ = ["MIN_TOKEN_LENGTH", "RenderServer", "is_loopback_host"]

LOGGER = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16


class _BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Session:
    authenticated: bool
    auth_failures: int = 0


class RenderServer:
    """Serves a :class:`RenderQueue` over WebSockets (``ws://HOST:PORT/ws``) and, optionally, a preview page.

    Args:
        queue: the queue to expose; all connections share its camera, each has its own frame reader.
        host: address to bind; loopback by default. Anything else requires ``token``.
        port: TCP port (0 = pick a free one; see :attr:`port` once started).
        token: shared secret clients must send first (``{"op": "auth", "token": ...}``); at least 16 characters.
        preview: serve the live preview page at ``http://HOST:PORT/`` (token, if any, in the URL fragment:
            ``/#token=...``; the page itself contains no data).
        max_message_bytes: largest accepted client message; larger ones get a ``too_large`` error reply, those
            over 4x this limit are refused by the WebSocket layer (close code 1009).
        max_wait_seconds: upper bound of ``get_frame``'s ``timeout`` (a waiting request holds no thread).
        max_auth_failures: wrong tokens tolerated per connection before it is closed (code 1008).
        max_connections: simultaneous connections; more are refused with HTTP 503.
    """

    def __init__(
        self,
        queue: RenderQueue,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        preview: bool = False,
        max_message_bytes: int = 64 * 1024,
        max_wait_seconds: float = 5.0,
        max_auth_failures: int = 3,
        max_connections: int = 32,
    ) -> None:
        if token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token must have at least {MIN_TOKEN_LENGTH} characters")
        if not is_loopback_host(host) and token is None:
            raise ValueError(
                f"refusing to listen on {host!r} without a token: anyone who can reach the port could drive the "
                "renderer. Pass a token (recon-render-server --token-file FILE) or bind to 127.0.0.1"
            )
        if not 1024 <= max_message_bytes <= 16 * 1024 * 1024:
            raise ValueError(f"max_message_bytes must be in [1 KiB, 16 MiB], got {max_message_bytes}")
        if not 0.0 < max_wait_seconds <= 3600.0:
            raise ValueError(f"max_wait_seconds must be in (0, 3600], got {max_wait_seconds}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a positive integer, got {max_connections!r}")
        self.queue = queue
        self.host = host
        self.port = port
        self.token = token
        self.preview = preview
        self.max_message_bytes = max_message_bytes
        self.max_wait_seconds = max_wait_seconds
        self.max_auth_failures = max_auth_failures
        self.max_connections = max_connections
        self._connections = 0
        self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._queue_changed: asyncio.Event | None = None  # replaced by a fresh one after every queue event
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._close_requested = False  # close() before serve() created its loop: serve() stops at once
        self._startup_error: BaseException | None = None
        self._info_cache: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------------ running
    @property
    def url(self) -> str:
        """WebSocket URL clients connect to."""
        return f"ws://{self._url_host()}:{self.port}/ws"

    @property
    def preview_url(self) -> str:
        """Address of the preview page (without the token fragment)."""
        return f"http://{self._url_host()}:{self.port}/"

    def _url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"[{host}]" if ":" in host else host

    def stats(self) -> dict[str, int]:
        """``connections`` open now and ``waiting_get_frame``: get_frame requests waiting for a new frame."""
        return {"connections": self._connections, "waiting_get_frame": self._waiting}

    async def serve(self, ready: Callable[[RenderServer], None] | None = None) -> None:
        """Runs the server on the current event loop until :meth:`close` (or cancellation)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._close_requested:
            self._stop.set()
        self._queue_changed = asyncio.Event()
        remove_listener = self.queue.add_listener(self._on_queue_event)
        try:
            await self._serve(ready)
        finally:
            remove_listener()

    async def _serve(self, ready: Callable[[RenderServer], None] | None) -> None:
        assert self._stop is not None
        async with serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            max_size=4 * self.max_message_bytes,
            max_queue=4,
            close_timeout=3,
            compression=None,
            server_header="recon-render-server",
        ) as server:
            sockets = list(server.sockets)
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            self._started.set()
            if ready is not None:
                ready(self)
            await self._stop.wait()
            self._wake_waiters()  # waiting get_frame requests answer now instead of holding up the shutdown

    def run(self, ready: Callable[[RenderServer], None] | None = None) -> None:
        """Blocking: serves until SIGINT/SIGTERM or :meth:`close` from another thread."""
        import signal

        async def main() -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(self.serve(ready))
            while self._stop is None:
                await asyncio.sleep(0.01)
            for signum in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(signum, self._stop.set)
                except (NotImplementedError, RuntimeError):  # not the main thread / platform without signals
                    pass
            await task

        asyncio.run(main())

    def start(self, timeout: float = 30.0) -> RenderServer:
        """Serves from a background thread; returns once listening (then :attr:`port` is the bound port)."""
        if self._thread is not None:
            raise RuntimeError("server already started")

        def target() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as error:  # reported by start()
                self._startup_error = error
                self._started.set()

        self._thread = threading.Thread(target=target, name="recon-render-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._startup_error is not None:
            self.close()  # a late start must not leave a server listening that nobody knows about
            raise RuntimeError(f"render server failed to start on {self.host}:{self.port}") from self._startup_error
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stops serving (connections are closed); joins the background thread if :meth:`start` made one."""
        self._close_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> RenderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ HTTP
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        host_header = request.headers.get("Host", "")
        if self.token is None and not is_loopback_host(_hostname(host_header)):
            return _text_response(connection, http.HTTPStatus.FORBIDDEN, "Host must be a loopback name\n")
        path = request.path.split("?", 1)[0]
        is_upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if not is_upgrade:
            if path in ("/", "/index.html") and self.preview:
                return self._preview_response(connection, host_header)
            if path in ("/", "/index.html"):
                message = "recon-render-server: preview disabled (start with --preview); WebSocket API at /ws\n"
                return _text_response(connection, http.HTTPStatus.NOT_FOUND, message)
            return _text_response(connection, http.HTTPStatus.NOT_FOUND, "not found\n")
        if path != "/ws":
            return _text_response(connection, http.HTTPStatus.NOT_FOUND, "WebSocket endpoint is /ws\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in (f"http://{host_header}", f"https://{host_header}"):
            return _text_response(connection, http.HTTPStatus.FORBIDDEN, "cross-origin WebSocket refused\n")
        if self._connections >= self.max_connections:
            return _text_response(connection, http.HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _preview_response(self, connection: ServerConnection, host_header: str) -> Response:
        script_hash = hashlib.sha256(PREVIEW_SCRIPT.encode()).digest()
        csp = (
            "default-src 'none'; "
            f"script-src 'sha256-{base64.b64encode(script_hash).decode()}'; "
            "style-src 'unsafe-inline'; img-src blob: data:; "
            f"connect-src ws://{host_header}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        headers = Headers()
        headers["Content-Type"] = "text/html; charset=utf-8"
        headers["Content-Security-Policy"] = csp
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "no-store"
        headers["X-Frame-Options"] = "DENY"
        body = PREVIEW_HTML.encode()
        headers["Content-Length"] = str(len(body))
        return Response(200, "OK", headers, body)

    # ------------------------------------------------------------------------------------------------ messages
    async def _handle(self, connection: ServerConnection) -> None:
        self._connections += 1
        session = _Session(authenticated=self.token is None)
        reader = self.queue.open_reader()
        try:
            async for message in connection:
                reply, close = await self._reply(message, session, reader)
                await connection.send(reply)
                if close:
                    await connection.close(1008, "too many failed authentication attempts")
                    return
        except ConnectionClosed:
            pass
        finally:
            self._connections -= 1

    async def _reply(self, message: str | bytes, session: _Session, reader: Any) -> tuple[str | bytes, bool]:
        """Reply to one message and whether to close the connection afterwards. Never raises."""
        op: Any = None
        message_id: Any = None
        try:
            if isinstance(message, bytes):
                raise _BadRequest("malformed", "binary messages are not accepted; send JSON text")
            size = len(message.encode("utf-8", "surrogatepass"))
            if size > self.max_message_bytes:
                raise _BadRequest("too_large", f"message of {size} bytes exceeds the limit of {self.max_message_bytes}")
            request = _parse_json_object(message)
            message_id = _message_id(request.get("id"))
            op = request.get("op")
            if not isinstance(op, str):
                op = None
                raise _BadRequest("malformed", 'a request needs a string "op"')
            if op not in OPS:
                name = op
                op = None
                raise _BadRequest("unknown_op", f"unknown op {name[:40]!r}; allowed: {', '.join(OPS)}")
            if op == "auth":
                return self._auth(request, session, message_id)
            if not session.authenticated:
                raise _BadRequest("unauthenticated", 'authenticate first: {"op": "auth", "token": "..."}')
            if op == "info":
                _check_keys(request, set())
                return json.dumps({"ok": True, "op": "info", "id": message_id, **self._info()}), False
            if op == "update_camera":
                request_id = self._update_camera(request)
                return json.dumps({"ok": True, "op": op, "id": message_id, "request_id": request_id}), False
            if op == "get_frame":
                return await self._get_frame(request, reader, message_id), False
            raise AssertionError(op)
        except _BadRequest as error:
            return error_reply(error.code, str(error), op, message_id), False
        except RenderWorkerError as error:
            return error_reply("render_failed", str(error), op, message_id), False
        except Exception as error:  # a bug must not take the server down
            LOGGER.exception("render server: internal error")
            return error_reply("internal", f"{type(error).__name__}: {error}", op, message_id), False

    def _auth(self, request: dict[str, Any], session: _Session, message_id: Any) -> tuple[str, bool]:
        _check_keys(request, {"token"})
        token = request.get("token")
        if self.token is None:
            session.authenticated = True
            return json.dumps({"ok": True, "op": "auth", "id": message_id, "auth_required": False}), False
        if isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode()):
            session.authenticated = True
            session.auth_failures = 0
            return json.dumps({"ok": True, "op": "auth", "id": message_id, "auth_required": True}), False
        session.authenticated = False
        session.auth_failures += 1
        close = session.auth_failures >= self.max_auth_failures
        return error_reply("unauthenticated", "wrong or missing token", "auth", message_id), close

    def _info(self) -> dict[str, Any]:
        if self._info_cache is None:
            import recon_plugin

            queue = self.queue
            self._info_cache = {
                "protocol": PROTOCOL_VERSION,
                "server": "recon-render-server",
                "version": recon_plugin.__version__,
                "model": {key: queue.info[key] for key in ("method", "step") if key in queue.info},
                "ladder": queue.ladder.to_dict(),
                "world_frame": queue.world_frame,
                "output": queue.output_name,
                "chunk_size": queue.chunk_size,
                "scene": queue.scene_hint(),
                "encodings": list(ENCODINGS),
                "max_message_bytes": self.max_message_bytes,
                "max_wait_seconds": self.max_wait_seconds,
                "auth_required": self.token is not None,
            }
        return {**self._info_cache, "latest_request_id": self.queue.latest_request_id}

    def _update_camera(self, request: dict[str, Any]) -> int:
        _check_keys(request, {"c2w", "position", "rotation", "horizontal_fov_deg", "aspect"})
        fov = _optional_number(request, "horizontal_fov_deg")
        aspect = _optional_number(request, "aspect")
        try:
            if "c2w" in request:
                if "position" in request or "rotation" in request:
                    raise _BadRequest("invalid_argument", "give either c2w or position + rotation, not both")
                matrix = _number_array(request["c2w"], "c2w", ((4, 4), (3, 4)))
                return self.queue.update_camera_matrix(matrix, horizontal_fov_deg=fov, aspect=aspect)
            if "position" in request and "rotation" in request:
                position = _number_array(request["position"], "position", ((3,),))
                rotation = _number_array(request["rotation"], "rotation", ((3,),))
                return self.queue.update_camera(position, rotation, horizontal_fov_deg=fov, aspect=aspect)
            raise _BadRequest("invalid_argument", "update_camera needs c2w (4x4) or position and rotation (3 each)")
        except ValueError as error:
            raise _BadRequest("invalid_argument", str(error)) from error

    async def _get_frame(self, request: dict[str, Any], reader: Any, message_id: Any) -> str | bytes:
        _check_keys(request, {"encoding", "timeout"})
        encoding = request.get("encoding", "u8")
        if encoding not in ENCODINGS:
            raise _BadRequest("invalid_argument", f"encoding must be one of {list(ENCODINGS)}")
        timeout = _optional_number(request, "timeout")
        timeout = 0.0 if timeout is None else timeout
        if not 0.0 <= timeout <= self.max_wait_seconds:
            raise _BadRequest("invalid_argument", f"timeout must be in [0, {self.max_wait_seconds}] seconds")
        frame = await self._wait_for_frame(reader, timeout)
        if frame is None:
            return json.dumps({"ok": True, "op": "get_frame", "id": message_id, "frame": None})
        return await asyncio.to_thread(encode_frame_message, frame, encoding, message_id)

    async def _wait_for_frame(self, reader: FrameReader, timeout: float) -> Frame | None:
        """``reader``'s next frame within ``timeout`` seconds, awaited on the event loop (no thread is held)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Take the event before looking: a frame published after the look sets this very event.
            changed = self._queue_changed
            assert changed is not None and self._stop is not None
            frame = reader.get_frame(0.0)
            remaining = deadline - loop.time()
            if frame is not None or remaining <= 0 or self.queue.closed or self._stop.is_set():
                return frame
            self._waiting += 1
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return reader.get_frame(0.0)
            finally:
                self._waiting -= 1

    def _on_queue_event(self) -> None:
        """Queue listener (runs in a render worker thread): wakes the waiting get_frame requests."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._wake_waiters)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _wake_waiters(self) -> None:
        changed, self._queue_changed = self._queue_changed, asyncio.Event()
        if changed is not None:
            changed.set()


# ---------------------------------------------------------------------------------------------------- helpers
def _text_response(connection: ServerConnection, status: http.HTTPStatus, text: str) -> Response:
    return connection.respond(status, text)


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise _BadRequest("malformed", f"not valid JSON: {str(error)[:200]}") from None
    if not isinstance(value, dict):
        raise _BadRequest("malformed", "a request must be a JSON object")
    return value


def _message_id(value: Any) -> Any:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53):
        return value
    if isinstance(value, str) and len(value) <= 64:
        return value
    raise _BadRequest("malformed", '"id" must be an integer or a string of at most 64 characters')


def _check_keys(request: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(request) - allowed - {"op", "id"}
    if unknown:
        names = ", ".join(sorted(repr(name[:40]) for name in unknown)[:5])
        raise _BadRequest("invalid_argument", f"unknown field(s) for {request['op']!r}: {names}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional_number(request: dict[str, Any], key: str) -> float | None:
    value = request.get(key)
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise _BadRequest("invalid_argument", f"{key} must be a finite number")
    return float(value)


def _number_array(value: Any, name: str, shapes: tuple[tuple[int, ...], ...]) -> np.ndarray:
    def flatten(item: Any, depth: int) -> bool:
        if isinstance(item, list):
            return depth < 2 and all(flatten(element, depth + 1) for element in item)
        return _is_number(item)

    if not isinstance(value, list) or not flatten(value, 0):
        raise _BadRequest("invalid_argument", f"{name} must be a (nested) list of numbers")
    try:
        array = np.array(value, dtype=np.float64)
    except ValueError:
        raise _BadRequest("invalid_argument", f"{name} is a ragged list") from None
    if array.shape not in shapes:
        expected = " or ".join("x".join(map(str, shape)) for shape in shapes)
        raise _BadRequest("invalid_argument", f"{name} must have shape {expected}, got {array.shape}")
    return array
