"""2,000 random keys, palette sequences among them, at 40x12 and at 300x100: ten runs of
each from fixed seeds, so a failure replays with its seed. Counted in keys, never seconds.

Afterwards the way out must still work: Escape four times, then `q` quits.

A soak test (each run is minutes on a loaded 2-core machine): `make test-soak`. It found the DuplicateIds palette crash (seed 40005), a
palette timer and busy indicator outliving the palette, and a double dismiss emptying the
screen stack (all fixed; see tui/palette.py and SlotlabApp.pop_screen).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tui.app import SlotlabApp
from tui.screens.monitor import MonitorScreen

from .helpers import screen_text, settle
from .test_robustness import KEYS, instant_compare, key_event

AppFactory = Callable[..., SlotlabApp]

# The stepping and time-travel keys besides (b and j are among KEYS' letters): `,` re-executes
# the run from its start, so a storm of them is a storm of restarts.
STORM_KEYS = [*KEYS, "comma", "full_stop", "shift+space", "shift+left"]
PRESSES = 2_000
BURST = 5
RUNS = 10
SIZES = ((40, 12), (300, 100))

# What a presenter types into the palette: a few letters of a command, then Enter.
PALETTE = [
    "switch strategy inhibit",
    "switch strategy atomic",
    "switch scenario merge",
    "inject fault race",
    "compare",
    "restart",
    "pause",
    "step",
    "run to end",
    "toggle dark",
    "keys",
    "help",
    "replay",
    "breakpoint",
    "jump",
    "step back",
]


def key_sequence(seed: int) -> list[str]:
    """PRESSES keys: single random keys, and now and then a whole palette sequence."""
    rng = random.Random(seed)
    keys: list[str] = []
    while len(keys) < PRESSES:
        if rng.random() < 0.04:
            words = rng.choice(PALETTE)
            typed = words[: rng.randint(1, len(words))]
            tail = rng.choice([["enter"], ["down", "enter"], ["escape"], []])
            keys += ["ctrl+p", *(" " if c == " " else c for c in typed), *tail]
        else:
            keys.append(rng.choice(STORM_KEYS))
    return keys[:PRESSES]


@pytest.mark.soak
@pytest.mark.asyncio
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("run", range(RUNS))
async def test_random_keys_then_escape_and_quit(
    app_factory: AppFactory, size: tuple[int, int], run: int
) -> None:
    seed = 1_000 * size[0] + run
    keys = key_sequence(seed)
    app = app_factory(compare_fn=instant_compare)
    quits: list[int] = []
    real_quit, real_exit = app.action_quit, app.exit

    async def count_quit() -> None:
        quits.append(1)

    def count_exit(*args: object, **kwargs: object) -> None:
        quits.append(1)

    # Every way out lands here during the storm (`q`, ctrl+q, ctrl+c, and the palette's
    # Quit, which calls App.exit itself); the real one is tried at the end.
    app.action_quit = count_quit  # type: ignore[method-assign]
    app.exit = count_exit  # type: ignore[method-assign]
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        driver = app._driver
        assert driver is not None
        for i in range(0, len(keys), BURST):
            for key in keys[i : i + BURST]:
                event = key_event(key)
                event.set_sender(app)
                driver.send_message(event)
            await pilot._wait_for_screen()
            assert app.is_running, f"seed {seed}: the app ended after {i + BURST} keys"
        await pilot.pause()
        assert quits, f"seed {seed}: no way out was pressed"
        assert any(isinstance(s, MonitorScreen) for s in app.screen_stack)
        screen_text(app)
        app.action_quit = real_quit  # type: ignore[method-assign]
        app.exit = real_exit  # type: ignore[method-assign]
        for _ in range(4):
            await pilot.press("escape")
            await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        stack = [type(s).__name__ for s in app.screen_stack]
        assert not app.is_running, f"seed {seed}: `q` did not quit; screens: {stack}"
