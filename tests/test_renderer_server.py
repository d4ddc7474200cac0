"""recon-render-server in its own process (the tiny nerfacto run), the Python client over loopback, the protocol's
error handling and the live preview page in headless Chromium (Debian's ``chromium`` package)."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browser import CHROMIUM, DevTools
from conftest_renderer import (
    OFFLINE_LPIPS_PATCH,
    REPO_ROOT,
    expected_image,
    make_analytic_model,
    random_c2w,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from recon_plugin.cli.render_server import RenderServerCommand, entrypoint
from recon_plugin.renderer import (
    RenderClient,
    RenderQueue,
    RenderServer,
    RenderTimeoutError,
    RenderWorkerError,
    ResolutionLadder,
    look_at,
)
from recon_plugin.renderer import server as server_module
from recon_plugin.renderer.client import RenderServerError
from recon_plugin.renderer.protocol import decode_frame_message

LADDER = [(16, 9), (32, 18), (64, 36)]
SERVER_SCRIPT = (
    OFFLINE_LPIPS_PATCH  # the server loads nerfacto, whose LPIPS metric would download AlexNet weights
    + """
if __name__ == "__main__":
    from recon_plugin.cli.render_server import entrypoint

    entrypoint()
"""
)


class ServerProcess:
    """A recon-render-server subprocess; collects its output and the URL it prints."""

    def __init__(self, root: Path, config: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        self.token_file = root / "token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        ladder = root / "ladder.json"
        ladder.write_text(json.dumps(ResolutionLadder.from_sizes(LADDER).to_dict()))
        script = root / "serve.py"
        script.write_text(SERVER_SCRIPT)
        command = [
            sys.executable,
            str(script),
            "--load-config",
            str(config),
            "--data-dir",
            str(config.parents[4] / "data"),
        ]
        command += ["--port", "0", "--token-file", str(self.token_file), "--preview", "--ladder", str(ladder)]
        command += ["--chunk-size", "512"]
        self.process = subprocess.Popen(
            command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ}
        )
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(240) or not self.url:
            self.process.kill()
            raise RuntimeError("render server did not start:\n" + "".join(self.lines[-60:]))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    @property
    def http_base(self) -> str:
        return self.url.replace("ws://", "http://").removesuffix("/ws")


@pytest.fixture(scope="module")
def server(nerfacto_run: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServerProcess(tmp_path_factory.mktemp("render_server"), nerfacto_run)
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait(10)


def raw_call(ws, message) -> dict:
    ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
    reply = ws.recv(timeout=30)
    return decode_frame_message(reply)[0] if isinstance(reply, bytes) else json.loads(reply)


def error_code(reply: dict) -> str | None:
    return None if reply.get("ok") else reply["error"]["code"]


# ---------------------------------------------------------------------------------------------------- protocol
def test_missing_or_wrong_token_is_refused(server):
    with connect(server.url) as ws:
        assert error_code(raw_call(ws, {"op": "info"})) == "unauthenticated"
        assert error_code(raw_call(ws, {"op": "update_camera", "c2w": np.eye(4).tolist()})) == "unauthenticated"
        assert error_code(raw_call(ws, {"op": "get_frame"})) == "unauthenticated"
        assert error_code(raw_call(ws, {"op": "auth"})) == "unauthenticated"  # missing token: failure 1
        assert error_code(raw_call(ws, {"op": "auth", "token": server.token[:-1]})) == "unauthenticated"  # 2
        assert error_code(raw_call(ws, {"op": "auth", "token": "x" * 64})) == "unauthenticated"  # 3: closed
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    with pytest.raises(RenderServerError, match="unauthenticated"):
        RenderClient(server.url, token="not-the-token-at-all")
    with pytest.raises(RenderServerError, match="unauthenticated"):
        RenderClient(server.url)
    with connect(server.url) as ws:  # the server still serves, and the right token works
        assert raw_call(ws, {"op": "auth", "token": server.token})["ok"]
        assert raw_call(ws, {"op": "info", "id": "x"})["id"] == "x"


def test_malformed_and_oversized_messages_get_errors_and_the_server_keeps_serving(server):
    with connect(server.url, max_size=2**26) as ws:
        assert raw_call(ws, {"op": "auth", "token": server.token, "id": 1})["ok"]
        cases = [
            ("not json", "malformed"),
            ("[1, 2, 3]", "malformed"),
            ('{"op": 5}', "malformed"),
            ('{"op": "info", "id": [1]}', "malformed"),
            ('{"op": "update_camera", "c2w": [[NaN, 0, 0, 0]]}', "malformed"),
            ("[" * 100000 + "]" * 100000, "too_large"),
            (b"\x80\x04binary", "malformed"),
            ({"op": "exec", "code": "__import__('os').system('true')"}, "unknown_op"),
            ({"op": "eval", "expr": "1"}, "unknown_op"),
            ({"op": "info", "extra": 1}, "invalid_argument"),
            ({"op": "update_camera"}, "invalid_argument"),
            ({"op": "update_camera", "c2w": [[1, 0], [0, 1]]}, "invalid_argument"),
            ({"op": "update_camera", "c2w": np.diag([2.0, 2, 2, 1]).tolist()}, "invalid_argument"),
            ({"op": "update_camera", "c2w": [["1"] * 4] * 4}, "invalid_argument"),
            ({"op": "update_camera", "position": [0, 0], "rotation": [0, 0, 0]}, "invalid_argument"),
            ({"op": "update_camera", "c2w": np.eye(4).tolist(), "horizontal_fov_deg": 0}, "invalid_argument"),
            ({"op": "update_camera", "c2w": np.eye(4).tolist(), "aspect": -1}, "invalid_argument"),
            ({"op": "get_frame", "encoding": "pickle"}, "invalid_argument"),
            ({"op": "get_frame", "timeout": 3600}, "invalid_argument"),
            ({"op": "get_frame", "timeout": True}, "invalid_argument"),
        ]
        for message, code in cases:
            reply = raw_call(ws, message)
            assert error_code(reply) == code, (message if len(message) < 100 else message[:50], reply)
            assert raw_call(ws, {"op": "info"})["ok"]  # same connection keeps working after every error
        request_id = raw_call(ws, {"op": "update_camera", "position": [2, 0, 1], "rotation": [1.2, 0, 1.57]})
        assert request_id["ok"] and request_id["request_id"] >= 0
        # far over the limit: refused by the WebSocket layer (1009 = message too big) without buffering it
        ws.send("x" * (4 * 64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with RenderClient(server.url, token_file=server.token_file) as client:
        assert client.info()["protocol"] == 1


def test_cross_site_browser_handshakes_are_refused(server):
    with pytest.raises(InvalidStatus) as info:
        connect(server.url, origin="http://evil.example")
    assert info.value.response.status_code == 403
    host = server.url.split("/")[2]
    with connect(server.url, origin=f"http://{host}") as ws:  # the preview page's own origin is fine
        assert error_code(raw_call(ws, {"op": "info"})) == "unauthenticated"


# ---------------------------------------------------------------------------------------------------- client
def test_client_in_another_process_streams_the_ladder(server):
    with RenderClient(server.url, token_file=server.token_file, encoding="f32") as client:
        info = client.info()
        assert info["model"]["method"] == "nerfacto" and info["auth_required"]
        assert [(level["width"], level["height"]) for level in info["ladder"]["levels"]] == LADDER
        target = info["scene"]["target"]
        request_id = client.update_camera_matrix(look_at([1.5, -1.5, 1.0], target))
        assert client.update_camera_matrix(look_at([1.5, -1.5, 1.0], target)) == request_id  # de-duplicated
        frames = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not frames or frames[-1].key != (request_id, 2)):
            frame = client.get_frame(timeout=2.0)
            if frame is not None and frame.request_id >= request_id:
                frames.append(frame)
        assert frames and frames[-1].key == (request_id, 2)
        assert all(b.key > a.key for a, b in itertools.pairwise(frames))
        assert frames[-1].image.shape == (36, 64, 3) and frames[-1].image.dtype == np.float32
        exact = frames[-1].image
        assert client.get_frame() is None and client.get_rgb_image() is None
        # the same published frame through the other encodings, from fresh readers
        for encoding, tolerance in (("u8", 0.5 / 255 + 1e-6), ("png", 0.5 / 255 + 1e-6)):
            with RenderClient(server.url, token_file=server.token_file, encoding=encoding) as other:
                frame = other.get_frame(timeout=60)
                assert frame is not None and frame.key == (request_id, 2)
                np.testing.assert_allclose(frame.image, exact, atol=tolerance)
        # Euler form with per-call fov and aspect
        request_id = client.update_camera([1.5, -1.5, 1.0], [1.1, 0.0, 0.6], horizontal_fov_deg=45, aspect=2.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frame = client.get_frame(timeout=2.0)
            if frame is not None and frame.key == (request_id, 2):
                break
        assert frame is not None and frame.image.shape == (32, 64, 3)


def test_client_needs_neither_torch_nor_nerfstudio(server):
    """The client side runs in an interpreter where torch and nerfstudio cannot be imported."""
    program = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "nerfstudio"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from recon_plugin.renderer import RenderClient
with RenderClient({server.url!r}, token_file={str(server.token_file)!r}) as client:
    request_id = client.update_camera([0.0, -2.0, 1.0], [1.2, 0.0, 0.0])
    frame = None
    while frame is None or frame.key != (request_id, 2):
        frame = client.get_frame(timeout=2.0) or frame
    print("FRAME", frame.width, frame.height, frame.level, frame.image.dtype)
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nerfstudio")))
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FRAME 64 36 2 float32" in result.stdout and "LOADED []" in result.stdout


# ---------------------------------------------------------------------------------------------------- setup rules
def test_public_bind_requires_a_token(tmp_path, capsys):
    with pytest.raises(SystemExit, match="refusing to listen on '0.0.0.0' without --token-file"):
        entrypoint(["--load-config", str(tmp_path / "config.yml"), "--host", "0.0.0.0"])
    queue = RenderQueue(make_analytic_model(), ladder=ResolutionLadder.from_sizes([(4, 2)]), start=False)
    with pytest.raises(ValueError, match="without a token"):
        RenderServer(queue, host="0.0.0.0")
    with pytest.raises(ValueError, match="at least 16"):
        RenderServer(queue, host="0.0.0.0", token="short")
    queue.close()
    # a missing token file is created with a random token, readable by its owner only
    token_file = tmp_path / "secrets" / "token"
    token = RenderServerCommand(load_config=tmp_path / "c.yml", host="0.0.0.0", token_file=token_file).read_token()
    assert token is not None and len(token) >= 32 and token_file.read_text().strip() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token_file.write_text("short\n")
    with pytest.raises(SystemExit, match="at least 16 characters"):
        RenderServerCommand(load_config=tmp_path / "c.yml", token_file=token_file).read_token()


def test_loopback_server_without_token_checks_the_host_header():
    """Without a token, requests naming a non-loopback Host (DNS rebinding) are refused; the page is served."""
    queue = RenderQueue(make_analytic_model(), ladder=ResolutionLadder.from_sizes([(8, 4)]))
    with queue, RenderServer(queue, port=0, preview=True) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/", headers={"Host": f"rebind.example:{server.port}"})
        assert connection.getresponse().status == 403
        connection.close()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        assert response.status == 200 and "reconPreview" in body
        assert "script-src 'sha256-" in response.getheader("Content-Security-Policy")
        with RenderClient(server.url) as client:  # no token needed on loopback without one
            request_id = client.update_camera_matrix(np.eye(4))
            frame = client.get_frame(timeout=60)
            assert frame is not None and frame.key == (request_id, 0)


def test_render_errors_reach_the_remote_client():
    model = make_analytic_model(fail_above_rays=100)  # level 0 (32 rays) renders, level 1 (512 rays) fails
    queue = RenderQueue(model, ladder=ResolutionLadder.from_sizes([(8, 4), (32, 16)]), chunk_size=1024)
    with queue, RenderServer(queue, port=0) as server, RenderClient(server.url) as client:
        request_id = client.update_camera_matrix(np.eye(4))
        assert queue.wait_idle(60)  # level 1 has failed by now; level 0 still comes first
        assert client.get_frame(timeout=60).key == (request_id, 0)
        with pytest.raises(RenderWorkerError, match=f"request {request_id} at ladder level 1.*refuses a chunk"):
            client.get_frame(timeout=60)
        assert client.get_frame(timeout=0.2) is None  # the error was reported once; the server still answers
        assert client.info()["latest_request_id"] == request_id


def test_client_recovers_from_a_reply_timeout(monkeypatch):
    """A reply that comes after the client gave up is drained by its id: later calls get their own replies, and the
    late frame is not lost (the server's reader already handed it to this connection). Same after an interrupt."""
    release = threading.Event()
    held = []
    encode = server_module.encode_frame_message

    def held_encode(*args):
        if not held:  # the server is stuck on the first frame until the test releases it
            held.append(True)
            assert release.wait(60)
        return encode(*args)

    monkeypatch.setattr(server_module, "encode_frame_message", held_encode)
    ladder = ResolutionLadder.from_sizes([(8, 4)], horizontal_fov_deg=70.0)
    queue = RenderQueue(make_analytic_model(), ladder=ladder)
    with queue, RenderServer(queue, port=0) as server, RenderClient(server.url, timeout=0.5) as client:
        first_pose, second_pose = look_at([0.0, -3.0, 0.5], [0, 0, 0]), look_at([2.0, 1.0, 1.0], [0, 0, 0])
        first = client.update_camera_matrix(first_pose)
        assert queue.wait_idle(60)
        with pytest.raises(RenderTimeoutError, match="no reply") as info:
            client.get_frame()
        assert isinstance(info.value, TimeoutError)
        release.set()  # the late frame reply is sent now
        assert client.info()["latest_request_id"] == first  # drains the late reply, then gets its own
        late = client.get_frame()  # the drained frame, handed out once
        assert late is not None and late.key == (first, 0)
        np.testing.assert_allclose(late.image, expected_image(first_pose, 8, 4, 70.0), atol=0.5 / 255 + 1e-6)
        assert client.get_frame() is None
        second = client.update_camera_matrix(second_pose)
        assert second == first + 1
        frame = client.get_frame(timeout=60)
        assert frame is not None and frame.key == (second, 0)
        np.testing.assert_allclose(frame.image, expected_image(second_pose, 8, 4, 70.0), atol=0.5 / 255 + 1e-6)
        # a wait interrupted by something else (Ctrl-C in a notebook) leaves the connection usable as well
        recv = client._connection.recv

        def interrupted(*args, **kwargs):
            monkeypatch.setattr(client._connection, "recv", recv)
            raise KeyboardInterrupt

        monkeypatch.setattr(client._connection, "recv", interrupted)
        with pytest.raises(KeyboardInterrupt):
            client.update_camera_matrix(first_pose)
        assert client.info()["latest_request_id"] == second + 1  # the interrupted update did reach the server


def test_one_client_shared_by_threads():
    """Eight threads share one client: every reply reaches the thread that asked, none is mixed up."""
    ladder = ResolutionLadder.from_sizes([(4, 2), (8, 4)], horizontal_fov_deg=70.0)
    queue = RenderQueue(make_analytic_model(chunk_delay_s=0.001), ladder=ladder, chunk_size=8)
    threads_count, calls = 8, 25
    poses: dict[int, np.ndarray] = {}
    frames: list[list] = [[] for _ in range(threads_count)]
    failures: list[BaseException] = []
    with queue, RenderServer(queue, port=0) as server, RenderClient(server.url) as client:

        def work(index: int) -> None:
            try:
                rng = np.random.default_rng(index)
                for _ in range(calls):
                    c2w = random_c2w(rng)
                    poses[client.update_camera_matrix(c2w)] = c2w
                    assert client.info()["protocol"] == 1
                    frame = client.get_frame(timeout=float(rng.uniform(0.0, 0.02)))
                    if frame is not None:
                        frames[index].append(frame)
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=work, args=(index,)) for index in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        final = (max(poses), 1)  # the newest request completes its ladder; a thread may have received it already
        while final not in {frame.key for thread_frames in frames for frame in thread_frames}:
            frame = client.get_frame(timeout=60)
            assert frame is not None, f"no frame {final} within 60 s"
            frames[0].append(frame)
    assert sorted(poses) == list(range(threads_count * calls))  # each update answered with its own id
    received = [frame for thread_frames in frames for frame in thread_frames]
    assert len({frame.key for frame in received}) == len(received)  # the connection's reader hands each out once
    for thread_frames in frames:
        assert all(b.key > a.key for a, b in itertools.pairwise(thread_frames))
    for frame in received:
        level = ladder[frame.level]
        expected = expected_image(poses[frame.request_id], level.width, level.height, 70.0)
        np.testing.assert_allclose(frame.image, expected, atol=0.5 / 255 + 1e-6)


