"""`slotlab qemu` live in a real terminal (tmux): a real QEMU 7.2 on /dev/kvm, driven through
QMP so that its VRAM slot disappears and comes back while the screen is watched, then its
traffic so far run on the model (m) and back (b). Skipped, with the reason, without tmux, QEMU
or /dev/kvm.

QMP makes the timing deterministic: `stop` then `system_reset` deletes the VRAM BAR's slot
and keeps the VM paused, so the slot stays gone until `cont` lets SeaBIOS map it again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.tui.test_e2e_tmux import Pane, pane  # noqa: F401 - the tmux fixture

QEMU = shutil.which("qemu-system-x86_64")
VRAM = "@0xfd000000"

pytestmark = pytest.mark.skipif(
    QEMU is None or shutil.which("tmux") is None or not os.access("/dev/kvm", os.R_OK | os.W_OK),
    reason="needs tmux, qemu-system-x86_64 (apt-get install qemu-system-x86 seabios) and /dev/kvm",
)


# Hang guards, not timing claims: QEMU and the pane answer in seconds on an idle machine and
# may take minutes on a loaded one; only a real hang should fail these waits.
HANG_S = 300.0


class Qmp:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + HANG_S
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # the greeting
        self.run("qmp_capabilities")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def run(self, command: str) -> None:
        self.file.write(json.dumps({"execute": command}).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" not in reply:
                assert "return" in reply, reply
                return


def _slots_line(screen: str) -> str:
    return next((line for line in screen.splitlines() if "slots as0:" in line), "")


def _wait_slots(p: Pane, present: bool, deadline: float = HANG_S) -> str:
    end = time.monotonic() + deadline
    screen = ""
    while time.monotonic() < end:
        screen = p.capture()
        line = _slots_line(screen)
        if line and (VRAM in line) == present:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"the VRAM slot never {'appeared' if present else 'went'}:\n{screen}")


def _wait_re(p: Pane, pattern: str, deadline: float = HANG_S) -> None:
    end = time.monotonic() + deadline
    while not re.search(pattern, screen := p.capture()):
        assert time.monotonic() < end, f"{pattern!r} never appeared:\n{screen}"
        time.sleep(0.1)


def test_a_slot_appears_and_disappears_as_qemu_issues_calls(
    pane: Pane,  # noqa: F811
    tmp_path: Path,
) -> None:
    sock = tmp_path / "qmp.sock"
    vm = (
        f"qemu-system-x86_64 -accel kvm -machine pc -smp 2 -m 256 -display none -serial none "
        f"-monitor none -net none -qmp unix:{sock},server=on,wait=off"
    )
    command = shlex.join([sys.executable, "-m", "tui.cli", "qemu", "--out", str(tmp_path), "--"])
    pane.send(f"{command} {vm}; echo exit=$?", "Enter")
    screen = _wait_slots(pane, present=True)  # SeaBIOS maps the VGA BAR: the slot appears
    pid = int(re.search(r"QEMU pid (\d+)", screen).group(1))  # type: ignore[union-attr]
    qmp = Qmp(sock)
    try:
        qmp.run("stop")
        qmp.run("system_reset")  # the BAR is unmapped: DELETE, and the VM stays paused
        _wait_slots(pane, present=False)
        _wait_re(pane, r"DELETE s\d+@0xfd000000")  # and the transaction log says so
        qmp.run("cont")  # SeaBIOS runs again and maps it: CREATE
        _wait_slots(pane, present=True)
    finally:
        qmp.close()
    assert "vCPU 0" in pane.capture()
    # m: the traffic so far on the model, a live session with the race key; b: back to QEMU.
    pane.send("m")
    pane.wait_for("Back to QEMU", HANG_S)
    pane.send("r")
    pane.wait_for("injected race", HANG_S)
    pane.send("b")
    _wait_slots(pane, present=True)  # the watch view, still following the VM
    assert "Back to QEMU" not in pane.capture()
    assert list(tmp_path.glob("qemu-*calls.toml")), "the traffic so far was not imported"
    pane.send("q")
    screen = pane.wait_for("exit=0")
    assert "scenario:" in screen
    assert "replay:" in screen
    assert pane.display("#{alternate_on}") == "0"
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "QEMU outlived slotlab"
