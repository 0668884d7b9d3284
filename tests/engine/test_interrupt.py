"""Stopping a run part-way: SIGINT/SIGTERM, a cancelled caller, at any point of the run.

Whatever the moment, the log holds exactly the events the run had produced (a prefix of the
uninterrupted run's, nothing invented by clean-up code), and a signal ends it with an
`interrupted` verdict line carrying the counters so far.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cli
from engine.compare import compare_matrix
from engine.core.config import RunConfig
from engine.events import Event, Subscriber
from engine.log import encode_event, read_log
from engine.runner import make_config, verify_log
from engine.session import Session
from engine.signals import Interrupted, deferred, raise_if_noted, workers_ignore_ctrl_c
from engine.sweep import unit

from .helpers import assert_interrupted, interrupt_cli_run, interrupt_python, run_cli

# Short runs that cover an update in flight: inhibit's pause of every vCPU (the clean-up that
# once emitted an `inhibit end` the run never reached), the race, an SRCU grace period.
CASES = [
    ("split", "inhibit"),
    ("merge", "legacy"),
    ("split", "atomic-list"),
    ("hotplug", "inhibit"),
]
DURATION_NS = 400_000
FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@functools.cache
def full_run(scenario: str, strategy: str) -> tuple[bytes, ...]:
    produced: list[bytes] = []
    config = make_config(scenario, strategy, duration_ns=DURATION_NS, faults=["race"])
    session = Session(config, observers=(lambda e: produced.append(encode_event(e)),))
    trio.run(session.run)
    return tuple(produced)


@FUZZ
@given(
    case=st.sampled_from(CASES),
    at=st.floats(0, 1),
    signum=st.sampled_from([signal.SIGINT, signal.SIGTERM]),
)
def test_a_signal_at_any_event_ends_the_log_with_an_interrupted_verdict(
    case: tuple[str, str], at: float, signum: signal.Signals, tmp_path: Path
) -> None:
    full = full_run(*case)
    stop_at = int(at * (len(full) - 1))
    config = make_config(*case, duration_ns=DURATION_NS, faults=["race"])
    path = tmp_path / f"{case[0]}-{case[1]}-{stop_at}.jsonl"
    session = Session(config, log_path=str(path))

    async def main() -> None:
        # As engine.signals.run_interruptible's watcher: a task that runs between hand-overs.
        async with trio.open_nursery() as nursery:

            async def signal_arrives() -> None:
                while session.bus.seq <= stop_at:
                    await trio.lowlevel.checkpoint()
                session.interrupt(signum)

            nursery.start_soon(signal_arrives)
            await session.run()

    trio.run(main)
    log = read_log(path)
    assert log.verdict is not None
    assert log.verdict.verdict == "interrupted"
    assert signum.name in log.verdict.explanation
    n = len(log.event_lines)
    # It stops at the next hand-over: at or after the event, never before, and no event the
    # uninterrupted run would not have produced there.
    assert stop_at < n <= len(full)
    assert tuple(log.event_lines) == full[:n]
    assert log.verdict.summary.events == n
    assert log.verdict.summary.verdict == "interrupted"
    result = verify_log(str(path))
    assert result.ok, result.message


@FUZZ
@given(case=st.sampled_from(CASES), at=st.floats(0, 1))
def test_a_run_cancelled_at_any_event_invents_nothing(case: tuple[str, str], at: float) -> None:
    """Cancelling the caller's scope (the TUI quitting, Ctrl-C reaching a task) tears the
    actors down wherever they are parked: no trio internal error, and the events are a prefix
    of the uninterrupted run's."""
    full = full_run(*case)
    stop_at = int(at * (len(full) - 1))
    produced: list[bytes] = []
    scope = trio.CancelScope()

    def observe(event: Event) -> None:
        produced.append(encode_event(event))
        if event.seq == stop_at:
            scope.cancel()

    config = make_config(*case, duration_ns=DURATION_NS, faults=["race"])
    session = Session(config, observers=(observe,))

    async def main() -> None:
        with scope:
            await session.run()

    trio.run(main)
    assert stop_at < len(produced) <= len(full)
    assert tuple(produced) == full[: len(produced)]


