"""Bad input from the command line: one line on stderr naming what was wrong (and for a file,
where: `file:line: reason`), nothing on stdout, and a non-zero exit. Every case runs the real
CLI in a fresh interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.log import LogError, read_log
from engine.runner import verify_log
from engine.scenarios.loader import builtin_dir

from .helpers import ROOT, one_line, run_cli

SPLIT = (builtin_dir() / "split.toml").read_text()


def assert_refused(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    line = one_line(done.stderr)
    assert done.returncode != 0, done
    assert done.stdout == "", done.stdout
    assert line.startswith("slotlab"), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# --- the command line --------------------------------------------------------------------

ARGS = {
    "unknown scenario": (["run", "--scenario", "nope"], ["unknown scenario 'nope'"]),
    "unknown strategy": (["run", "--strategy", "nope"], ["--strategy", "'nope'"]),
    "duration without unit": (["run", "--duration", "10"], ["--duration", "bad duration '10'"]),
    "duration zero": (["run", "--duration", "0ms"], ["--duration", "must be positive"]),
    "duration unit unknown": (["run", "--duration", "3parsecs"], ["--duration", "'3parsecs'"]),
    "duration negative": (["run", "--duration=-5ms"], ["--duration", "'-5ms'"]),
    "duration unit alone": (["run", "--duration", "ms"], ["--duration"]),
    "seed not a number": (["run", "--seed", "abc"], ["--seed", "'abc'"]),
    "vcpus zero": (["run", "--vcpus", "0", "--no-log"], ["--vcpus", "must be 1..1024, not 0"]),
    "unknown fault": (["run", "--fault", "meteor"], ["unknown fault 'meteor'"]),
    "fault bad duration": (["run", "--fault", "race=window=soon"], ["fault race", "'soon'"]),
    "fault bad knob": (["run", "--fault", "race=probability=200"], ["probability must be 0..100"]),
    "fault bad interval": (["run", "--fault", "gp-delay=interval=0"], ["interval must be 1.."]),
    "fault unknown param": (["run", "--fault", "race=colour=red"], ["unknown parameter 'colour'"]),
    "fault param without value": (["run", "--fault", "race=window"], ["'window' is not key=value"]),
    "fault times not int": (["run", "--fault", "weeds=times=x"], ["fault weeds"]),
    "host not key=value": (["run", "--host", "nokv"], ["--host takes KEY=VALUE"]),
    "host unknown option": (["run", "--host", "bogus=1", "--no-log"], ["bogus"]),
    "host bad value": (["run", "--host", "nr_address_spaces=3", "--no-log"], ["nr_address_spaces"]),
    "unknown command": (["frobnicate"], ["'frobnicate'"]),
    "replay without verify": (["replay", "x.jsonl"], ["needs --verify"]),
    "compare unknown scenario": (["compare", "--scenario", "nope"], ["unknown scenario 'nope'"]),
    "compare no seeds": (["compare", "--seeds", "0"], ["--seeds", "must be 1..100000, not 0"]),
    "compare no jobs": (["compare", "--jobs", "0"], ["--jobs", "must be 1..256, not 0"]),
    "compare bad fault": (["compare", "--fault", "meteor"], ["unknown fault 'meteor'"]),
    "compare bad duration": (["compare", "--duration", "5"], ["--duration"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ARGS))
def test_bad_arguments(case: str, tmp_path: Path) -> None:
    argv, fragments = ARGS[case]
    assert_refused(run_cli(*argv, cwd=tmp_path), *fragments)
    assert not (tmp_path / "sessions").exists()  # nothing was recorded


def test_a_reader_that_goes_away_gets_no_traceback() -> None:
    """`slotlab scenarios | head -1`: the pipe closes under the writer."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "scenarios"],
        stdout=write, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""


# --- fault files -------------------------------------------------------------------------

