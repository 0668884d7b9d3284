"""Determinism: a seed and its inputs decide every byte of the log.

Two interpreters with different hash seeds write identical logs; `replay --verify` re-executes
every log into the same bytes; and a live session driven through the API (faults injected,
paused, stepped, sped up, at whatever moment the caller's task happened to run) replays
identically from the commands its log recorded.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from engine.events import Command, Event, Injected
from engine.faults import FaultError
from engine.log import read_log
from engine.runner import make_config, verify_log
from engine.session import Session
from engine.sim.pacing import Pacing

from .helpers import one_line, run_cli

CASES = {
    "split-legacy-race": ["--scenario", "split", "--strategy", "legacy", "--fault", "race"],
    "split-inhibit-race": [
        "--scenario", "split", "--strategy", "inhibit", "--fault", "race", "--duration", "300us",
    ],
    "merge-atomic-gp-delay": [
        "--scenario", "merge", "--strategy", "atomic-list", "--seed", "7",
        "--fault", "race", "--fault", "gp-delay=delay=30us,probability=50", "--duration", "300us",
    ],
    "dirty-log-naive": [
        "--scenario", "dirty-log", "--strategy", "legacy", "--naive", "--seed", "4",
        "--duration", "300us",
    ],
    "busted-reader-stall": [
        "--scenario", "split", "--strategy", "busted", "--fault", "reader-stall", "--duration", "300us",
    ],
    "weeds-mmio-len0": ["--scenario", "weeds", "--strategy", "mmio-len0"],
    "move-convert-gaps": [
        "--scenario", "move", "--strategy", "convert", "--seed", "11",
        "--fault", "ioctl-gap=delay=5us,probability=30", "--duration", "300us",
    ],
    "resize-mmio-len0-gpa-scripted": [
        "--scenario", "resize", "--strategy", "mmio-len0-gpa", "--seed", "5",
        "--faults", "SCRIPT", "--duration", "300us",
    ],
}  # fmt: skip

SCRIPT = """# scripted faults: TIME FAULT
60us race
120us reader-stall=vcpu=1,duration=20us
200us ioctl-gap=delay=10us
"""


@pytest.mark.slow  # three fresh interpreters per case
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_seed_same_bytes_whatever_the_hash_seed(
    case: str, log_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    args = list(CASES[case])
    if "SCRIPT" in args:
        script = tmp_path / "faults.txt"
        script.write_text(SCRIPT)
        args[args.index("SCRIPT")] = str(script)
    name = f"{case}.jsonl"
    first = run_cli("run", *args, "--log", name, cwd=log_dir, env={"PYTHONHASHSEED": "0"})
    second = run_cli("run", *args, "--log", name, cwd=other, env={"PYTHONHASHSEED": "4242"})
    # run exits with its verdict (0 ok, 1 violation, 3 crashed, 4 livelock): the same one twice.
    assert first.stderr == ""
    assert first.returncode in (0, 1, 3, 4)
    assert second.returncode == first.returncode, second.stderr
    a, b = (log_dir / name).read_bytes(), (other / name).read_bytes()
    assert a == b
    assert len(a.splitlines()) > 3  # a header, events and a verdict
    replay = run_cli("replay", name, "--verify", cwd=log_dir, env={"PYTHONHASHSEED": "99"})
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert one_line(replay.stdout).startswith("verified: ")


# --- commands from outside, at arbitrary moments ------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def commands(self) -> list[Command]:
        return [e for e in self.events if isinstance(e, Command)]


def _session(
    scenario: str, strategy: str, log: Path, pacing: Pacing | None, seed: int = 3
) -> tuple[Session, Recorder]:
    rec = Recorder()
    config = make_config(scenario, strategy, seed=seed, duration_ns=600_000)
    return Session(config, log_path=str(log), pacing=pacing, observers=(rec,)), rec


async def _run_with(session: Session, controller: Callable[[], Awaitable[None]]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(controller)
        await session.run()
        nursery.cancel_scope.cancel()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("scenario", "strategy"),
    [("split", "inhibit"), ("hotplug", "legacy"), ("dirty-log", "busted"), ("split", "mmio-len0")],
)
async def test_live_session_replays_byte_for_byte(
    scenario: str, strategy: str, log_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Paced session under a mock clock: inject, pause, step, change speed and resume from a
    concurrent task while it runs, then replay the log."""
    log = log_dir / f"live-{scenario}-{strategy}.jsonl"
    session, rec = _session(scenario, strategy, log, Pacing(speed=1.0))
    sent: list[str] = []

    def send(name: str, **args: str) -> None:
        session.send(name, **args)
        sent.append(name)

    async def controller() -> None:
        await trio.sleep(60e-6)  # 60 us of (mock) wall time = 60 us virtual at speed 1
        send("inject", fault="ioctl-gap=delay=15us")
        await trio.sleep(45e-6)
        send("inject", fault="reader-stall=vcpu=1,duration=30us")
        send("pause")
        await trio.testing.wait_all_tasks_blocked()
        frozen = session.bus.now, session.bus.seq
        await trio.sleep(1.0)  # paused: a second of wall time moves nothing
        assert (session.bus.now, session.bus.seq) == frozen
        send("inject", fault="race")
        send("step", count="3")
        await trio.testing.wait_all_tasks_blocked()
        send("speed", speed="4")
        send("resume")
        await trio.sleep(30e-6)
        send("inject", fault="gp-delay=delay=20us")
        await trio.sleep(20e-6)
        send("speed", speed="inf")

    await _run_with(session, controller)
    applied = [c.name for c in rec.commands()]
    assert applied == sent[: len(applied)]
    assert applied[:4] == ["inject", "inject", "pause", "inject"]
    calls = [c.call for c in rec.commands()]
    assert calls == sorted(calls)
    assert any(isinstance(e, Injected) and e.fault == "reader-stall" for e in rec.events)
    result = await trio.to_thread.run_sync(verify_log, str(log))
    assert result.ok, result.message


