"""Stopping a run part-way: SIGINT/SIGTERM, a cancelled caller, at any point of the run.

Whatever the moment, the log holds exactly the events the run had produced (a prefix of the
uninterrupted run's, nothing invented by clean-up code), and a signal ends it with an
`interrupted` verdict line carrying the counters so far.
"""

from __future__ import annotations

import functools
import signal
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import Event
from engine.log import encode_event, read_log
from engine.runner import make_config, verify_log
from engine.session import Session

from .helpers import assert_interrupted, interrupt_cli_run, run_cli

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


def test_check_refuses_a_log_without_a_verdict_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    done = run_cli("run", "--duration", "200us", "--log", str(path), "--json")
    assert done.stderr == ""
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:30]) + b"\n")
    checked = run_cli("check", str(path))
    assert checked.returncode != 0  # nothing to agree with: the run never said how it ended
    assert "no verdict line" in checked.stdout
