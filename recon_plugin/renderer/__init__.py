"""Progressive render queue, render server and client over any nerfstudio 1.x pipeline.

- :class:`RenderQueue` (torch + nerfstudio): progressive, cancellable rendering of a moving camera.
- :class:`RenderServer` / ``recon-render-server``: the queue over WebSockets (explicit operations only, token auth,
  optional live browser preview).
- :class:`RenderClient`: the Python client; needs only NumPy and ``websockets`` (no torch, no nerfstudio), so it runs
  in another interpreter (e.g. a DCC application's Python) than the server.

The queue and the server are imported lazily so that ``from recon_plugin.renderer import RenderClient`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recon_plugin.renderer.camera import (
    DataparserTransform,
    c2w_to_pose,
    euler_xyz_to_matrix,
    intrinsics_for,
    look_at,
    matrix_to_euler_xyz,
    pose_to_c2w,
    validate_c2w,
)
from recon_plugin.renderer.client import RenderClient
from recon_plugin.renderer.types import (
    DEFAULT_HORIZONTAL_FOV_DEG,
    Frame,
    LadderLevel,
    RenderError,
    RenderQueueClosed,
    RenderTimeoutError,
    RenderWorkerError,
    ResolutionLadder,
)

if TYPE_CHECKING:
    from recon_plugin.renderer.queue import FrameReader, RenderQueue
    from recon_plugin.renderer.server import RenderServer

__all__ = [
    "DEFAULT_HORIZONTAL_FOV_DEG",
    "DataparserTransform",
    "Frame",
    "FrameReader",
    "LadderLevel",
    "RenderClient",
    "RenderError",
    "RenderQueue",
    "RenderQueueClosed",
    "RenderServer",
    "RenderTimeoutError",
    "RenderWorkerError",
    "ResolutionLadder",
    "c2w_to_pose",
    "euler_xyz_to_matrix",
    "intrinsics_for",
    "look_at",
    "matrix_to_euler_xyz",
    "pose_to_c2w",
    "validate_c2w",
]

_LAZY = {
    "RenderQueue": "recon_plugin.renderer.queue",
    "FrameReader": "recon_plugin.renderer.queue",
    "RenderServer": "recon_plugin.renderer.server",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