def test_waiting_get_frames_hold_no_server_thread():
    """More connections wait in get_frame than asyncio's default thread pool has threads; another client's frame is
    still encoded and sent while they all wait, and a new frame reaches every one of them."""
    pool_threads = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor, which also encodes frames
    waiters = max(16, pool_threads + 2)
    ladder = ResolutionLadder.from_sizes([(8, 4)], horizontal_fov_deg=70.0)
    queue = RenderQueue(make_analytic_model(), ladder=ladder)
    with queue, RenderServer(queue, port=0, max_wait_seconds=120, max_connections=waiters + 2) as server:
        first = queue.update_camera_matrix(look_at([0.0, -3.0, 0.5], [0, 0, 0]))
        assert queue.wait_idle(60)
        clients = [RenderClient(server.url) for _ in range(waiters)]
        try:
            for client in clients:  # each connection's reader takes the current frame: the next one means waiting
                assert client.get_frame(timeout=60).key == (first, 0)
            results: list = [None] * waiters
            threads = [
                threading.Thread(target=lambda i=i: results.__setitem__(i, clients[i].get_frame(timeout=120)))
                for i in range(waiters)
            ]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60
            while server.stats()["waiting_get_frame"] < waiters:
                assert time.monotonic() < deadline, server.stats()
                time.sleep(0.01)
            # A fresh connection has the published frame to receive: its encoding needs a pool thread. Had the
            # waiters parked on the pool, it would only run once their 120 s waits ended.
            with RenderClient(server.url, timeout=60) as fresh:
                frame = fresh.get_frame()
            assert frame is not None and frame.key == (first, 0)
            assert server.stats()["waiting_get_frame"] == waiters and all(t.is_alive() for t in threads)
            c2w = look_at([2.0, 1.0, 1.0], [0, 0, 0])
            second = queue.update_camera_matrix(c2w)
            for thread in threads:
                thread.join(60)
            assert [None if r is None else r.key for r in results] == [(second, 0)] * waiters
            for result in results:
                np.testing.assert_allclose(result.image, expected_image(c2w, 8, 4, 70.0), atol=0.5 / 255 + 1e-6)
            assert server.stats()["waiting_get_frame"] == 0
        finally:
            for client in clients:
                client.close()


