"""``recon-render-server``: serve a trained nerfstudio run (any method) to interactive clients.

recon-render-server --load-config outputs/.../config.yml [--host 127.0.0.1] [--port 8765] [--token-file F]
                    [--preview] [--ladder ladder.json] [--chunk-size N] [--world-frame nerfstudio|data]

Clients: ``recon_plugin.renderer.RenderClient("ws://HOST:PORT/ws", token_file=F)``; people: ``--preview`` and open
``http://HOST:PORT/#token=<token>`` in a browser. Only the operations auth / info / update_camera / get_frame exist.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from recon_plugin.renderer.server import MIN_TOKEN_LENGTH, is_loopback_host


@dataclass
class RenderServerCommand:
    """Serve a trained nerfstudio run through the progressive render queue over WebSockets."""

    load_config: Path
    """config.yml of the trained run (any registered nerfstudio method)."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires --token-file."""
    port: int = 8765
    """TCP port (0 picks a free one; the chosen one is printed)."""
    token_file: Path | None = None
    """File holding the shared token clients must send. Created (mode 600, random token) if it does not exist."""
    preview: bool = False
    """Also serve a live preview page at http://HOST:PORT/ (orbit camera in the browser)."""
    ladder: Path | None = None
    """Resolution ladder JSON (default 64x36 -> ... -> 1280x720 at 60 degrees horizontal field of view)."""
    chunk_size: int | None = None
    """Rays per forward pass = cancellation granularity (default: the model's, at most 4096 on the CPU)."""
    num_workers: int = 1
    """Render threads."""
    world_frame: Literal["nerfstudio", "data"] = "nerfstudio"
    """Frame of client poses: nerfstudio's world frame, or the dataset's original frame."""
    data_dir: Path | None = None
    """Training data folder, if it moved since training (the dataparser reads it)."""
    device: str | None = None
    """Render device (default: cuda when available, else cpu)."""
    max_message_bytes: int = 64 * 1024
    """Largest accepted client message."""

    def main(self) -> None:
        """Validates the options, loads the run and serves until interrupted."""
        token = self.read_token()  # before the (slow) model load: fail fast on an unsafe setup
        if not self.load_config.is_file():
            raise SystemExit(f"recon-render-server: {self.load_config}: no such config.yml")

        from recon_plugin.renderer.queue import RenderQueue
        from recon_plugin.renderer.server import RenderServer
        from recon_plugin.renderer.types import ResolutionLadder

        ladder = ResolutionLadder.from_file(self.ladder) if self.ladder is not None else None
        queue = RenderQueue.from_config(
            self.load_config,
            data_dir=self.data_dir,
            device=self.device,
            ladder=ladder,
            chunk_size=self.chunk_size,
            num_workers=self.num_workers,
            world_frame=self.world_frame,
        )
        try:
            server = RenderServer(
                queue,
                host=self.host,
                port=self.port,
                token=token,
                preview=self.preview,
                max_message_bytes=self.max_message_bytes,
            )

            def ready(server: RenderServer) -> None:
                info = queue.info
                print(
                    f"recon-render-server: {info.get('method')} step {info.get('step')} on {queue.device}", flush=True
                )
                print(f"recon-render-server listening on {server.url}", flush=True)
                if self.preview:
                    hint = f"#token=<contents of {self.token_file}>" if token is not None else ""
                    print(f"recon-render-server preview: {server.preview_url}{hint}", flush=True)

            server.run(ready)
        finally:
            queue.close()

    def read_token(self) -> str | None:
        """The token from --token-file (creating the file with a random token if missing); checks the host."""
        if self.token_file is None:
            if not is_loopback_host(self.host):
                raise SystemExit(
                    f"recon-render-server: refusing to listen on {self.host!r} without --token-file: anyone who "
                    "can reach the port could use the renderer. Bind to 127.0.0.1 or pass --token-file FILE."
                )
            return None
        path = self.token_file.expanduser()
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
            print(f"recon-render-server: wrote a new random token to {path}", flush=True)
        try:
            token = path.read_text().strip()
        except OSError as error:
            raise SystemExit(f"recon-render-server: cannot read token file {path}: {error}") from error
        if len(token) < MIN_TOKEN_LENGTH or any(ch.isspace() for ch in token):
            raise SystemExit(
                f"recon-render-server: {path}: the token must be at least {MIN_TOKEN_LENGTH} characters without "
                "whitespace (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE)"
            )
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"recon-render-server: warning: {path} is readable by other users (chmod 600 it)", file=sys.stderr)
        return token


def entrypoint(args: list[str] | None = None) -> None:
    """Console-script entry point of ``recon-render-server``."""
    tyro.cli(RenderServerCommand, prog="recon-render-server", args=args).main()


if __name__ == "__main__":
    entrypoint()
