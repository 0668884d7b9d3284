"""`slotlab qemu`: a real QEMU 7.2 on /dev/kvm, watched; skipped without QEMU or /dev/kvm."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.scenarios import load_scenario
from tests.engine.helpers import ROOT, one_line, run_cli

QEMU = shutil.which("qemu-system-x86_64")
VM = [
    "qemu-system-x86_64",
    "-accel",
    "kvm",
    "-machine",
    "pc",
    "-smp",
    "2",
    "-m",
    "256",
    "-display",
    "none",
    "-serial",
    "none",
    "-monitor",
    "none",
    "-net",
    "none",
]

needs_qemu = pytest.mark.skipif(
    QEMU is None or not os.access("/dev/kvm", os.R_OK | os.W_OK),
    reason="needs qemu-system-x86_64 (apt-get install qemu-system-x86 seabios) and /dev/kvm",
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: it no longer runs the VM.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@needs_qemu
def test_json_reports_the_vms_calls(tmp_path: Path) -> None:
    done = run_cli("qemu", "--json", "--duration", "10s", "--out", str(tmp_path), "--", *VM)
    assert done.returncode == 0, done.stderr
    result = json.loads(one_line(done.stdout))
    # SeaBIOS on pc: RAM and BIOS at init, then the PAM splits (the reference traces: 35 calls).
    assert result["creates"] >= 4
    assert result["deletes"] >= 2
    assert result["calls"] == result["creates"] + result["deletes"] + result["flags_only"]
    assert result["transactions"] >= 2
    assert result["max_window_us"] > 0
    assert result["stopped_by"] == "duration"
    assert _gone(result["qemu_pid"])
    trace = Path(result["trace"])
    assert trace.read_text().count("kvm_set_user_memory") == result["calls"]
    sc = load_scenario(result["scenario"])
    assert len(sc.sequence) == result["transactions"] + 1
    assert "--scenario" in result["replay"]


@needs_qemu
def test_ctrl_c_stops_qemu_and_keeps_the_trace(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "qemu", "--json", "--out", str(tmp_path), "--", *VM],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # Wait for QEMU's first memslot call (machine init), however loaded the host is.
        for _ in range(600):
            logs = list(tmp_path.glob("*.qemu.log"))
            if logs and "kvm_set_user_memory" in logs[0].read_text():
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        # A hang guard, not a timing claim: stopping QEMU and importing its trace is quick
        # on an idle machine and slow under a full test suite beside it.
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.communicate()  # reaped and its pipes closed here, not in a later test's GC
    assert proc.returncode == 0, err
    result = json.loads(one_line(out))
    assert result["stopped_by"] == "interrupted"
    assert result["calls"] >= 1
    assert _gone(result["qemu_pid"])
    assert Path(result["scenario"]).exists()


def test_without_qemu_one_line_says_how_to_install(tmp_path: Path) -> None:
    done = run_cli("qemu", "--json", "--", "qemu-system-x86_64", env={"PATH": str(tmp_path)})
    assert done.returncode == 2
    assert "apt-get install qemu-system-x86" in one_line(done.stderr)


def test_refuses_a_qemu_without_the_trace_events(tmp_path: Path) -> None:
    done = run_cli("qemu", "--json", "--", sys.executable)
    assert done.returncode == 2
    assert "needs the `log` trace backend" in one_line(done.stderr)
    done = run_cli("qemu", "--json", "--", "qemu-system-x86_64", "-D", "x.log")
    assert done.returncode == 2
    expected = "sets -D itself" if QEMU is not None else "apt-get install"
    assert expected in one_line(done.stderr)
