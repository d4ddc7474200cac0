"""Light-weight value types shared by the render queue, the server and the client (NumPy only, no torch)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_HORIZONTAL_FOV_DEG",
    "Frame",
    "LadderLevel",
    "RenderError",
    "RenderWorkerError",
    "RenderQueueClosed",
    "RenderTimeoutError",
    "ResolutionLadder",
]

DEFAULT_HORIZONTAL_FOV_DEG = 60.0
"""Horizontal field of view of the default ladder (Isaac Sim's default viewport camera)."""


class RenderError(RuntimeError):
    """Base class of the errors raised by the render queue, server and client."""


class RenderWorkerError(RenderError):
    """A render worker failed; raised by ``get_frame`` in the caller's thread. ``__cause__`` is the original error."""

    def __init__(self, message: str, request_id: int = -1, level: int = -1) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.level = level


class RenderQueueClosed(RenderError):
    """The queue (or the connection of a client) was closed."""


class RenderTimeoutError(RenderError, TimeoutError):
    """No reply from the render server in time. The connection stays usable; the request may still take effect."""


@dataclass(frozen=True)
class Frame:
    """One finished image of the resolution ladder.

    Attributes:
        image: (height, width, C) float32 array in [0, 1] (C = 3 for ``rgb``); read-only, copy it to modify it.
        request_id: id of the camera update this frame answers (increases with every accepted update).
        level: index of the frame's resolution in the ladder (0 = coarsest).
        width: image width in pixels.
        height: image height in pixels.
        render_seconds: wall-clock seconds spent rendering this level.
        latency_seconds: seconds from the ``update_camera`` call to the publication of this frame.
        sequence: position in the queue's publication order (0, 1, 2, ...); a gap between two frames a reader
            received counts the frames it skipped. Publication order is always increasing ``key`` order.
    """

    image: np.ndarray
    request_id: int
    level: int
    width: int
    height: int
    render_seconds: float
    latency_seconds: float
    sequence: int = -1

    @property
    def key(self) -> tuple[int, int]:
        """(request_id, level): frames are only ever handed out in strictly increasing key order."""
        return (self.request_id, self.level)


@dataclass(frozen=True)
class LadderLevel:
    """One rung of the resolution ladder: an image size in pixels."""

    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 16384:
                raise ValueError(f"ladder level {name} must be an integer in [1, 16384], got {value!r}")

    @property
    def aspect(self) -> float:
        """width / height."""
        return self.width / self.height


def _default_levels() -> tuple[LadderLevel, ...]:
    return tuple(LadderLevel(w, h) for w, h in ((64, 36), (128, 72), (320, 180), (640, 360), (1280, 720)))


@dataclass(frozen=True)
class ResolutionLadder:
    """Image sizes rendered, coarsest first, for every camera request, at one horizontal field of view.

    The default follows the omni-nerf-extension reference: 64x36 -> 128x72 -> 320x180 -> 640x360 -> 1280x720
    (fractions of a 1280x720 viewport) at a 60 degree horizontal field of view. Pixels are square: the vertical
    field of view follows from the aspect ratio, ``fov_v = 2 atan(tan(fov_h / 2) * height / width)``.
    """

    levels: tuple[LadderLevel, ...] = field(default_factory=_default_levels)
    horizontal_fov_deg: float = DEFAULT_HORIZONTAL_FOV_DEG

    def __post_init__(self) -> None:
        levels = tuple(
            level if isinstance(level, LadderLevel) else LadderLevel(*level)  # type: ignore[arg-type]
            for level in self.levels
        )
        object.__setattr__(self, "levels", levels)
        if not levels:
            raise ValueError("a resolution ladder needs at least one level")
        check_fov(self.horizontal_fov_deg)

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, index: int) -> LadderLevel:
        return self.levels[index]

    def __iter__(self):
        return iter(self.levels)

    @classmethod
    def from_sizes(
        cls, sizes: Iterable[Sequence[int]], horizontal_fov_deg: float = DEFAULT_HORIZONTAL_FOV_DEG
    ) -> ResolutionLadder:
        """Ladder from ``[(width, height), ...]``."""
        return cls(tuple(LadderLevel(int(w), int(h)) for w, h in sizes), float(horizontal_fov_deg))

    @classmethod
    def from_dict(cls, data: Any, source: str = "ladder") -> ResolutionLadder:
        """Parses either of the two JSON layouts accepted by :meth:`from_file` (``source`` names it in errors)."""
        try:
            if isinstance(data, Mapping):
                unknown = set(data) - {"levels", "horizontal_fov_deg"}
                if unknown:
                    raise ValueError(f"unknown keys {sorted(unknown)}")
                fov = float(data.get("horizontal_fov_deg", DEFAULT_HORIZONTAL_FOV_DEG))
                entries = data["levels"]
                sizes = [(entry["width"], entry["height"]) for entry in entries]
                return cls.from_sizes(sizes, fov)
            if isinstance(data, list):
                # omni-nerf-extension layout: [{"width": w, "height": h, "fov": vertical_fov_deg}, ...]
                sizes, fovs = [], []
                for entry in data:
                    width, height = int(entry["width"]), int(entry["height"])
                    sizes.append((width, height))
                    fov_v = math.radians(float(entry["fov"]))
                    fovs.append(math.degrees(2 * math.atan(math.tan(fov_v / 2) * width / height)))
                if not fovs:
                    raise ValueError("empty level list")
                if max(fovs) - min(fovs) > 1e-3:
                    raise ValueError(
                        "all levels must share one horizontal field of view, got "
                        + ", ".join(f"{f:.4f}" for f in fovs)
                        + " degrees"
                    )
                return cls.from_sizes(sizes, fovs[0])
            raise ValueError(f"expected an object or a list, got {type(data).__name__}")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: invalid resolution ladder: {error!r}") from error

    @classmethod
    def from_file(cls, path: str | Path) -> ResolutionLadder:
        """Reads a ladder from JSON.

        Two layouts are accepted: ``{"horizontal_fov_deg": 60, "levels": [{"width": 64, "height": 36}, ...]}``, or
        the omni-nerf-extension list ``[{"width": 64, "height": 36, "fov": 35.98}, ...]`` whose ``fov`` is the
        *vertical* field of view in degrees (it must describe one horizontal field of view for all levels).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read resolution ladder: {error}") from error
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (the first layout of :meth:`from_file`)."""
        return {
            "horizontal_fov_deg": self.horizontal_fov_deg,
            "levels": [{"width": level.width, "height": level.height} for level in self.levels],
        }


def check_fov(horizontal_fov_deg: float) -> float:
    """Validates a horizontal field of view in degrees (finite, in (0, 180)) and returns it as float."""
    value = float(horizontal_fov_deg)
    if not math.isfinite(value) or not 0.0 < value < 180.0:
        raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {horizontal_fov_deg!r}")
    return value
