"""Headless Chromium (Debian's ``chromium`` package) driven over the Chrome DevTools Protocol, for tests that look
at a page the way a person would: the render server's preview page, nerfstudio's viewer, a glTF viewer.

Only the standard library and ``websockets`` are used; nothing is downloaded.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from websockets.sync.client import connect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_MISSING = "needs Debian's chromium: apt-get install -y chromium (make browser)"


class DevTools:
    """Minimal Chrome DevTools Protocol session over one page's WebSocket."""

    def __init__(self, ws_url: str) -> None:
        self.ws = connect(ws_url, max_size=2**27).__enter__()  # closed by close()
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, predicate: Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """Polls ``expression`` until ``predicate`` accepts its value (not a fixed sleep: the machine may be busy)."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value is not None and predicate(value):
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting in the browser; last value: {value}")

    def screenshot(self) -> np.ndarray:
        """The page as an (H, W, 3) uint8 array."""
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def headless_chromium(url: str, window: tuple[int, int] = (900, 700), timeout: float = 60.0) -> Iterator[DevTools]:
    """Opens ``url`` in a fresh headless Chromium profile and yields a DevTools session on that page.

    WebGL runs on SwiftShader (software), so pages drawing with three.js render without a GPU.
    """
    profile = Path(tempfile.mkdtemp(prefix="recon-chromium-"))
    browser = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={window[0]},{window[1]}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    devtools = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            assert browser.poll() is None, browser.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        page = None
        while page is None:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next((t for t in targets if t["type"] == "page" and t["url"].startswith(url.split("#")[0])), None)
            assert page is not None or time.monotonic() < deadline, f"no page for {url} in {targets}"
            time.sleep(0.1)
        devtools = DevTools(page["webSocketDebuggerUrl"])
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        browser.terminate()
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)
