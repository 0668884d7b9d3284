"""TUI benchmarks: frame time at two scales, engine throughput with the TUI attached, and the
latency from a key press to the engine's Command event.

Measured headless under App.run_test: the compositor still renders every frame, only the
terminal write is skipped (about half a millisecond a frame in a real terminal). A frame is
one snapshot drawn: SlotlabApp.refresh_now and the screen updates (Screen._on_timer_update)
that follow it, wrapped with perf_counter for the measurement only.
Targets are ratios within one run where they can be, so a slow machine moves both sides.

    .venv/bin/python -m tui.bench [--quick]      or      slotlab bench --only tui
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from textual.screen import Screen

from engine.api import Measure, format_table, make_config, run_session
from engine.events import Command, Event
from tui import hostloop
from tui.options import LaunchOptions
from tui.scale import write_scale_scenario

SIZE = (200, 60)
WARM_UP = 0.3
SMALL = (4, 8)
LARGE = (64, 1024)
STEADY_AFTER = 5
"""Throughput is counted from the run's first fifth of events on, both with the TUI and
headless: the app's start-up work lands in the first fifth of a TUI run."""


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(len(ordered) * p / 100) - 1)]


class _FrameClock:
    """Times frames while in use. A frame is one snapshot drawn: SlotlabApp.refresh_now (the
    widgets take the snapshot) and every screen update after it (Screen._on_timer_update:
    layout, compositor) until the next one. Timing the screen updates alone counted a frame
    that took two of them as two cheap frames, and halved the median."""

    def __init__(self) -> None:
        self.frames: list[float] = []
        self._open: float | None = None  # the frame being drawn, seconds so far
        self._originals: list[tuple[type[Any], str, Callable[..., None]]] = []

    def restart(self) -> None:
        """Forget every frame so far (start-up is not steady state)."""
        self.frames.clear()
        self._open = None

    def _draw(self, seconds: float) -> None:
        if self._open is not None:
            self.frames.append(self._open)
        self._open = seconds

    def _update(self, seconds: float) -> None:
        if self._open is not None:
            self._open += seconds

    def __enter__(self) -> _FrameClock:
        from tui.app import SlotlabApp

        for owner, name, record in (
            (SlotlabApp, "refresh_now", self._draw),
            (Screen, "_on_timer_update", self._update),
        ):
            original = getattr(owner, name)
            self._originals.append((owner, name, original))
            setattr(owner, name, _timed(original, record))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in self._originals:
            setattr(owner, name, original)
        self._originals.clear()


def _timed(method: Callable[[Any], None], record: Callable[[float], None]) -> Callable[[Any], None]:
    def timed(self: Any) -> None:
        start = time.perf_counter()
        method(self)
        record(time.perf_counter() - start)

    return timed


def _app(options: LaunchOptions) -> Any:
    from tui.app import SlotlabApp

    return SlotlabApp(options)


async def _frames(scenario: str, seconds: float, view: str = "1") -> list[float]:
    """Frame times while the session runs flat out for ``seconds`` of wall time, with the
    given view (1 overview, 2 slots, 3 vCPUs, ...) on screen."""
    options = LaunchOptions(
        scenario=scenario,
        strategy="legacy",
        speed=math.inf,
        faults=[],
        record=False,
        duration_ns=1_000_000_000,
    )
    app = _app(options)
    with _FrameClock() as clock:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(view)
            await pilot.pause()
            # Start-up and the view's first layout are not steady-state frames.
            await asyncio.sleep(WARM_UP)
            clock.restart()
            await asyncio.sleep(seconds)
            frames = list(clock.frames)
    return frames


class _SteadyRate:
    """Events per wall second over a run's events from ``from_seq`` on: the run before it
    is start-up (the app's first layout and styles), not throughput. An observer, cheap
    enough for every event of both the TUI and the headless run."""

    def __init__(self, from_seq: int) -> None:
        self.from_seq = from_seq
        self.mark: tuple[float, int] | None = None

    def __call__(self, event: Event) -> None:
        if self.mark is None and event.seq >= self.from_seq:
            self.mark = (time.perf_counter(), event.seq)

    def per_second(self, events: int) -> float:
        end = time.perf_counter()
        if self.mark is None:
            raise RuntimeError(f"the run ended before event #{self.from_seq}")
        start, seq = self.mark
        return (events - seq) / (end - start)


