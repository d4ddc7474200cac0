"""The live preview page served by ``recon-render-server --preview`` (self-contained: no external resources).

Two WebSocket connections (camera updates are never queued behind a frame long-poll): one sends the orbit
camera, one long-polls ``get_frame`` with ``u8`` payloads drawn on a canvas. Drag to orbit around the scene's
target, wheel to zoom. ``window.reconPreview.stats()`` exposes counters (used by the browser test).
The token, if the server has one, is read from the URL fragment (``/#token=...``, never sent over HTTP) and
removed from the address bar.
"""

from __future__ import annotations

PREVIEW_SCRIPT = r"""
(() => {
  "use strict";
  const canvas = document.getElementById("view");
  const ctx = canvas.getContext("2d");
  const statusEl = document.getElementById("status");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const state = {connected: false, frames: 0, lastRequestId: -1, lastLevel: -1, lastWidth: 0, lastHeight: 0,
                 lastRenderSeconds: 0, requestsSent: 0, lastSentRequestId: -1, errors: [], fps: 0};
  window.reconPreview = {stats: () => JSON.parse(JSON.stringify(state))};
  const scratch = document.createElement("canvas");
  const scratchCtx = scratch.getContext("2d");

  function note(message) {
    state.errors.push(String(message));
    statusEl.textContent = "error: " + message;
  }

  function open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.binaryType = "arraybuffer";
      const waiting = [];
      ws.onmessage = (event) => {
        const next = waiting.shift();
        if (!next) return;
        if (typeof event.data === "string") { next(JSON.parse(event.data)); return; }
        const view = new DataView(event.data);
        const headerLength = view.getUint32(4);
        const header = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 8, headerLength)));
        header.payload = new Uint8Array(event.data, 8 + headerLength);
        next(header);
      };
      ws.onclose = (event) => { state.connected = false; note(`connection closed (${event.code} ${event.reason})`); };
      ws.onerror = () => reject(new Error("WebSocket error"));
      ws.onopen = async () => {
        const call = (message) => new Promise((done) => { waiting.push(done); ws.send(JSON.stringify(message)); });
        if (token !== null) {
          const reply = await call({op: "auth", token: token});
          if (!reply.ok) { reject(new Error(reply.error.message)); return; }
        }
        resolve(call);
      };
    });
  }

  const v = {
    sub: (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]],
    add: (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
    mul: (a, s) => [a[0] * s, a[1] * s, a[2] * s],
    dot: (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2],
    cross: (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]],
    norm: (a) => { const n = Math.hypot(a[0], a[1], a[2]); return [a[0] / n, a[1] / n, a[2] / n]; },
  };

  function orbitFrom(scene) {
    const c2w = scene.initial_c2w;
    const eye = [c2w[0][3], c2w[1][3], c2w[2][3]];
    const up = v.norm(scene.up);
    const offset = v.sub(eye, scene.target);
    const radius = Math.hypot(offset[0], offset[1], offset[2]) || 3;
    const elevation = Math.asin(Math.max(-0.99, Math.min(0.99, v.dot(offset, up) / radius)));
    let e1 = v.sub(offset, v.mul(up, v.dot(offset, up)));
    if (Math.hypot(e1[0], e1[1], e1[2]) < 1e-6) {
      e1 = Math.abs(up[0]) < 0.9 ? v.cross(up, [1, 0, 0]) : v.cross(up, [0, 1, 0]);
    }
    e1 = v.norm(e1);
    return {target: scene.target, up: up, e1: e1, e2: v.cross(up, e1), radius: radius, azimuth: 0,
            elevation: elevation};
  }

  function cameraMatrix(o) {
    const dir = v.add(v.mul(v.add(v.mul(o.e1, Math.cos(o.azimuth)), v.mul(o.e2, Math.sin(o.azimuth))),
                            Math.cos(o.elevation)), v.mul(o.up, Math.sin(o.elevation)));
    const eye = v.add(o.target, v.mul(dir, o.radius));
    const forward = v.norm(v.sub(o.target, eye));
    const right = v.norm(v.cross(forward, o.up));
    const camUp = v.cross(right, forward);
    return [[right[0], camUp[0], -forward[0], eye[0]], [right[1], camUp[1], -forward[1], eye[1]],
            [right[2], camUp[2], -forward[2], eye[2]], [0, 0, 0, 1]];
  }

  function draw(frame) {
    const {width, height, channels, payload} = frame;
    scratch.width = width; scratch.height = height;
    const image = scratchCtx.createImageData(width, height);
    const rgba = image.data;
    const g = channels >= 3 ? 1 : 0, b = channels >= 3 ? 2 : 0;
    for (let i = 0, j = 0; i < width * height; i++, j += channels) {
      rgba[4 * i] = payload[j];
      rgba[4 * i + 1] = payload[j + g];
      rgba[4 * i + 2] = payload[j + b];
      rgba[4 * i + 3] = 255;
    }
    scratchCtx.putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(scratch, 0, 0, canvas.width, canvas.height);
  }

  async function main() {
    const control = await open();
    const frames = await open();
    state.connected = true;
    const info = await control({op: "info"});
    if (!info.ok) { note(info.error.message); return; }
    document.getElementById("title").textContent =
      `${info.model.method} · ${info.ladder.levels.map((l) => l.width + "x" + l.height).join(" → ")}`;
    const orbit = orbitFrom(info.scene);
    let dirty = true, sending = false;
    async function sendCamera() {
      if (!dirty || sending) return;
      dirty = false; sending = true;
      const aspect = canvas.width / canvas.height;
      const reply = await control({op: "update_camera", c2w: cameraMatrix(orbit), aspect: aspect});
      sending = false;
      if (reply.ok) {
        state.requestsSent++;
        state.lastSentRequestId = reply.request_id;
      } else {
        note(reply.error.message);
      }
      if (dirty) sendCamera();
    }
    let dragging = null;
    canvas.addEventListener("pointerdown", (e) => {
      dragging = [e.clientX, e.clientY];
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointerup", () => { dragging = null; });
    canvas.addEventListener("pointermove", (e) => {
      if (!dragging) return;
      orbit.azimuth -= (e.clientX - dragging[0]) * 0.01;
      orbit.elevation = Math.max(-1.5, Math.min(1.5, orbit.elevation + (e.clientY - dragging[1]) * 0.01));
      dragging = [e.clientX, e.clientY];
      dirty = true; sendCamera();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      orbit.radius *= Math.exp(e.deltaY * 0.001);
      dirty = true; sendCamera();
    }, {passive: false});
    sendCamera();
    let windowStart = performance.now(), windowFrames = 0;
    while (state.connected) {
      const frame = await frames({op: "get_frame", encoding: "u8", timeout: 1.0});
      if (!frame.ok) { note(frame.error.message); await new Promise((r) => setTimeout(r, 500)); continue; }
      if (frame.frame === null) continue;
      draw(frame);
      state.frames++; windowFrames++;
      state.lastRequestId = frame.request_id; state.lastLevel = frame.level;
      state.lastWidth = frame.width; state.lastHeight = frame.height; state.lastRenderSeconds = frame.render_seconds;
      const now = performance.now();
      if (now - windowStart > 1000) {
        state.fps = windowFrames * 1000 / (now - windowStart);
        windowStart = now;
        windowFrames = 0;
      }
      statusEl.textContent = `request ${frame.request_id} · level ${frame.level} (${frame.width}x${frame.height}) · ` +
        `render ${frame.render_seconds.toFixed(3)} s · ${state.fps.toFixed(1)} frames/s`;
    }
  }
  main().catch((error) => note(error.message || error));
})();
"""

PREVIEW_HTML = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>recon render preview</title>
<style>
  body { font: 14px system-ui, sans-serif; background: #1e1f22; color: #ddd; margin: 1.5em; }
  canvas { background: #000; cursor: grab; touch-action: none; display: block; border: 1px solid #444; }
  #status { margin-top: .5em; font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h3 id="title">recon render preview</h3>
<canvas id="view" width="640" height="360"></canvas>
<div id="status">connecting…</div>
<p>Drag to orbit, wheel to zoom. All viewers and clients of this server share one camera.</p>
<script>"""
    + PREVIEW_SCRIPT
    + """</script>
</body>
</html>
"""
)
