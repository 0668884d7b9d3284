"""Remapping keys by binding id, from the environment or a TOML file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tui.app import SlotlabApp
from tui.keymap import KeymapError, load_keymap, parse_keymap_text
from tui.options import LaunchOptions

from .helpers import commands, press, settle

AppFactory = Callable[..., SlotlabApp]


def test_parse_env_text() -> None:
    assert parse_keymap_text("pause=P; step=n,period") == {"pause": "P", "step": "n,period"}
    with pytest.raises(KeymapError, match="not id=keys"):
        parse_keymap_text("pause")


def test_file_then_env(tmp_path: Path) -> None:
    path = tmp_path / "keymap.toml"
    path.write_text('[keymap]\npause = "P"\nstep = "n"\n')
    env = {"SLOTLAB_KEYMAP_FILE": str(path), "SLOTLAB_KEYMAP": "step=m"}
    assert load_keymap(env) == {"pause": "P", "step": "m"}
    xdg = tmp_path / "xdg"
    (xdg / "slotlab").mkdir(parents=True)
    (xdg / "slotlab" / "keymap.toml").write_text('quit = "x"\n')
    assert load_keymap({"XDG_CONFIG_HOME": str(xdg)}) == {"quit": "x"}


def test_bad_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(KeymapError, match="no such keymap file"):
        load_keymap({"SLOTLAB_KEYMAP_FILE": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("pause = 3\n")
    with pytest.raises(KeymapError, match="must be a string"):
        load_keymap({"SLOTLAB_KEYMAP_FILE": str(bad)})


@pytest.mark.asyncio
async def test_a_remapped_key_drives_the_engine(app_factory: AppFactory) -> None:
    app = SlotlabApp(LaunchOptions(paused=True, log_path="sessions/k.jsonl"), keymap={"step": "n"})
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "space")  # no longer bound
        assert not commands(app)
        await press(app, pilot, "n")
        assert [c.name for c in commands(app)] == ["step"]


@pytest.mark.asyncio
async def test_keymap_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTLAB_KEYMAP", "pause=P")
    app = SlotlabApp(LaunchOptions(paused=True, log_path="sessions/k.jsonl", speed=1e-9))
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "P")
        assert [c.name for c in commands(app)] == ["resume"]
        # The help shows the key as remapped.
        await pilot.press("question_mark")
        await pilot.pause()
        assert "| `P` | Pause | `pause` |" in app.screen.markdown  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_broken_keymap_is_a_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLOTLAB_KEYMAP", "nonsense")
    app = SlotlabApp(LaunchOptions(paused=True, log_path="sessions/k.jsonl"))
    async with app.run_test(notifications=True) as pilot:
        await settle(app, pilot)
        assert any("keymap ignored" in n.message for n in app._notifications)
        await press(app, pilot, "space")
        assert [c.name for c in commands(app)] == ["step"]
