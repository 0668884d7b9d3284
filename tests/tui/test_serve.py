"""`slotlab serve`: textual-serve on 127.0.0.1, serving the TUI's page."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Hang guards only: a loaded machine may take many seconds to start the server and draw.
HANG_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _browser_tab(port: int) -> tuple[bytes, bool]:
    import aiohttp

    drawn = b""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30") as ws,
    ):
        end = time.monotonic() + HANG_S
        while b"kvm->srcu" not in drawn and time.monotonic() < end:
            msg = await ws.receive(timeout=HANG_S)
            if msg.type == aiohttp.WSMsgType.BINARY:
                drawn += msg.data
            elif msg.type == aiohttp.WSMsgType.TEXT:
                drawn += msg.data.encode()
            else:
                break
        await ws.send_json(["stdin", "q"])
        while time.monotonic() < end:
            msg = await ws.receive(timeout=HANG_S)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return drawn, True
            if msg.type == aiohttp.WSMsgType.TEXT and "exit" in msg.data:
                return drawn, True
    return drawn, False


def test_serve_answers_on_localhost(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOTLAB_SESSIONS": str(tmp_path)}
    output = tmp_path / "serve.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "serve", "--port", str(port), "--paused"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        body = ""
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=HANG_S) as resp:
                    body = resp.read().decode()
                    assert resp.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert proc.poll() is None, output.read_text()
        assert "slotlab" in body
        assert f"127.0.0.1:{port}" in output.read_text()
        # A browser tab: the TUI runs (trio in guest mode under the web driver), draws, and
        # quits on `q`.
        drawn, closed = asyncio.run(_browser_tab(port))
        assert b"kvm->srcu" in drawn
        assert closed
        # Bound to loopback only: the machine's other addresses refuse.
        outside = socket.gethostbyname(socket.gethostname())
        if not outside.startswith("127."):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((outside, port)) != 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
