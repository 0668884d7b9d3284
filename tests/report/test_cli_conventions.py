"""The command line a script can lean on: verdict exit codes, --expect in `git bisect run`,
--version, help on every option with its default, completion scripts, a man page, NO_COLOR,
and one line of error for every bad option."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import __version__
from engine.cli import EXIT_CODES
from tests.engine.helpers import ROOT
from tests.report.conftest import RUNS, VERDICTS
from tui import cli


def slotlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True, text=True, env=full, cwd=ROOT, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", list(RUNS))
def test_run_and_check_exit_with_the_verdict(verdict_logs: dict[str, Path], name: str) -> None:
    scenario, strategy, seed = RUNS[name]
    verdict = VERDICTS[name]
    run = ["run", "--no-log", "--scenario", scenario, "--strategy", strategy, "--seed", str(seed)]
    assert slotlab(*run).returncode == EXIT_CODES[verdict]
    assert slotlab("check", str(verdict_logs[name])).returncode == EXIT_CODES[verdict]
    assert slotlab("check", str(verdict_logs[name]), "--expect", verdict).returncode == 0
    other = "violation" if verdict != "violation" else "ok"
    assert slotlab(*run, "--expect", other).returncode == 1


def test_exit_codes_are_the_documented_ones() -> None:
    assert EXIT_CODES == {"ok": 0, "violation": 1, "crashed": 3, "livelock": 4}
    assert "0 ok, 1 violation, 3 crashed, 4 livelock" in slotlab("run", "--help").stdout


def test_git_bisect_run_finds_the_commit_that_went_from_inhibit_to_legacy(
    tmp_path: Path,
) -> None:
    """A history whose VMM switches from QEMU 8.0's inhibit (good) to the legacy
    DELETE+CREATE (bad) at its fourth commit: `git bisect run` with `slotlab run --expect ok`
    names that commit."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "vmm"
    repo.mkdir()
    git_env = {
        **os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }  # fmt: skip

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, env=git_env, capture_output=True, text=True, check=True
        ).stdout

    git("init", "-q")
    for n, strategy in enumerate(["inhibit"] * 3 + ["legacy"] * 4, 1):
        (repo / "strategy").write_text(strategy + "\n")
        git("add", "strategy")
        git("commit", "-q", "--allow-empty", "-m", f"commit {n}: {strategy}")
    first_bad = git("rev-list", "--reverse", "HEAD").split()[3]
    script = repo.parent / "is-good.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={ROOT} exec {sys.executable} -m tui.cli run --no-log --seed 3 "
        '--strategy "$(cat strategy)" --expect ok\n'
    )
    script.chmod(0o755)
    git("bisect", "start", "HEAD", git("rev-list", "--max-parents=0", "HEAD").strip())
    out = git("bisect", "run", str(script))
    assert f"{first_bad} is the first bad commit" in out


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _all_parsers(child)
    return found


def test_every_option_has_help_and_shows_its_default() -> None:
    for parser in _all_parsers(cli.build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            what = f"{parser.prog} {action.option_strings or action.dest}"
            assert action.help, f"{what} has no help text"
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
                assert "default" in str(action.help) or "(default: " in text, what
    help_text = cli.build_parser().format_help()
    for command in ("run", "check", "replay", "report", "export", "tui", "completion", "man"):
        assert command in help_text


def test_replay_help_shows_verify() -> None:
    assert "--verify" in slotlab("replay", "--help").stdout


def test_version() -> None:
    done = slotlab("--version")
    assert (done.returncode, done.stdout) == (0, f"slotlab {__version__}\n")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, tmp_path: Path) -> None:
    done = slotlab("completion", shell)
    assert done.returncode == 0, done.stderr
    for word in ("report", "export", "--format", "--expect"):
        assert word in done.stdout, f"{word} missing from the {shell} completion"
    binary = shutil.which(shell)
    if binary is None:
        return  # the script is there; this machine cannot parse-check it
    script = tmp_path / f"slotlab.{shell}"
    script.write_text(done.stdout)
    check = subprocess.run([binary, "-n", str(script)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_man_page_renders(tmp_path: Path) -> None:
    done = slotlab("man")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(".TH SLOTLAB")
    page = tmp_path / "slotlab.1"
    page.write_text(done.stdout)
    if shutil.which("man") is None:
        pytest.skip("man is not installed (.ci/run installs man-db)")
    shown = subprocess.run(
        ["man", "-l", str(page)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "SLOTLAB(1)" in shown.stdout
    assert "--expect" in shown.stdout.replace("\u2010", "-")


def test_no_color_is_respected() -> None:
    forced = slotlab("run", "--no-log", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    plain = slotlab(
        "run", "--no-log", env={"FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": "1"}
    )
    assert "\x1b[31m" in forced.stdout or "\x1b[1;31m" in forced.stdout  # red CRASHED
    assert "\x1b[3" not in plain.stdout
    assert "\x1b[1;3" not in plain.stdout


BAD = [
    ["run", "--seed", "x"], ["run", "--seed", "-1"], ["run", "--vcpus", "0"],
    ["run", "--duration", "5"], ["run", "--strategy", "nope"], ["run", "--scenario", "nope"],
    ["run", "--fault", "meteor"], ["run", "--host", "novalue"], ["run", "--host", "bogus=1"],
    ["run", "--backend", "vax"], ["run", "--expect", "fine"], ["run", "--perturb", "x"],
    ["check", "/nonexistent.jsonl"], ["check", "--expect", "nope", "x"],
    ["replay", "/nonexistent.jsonl", "--verify"], ["replay", "x", "--speed", "-1"],
    ["report", "/nonexistent.jsonl"], ["report", "x", "--width", "10"],
    ["report", "x", "--window", "5us"], ["report", "x", "--window", "9us..2us"],
    ["report", "x", "--around", "-1"], ["report", "x", "--format", "pdf"],
    ["export", "x"], ["export", "x", "--format", "svg"],
    ["export", "x", "--format", "asciicast", "--size", "10x10"],
    ["export", "x", "--format", "asciicast", "--speed", "0"],
    ["export", "x", "--format", "asciicast", "--asciicast-version", "4"],
    ["compare", "--jobs", "0"], ["compare", "--seeds", "x"], ["bench", "--bogus"],
    ["tui", "--theme", "pink"], ["tui", "--vcpus", "0"], ["completion", "tcsh"],
    ["serve", "--port", "0"],
]  # fmt: skip


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_every_bad_option_is_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("slotlab"), err
    assert "Traceback" not in err