FAULT_FILES = {
    "bad time": ("10us race\nsoon reader-stall\n", 2, "bad duration 'soon'"),
    "unknown fault": ("# a comment\n\n10us race\n20us meteor\n", 4, "unknown fault 'meteor'"),
    "time only": ("10us\n", 1, "unknown fault ''"),
    "bad parameter": ("5us gp-delay=delay=long\n", 1, "fault gp-delay"),
    "bad knob": ("1us race\n2us race\n3us race=probability=-1\n", 3, "probability"),
    "vcpu out of range": ("10us reader-stall=vcpu=7\n", 1, "vcpu 7 does not exist"),
    "time of 2 hours": ("1us race\n7200s race\n", 2, "time must be 0..3600000000000"),
    "gpa negative": ("5us weeds=gpa=-4096\n", 1, "gpa must be 0.."),
    "interval huge": ("5us race=interval=99999999999\n", 1, "interval must be 1.."),
    "probability nan": ("5us race=probability=nan\n", 1, "probability must be 0..100"),
}


@pytest.mark.parametrize("case", sorted(FAULT_FILES))
def test_malformed_fault_file(case: str, tmp_path: Path) -> None:
    text, line_no, reason = FAULT_FILES[case]
    path = tmp_path / "faults.txt"
    path.write_text(text)
    assert_refused(run_cli("run", "--faults", str(path), "--no-log"), f"{path}:{line_no}: ", reason)


def test_missing_fault_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.txt"
    assert_refused(run_cli("run", "--faults", str(path), "--no-log"), str(path), "cannot read")


# --- scenario files ----------------------------------------------------------------------


def _edit(old: str, new: str) -> tuple[str, int]:
    """split.toml with one edit, and the 1-based line the edit starts on."""
    assert SPLIT.count(old) == 1, old
    text = SPLIT.replace(old, new)
    return text, SPLIT[: SPLIT.index(old)].count("\n") + 1


SHADOW = '{ name = "shadow", kind = "rom", gpa = 0x10000, size = 0x10000, hva = 0x7f0000010000, priority = 1 }'

