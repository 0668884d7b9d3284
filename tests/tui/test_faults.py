"""Every fault, on demand: from its key and from the command palette, through its form."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets import Input

from engine.events import Injected
from engine.faults import FAULT_KINDS
from tui.app import SlotlabApp
from tui.screens.choose import ChoiceScreen
from tui.screens.fault_form import FaultForm

from .helpers import commands, events, press, session, settle

AppFactory = Callable[..., SlotlabApp]
KEYS = {
    "ioctl-gap": "g",
    "race": "r",
    "reader-stall": "s",
    "gp-delay": "d",
    "weeds": "w",
    "smi": "m",
}


@pytest.mark.asyncio
async def test_the_race_key_arms_the_race_at_once(app_factory: AppFactory) -> None:
    """The demo's key: `r` needs no form (`i` offers the race with its arguments)."""
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "r")
        assert not isinstance(app.screen, FaultForm)
        injects = [c for c in commands(app) if c.name == "inject"]
        assert [c.args["fault"] for c in injects] == ["race=window=2ms"]
        assert "race" in [s.kind.name for s in session(app).injector.armed]


@pytest.mark.asyncio
@pytest.mark.parametrize("name", [n for n in FAULT_KINDS if n != "race"])
async def test_fault_key_opens_its_form_and_enter_injects(
    app_factory: AppFactory, name: str
) -> None:
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press(KEYS[name])
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FaultForm)
        assert form.kind.name == name
        # Every parameter of the fault has a field, filled with its default.
        for key, value in FAULT_KINDS[name].params.items():
            assert form.query_one(f"#param-{key}", Input).value == value
        await press(app, pilot, "enter")
        assert not isinstance(app.screen, FaultForm)
        injects = [c for c in commands(app) if c.name == "inject"]
        assert len(injects) == 1
        assert injects[0].args["fault"].startswith(name)
        if name in ("reader-stall", "weeds", "smi"):
            # These act on a vCPU at once; the others arm for their next opportunity.
            assert any(isinstance(e, Injected) and e.fault == name for e in events(app))
        else:
            armed = [s.kind.name for s in session(app).injector.armed]
            assert name in armed


@pytest.mark.asyncio
async def test_form_parameters_reach_the_engine(app_factory: AppFactory) -> None:
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FaultForm)
        form.query_one("#param-duration", Input).value = "1ms"
        form.query_one("#param-vcpu", Input).value = "1"
        await press(app, pilot, "enter")
        inject = next(c for c in commands(app) if c.name == "inject")
        assert inject.args == {"fault": "reader-stall=vcpu=1,duration=1ms"}
        stalls = [e for e in events(app) if isinstance(e, Injected)]
        assert stalls[-1].target == "vcpu1"
        assert stalls[-1].params["duration"] == "1ms"


@pytest.mark.asyncio
async def test_bad_parameter_is_refused_in_the_form(app_factory: AppFactory) -> None:
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("d")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, FaultForm)
        form.query_one("#param-delay", Input).value = "soon"
        await press(app, pilot, "enter")
        assert app.screen is form  # still open, saying why
        assert "bad duration" in str(form.query_one("#form-error").render())
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, FaultForm)
        assert not [c for c in commands(app) if c.name == "inject"]


@pytest.mark.asyncio
async def test_i_lists_the_faults_then_opens_the_form(app_factory: AppFactory) -> None:
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        await pilot.press("down", "down", "enter")  # the third: reader-stall
        await pilot.pause()
        assert isinstance(app.screen, FaultForm)
        assert app.screen.kind.name == list(FAULT_KINDS)[2]


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["gp-delay", "weeds"])
async def test_palette_injects_a_fault(app_factory: AppFactory, name: str) -> None:
    app = app_factory(faults=[])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*f"inject fault: {name}")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FaultForm)
        assert app.screen.kind.name == name
        await press(app, pilot, "enter")
        assert [c.args["fault"].split("=")[0] for c in commands(app) if c.name == "inject"] == [
            name
        ]
