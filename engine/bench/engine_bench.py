"""Engine benchmarks: headless throughput, the trio floor under it, and recording's cost.

Every target is a ratio measured in the same run, so a busy machine slows both sides alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import trio

from engine.bench import Measure
from engine.runner import make_config
from engine.session import Session

BARE_LIMIT = 2.0
TARGET_VCPUS = (1, 8)


def _timed_run(vcpus: int, duration_ns: int, log: str | None) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds, events, trio task switches) for one headless run. A
    hand-over that gives the baton back to the actor that asked costs no switch, so the bare
    loop does not make it either: at 1 vCPU half the hand-overs are such, and counting them
    doubled the floor."""
    config = make_config("split", "inhibit", seed=1, vcpus=vcpus, duration_ns=duration_ns)
    session = Session(config, log_path=log)
    start, cpu = time.perf_counter(), time.process_time()
    trio.run(session.run)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, session.bus.seq, session.seq.switches


def _bare_handoffs(count: int, tasks: int) -> tuple[float, float]:
    """(wall, CPU) seconds for a plain trio program passing one baton `count` times among `tasks`
    tasks, the same primitive the sequencer uses: what trio itself costs per switch."""
    done = trio.Event()

    async def main() -> None:
        parked: list[trio.lowlevel.Task] = []
        remaining = count

        def abort(_: object) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.SUCCEEDED

        async def worker(i: int) -> None:
            nonlocal remaining
            parked.append(trio.lowlevel.current_task())
            while True:
                await trio.lowlevel.wait_task_rescheduled(abort)
                remaining -= 1
                if remaining <= 0:
                    done.set()
                    return
                trio.lowlevel.reschedule(parked[(i + 1) % tasks])

        async with trio.open_nursery() as nursery:
            for i in range(tasks):
                nursery.start_soon(worker, i)
            while len(parked) < tasks:
                await trio.lowlevel.checkpoint()
            trio.lowlevel.reschedule(parked[0])
            await done.wait()
            nursery.cancel_scope.cancel()

    start, cpu = time.perf_counter(), time.process_time()
    trio.run(main)
    return time.perf_counter() - start, time.process_time() - cpu


def run_engine_benchmarks(quick: bool) -> list[Measure]:
    repeats = 3 if quick else 5
    duration = 2_000_000 if quick else 10_000_000
    out: list[Measure] = []
    for vcpus in (1, 8, 64):
        runs = [_timed_run(vcpus, duration, None) for _ in range(repeats)]
        walls = [r[0] for r in runs]
        events, switches = runs[0][2], runs[0][3]
        out.append(
            Measure(
                f"engine.events_per_s.{vcpus}vcpu", events / statistics.median(walls), "events/s"
            )
        )
        # Both sides take their best repeat, as timeit advises: another program's burst on
        # the machine only ever adds time. The spread says how much it added here.
        bares = [_bare_handoffs(switches, vcpus + 3) for _ in range(repeats)]
        ratio = min(walls) / min(b[0] for b in bares)
        target = (
            f"within {BARE_LIMIT:g}x of a bare trio loop making the same task switches"
            if vcpus in TARGET_VCPUS
            else "informative: wall time over a bare trio loop making the same task switches"
        )
        out.append(
            Measure(
                f"engine.vs_bare_trio.{vcpus}vcpu",
                ratio,
                "x",
                target=target,
                ratio=ratio if vcpus in TARGET_VCPUS else None,
                limit=BARE_LIMIT if vcpus in TARGET_VCPUS else None,
            )
        )
        # CPU time is what a loaded machine changes least: on a shared host it says what the
        # wall ratio would be on an idle one.
        cpu_ratio = min(r[1] for r in runs) / min(b[1] for b in bares)
        out.append(
            Measure(
                f"engine.vs_bare_trio_cpu.{vcpus}vcpu",
                cpu_ratio,
                "x",
                target="informative: the same ratio in CPU seconds",
            )
        )
        spread = (max(walls) - min(walls)) / statistics.median(walls)
        out.append(Measure(f"engine.run_spread.{vcpus}vcpu", 100 * spread, "%"))
    with tempfile.TemporaryDirectory() as tmp:
        off, on, sizes = [], [], []
        for i in range(repeats):
            off.append(_timed_run(8, duration, None)[0])
            log = str(Path(tmp) / f"run{i}.jsonl")
            wall, _, events, _ = _timed_run(8, duration, log)
            on.append(wall)
            sizes.append(Path(log).stat().st_size / max(events, 1))
        ratio = statistics.median(off) / statistics.median(on)
        out.append(
            Measure(
                "engine.recording_on_vs_off",
                ratio,
                "x",
                target="throughput with recording >= 0.9 x without",
                ratio=ratio,
                limit=0.9,
                at_least=True,
            )
        )
        out.append(Measure("engine.log_bytes_per_event", statistics.median(sizes), "B"))
    return out