REGION = "gpa = 0x10000, size = 0x10000, hva = 0x7f0000010000"
SCENARIOS = {
    "toml syntax": ("vcpus = 2", "vcpus = = 2", "not valid TOML"),
    "toml unclosed table": ("[layouts.split]", "[layouts.split", "not valid TOML"),
    "unknown top-level key": ("vcpus = 2", 'colour = "red"', "unknown key 'colour'"),
    "vcpus not a number": ("vcpus = 2", 'vcpus = "two"', "'vcpus' must be an integer"),
    "bad period": ('period = "50us"', 'period = "50"', "'period'"),
    "sequence names an unknown layout": (
        'sequence = ["merged", "split"]', 'sequence = ["merged", "splat"]', "'splat', which is not defined",
    ),
    "bad region kind": (SHADOW, SHADOW.replace('"rom"', '"flash"'), "region 1: kind must be ram, rom or mmio"),
    "unaligned region": (SHADOW, SHADOW.replace("size = 0x10000", "size = 0x10001"), "region 1: gpa, size and hva must be page aligned"),
    "negative region gpa": (SHADOW, SHADOW.replace("gpa = 0x10000", "gpa = -4096"), "region 1: gpa must be 0.."),
    "unknown region key": (SHADOW, SHADOW.replace("priority = 1", "priority = 1, colour = 3"), "region 1: unknown key 'colour'"),
    "ram without hva": (SHADOW, SHADOW.replace(", hva = 0x7f0000010000", ""), "region 1: a rom region needs an 'hva'"),
    "unknown instruction": ("  jmp top", "  frob top", "guest program: unknown instruction 'frob'"),
    "unknown label": ("  jmp top", "  jmp nowhere", "guest program: 'nowhere'"),
    "operand missing": ("  jmp top", "  jmp", "guest program: jmp needs an operand"),
    "label defined twice": ("  inc [0x3000]", "top:", "label 'top' defined twice"),
    "gpa near 2^64": (REGION, "gpa = 0xfffffffffffff000, size = 0x10000, hva = 0x7f0000010000", "gpa + size must not pass 2^64"),
    "hva near 2^64": (REGION, "gpa = 0x10000, size = 0x10000, hva = 0xfffffffffffff000", "hva + size must not pass 2^64"),
    "gpa past 2^64": (REGION, "gpa = 0x10000000000000000, size = 0x10000, hva = 0x7f0000010000", "gpa must be 0.."),
    "vcpus 100000": ("vcpus = 2", "vcpus = 100000", "'vcpus' must be 1..1024, not 100000"),
    "log_dirty a string": ("priority = 1 }", 'priority = 1, log_dirty = "false" }', "'log_dirty' must be true or false"),
    "priority 2^40": ("priority = 1 }", f"priority = {1 << 40} }}", "priority must be 0.."),
    "as_id 5": ("priority = 1 }", "priority = 1, as_id = 5 }", "as_id must be 0..1"),
    "slot 40000": ("priority = 1 }", "priority = 1, slot = 40000 }", "slot must be 0..32763"),
    "period 1ns": ('period = "50us"', 'period = "1ns"', "'period': period must be 100.."),
    "duration 2h": ('duration = "1ms"', 'duration = "2h"', "'duration'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_malformed_scenario_file(case: str, tmp_path: Path) -> None:
    old, new, reason = SCENARIOS[case]
    text, line_no = _edit(old, new)
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert_refused(
        run_cli("run", "--scenario", str(path), "--no-log"), f"{path}:{line_no}: ", reason
    )


def test_region_errors_name_the_region_line_in_array_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "tables.toml"
    path.write_text(
        'name = "tables"\nentry = 0x1000\nprogram = """\ntop:\n  jmp top\n"""\n'
        "[layouts.a]\n"
        "[[layouts.a.regions]]\n"  # line 8
        'kind = "ram"\ngpa = 0\nsize = 0x20000\nhva = 0x7f0000000000\n\n'
        "[[layouts.a.regions]]\n"  # line 14
        'kind = "mmio"\ngpa = 0x30001\nsize = 0x1000\n'
    )
    assert_refused(run_cli("run", "--scenario", str(path), "--no-log"), f"{path}:14: ", "region 1")


def test_missing_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert_refused(
        run_cli("run", "--scenario", str(path), "--no-log"), f"{path}:1: ", "cannot read"
    )


def test_compare_reports_a_bad_scenario_file_before_running(tmp_path: Path) -> None:
    text, line_no = _edit("  jmp top", "  frob top")
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert_refused(
        run_cli("compare", "--scenario", str(path), "--seeds", "1"), f"{path}:{line_no}: "
    )


# --- session logs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("good") / "good.jsonl"
    done = run_cli(
        "run", "--scenario", "split", "--strategy", "inhibit", "--fault", "race",
        "--duration", "200us", "--log", str(path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = verify_log(str(path))  # the undamaged log replays: every damage below is ours
    assert result.ok, result.message
    return path.read_bytes()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _damage(data: bytes, case: str) -> tuple[bytes, int, str]:
    """A damaged copy of a good log, the line the error must name, and a fragment of it."""
    lines = _lines(data)
    n = len(lines)
    if case == "empty":
        return b"", 1, "empty file"
    if case == "truncated mid-line":
        cut = sum(len(line) + 1 for line in lines[:10]) + len(lines[10]) // 2
        return data[:cut], 11, "truncated line"
    if case == "truncated in the header":
        return data[:40], 1, "truncated line"
    if case == "not json":
        lines[5] = lines[5][:-1] + b",,}"
        return b"\n".join(lines) + b"\n", 6, "corrupted line"
    if case == "binary garbage":
        lines[3] = b"\x00\xff\xfe garbage"
        return b"\n".join(lines) + b"\n", 4, "corrupted line"
    if case == "wrong field type":
        lines[7] = lines[7].replace(b'"t":', b'"t":"x",', 1)
        return b"\n".join(lines) + b"\n", 8, "not a slotlab log line"
    if case == "unknown event kind":
        lines[7] = b'{"kind":"meteor","t":1,"seq":1}'
        return b"\n".join(lines) + b"\n", 8, "not a slotlab log line"
    if case == "header missing":
        return b"\n".join(lines[1:]) + b"\n", 1, "the first line must be the header"
    if case == "second header":
        return b"\n".join([*lines[:4], lines[0], *lines[4:]]) + b"\n", 5, "a second header"
    if case == "verdict not last":
        return (
            b"\n".join([*lines[:4], lines[-1], *lines[4:]]) + b"\n",
            5,
            "the verdict must be the last line",
        )
    if case == "schema from the future":
        lines[0] = lines[0].replace(b'"schema":3', b'"schema":9', 1)
        return b"\n".join(lines) + b"\n", 1, "schema 9"
    if case == "cut at a line boundary":
        return b"\n".join(lines[:20]) + b"\n", 21, "no verdict line"
    if case == "verdict line lost":
        return b"\n".join(lines[:-1]) + b"\n", n, "no verdict line"
    if case == "header with an unknown strategy":
        lines[0] = lines[0].replace(b'"strategy":"inhibit"', b'"strategy":"nope"', 1)
        return b"\n".join(lines) + b"\n", 1, "unknown strategy 'nope'"
    if case == "header with a bad scripted fault":
        lines[0] = lines[0].replace(b'"fault_script":[]', b'"fault_script":[[5,"meteor"]]', 1)
        return b"\n".join(lines) + b"\n", 1, "unknown fault 'meteor'"
    if case == "header with a broken scenario":
        lines[0] = lines[0].replace(b"vcpus = 2", b"vcpus = = 2", 1)
        return b"\n".join(lines) + b"\n", 1, "not valid TOML"
    raise AssertionError(case)


LOG_CASES = [
    "empty", "truncated mid-line", "truncated in the header", "not json", "binary garbage",
    "wrong field type", "unknown event kind", "header missing", "second header",
    "verdict not last", "schema from the future", "cut at a line boundary", "verdict line lost",
    "header with an unknown strategy", "header with a bad scripted fault",
    "header with a broken scenario",
]  # fmt: skip


@pytest.mark.parametrize("case", LOG_CASES)
def test_damaged_log_is_refused_by_replay_verify(
    case: str, good_log: bytes, tmp_path: Path
) -> None:
    data, line_no, reason = _damage(good_log, case)
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(data)
    assert_refused(run_cli("replay", str(path), "--verify"), f"{path}:{line_no}: ", reason)


def test_missing_log(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    assert_refused(run_cli("replay", str(path), "--verify"), str(path), "cannot read")


def test_tampered_log_fails_verification(good_log: bytes, tmp_path: Path) -> None:
    """Well-formed but not what the run produced: a verification failure (exit 1) naming
    the first event that differs."""
    lines = _lines(good_log)
    i = next(k for k, line in enumerate(lines) if b'"kind":"fault"' in line)
    lines[i] = lines[i].replace(b'"vcpu":0', b'"vcpu":1').replace(b'"vcpu":1', b'"vcpu":0', 1)
    if lines[i] == _lines(good_log)[i]:
        lines[i] = lines[i].replace(b'"gpa":', b'"gpa":1', 1)
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = run_cli("replay", str(path), "--verify")
    assert done.returncode == 1
    assert done.stdout.startswith(f"MISMATCH: event {i} differs")
    assert done.stderr == ""


# --- killed runs -------------------------------------------------------------------------


def test_a_log_cut_mid_line_reads_up_to_its_last_complete_line(
    good_log: bytes, tmp_path: Path
) -> None:
    lines = _lines(good_log)
    cut = sum(len(line) + 1 for line in lines[:25]) + 7
    path = tmp_path / "cut.jsonl"
    path.write_bytes(good_log[:cut])
    with pytest.raises(LogError, match=r":26: truncated line .* 25 complete lines precede it"):
        read_log(path)
    # Everything before the torn line is intact.
    path.write_bytes(good_log[: cut - 7])
    log = read_log(path)
    assert log.verdict is None
    assert log.event_lines == lines[1:25]


def test_a_killed_run_leaves_a_log_readable_up_to_its_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "engine.cli", "run", "--scenario", "hotplug",
            "--strategy", "inhibit", "--duration", "10s", "--log", str(path),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # The writer flushes at least every 100 ms: wait for a few flushes (however long a
        # loaded machine takes to write them), then kill.
        while not (path.exists() and path.stat().st_size > 200_000):
            assert proc.poll() is None, "the run ended before writing its log"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    data = path.read_bytes()
    complete = data[: data.rindex(b"\n") + 1]
    lines = complete.count(b"\n")
    if complete != data:
        with pytest.raises(LogError, match=rf":{lines + 1}: truncated line"):
            read_log(path)
        path.write_bytes(complete)
    log = read_log(path)
    assert log.verdict is None
    assert len(log.event_lines) == lines - 1
    assert log.header.scenario == "hotplug"
