"""The Khronos glTF validator (npm ``gltf-validator``) as a test helper, shared by the tests that write .glb files.

The package is installed once into ``$XDG_CACHE_HOME/recon_plugin/gltf-validator`` (default ~/.cache); a test
is skipped when node/npm are missing or the install fails (offline machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def validate_glb(path: Path, tmp_path: Path) -> dict:
    """The validator's ``issues`` report of ``path``: numErrors, numWarnings, messages, ..."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not available: cannot run the Khronos glTF validator")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recon_plugin" / "gltf-validator"
    if not (cache / "node_modules" / "gltf-validator").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        install = subprocess.run([npm, "install", "--silent", "gltf-validator"], cwd=cache, capture_output=True,
                                 text=True, timeout=300)  # fmt: skip
        if install.returncode != 0:
            pytest.skip(f"npm install gltf-validator failed (offline?): {install.stderr[-300:]}")
    script = tmp_path / "validate.js"
    script.write_text(
        "const fs = require('fs');\n"
        "const validator = require('gltf-validator');\n"
        "validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))\n"
        "  .then((r) => console.log(JSON.stringify(r.issues)))\n"
        "  .catch((e) => { console.error(e); process.exit(2); });\n"
    )
    result = subprocess.run([node, str(script), str(path)], cwd=cache, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NODE_PATH": str(cache / "node_modules")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
