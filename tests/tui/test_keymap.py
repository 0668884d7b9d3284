"""Remapping keys by binding id, from the environment or a TOML file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tui.app import SlotlabApp
from tui.keymap import KeymapError, load_keymap, parse_keymap_text
from tui.options import LaunchOptions

from .helpers import commands, press, screen_text, settle

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
        at = app.host.live.position  # type: ignore[union-attr]
        await press(app, pilot, "space")  # no longer bound
        assert app.host.live.position == at  # type: ignore[union-attr]
        await press(app, pilot, "n")
        assert app.host.live.position == at + 1  # type: ignore[union-attr]


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
        at = app.host.live.position  # type: ignore[union-attr]
        await press(app, pilot, "space")
        assert app.host.live.position == at + 1  # type: ignore[union-attr]


def test_unknown_ids_and_clashes_are_one_line_and_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tui.cli import main

    for text, message in [
        ("pause=P;bogus=x", "SLOTLAB_KEYMAP: no binding has the id 'bogus'"),
        ("pause=q", "SLOTLAB_KEYMAP: 'q' would be both quit and pause on the live screen"),
    ]:
        monkeypatch.setenv("SLOTLAB_KEYMAP", text)
        assert main(["tui", "--no-log"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert err.startswith(f"slotlab: {message}")


@pytest.mark.asyncio
async def test_a_keymap_that_hides_quit_is_not_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTLAB_KEYMAP", "pause=q;bogus=x")
    app = SlotlabApp(LaunchOptions(paused=True, log_path="sessions/k.jsonl"))
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await settle(app, pilot)
        assert any("bogus" in n.message for n in app._notifications)
        footer = screen_text(app).splitlines()[-1]
        assert "q Quit" in footer
        await press(app, pilot, "p")
        assert [c.name for c in commands(app)] == ["resume"]


@pytest.mark.asyncio
async def test_help_shows_keys_as_people_read_them(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        markdown: str = app.screen.markdown  # type: ignore[attr-defined]
        assert "| `+ or =` | Faster |" in markdown
        assert "| `? or f1` | Help |" in markdown
        assert "| `<` | Pan left |" in markdown
        for raw in ("equals_sign", "question_mark", "less_than_sign", "plus,"):
            assert raw not in markdown.split("## Glyphs")[0], raw
