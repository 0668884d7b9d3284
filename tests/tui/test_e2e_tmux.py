"""End to end in a real terminal (tmux): start slotlab, force the race, read the verdict,
quit, and find the terminal usable again. Skipped, with the reason, without tmux.

The waits poll the pane for what must appear (with a generous deadline) instead of sleeping
for a fixed time; the virtual clock runs flat out once `e` is pressed, so nothing here
depends on how fast the machine is beyond the deadline.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 300.0  # a hang guard: on an idle machine the pane shows it within seconds

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


class Pane:
    def __init__(self, name: str) -> None:
        self.name = name

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        proc = subprocess.run(
            [TMUX, *args], capture_output=True, text=True, check=False, timeout=30
        )
        return proc.stdout

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, text: str, deadline: float = DEADLINE) -> str:
        end = time.monotonic() + deadline
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{screen}")

    def display(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", self.name, fmt).strip()


@pytest.fixture
def pane(tmp_path: Path) -> Iterator[Pane]:
    """A shell in a detached 120x36 tmux session of its own."""
    name = f"slotlab-e2e-{uuid.uuid4().hex[:8]}"
    env_file = tmp_path / "env.sh"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env_file.write_text(
        f"export PYTHONPATH={shlex.quote(pythonpath)}\n"
        f"export SLOTLAB_SESSIONS={shlex.quote(str(tmp_path / 'sessions'))}\n"
        "export TERM=xterm-256color PS1='$ '\n"
        f"cd {shlex.quote(str(tmp_path))}\n"
    )
    assert TMUX is not None
    subprocess.run(
        [TMUX, "new-session", "-d", "-s", name, "-x", "120", "-y", "36",
         f"bash --norc --noprofile --rcfile {shlex.quote(str(env_file))} -i"],
        check=True,
        timeout=30,
    )  # fmt: skip
    p = Pane(name)
    p.send(f"source {shlex.quote(str(env_file))}", "Enter")
    p.wait_for("$")
    try:
        yield p
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], check=False, timeout=30)


def _command(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "tui.cli", *args])


def test_race_verdict_quit_and_the_terminal_is_restored(pane: Pane, tmp_path: Path) -> None:
    pane.send(_command("tui", "--scenario", "split", "--fault", "race") + "; echo exit=$?", "Enter")
    pane.wait_for("vCPU")
    screen = pane.wait_for("RUNNING")
    assert "race" in screen  # armed from the command line
    assert pane.display("#{alternate_on}") == "1"
    # Force the race now: run the virtual clock flat out to the verdict.
    pane.send("e")
    screen = pane.wait_for("CRASHED")
    assert "KVM_EXIT_INTERNAL_ERROR" in screen
    assert "REC" in screen
    pane.send("q")
    pane.wait_for("exit=0")
    # The terminal is back: main screen, cooked mode, echo.
    assert pane.display("#{alternate_on}") == "0"
    pane.send("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo", "Enter")
    screen = pane.wait_for("icanon echo")
    pane.send("echo restored-$((40+2))", "Enter")
    pane.wait_for("restored-42")
    # The session it recorded verifies.
    logs = list((tmp_path / "sessions").glob("*-split-legacy.jsonl"))
    assert len(logs) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "tui.cli", "replay", str(logs[0]), "--verify"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_engine_error_leaves_a_usable_terminal(pane: Pane, tmp_path: Path) -> None:
    """The engine fails mid-run: an error screen with the log path, status 1, no traceback
    in the terminal, and the shell works afterwards."""
    boot = tmp_path / "broken.py"
    boot.write_text(
        "import sys\n"
        "from engine.checker import Checker\n"
        "from engine.events import TxnBegin\n"
        "observe = Checker.observe\n"
        "def exploding(self, ev):\n"
        "    if isinstance(ev, TxnBegin) and ev.txn == 2:\n"
        "        raise RuntimeError('checker exploded')\n"
        "    observe(self, ev)\n"
        "Checker.observe = exploding\n"
        "from tui.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    pane.send(
        shlex.join([sys.executable, str(boot), "tui", "--speed", "inf"]) + "; echo exit=$?", "Enter"
    )
    screen = pane.wait_for("engine error")
    assert "RuntimeError: checker exploded" in screen
    assert "sessions" in screen
    pane.send("q")
    screen = pane.wait_for("exit=1")
    assert "slotlab: the engine failed: RuntimeError: checker exploded" in screen
    assert "Traceback" not in screen
    assert pane.display("#{alternate_on}") == "0"
    pane.send("echo alive-$((1+1))", "Enter")
    pane.wait_for("alive-2")


def test_sigterm_restores_the_terminal(pane: Pane, tmp_path: Path) -> None:
    """`kill -TERM` (a closing window, a supervisor) ends slotlab as `q` does: the main screen
    is back, mouse tracking off, the cursor shown, the line discipline cooked, status 143."""
    pidfile = tmp_path / "slotlab.pid"
    pane.send(
        f"sh -c 'echo $$ > {shlex.quote(str(pidfile))}; exec {_command()}'; echo exit=$?", "Enter"
    )
    pane.wait_for("RUNNING")
    assert pane.display("#{alternate_on}") == "1"
    assert pane.display("#{mouse_any_flag}") == "1"
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    pane.wait_for("exit=143")
    assert pane.display("#{alternate_on}") == "0"
    assert pane.display("#{mouse_any_flag}") == "0"
    assert pane.display("#{cursor_flag}") == "1"
    pane.send("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo", "Enter")
    pane.wait_for("icanon echo")


TXN = re.compile(r"\btxn (\d+)\b")


def _txn_seen(pane: Pane, at_least: int, deadline: float = DEADLINE) -> int:
    """Poll until the pane has named transaction at_least (status bar or log), never seeing
    a crash on the way; returns the last screen's highest transaction number."""
    end = time.monotonic() + deadline
    highest = 0
    screen = ""
    while time.monotonic() < end:
        screen = pane.capture()
        assert "CRASHED" not in screen, screen
        highest = max([highest, *(int(n) for n in TXN.findall(screen))])
        if highest >= at_least:
            return highest
        time.sleep(0.1)
    raise AssertionError(f"transaction {at_least} never showed; the pane shows:\n{screen}")