async def _throughput_tui(scenario: str, vcpus: int, duration_ns: int, from_seq: int) -> float:
    options = LaunchOptions(
        scenario=scenario,
        strategy="inhibit",
        speed=math.inf,
        faults=[],
        record=False,
        vcpus=vcpus,
        duration_ns=duration_ns,
    )
    app = _app(options)
    rate = _SteadyRate(from_seq)
    async with app.run_test(size=SIZE):
        live = app.host.live
        assert live is not None
        live.subscribe(rate)
        await app.host.wait_done()
        return rate.per_second(live.events)


def _throughput_headless(scenario: str, vcpus: int, duration_ns: int, from_seq: int) -> float:
    config = make_config(scenario, "inhibit", vcpus=vcpus, duration_ns=duration_ns)
    rate = _SteadyRate(from_seq)
    summary = run_session(config, observers=(rate,))
    return rate.per_second(int(summary.events))


async def _key_latency(scenario: str, speed: float, presses: int) -> list[float]:
    """Seconds from pilot.press('p') to the pause/resume Command event."""
    options = LaunchOptions(
        scenario=scenario,
        strategy="legacy",
        speed=speed,
        faults=[],
        record=False,
        duration_ns=10_000_000_000,
    )
    app = _app(options)
    latencies: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        live = app.host.live
        assert live is not None
        seen: list[float] = []

        def watch(event: Event) -> None:
            if isinstance(event, Command):
                seen.append(time.perf_counter())

        live.subscribe(watch)
        for _ in range(presses):
            seen.clear()
            start = time.perf_counter()
            await pilot.press("p")
            deadline = start + 5.0
            while not seen:
                if time.perf_counter() > deadline or not app.host.running:
                    raise RuntimeError("the pause key never reached the engine")
                await asyncio.sleep(0.0005)
            latencies.append(seen[0] - start)
    return latencies


async def _measure(quick: bool, workdir: Path, from_seq: int) -> dict[str, Any]:
    seconds = 1.5 if quick else 4.0
    out: dict[str, Any] = {"size": list(SIZE), "quick": quick}
    scenarios = {}
    for vcpus, regions in (SMALL, LARGE):
        path = write_scale_scenario(workdir, regions=regions, vcpus=vcpus)
        scenarios[(vcpus, regions)] = str(path)
        frames = await _frames(str(path), seconds)
        key = f"{vcpus}x{regions}"
        out[f"frame_ms_median_{key}"] = round(statistics.median(frames) * 1e3, 3)
        out[f"frame_ms_p99_{key}"] = round(_percentile(frames, 99) * 1e3, 3)
        out[f"frames_{key}"] = len(frames)
    # The other big views at the large scale, for information.
    for view, name in (("2", "slots"), ("3", "vcpus")):
        frames = await _frames(scenarios[LARGE], seconds, view)
        out[f"frame_ms_median_{name}_64x1024"] = round(statistics.median(frames) * 1e3, 3)
        out[f"frame_ms_p99_{name}_64x1024"] = round(_percentile(frames, 99) * 1e3, 3)
    small, large = (out[f"frame_ms_median_{v}x{r}"] for v, r in (SMALL, LARGE))
    out["frame_ratio_large_vs_small"] = round(large / small, 3) if small else math.inf

    # Headless and with the TUI, alternately, so both see the same machine; the headless
    # run goes to a thread (a plain trio.run must not share this thread's signal wakeup fd
    # with the loop) while the loop waits.
    duration = _duration(quick)
    heads: list[float] = []
    tuis: list[float] = []
    for _ in range(1 if quick else 3):
        heads.append(await asyncio.to_thread(_throughput_headless, "split", 8, duration, from_seq))
        tuis.append(await _throughput_tui("split", 8, duration, from_seq))
    out["events_per_s_tui"] = round(statistics.median(tuis))
    out["events_per_s_headless"] = round(statistics.median(heads))
    out["throughput_ratio"] = round(
        statistics.median(t / h for t, h in zip(tuis, heads, strict=True)), 3
    )

    presses = 10 if quick else 30
    idle = await _key_latency("split", 1e-6, presses)
    busy = await _key_latency(scenarios[LARGE], math.inf, presses)
    out["key_latency_ms_median"] = round(statistics.median(idle) * 1e3, 3)
    out["key_latency_ms_p99"] = round(_percentile(idle, 99) * 1e3, 3)
    out["key_latency_ms_median_busy_64x1024"] = round(statistics.median(busy) * 1e3, 3)
    out["key_latency_ms_p99_busy_64x1024"] = round(_percentile(busy, 99) * 1e3, 3)
    return out


