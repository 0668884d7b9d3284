"""Helpers shared by the engine tests: the CLI in a fresh interpreter, one-line checks, a run
ended by a signal."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import cli
from engine.log import SessionLog, read_log
from engine.signals import workers_ignore_ctrl_c

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m engine.cli ARGS...` in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    full_env.setdefault("COLUMNS", "200")
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI in process; it must exit non-zero with exactly one line on stderr, none on
    stdout. engine.cli.main catches what it must: anything else fails the test as a traceback."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit:  # argparse's own usage errors, one line too (engine.cli.Parser)
        status = exit.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert status != 0, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slotlab")
    return lines[0]


def one_line(text: str) -> str:
    """The text, which must be exactly one line."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected exactly one line, got {len(lines)}:\n{text}"
    return lines[0]


def interrupt_cli_run(
    args: list[str],
    log: Path,
    signum: int,
    ready: Callable[[Path], bool],
    timeout: float,
    sigint_ignored: bool = False,
) -> tuple[int, str, str]:
    """`python -m engine.cli ARGS...` recording to ``log``, sent ``signum`` once ``ready(log)``
    (the run is under way, however long that takes): (status, stdout, stderr)."""
    command = ["-m", "engine.cli", *args, "--log", str(log)]

    def under_way() -> bool:
        return log.exists() and ready(log)

    return interrupt_python(command, signum, under_way, timeout, sigint_ignored=sigint_ignored)


def interrupt_python(
    args: list[str],
    signum: int,
    ready: Callable[[], bool],
    timeout: float,
    group: bool = False,
    sigint_ignored: bool = False,
) -> tuple[int, str, str]:
    """`python ARGS...` sent ``signum`` once ``ready()``: (status, stdout, stderr). With
    ``group``, to its whole process group, worker processes included, as a terminal's Ctrl-C;
    with ``sigint_ignored``, started as `nohup` or a script's `&` start it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with workers_ignore_ctrl_c() if sigint_ignored else contextlib.nullcontext():
        proc = subprocess.Popen(
            [sys.executable, *args], start_new_session=group,
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        while proc.poll() is None and not ready():
            time.sleep(0.02)
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # and close its pipes: left to the collector, they fail a later test
    return proc.returncode, out, err


def assert_interrupted(result: tuple[int, str, str], status: int, log: Path) -> SessionLog:
    """The run ended as a signal should end it: its status, one line on stderr, and a log
    whose verdict line says `interrupted` with the counters of exactly the events logged."""
    code, out, err = result
    assert code == status, err
    assert err == "slotlab: interrupted\n"
    assert out == ""
    recorded = read_log(log)
    assert recorded.verdict is not None
    assert recorded.verdict.verdict == "interrupted"
    assert recorded.verdict.summary.events == len(recorded.event_lines) > 0
    return recorded