def test_close_does_not_wait_for_waiting_get_frames():
    """Stopping the server answers a get_frame that waits for a frame instead of serving on until its wait ends."""
    queue = RenderQueue(make_analytic_model(), ladder=ResolutionLadder.from_sizes([(8, 4)]))
    with queue:
        server = RenderServer(queue, port=0, max_wait_seconds=300).start()
        outcome: list = []

        def wait() -> None:
            with RenderClient(server.url) as client:
                try:
                    outcome.append(client.get_frame(timeout=300))
                except Exception as error:
                    outcome.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        deadline = time.monotonic() + 60
        while server.stats()["waiting_get_frame"] < 1:
            assert time.monotonic() < deadline, server.stats()
            time.sleep(0.01)
        server.close(timeout=60)
        waiter.join(60)
        assert not any(thread.name == "recon-render-server" for thread in threading.enumerate())
        assert not waiter.is_alive() and len(outcome) == 1 and not isinstance(outcome[0], RenderTimeoutError)


# ---------------------------------------------------------------------------------------------------- browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_preview_page_streams_frames_into_headless_chromium(server):
    profile = Path(tempfile.mkdtemp(prefix="recon-chromium-"))
    page_url = f"{server.http_base}/#token={server.token}"
    browser = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=900,700",
            page_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert browser.poll() is None, browser.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page" and t["url"].startswith(server.http_base))
        devtools = DevTools(page["webSocketDebuggerUrl"])
        stats_js = "window.reconPreview ? window.reconPreview.stats() : null"

        # the page first shows what the shared camera last produced, then frames of the camera it sent itself
        def own_camera_done(s: dict) -> bool:
            return (s["lastRequestId"], s["lastLevel"]) == (s["lastSentRequestId"], len(LADDER) - 1)

        stats = devtools.wait_for(stats_js, lambda s: own_camera_done(s) or s["errors"])
        assert not stats["errors"], stats
        assert stats["connected"] and stats["frames"] >= 1 and stats["requestsSent"] >= 1
        assert (stats["lastWidth"], stats["lastHeight"]) == LADDER[-1]
        assert devtools.evaluate("location.hash") == ""  # the token was removed from the address bar
        mean_js = """(() => { const c = document.getElementById('view');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
            return s / (d.length / 4 * 3); })()"""
        with RenderClient(server.url, token_file=server.token_file) as client:
            shown = client.get_frame(timeout=60)  # a fresh reader starts with the frame the page shows
        assert shown is not None and shown.key == (stats["lastRequestId"], stats["lastLevel"])
        assert abs(devtools.evaluate(mean_js) - 255 * float(shown.image.mean())) < 3.0

        # orbit: drag across the canvas -> the page sends a new camera and shows frames of it
        box = devtools.evaluate(
            "(() => { const r = document.getElementById('view').getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        x, y = box
        devtools.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", buttons=1, clickCount=1)
        for step in range(1, 6):
            devtools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x + 20 * step, y=y, button="left", buttons=1)
        devtools.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + 100, y=y, button="left", buttons=0)
        moved = devtools.wait_for(stats_js, lambda s: s["lastSentRequestId"] > stats["lastSentRequestId"])
        devtools.wait_for(stats_js, lambda s: s["lastRequestId"] >= moved["lastSentRequestId"])
        devtools.ws.close()  # ends the DevTools session
    finally:
        browser.terminate()
        try:
            browser.wait(15)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- shutdown
def test_server_shuts_down_cleanly_on_sigterm(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 0, "".join(server.lines[-40:])
    assert not any("Traceback" in line for line in server.lines), "".join(server.lines[-40:])