def _duration(quick: bool) -> int:
    return 3_000_000 if quick else 10_000_000


def _from_seq(duration: int) -> int:
    """Where the steady state starts: every run of one config emits the same events, and
    one headless run says how many."""
    config = make_config("split", "inhibit", vcpus=8, duration_ns=duration)
    return int(run_session(config).events) // STEADY_AFTER


def measure_tui(quick: bool) -> dict[str, Any]:
    """Every TUI figure in one dict (see the module docstring)."""
    from_seq = _from_seq(_duration(quick))
    with tempfile.TemporaryDirectory() as tmp:
        return hostloop.run(_measure(quick, Path(tmp), from_seq))


def run_tui_benchmarks(quick: bool) -> list[Measure]:
    """The figures as Measures for `slotlab bench` (registered by tui.cli)."""
    r = measure_tui(quick)
    small, large = (f"{v}x{n}" for v, n in (SMALL, LARGE))
    return [
        Measure(f"tui.frame_ms_median.{small}", r[f"frame_ms_median_{small}"], "ms"),
        Measure(f"tui.frame_ms_p99.{small}", r[f"frame_ms_p99_{small}"], "ms"),
        Measure(
            f"tui.frame_ms_median.{large}",
            r[f"frame_ms_median_{large}"],
            "ms",
            target="under 16 ms",
            ratio=r[f"frame_ms_median_{large}"],
            limit=16.0,
        ),
        Measure(f"tui.frame_ms_p99.{large}", r[f"frame_ms_p99_{large}"], "ms"),
        Measure(
            f"tui.frame_ms_median.slots_view.{large}", r["frame_ms_median_slots_64x1024"], "ms"
        ),
        Measure(
            f"tui.frame_ms_median.vcpus_view.{large}", r["frame_ms_median_vcpus_64x1024"], "ms"
        ),
        Measure(
            "tui.frame_ratio_large_vs_small",
            r["frame_ratio_large_vs_small"],
            "x",
            target=f"{large} median within 2x of {small}",
            ratio=r["frame_ratio_large_vs_small"],
            limit=2.0,
        ),
        Measure(
            "tui.throughput_vs_headless",
            r["throughput_ratio"],
            "x",
            target="engine events/s with the TUI >= 0.5 x headless",
            ratio=r["throughput_ratio"],
            limit=0.5,
            at_least=True,
        ),
        Measure(
            "tui.key_latency_ms_median",
            r["key_latency_ms_median"],
            "ms",
            target="press to Command event under 50 ms",
            ratio=r["key_latency_ms_median"],
            limit=50.0,
        ),
        Measure("tui.key_latency_ms_p99", r["key_latency_ms_p99"], "ms"),
        Measure(
            "tui.key_latency_ms_median.busy_64x1024",
            r["key_latency_ms_median_busy_64x1024"],
            "ms",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quick = "--quick" in args
    if "--json" in args:
        print(msgspec.json.encode(measure_tui(quick)).decode())
        return 0
    print(format_table(run_tui_benchmarks(quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
