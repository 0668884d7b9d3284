"""tui.cli: the TUI commands and the hand-off of everything else to engine.cli."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tui import cli
from tui.options import DEFAULT_SPEED, SPEEDS, LaunchOptions, faster, slower


def _recorder(seen: list[LaunchOptions]) -> Callable[..., int]:
    """A stand-in for cli.run_app that records the options it was given."""

    def run_app(options: LaunchOptions, mouse: bool = True) -> int:
        seen.append(options)
        return 0

    return run_app


def _recorder_with_mouse(seen: list[tuple[LaunchOptions, bool]]) -> Callable[..., int]:
    def run_app(options: LaunchOptions, mouse: bool = True) -> int:
        seen.append((options, mouse))
        return 0

    return run_app


def test_pyproject_points_the_console_script_at_the_tui_cli() -> None:
    """Through tui/entry.py, which loads the command line behind its own signal handlers."""
    import tomllib

    from tui import entry

    root = Path(__file__).resolve().parents[2]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["slotlab"] == "tui.entry:main"
    assert entry._load() is cli.main


def test_no_arguments_start_the_demo_with_no_fault_armed(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[LaunchOptions] = []
    monkeypatch.setattr(cli, "run_app", _recorder(seen))
    assert cli.main([]) == 0
    options = seen[0]
    assert (options.scenario, options.strategy) == ("pam-shadow", "legacy")
    assert options.faults == []  # legacy survives most updates until `r` arms the race
    assert options.speed == DEFAULT_SPEED < 1e-3  # slow motion
    assert options.record


def test_tui_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[LaunchOptions, bool]] = []
    monkeypatch.setattr(cli, "run_app", _recorder_with_mouse(seen))
    argv = [
        "tui", "--scenario", "merge", "--strategy", "inhibit", "--seed", "3",
        "--speed", "2e-5", "--paused", "--fault", "gp-delay=delay=5us", "--no-log",
        "--theme", "light", "--no-mouse", "--backend", "model",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    options, mouse = seen[0]
    assert (options.scenario, options.strategy, options.seed) == ("merge", "inhibit", 3)
    assert options.speed == 2e-5
    assert options.paused
    assert options.faults == ["gp-delay=delay=5us"]
    assert not options.record
    assert options.theme == "textual-light"
    assert not mouse
    assert cli.main(["tui", "--no-faults"]) == 0
    assert seen[-1][0].faults == []
    assert cli.main(["tui", "--speed", "inf"]) == 0
    assert math.isinf(seen[-1][0].speed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tui", "--scenario", "nope"], "nope"),
        (["tui", "--fault", "meteor"], "unknown fault"),
        (["tui", "--backend", "kvm", "--strategy", "busted"], "busted"),
        (["replay", "/nonexistent.jsonl"], "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("slotlab: ")
    assert message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tui", "--speed", "-1"], "speed must be positive"),
        (["tui", "--speed", "nan"], "speed must be positive"),
        (["tui", "--vcpus", "0"], "argument --vcpus: must be 1..1024, not 0"),
        (["tui", "--vcpus", "1.5"], "argument --vcpus: not an integer: '1.5'"),
        (["tui", "--duration", "7200s"], "argument --duration: must be 1..3600000000000 ns"),
        (["tui", "--seed", str(1 << 64)], "argument --seed: must be 0.."),
        (["serve", "--port", "0"], "argument --port: must be 1..65535, not 0"),
    ],
)
def test_a_bad_number_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused while parsing, before a TUI or a server starts: one line naming the option."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_other_commands_go_to_the_engine_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["strategies"]) == 0
    assert "legacy" in capsys.readouterr().out
    assert cli.main(["run", "--no-log", "--json", "--fault", "race"]) == 3  # crashed
    assert '"verdict":"crashed"' in capsys.readouterr().out


def test_replay_without_verify_opens_the_tui(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "run.jsonl"
    assert cli.main(["run", "--log", str(log)]) == 3  # crashed
    seen: list[LaunchOptions] = []
    monkeypatch.setattr(cli, "run_app", _recorder(seen))
    assert cli.main(["replay", str(log), "--paused", "--speed", "1e-4"]) == 0
    assert seen[0].replay == str(log)
    assert seen[0].paused
    assert seen[0].speed == 1e-4
    # With --verify it is the engine's headless verification.
    assert cli.main(["replay", str(log), "--verify"]) == 0


def test_serve_binds_to_localhost_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[dict[str, Any]] = []

    class FakeServer:
        def __init__(self, command: str, host: str, port: int, title: str) -> None:
            started.append({"command": command, "host": host, "port": port})

        def serve(self) -> None:
            pass

    import tui.serve

    # tui.serve holds its own name for the server class; patch that one, or a real server
    # would start and the test would wait on it for ever.
    monkeypatch.setattr(tui.serve, "Server", FakeServer)
    assert cli.main(["serve"]) == 0
    assert started[0]["host"] == "127.0.0.1"
    assert started[0]["port"] == 8000
    assert started[0]["command"].endswith("-m tui.cli tui")
    # Beyond loopback without a token needs --no-auth (the token path: test_serve_auth.py).
    assert (
        cli.main(
            ["serve", "--host", "0.0.0.0", "--port", "9001", "--no-auth", "--strategy", "inhibit"]
        )
        == 0
    )
    assert started[1]["host"] == "0.0.0.0"
    assert started[1]["port"] == 9001
    assert started[1]["command"].endswith("tui --strategy inhibit")
    # Options for the served TUI are checked before anything listens.
    assert cli.main(["serve", "--scenario", "nope"]) == 2
    assert len(started) == 2


def test_bench_registers_the_tui_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.bench import suite

    monkeypatch.setattr(suite, "GROUPS", dict(suite.GROUPS))
    cli.register_bench()
    assert suite.GROUPS["tui"] == ("tui.bench", "run_tui_benchmarks")


def test_help_lists_the_tui_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "slotlab serve" in out
    assert "slotlab replay LOG" in out
    assert "compare" in out


def test_speed_ladder() -> None:
    assert faster(DEFAULT_SPEED) > DEFAULT_SPEED
    assert slower(DEFAULT_SPEED) < DEFAULT_SPEED
    assert math.isinf(faster(1.0))
    assert slower(SPEEDS[0]) == SPEEDS[0]
    assert list(SPEEDS) == sorted(SPEEDS)
