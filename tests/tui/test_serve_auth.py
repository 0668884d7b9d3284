"""`slotlab serve` beyond loopback: a warning, and a token it prints without which every
request is refused, unless --no-auth; ports outside 1..65535 are one line of error."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tui import cli
from tui.serve import is_loopback

ROOT = Path(__file__).resolve().parents[2]
HANG_S = 300.0  # a hang guard: the server answers within seconds on an idle machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=HANG_S) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


def _serving(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    port = _free_port()
    out = tmp_path / "serve.out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SLOTLAB_SESSIONS": str(tmp_path / "s")}
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "serve", "--port", str(port), *args, "--paused"],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + HANG_S
    while b"slotlab:" not in out.read_bytes() or not _listening(port):
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.1)
    return proc, out, port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_beyond_loopback_every_request_needs_the_printed_token(tmp_path: Path) -> None:
    proc, out, port = _serving(tmp_path, "--host", "0.0.0.0")
    try:
        printed = out.read_text()
        assert "warning: serving on 0.0.0.0, beyond this machine" in printed
        match = re.search(r"\?token=([A-Za-z0-9_-]+)", printed)
        assert match is not None, printed
        base = f"http://127.0.0.1:{port}"
        assert _status(f"{base}/") == 403
        assert _status(f"{base}/?token=wrong") == 403
        assert _status(f"{base}/static/css/xterm.css") == 403
        assert _status(f"{base}/?token={match.group(1)}") == 200
    finally:
        _stop(proc)


def test_no_auth_serves_with_a_warning(tmp_path: Path) -> None:
    proc, out, port = _serving(tmp_path, "--host", "0.0.0.0", "--no-auth")
    try:
        assert "with no authentication (--no-auth)" in out.read_text()
        assert _status(f"http://127.0.0.1:{port}/") == 200
    finally:
        _stop(proc)


@pytest.mark.parametrize("port", ["-1", "0", "99999"])
def test_a_port_out_of_range_is_one_line(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:  # argparse's own usage error, status 2
        cli.main(["serve", f"--port={port}"])
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"slotlab serve: argument --port: must be 1..65535, not {port}\n"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.2")
    assert not is_loopback("example.org")
