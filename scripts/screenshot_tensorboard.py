"""Screenshot TensorBoard's graph page for the offline model, so notebook 01 shows it without Colab.

    .venv/bin/python scripts/screenshot_tensorboard.py            # writes images/tensorboard_graph.png

What it does, as a learner would by hand:

1. writes the graph of EfficientNet-Lite0 with ``SummaryWriter.add_graph`` (``write_tensorboard_graph``,
   exactly as notebook 01 does) into a temporary folder;
2. starts ``tensorboard --logdir <folder> --port <free port>`` from this virtual environment;
3. opens http://127.0.0.1:<port>/#graphs in headless Chromium (Debian's ``chromium``), driven over
   the DevTools protocol (tornado's websocket client, already installed with Jupyter): it waits for
   the graph, double-clicks open the model and its ``blocks`` (the same event a double-click fires),
   selects ``blocks`` so the info card shows its size, presses "Fit to screen" and takes the picture;
4. stops Chromium and TensorBoard, and saves a palette PNG (< 300 KB) under images/.

Needs ``chromium`` on the PATH (Debian: ``apt-get install chromium``). Runs offline in about 30 s.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from palette_png import shrink  # scripts/ is on the path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The graph dashboard lives in shadow roots (Polymer); find its scene element once.
FIND_SCENE = """
(() => {
  function find(root, tag) {
    const hit = root.querySelector(tag);
    if (hit) return hit;
    for (const element of root.querySelectorAll('*')) {
      if (element.shadowRoot) { const found = find(element.shadowRoot, tag); if (found) return found; }
    }
    return null;
  }
  window.__scene = find(document, 'tf-graph-scene');
  return !!(window.__scene && window.__scene.renderHierarchy
            && window.__scene.renderHierarchy.getRenderNodeByName('EfficientNet'));
})()
"""
# What a double-click on a group does: the scene fires this event, and the graph opens the group.
EXPAND = """
(() => {
  const name = %s;
  const node = window.__scene.renderHierarchy.getRenderNodeByName(name);
  if (!node) return false;
  if (!node.expanded) {
    window.__scene.dispatchEvent(new CustomEvent('node-toggle-expand',
      {detail: {name: name}, bubbles: true, composed: true}));
  }
  return true;
})()
"""
IS_EXPANDED = "(() => { const n = window.__scene.renderHierarchy.getRenderNodeByName(%s); return !!(n && n.expanded); })()"
SELECT = """
(() => {
  window.__scene.dispatchEvent(new CustomEvent('node-select', {detail: {name: %s}, bubbles: true, composed: true}));
  return true;
})()
"""
FIT = "(() => { window.__scene.fit(); return true; })()"

#: The groups opened in the picture, outermost first (names as TensorBoard shows them).
OPEN = ("EfficientNet", "EfficientNet/Sequential[blocks]")
SELECTED = "EfficientNet/Sequential[blocks]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float, what: str) -> bytes:
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"{what} did not answer at {url} within {seconds:.0f} s") from None
            time.sleep(0.3)


def write_graph(log_dir: Path) -> None:
    import torch

    from nnvis_helpers import load_model
    from nnvis_helpers.architecture import read_tensorboard_graph, write_tensorboard_graph

    model = load_model("efficientnet_lite0", verbose=False)
    write_tensorboard_graph(model, torch.rand(1, 3, 224, 224), log_dir=log_dir)
    assert any(op == "aten::_convolution" for _, op in read_tensorboard_graph(log_dir)), "no convolution in the graph"


async def capture(debug_port: int, width: int, height: int, timeout: float) -> bytes:
    from tornado.websocket import websocket_connect

    pages = json.loads(wait_for(f"http://127.0.0.1:{debug_port}/json", 30, "Chromium's DevTools"))
    page = next(p for p in pages if p.get("type") == "page")
    socket_ = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=200_000_000)
    ids = iter(range(1, 10**9))

    async def call(method: str, **params):
        ident = next(ids)
        socket_.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await socket_.read_message()
            if message is None:
                raise RuntimeError("Chromium closed the DevTools connection")
            reply = json.loads(message)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def evaluate(expression: str):
        result = await call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def until(expression: str, what: str):
        deadline = time.time() + timeout
        while not await evaluate(expression):
            if time.time() > deadline:
                raise RuntimeError(f"TensorBoard's page: {what} not seen within {timeout:.0f} s")
            await asyncio.sleep(0.5)

    await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    await until(FIND_SCENE, "the graph")
    for name in OPEN:
        await evaluate(EXPAND % json.dumps(name))
        await until(IS_EXPANDED % json.dumps(name), f"{name} opened")
        await asyncio.sleep(1.0)  # the scene re-lays out the opened group
    await evaluate(SELECT % json.dumps(SELECTED))
    await asyncio.sleep(1.0)
    await evaluate(FIT)
    await asyncio.sleep(2.0)  # the fit is animated
    shot = await call("Page.captureScreenshot", format="png")
    socket_.close()
    return base64.b64decode(shot["data"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "images" / "tensorboard_graph.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for each step of the page")
    parser.add_argument("--max-bytes", type=int, default=300_000)
    args = parser.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        sys.exit("no chromium on the PATH; on Debian: apt-get install chromium")
    tensorboard = Path(sys.executable).with_name("tensorboard")
    if not tensorboard.exists():
        sys.exit(f"no tensorboard next to {sys.executable}; run this script with the course's .venv/bin/python")

    work = Path(tempfile.mkdtemp(prefix="nnvis_tensorboard_shot_"))
    processes: list[subprocess.Popen] = []
    try:
        write_graph(work / "logs")
        port, debug_port = free_port(), free_port()
        processes.append(subprocess.Popen(
            [str(tensorboard), "--logdir", str(work / "logs"), "--port", str(port), "--host", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_for(f"http://127.0.0.1:{port}/data/plugins_listing", args.timeout, "TensorBoard")
        processes.append(subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--window-size={args.width},{args.height}", f"--remote-debugging-port={debug_port}",
             f"--user-data-dir={work / 'chromium'}", f"http://127.0.0.1:{port}/#graphs"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        png = asyncio.run(capture(debug_port, args.width, args.height, args.timeout))
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(shrink(png, args.max_bytes, colours=(128, 64, 32)))  # TensorBoard's flat colours survive 128
    print(f"wrote {out} ({out.stat().st_size / 1000:.0f} kB)")


if __name__ == "__main__":
    main()
