"""Running the installed console scripts (ns-train, recon-synth, ...) from tests the way a user's shell does."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

#: The virtual environment's console scripts.
BIN = Path(sys.executable).parent
#: A user's environment: without the test runner's weights_only escape hatch (checkpoints must load under
#: torch's default), and without the warnings that would bury the output a failure message shows.
ENV = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"} | {"PYTHONWARNINGS": "ignore"}


def run(command: list[str], cwd: Path | None = None, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Runs ``command`` and fails the test with the ends of its output when it exits non-zero."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test session's temporary folder, the same for every pytest-xdist worker of the session (a worker's own
    basetemp is a subfolder of it): where session fixtures that train a run build it once for all workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Runs ``build(folder)`` unless an earlier call (in any worker) completed it; concurrent callers wait on a
    lock file beside ``folder``. A build that failed half-way is removed and redone. Returns ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder
