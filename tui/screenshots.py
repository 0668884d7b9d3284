"""Regenerate the SVGs in screenshots/ from fixed seeds and sizes.

    .venv/bin/python -m tui.screenshots [--out screenshots]

Each picture is a scripted session: the virtual clock starts paused and is stepped (or run
flat out) to a fixed point, so the same command draws the same pictures on any machine. The
runs happen in a scratch directory so the paths on screen are the short relative ones.
These are documentation, not test baselines (tests/tui/__snapshots__ holds those).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

from engine.api import make_config, run_session
from engine.events import TxnCommit
from engine.snapshot import Snapshot
from tui.app import SlotlabApp
from tui.options import DEFAULT_SCENARIO, LaunchOptions

SIZE = (120, 36)
Script = Callable[[SlotlabApp, Pilot[int]], Awaitable[None]]


def _snap(app: SlotlabApp, events: bool = False) -> Snapshot:
    snap = app.host.snapshot(events=events)
    if snap is None:
        raise RuntimeError("no session is running")
    return snap


async def _step_until(app: SlotlabApp, done: Callable[[], bool], limit: int = 5000) -> None:
    for _ in range(limit):
        if done():
            break
        app.host.send("step", count="1")
        await app.settle()
    if not done():
        raise RuntimeError("the scripted state was never reached")


async def mid_race(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """The legacy split has deleted the slot both vCPUs fetch from; they retry."""
    await _step_until(app, lambda: _snap(app).spaces[0].active.slots == ())


async def crash(app: SlotlabApp, pilot: Pilot[int]) -> None:
    await pilot.press("e")
    await app.host.wait_done()


async def srcu(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """A reader stalled in an exit handler holds up the swap's grace period."""
    app.host.send("inject", fault="reader-stall=vcpu=0,duration=300us")

    def held_up() -> bool:
        gp = _snap(app).srcu.current
        return gp is not None and gp.phase == "scan2" and bool(gp.waiting_on)

    await _step_until(app, held_up)
    await pilot.press("4")


async def replay(app: SlotlabApp, pilot: Pilot[int]) -> None:
    await pilot.press("j")
    await pilot.pause()
    await pilot.press(*"#46", "enter")


def _commits(app: SlotlabApp) -> int:
    return sum(isinstance(e, TxnCommit) for e in _snap(app, events=True).events)


async def story_survives(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """The demo's start: legacy, no fault, four updates committed and the guest alive."""
    await _step_until(app, lambda: _commits(app) >= 4)


async def story_crash(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """Then `r`: the race is armed, and the next update kills the guest."""
    await story_survives(app, pilot)
    await pilot.press("r")
    await crash(app, pilot)


async def story_inhibit(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """inhibit with the race armed: vCPUs are kicked out of KVM_RUN for the update."""
    await pilot.press("r")
    await app.settle()
    await _step_until(app, lambda: _commits(app) >= 2 and _snap(app).inhibited)


async def breakpoint_stop(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """`slotlab --break delete`, then e: the run stops at the DELETE that opens the window."""
    await pilot.press("e")


async def compare(app: SlotlabApp, pilot: Pilot[int]) -> None:
    await pilot.press("c")
    await pilot.pause()
    await app.workers.wait_for_complete()


def _live(**overrides: object) -> SlotlabApp:
    """split with the race armed from the start (the race every run)."""
    options = LaunchOptions(
        scenario="split",
        faults=["race"],
        paused=True,
        log_path="sessions/20221111-120000-split-legacy.jsonl",
    )
    for key, value in overrides.items():
        setattr(options, key, value)
    return SlotlabApp(options, keymap={}, compare_jobs=1)


def scenes(workdir: Path) -> list[tuple[str, Callable[[], SlotlabApp], Script]]:
    log = workdir / "sessions" / "20221111-120000-split-legacy-recorded.jsonl"

    def replay_app() -> SlotlabApp:
        if not log.exists():
            run_session(
                make_config("split", "legacy", faults=["race"]), str(log.relative_to(workdir))
            )
        return SlotlabApp(
            LaunchOptions(replay=str(log.relative_to(workdir)), paused=True), keymap={}
        )

    def demo(strategy: str, breaks: tuple[str, ...] = ()) -> Callable[[], SlotlabApp]:
        """`slotlab` as it starts: the default scenario, no fault armed."""
        path = f"sessions/20221111-120000-{DEFAULT_SCENARIO}-{strategy}.jsonl"
        options = LaunchOptions(strategy=strategy, paused=True, log_path=path, breaks=list(breaks))
        return lambda: SlotlabApp(options, keymap={}, compare_jobs=1)

    return [
        ("story-1-legacy-survives", demo("legacy"), story_survives),
        ("story-2-race-kills-legacy", demo("legacy"), story_crash),
        ("story-3-inhibit-survives-the-race", demo("inhibit"), story_inhibit),
        ("main-mid-race", _live, mid_race),
        ("main-mid-race-light", lambda: _live(theme="textual-light"), mid_race),
        ("crash-verdict", _live, crash),
        ("srcu", lambda: _live(faults=[]), srcu),
        ("replay", replay_app, replay),
        ("compare", _live, compare),
        ("breakpoint-delete", demo("legacy", ("delete",)), breakpoint_stop),
    ]


async def _shoot(name: str, make: Callable[[], SlotlabApp], script: Script, out: Path) -> Path:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await script(app, pilot)
        await app.settle()
        await pilot.pause()
        svg = app.export_screenshot(title=f"slotlab: {name}")
    path = out / f"{name}.svg"
    path.write_text(svg)
    return path


async def _all(out: Path, only: str | None = None) -> list[Path]:
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        here = os.getcwd()
        os.chdir(tmp)
        try:
            for name, make, script in scenes(Path(tmp)):
                if only is not None and name != only:
                    continue
                made.append(await _shoot(name, make, script, out))
        finally:
            os.chdir(here)
    return made


def main(argv: list[str] | None = None) -> int:
    """--out DIR (default screenshots/); --only NAME draws one picture."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[args.index("--out") + 1]) if "--out" in args else Path("screenshots")
    only = args[args.index("--only") + 1] if "--only" in args else None
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(_all(out, only)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