# --- the real command line ----------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_slotlab_run_cleanly(
    signum: signal.Signals, status: int, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    result = interrupt_cli_run(
        ["run", "--scenario", "split", "--strategy", "inhibit", "--duration", "100s"],
        path,
        signum,
        ready=lambda log: log.stat().st_size > 20_000,  # its log has events
        timeout=600,
    )
    assert_interrupted(result, status, path)
    verified = run_cli("replay", str(path), "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "up to the interruption" in verified.stdout
    checked = run_cli("check", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "the run was interrupted" in checked.stdout


def test_sigterm_between_runs_ends_a_command_like_ctrl_c(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Outside a run's own handler (loading, a sweep waiting on its workers), SIGTERM still
    ends the command with its status and one line."""

    def command() -> int:
        signal.raise_signal(signal.SIGTERM)
        return 0  # not reached: the handler raises

    assert cli.guarded(command) == 143
    assert capsys.readouterr().err == "slotlab: interrupted\n"


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm", "ctrl-c-to-the-group"],
)
def test_a_signal_stops_a_sweep_and_keeps_its_finished_rows(
    signum: signal.Signals, group: bool, tmp_path: Path
) -> None:
    """Through the `slotlab` executable itself, as a user runs it. A terminal's Ctrl-C goes to
    the LocalCluster's workers too; they leave stopping to slotlab, which stops cleanly, with
    the rows of the runs it finished in its Parquet."""
    out, logs = tmp_path / "sweep.parquet", tmp_path / "logs"
    args = ["-m", "tui.entry", "sweep", "--scenario", "split", "--strategy", "legacy"]
    args += ["--seeds", "100000", "--workers", "1", "--keep", "all", "--logs", str(logs)]

    def ready() -> bool:
        return logs.is_dir() and len(list(logs.iterdir())) >= 2

    command = [*args, "--out", str(out)]
    code, stdout, stderr = interrupt_python(command, signum, ready, 600, group=group)
    assert (code, stdout, stderr) == (128 + signum, "", "slotlab: interrupted\n")
    kept = len(list(logs.iterdir()))
    rows = pq.read_table(out).num_rows
    assert kept - 1 <= rows <= kept  # the signal may fall between a run's log and its row


def test_a_signal_in_a_deferred_block_waits_for_a_point_where_stopping_is_safe() -> None:
    before = signal.getsignal(signal.SIGINT)
    reached = []

    def body() -> None:
        with deferred():
            signal.raise_signal(signal.SIGINT)
            reached.append("noted, not raised")
            raise_if_noted()
            reached.append("never")

    with pytest.raises(Interrupted) as stopped:
        body()
    assert stopped.value.signum == signal.SIGINT
    assert reached == ["noted, not raised"]
    assert signal.getsignal(signal.SIGINT) is before


def test_what_fails_after_a_signal_in_a_deferred_block_reports_the_signal() -> None:
    # A LocalCluster whose worker took a Ctrl-C fails to start: the signal is the news.

    def body() -> None:
        with deferred():
            signal.raise_signal(signal.SIGTERM)
            raise RuntimeError("Nanny failed to start.")

    with pytest.raises(Interrupted) as stopped:
        body()
    assert stopped.value.signum == signal.SIGTERM


def test_processes_started_under_workers_ignore_ctrl_c_ignore_it() -> None:
    before = signal.getsignal(signal.SIGINT)
    ignored = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
    probe = [sys.executable, "-c", ignored]
    with workers_ignore_ctrl_c():
        child = subprocess.run(probe, capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is before
    alone = subprocess.run(probe, capture_output=True, text=True, check=True)
    # Unless this test itself started with SIGINT ignored (a script's `&`).
    assert alone.stdout.strip() == str(before == signal.SIG_IGN)


def test_a_signal_during_compare_stops_it_and_is_no_failed_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compare --jobs 1 runs in this process: SIGTERM half-way through a run stops that run
    at its next hand-over, and compare with it, not as a run that "failed"."""
    leaked: list[int] = []

    class Signalled(Session):
        def __init__(self, config: RunConfig, observers: tuple[Subscriber, ...] = ()) -> None:
            def halfway(event: Event) -> None:
                # Past the boot layout, once the run's signal watcher is up.
                if self.bus.seq == 60 and self.seq.switches > 0:
                    signal.raise_signal(signal.SIGTERM)

            super().__init__(config, observers=(*observers, halfway))

    monkeypatch.setattr(unit, "Session", Signalled)
    # Had the signal escaped the run's handler, this one would see it, not pytest's default.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: leaked.append(signum))
    try:
        with pytest.raises(Interrupted) as stopped:
            compare_matrix("split", ["legacy"], seeds=2, jobs=1, faults=[])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.signum == signal.SIGTERM
    assert leaked == []


def test_sigterm_stops_a_run_started_with_sigint_ignored(tmp_path: Path) -> None:
    """`nohup slotlab run ... &`, or a script's `&`, starts it with SIGINT ignored; SIGTERM
    must still end its log with the verdict. (A worker's ignored SIGINT once stood for "the
    parent decides", and such a run died of SIGTERM with no verdict line.)"""
    path = tmp_path / "run.jsonl"
    result = interrupt_cli_run(
        ["run", "--scenario", "split", "--strategy", "inhibit", "--duration", "100s"],
        path,
        signal.SIGTERM,
        ready=lambda log: log.stat().st_size > 20_000,
        timeout=600,
        sigint_ignored=True,
    )
    assert_interrupted(result, 143, path)


def test_check_refuses_a_log_without_a_verdict_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    done = run_cli("run", "--duration", "200us", "--log", str(path), "--json")
    assert done.stderr == ""
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:30]) + b"\n")
    checked = run_cli("check", str(path))
    assert checked.returncode != 0  # nothing to agree with: the run never said how it ended
    assert "no verdict line" in checked.stdout