@pytest.mark.trio
@pytest.mark.parametrize("spacing", [1, 7, 40])
async def test_flat_out_session_with_injections_replays(spacing: int, log_dir: Path) -> None:
    """Flat out, the controller's task runs whenever trio happens to schedule it between
    hand-overs: the commands land at arbitrary calls, and the log still replays."""
    log = log_dir / f"flat-{spacing}.jsonl"
    session, rec = _session("split", "legacy", log, None, seed=spacing)
    plan = [
        ("inject", {"fault": "ioctl-gap=delay=5us"}),
        ("pause", {}),
        ("inject", {"fault": "reader-stall=vcpu=0,duration=10us"}),
        ("resume", {}),
        ("inject", {"fault": "race"}),
        ("speed", {"speed": "inf"}),
    ]

    async def controller() -> None:
        for name, args in plan:
            for _ in range(spacing):
                await trio.lowlevel.checkpoint()
            session.send(name, **args)

    await _run_with(session, controller)
    assert rec.commands(), "no command landed before the run ended"
    result = await trio.to_thread.run_sync(verify_log, str(log))
    assert result.ok, result.message
    # The replay applies each command at the same sequencer call it followed live.
    replayed = read_log(log)
    assert [c.call for c in replayed.events if isinstance(c, Command)] == [
        c.call for c in rec.commands()
    ]


@pytest.mark.trio
async def test_commands_sent_before_the_run_apply_at_the_first_hand_over(log_dir: Path) -> None:
    log = log_dir / "early.jsonl"
    session, rec = _session("split", "legacy", log, None)
    session.send("inject", fault="race")
    await session.run()
    first = rec.commands()[0]
    assert (first.name, first.args) == ("inject", {"fault": "race"})
    assert session.result is not None
    assert session.result.verdict == "crashed"
    assert (await trio.to_thread.run_sync(verify_log, str(log))).ok


def test_a_bad_injection_is_refused_before_it_is_queued(tmp_path: Path) -> None:
    session, rec = _session("split", "legacy", tmp_path / "bad.jsonl", None)
    with pytest.raises(FaultError, match="unknown fault"):
        session.send("inject", fault="meteor")
    with pytest.raises(FaultError):
        session.send("inject", fault="race=window=soon")
    trio.run(session.run)
    assert rec.commands() == []


def test_speed_inf_is_flat_out() -> None:
    assert not Pacing(speed=math.inf).live
    assert Pacing(speed=1.0).live
    assert Pacing(paused=True).live
