"""Wire format of the render server (version 1), shared by the server, the Python client and the preview page.

Transport: one WebSocket (RFC 6455) at ``ws://HOST:PORT/ws``. Nothing on the wire is executable or pickled.

Client -> server: **text** messages, each one JSON object of at most ``max_message_bytes`` (default 64 KiB) with an
``"op"`` and an optional ``"id"`` (integer or short string, echoed in the reply):

- ``{"op": "auth", "token": "..."}`` -- required first when the server has a token.
- ``{"op": "info"}`` -- server, method, ladder, field of view, world frame, scene hint, limits.
- ``{"op": "update_camera", "c2w": [[...4 rows...]]}`` or ``{"op": "update_camera", "position": [x, y, z],
  "rotation": [rx, ry, rz]}`` with optional ``"horizontal_fov_deg"`` and ``"aspect"`` -> ``{"request_id": n}``.
- ``{"op": "get_frame", "encoding": "u8" | "f32" | "png", "timeout": seconds}`` -> a frame message, or
  ``{"ok": true, "op": "get_frame", "frame": null}`` when no newer frame finished within ``timeout``.

Server -> client: text JSON replies ``{"ok": true, "op": ..., "id": ..., ...}`` or errors
``{"ok": false, "op": ..., "id": ..., "error": {"code": CODE, "message": ...}}`` with CODE one of
:data:`ERROR_CODES`; frames are **binary** messages: ``b"RNF1"``, a big-endian uint32 header length, a UTF-8 JSON
header (``ok, op, id, request_id, level, width, height, channels, render_seconds, latency_seconds, sequence,
encoding``) and
the payload: ``u8`` = row-major (H, W, C) uint8, ``f32`` = row-major (H, W, C) little-endian float32, ``png`` = a PNG
file (8 bit).
"""

from __future__ import annotations

import io
import ipaddress
import json
import struct
from typing import Any

import numpy as np

from recon_plugin.renderer.types import Frame

PROTOCOL_VERSION = 1
FRAME_MAGIC = b"RNF1"
ENCODINGS = ("u8", "f32", "png")
ERROR_CODES = (
    "unauthenticated",  # no or wrong token
    "malformed",  # not a JSON object with a string "op", or a binary message
    "too_large",  # message over max_message_bytes
    "unknown_op",  # op not in the allow-list
    "invalid_argument",  # fields of a known op are missing, mistyped or out of range
    "render_failed",  # a render worker raised; message names the request and level
    "internal",  # anything else (bug); the server keeps serving
)
OPS = ("auth", "info", "update_camera", "get_frame")
_LOOPBACK_NAMES = {"localhost", "localhost.", "ip6-localhost"}


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1); False for 0.0.0.0, '' and other names."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def encode_image(image: np.ndarray, encoding: str) -> bytes:
    """(H, W, C) float image in [0, 1] -> payload bytes of ``encoding``."""
    if encoding == "f32":
        return np.ascontiguousarray(image, dtype="<f4").tobytes()
    quantised = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    if encoding == "u8":
        return np.ascontiguousarray(quantised).tobytes()
    if encoding == "png":
        from PIL import Image

        channels = quantised.shape[2]
        if channels == 1:
            pil = Image.fromarray(quantised[:, :, 0], mode="L")
        elif channels in (3, 4):
            pil = Image.fromarray(quantised)
        else:
            raise ValueError(f"png encoding needs 1, 3 or 4 channels, the image has {channels}")
        buffer = io.BytesIO()
        pil.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def decode_image(payload: bytes, encoding: str, height: int, width: int, channels: int) -> np.ndarray:
    """Payload bytes -> (H, W, C) float32 image in [0, 1] (a fresh, writable array)."""
    if encoding == "f32":
        array = np.frombuffer(payload, dtype="<f4")
        expected = height * width * channels
        if array.size != expected:
            raise ValueError(f"f32 payload has {array.size} values, expected {expected}")
        return array.reshape(height, width, channels).astype(np.float32)
    if encoding == "u8":
        array = np.frombuffer(payload, dtype=np.uint8)
        if array.size != height * width * channels:
            raise ValueError(f"u8 payload has {array.size} bytes, expected {height * width * channels}")
    elif encoding == "png":
        try:
            from PIL import Image
        except ImportError as error:  # the client may run in a minimal interpreter
            raise ImportError("decoding png frames needs Pillow; request encoding='u8' instead") from error
        array = np.asarray(Image.open(io.BytesIO(payload)))
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape != (height, width, channels):
            raise ValueError(f"png payload is {array.shape}, expected {(height, width, channels)}")
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return array.reshape(height, width, channels).astype(np.float32) / 255.0


def encode_frame_message(frame: Frame, encoding: str, message_id: Any = None) -> bytes:
    """Binary frame message (see the module docstring)."""
    header = {
        "ok": True,
        "op": "get_frame",
        "id": message_id,
        "request_id": frame.request_id,
        "level": frame.level,
        "width": frame.width,
        "height": frame.height,
        "channels": int(frame.image.shape[2]),
        "render_seconds": frame.render_seconds,
        "latency_seconds": frame.latency_seconds,
        "sequence": frame.sequence,
        "encoding": encoding,
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return FRAME_MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes + encode_image(frame.image, encoding)


def decode_frame_message(data: bytes) -> tuple[dict[str, Any], Frame]:
    """Inverse of :func:`encode_frame_message`: (header, frame)."""
    if len(data) < 8 or data[:4] != FRAME_MAGIC:
        raise ValueError("not a frame message (bad magic)")
    (header_length,) = struct.unpack(">I", data[4:8])
    if 8 + header_length > len(data):
        raise ValueError("frame message truncated")
    header = json.loads(data[8 : 8 + header_length].decode())
    height, width, channels = int(header["height"]), int(header["width"]), int(header["channels"])
    image = decode_image(bytes(data[8 + header_length :]), header["encoding"], height, width, channels)
    image.setflags(write=False)
    frame = Frame(
        image=image,
        request_id=int(header["request_id"]),
        level=int(header["level"]),
        width=width,
        height=height,
        render_seconds=float(header["render_seconds"]),
        latency_seconds=float(header["latency_seconds"]),
        sequence=int(header.get("sequence", -1)),
    )
    return header, frame


def error_reply(code: str, message: str, op: Any = None, message_id: Any = None) -> str:
    """JSON text of an error reply."""
    assert code in ERROR_CODES, code
    return json.dumps({"ok": False, "op": op, "id": message_id, "error": {"code": code, "message": message}})
