"""Running the installed console scripts (ns-train, recon-synth, ...) from tests the way a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
