"""Fuzzing the four ways input gets in: the log reader (check, replay --verify), the scenario
loader, the fault-file parser and the command line. The property, for any input: success, or
one line of error (a ValueError naming where), never a traceback and never a hang (every
replay is bounded by the log it is compared with). Each runs a bounded number of examples in
the default suite and many more behind the `slow` marker."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import cli
from engine.faults import parse_fault_file
from engine.runner import check_log, make_config, run_session, verify_log
from engine.scenarios import parse_scenario
from engine.scenarios.loader import builtin_dir
from engine.vmm.flatview import FlatView

BUDGETS = [40, pytest.param(1500, marks=pytest.mark.slow, id="long")]
SPLIT = (builtin_dir() / "split.toml").read_text()


def fuzz(budget: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    """Run ``check`` on ``budget`` examples of ``strategy``."""
    test = settings(
        max_examples=budget,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(strategy)(check))
    test()


def error_of(fn: Callable[..., Any], *args: Any) -> str | None:
    """None when ``fn(*args)`` succeeds; its error's message when it raises ValueError (the
    one kind of failure bad input may cause); anything else propagates and fails the test."""
    try:
        fn(*args)
    except ValueError as err:
        return str(err)
    return None


def one_line(message: str | None) -> None:
    if message is not None:
        assert message
        assert "\n" not in message, message


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_log(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "good.jsonl"
    run_session(make_config("merge", "inhibit", duration_ns=150_000, faults=["race"]), str(path))
    return path.read_bytes()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """The good log with a few damages: bytes flipped, cut, lines dropped, duplicated,
    swapped, or replaced by other JSON, fields of a line given other values."""
    lines = data.split(b"\n")[:-1]
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "drop", "dup", "swap", "json", "field", "crlf"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "flip" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + bytes([draw(st.integers(0, 255))]) + lines[i][j + 1 :]
        elif op == "cut":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        elif op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "json":
            import msgspec

            lines[i] = msgspec.json.encode(draw(JSON))
        elif op == "field":
            import msgspec

            # A line an earlier damage left undecodable (bad JSON, or bad UTF-8 in a string,
            # which msgspec reports as UnicodeDecodeError) keeps that damage instead.
            with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
                obj = msgspec.json.decode(lines[i])
                if isinstance(obj, dict) and obj:
                    key = draw(st.sampled_from(sorted(obj)))
                    obj[key] = draw(JSON)
                    lines[i] = msgspec.json.encode(obj)
        elif op == "crlf":
            lines[i] += b"\r"
    tail = b"" if draw(st.booleans()) and lines else b"\n"
    return b"\n".join(lines) + tail


@pytest.mark.parametrize("budget", BUDGETS)
def test_check_and_verify_end_in_a_result_or_one_line(
    budget: int, good_log: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "fuzzed.jsonl"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        for read in (check_log, verify_log):
            one_line(error_of(read, str(path)))

    fuzz(budget, damaged(good_log), check)


# --- scenarios -----------------------------------------------------------------------------

VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "0x1000", "-1", "true", '"false"', '"x"', "[]", "{}", "1.5", '"1ns"']),
    st.text(max_size=10).map(repr),
)


@st.composite
def mutated_scenario(draw: st.DrawFn) -> str:
    lines = SPLIT.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "drop", "dup", "text"]))
        if op == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(VALUES)}"
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines.insert(i, draw(st.text(max_size=30)))
        if not lines:
            break
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_scenario_loader_ends_in_a_scenario_or_one_line(budget: int) -> None:
    def check(text: str) -> None:
        message = error_of(parse_scenario, text, "fuzzed.toml")
        one_line(message)
        if message is not None:
            assert message.startswith("fuzzed.toml:"), message
            return
        for layout in parse_scenario(text, "fuzzed.toml").layouts.values():
            for as_id in (0, 1):
                FlatView.render(layout.for_as(as_id))

    fuzz(budget, mutated_scenario() | st.text(max_size=200), check)


# --- fault files ---------------------------------------------------------------------------

FAULT_KEYS = [
    "vcpu", "gpa", "delay", "window", "duration", "probability", "interval", "times", "colour",
]  # fmt: skip
FAULT_VALUES = ["0", "1", "-1", "99", "0x1000", "1ms", "nan", "inf", "abc", str(2**70), ""]
FAULT_LINES = st.lists(
    st.one_of(
        st.builds(
            "{} {}{}".format,
            st.sampled_from(["10us", "0ns", "1s", "7200s", "soon", "-5us", "1e3ms", ""]),
            st.sampled_from(
                ["race", "reader-stall", "gp-delay", "weeds", "ioctl-gap", "meteor", ""]
            ),
            st.lists(
                st.builds(
                    "{}={}".format,
                    st.sampled_from(
                        [
                            "vcpu",
                            "gpa",
                            "delay",
                            "window",
                            "duration",
                            "probability",
                            "interval",
                            "times",
                            "colour",
                        ]
                    ),
                    st.sampled_from(
                        ["0", "1", "-1", "99", "0x1000", "1ms", "nan", "inf", "abc", str(2**70), ""]
                    ),
                ),
                max_size=3,
            ).map(lambda ps: ("=" + ",".join(ps)) if ps else ""),
        ),
        st.text(max_size=40),
    ),
    max_size=6,
)


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_fault_file_parser_ends_in_a_script_or_one_line(budget: int, tmp_path: Path) -> None:
    path = tmp_path / "faults.txt"

    def check(lines: list[str]) -> None:
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
        message = error_of(parse_fault_file, str(path), 2)
        one_line(message)
        assert message is None or message.startswith(f"{path}"), message

    fuzz(budget, FAULT_LINES, check)


# --- the command line ----------------------------------------------------------------------

WORDS = [
    "run", "compare", "check", "replay", "--scenario", "split", "merge", "nope", "--strategy",
    "legacy", "inhibit", "--seed", "--vcpus", "--duration", "--fault", "--host", "--faults",
    "--log", "--no-log", "--json", "--naive", "--backend", "model", "--jobs", "--seeds",
    "race", "weeds=vcpu=5", "maxphyaddr=abc", "nr_memslots=1", "readonly_mem=true",
    "0", "1", "-1", "1024", "1025", "10ms", "0ms", "abc", str(2**70), "", "=", "--",
]  # fmt: skip


@pytest.mark.parametrize("budget", BUDGETS)
def test_the_command_line_ends_in_a_config_or_one_line(budget: int) -> None:
    """Parsing and validating (what runs before anything is run) for any argv."""

    def check(argv: list[str]) -> None:
        err = io.StringIO()
        args: argparse.Namespace | None = None
        status: object = None
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = cli.build_parser().parse_args(argv)
        except SystemExit as exit:
            status = exit.code
        if args is None:  # argparse's usage error: status 2, one line (engine.cli._Parser)
            assert status in (0, 2), status
            assert status == 0 or len(err.getvalue().splitlines()) == 1, err.getvalue()
            return
        if args.command not in (None, "run"):
            return
        args = args if args.command == "run" else cli.build_parser().parse_args(["run"])
        one_line(error_of(cli.run_config, args))

    fuzz(budget, st.lists(st.sampled_from(WORDS), max_size=8), check)
