"""Writing a generated dataset all at once: into a temporary folder beside the target, moved into place only
when complete, so an error or Ctrl-C never leaves a half-written dataset behind."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def prepare_output(out: Path, overwrite: bool) -> Path:
    """Checks the target folder and returns a fresh temporary folder beside it.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is off.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    return tmp


def commit_output(tmp: Path, out: Path) -> None:
    """Moves the finished temporary folder to ``out``, replacing an existing folder."""
    if out.exists():
        trash = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextmanager
def staged_output(out: Path | str, overwrite: bool) -> Iterator[Path]:
    """Yields a temporary folder to write the whole dataset into; it becomes ``out`` when the block completes and
    is deleted when the block raises (interrupts included), leaving ``out`` as it was.

    Raises:
        FileExistsError: before the block runs, when ``out`` is a non-empty folder (or a file) and ``overwrite``
            is off.
    """
    out = Path(out)
    tmp = prepare_output(out, overwrite)
    try:
        yield tmp
        commit_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_scene_json(folder: Path, info: dict) -> None:
    """The dataset's ``scene.json``: its generator parameters and conventions, indented for reading."""
    (folder / "scene.json").write_text(json.dumps(info, indent=2) + "\n")
