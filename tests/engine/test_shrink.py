"""`slotlab shrink`: a failing log becomes a smaller run that fails the same way and verifies."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from engine.cli import main
from engine.log import read_log
from engine.runner import verify_log
from tests.engine.test_hunt import RARE


def test_shrink_drops_what_the_crash_does_not_need(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """split under legacy crashes with no fault at all and with one vCPU: both go."""
    log = tmp_path / "race.jsonl"
    argv = ["run", "--strategy", "legacy", "--vcpus", "3", "--fault", "race", "--fault", "gp-delay"]
    assert main([*argv, "--log", str(log)]) == 3  # run exits 3: crashed
    capsys.readouterr()
    out = tmp_path / "small.jsonl"
    assert main(["shrink", str(log), "--out", str(out), "--seed-tries", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["verified"] is True
    small = read_log(out)
    assert small.verdict is not None
    assert small.verdict.verdict == "crashed"
    assert small.header.vcpus == 1
    assert small.header.faults == []
    assert small.header.duration_ns < read_log(log).header.duration_ns
    # The printed command reproduces the shrunk log byte for byte.
    again = tmp_path / "again.jsonl"
    command = shlex.split(got["command"].replace(str(out), str(again)))
    assert command[:2] == ["slotlab", "run"]
    assert main([*command[1:], "--json"]) == 3  # crashed again
    assert again.read_bytes() == out.read_bytes()


def test_a_hunted_rare_crash_shrinks_to_one_update(tmp_path: Path) -> None:
    scenario = tmp_path / "rare.toml"
    scenario.write_text(RARE)
    found = tmp_path / "found.jsonl"
    argv = ["hunt", "--scenario", str(scenario), "--budget", "40", "--workers", "0"]
    assert main([*argv, "--log", str(found)]) == 0
    out = tmp_path / "small.jsonl"
    assert main(["shrink", str(found), "--out", str(out), "--seed-tries", "4"]) == 0
    small = read_log(out)
    assert small.verdict is not None
    assert small.verdict.verdict == "crashed"
    assert small.header.vcpus <= 2
    assert small.verdict.summary.transactions <= 2
    assert verify_log(str(out)).ok


@pytest.mark.parametrize("args", [["--strategy", "inhibit"], ["--duration", "5us"]])
def test_shrink_refuses_a_run_that_did_not_fail(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "ok.jsonl"
    assert main(["run", *args, "--log", str(log)]) == 0
    capsys.readouterr()
    assert main(["shrink", str(log)]) == 2
    err = capsys.readouterr().err
    assert err == f"slotlab: {log}: the run ended ok: there is no failure to shrink\n"