@pytest.mark.slow  # the whole demo in a real terminal, a minute on a busy machine
def test_the_demo_story(pane: Pane) -> None:
    """`slotlab` with no arguments: legacy survives several updates, `r` arms the race and the
    guest dies; inhibit from the palette survives the race; `c` fills the matrix; `q` gives
    the terminal back."""
    pane.send(_command() + "; echo exit=$?", "Enter")
    pane.wait_for("RUNNING")
    assert "pam-shadow·legacy" in pane.capture()
    # Five times the slow motion, as a presenter would: pam-shadow updates every ~200us.
    pane.send("+")
    pane.wait_for("x2e-5")
    pane.send("+")
    pane.wait_for("x5e-5")
    # Legacy survives at least three transactions on its own.
    _txn_seen(pane, 4)
    pane.send("r")
    screen = pane.wait_for("CRASHED")
    assert "KVM_EXIT_INTERNAL_ERROR" in screen
    # Inhibit, from the palette: a new session on the same scenario.
    pane.send("C-p")
    pane.wait_for("Search")
    pane.send("-l", "switch strategy: inhibit")
    pane.wait_for("Switch strategy: inhibit")
    pane.send("Enter")
    pane.wait_for("pam-shadow·inhibit")
    if "RUNNING" not in pane.capture():
        pane.send("Enter")
    pane.wait_for("RUNNING")
    pane.send("r")
    pane.wait_for("race")
    # The race fires at the next transaction and the one after: both survive.
    start = _txn_seen(pane, 1)
    _txn_seen(pane, start + 2)
    # The matrix: every strategy, filled.
    pane.send("c")
    pane.wait_for("seeds: done", deadline=240)
    # The rows are drawn after the status line says done: wait for each, not one capture.
    for name in ("legacy", "inhibit", "atomic-list", "convert"):
        screen = pane.wait_for(name)
    assert "%" in screen
    pane.send("Escape")
    pane.wait_for("pam-shadow·inhibit")
    pane.send("q")
    pane.wait_for("exit=0")
    assert pane.display("#{alternate_on}") == "0"
    assert pane.display("#{mouse_any_flag}") == "0"
    pane.send("echo back-$((20+1))", "Enter")
    pane.wait_for("back-21")


def test_replay_reads_a_piped_compressed_log_and_keys_from_the_terminal(
    pane: Pane, tmp_path: Path
) -> None:
    """`zcat`-style: the log comes down a pipe, the keys from the terminal."""
    log = tmp_path / "crash.jsonl.gz"
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "run", "--seed", "3", "--log", str(log), "--json"],
        cwd=ROOT, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # crashed
    pane.send(
        f"cat {shlex.quote(str(log))} | " + _command("replay", "-") + "; echo exit=$?", "Enter"
    )
    pane.wait_for("REPLAY")
    pane.send("e")  # to the end, a key read from the terminal
    pane.wait_for("CRASHED")
    pane.send("q")
    pane.wait_for("exit=0")
