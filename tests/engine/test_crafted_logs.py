"""Crafted and damaged session logs (issue 12): a header that asks for a billion vCPUs or
2^60 ns, commands a run cannot apply, a line of megabytes, CRLF line ends. `check` and
`replay --verify` end each in one line of error naming file:line, or in a correct result, in
bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from engine.log import LogError
from engine.runner import check_log, make_config, run_session, verify_log

Edit = Callable[[list[bytes]], list[bytes]]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("good") / "good.jsonl"
    run_session(make_config("split", "inhibit", duration_ns=200_000, faults=["race"]), str(path))
    assert verify_log(str(path)).ok
    return path.read_bytes().split(b"\n")[:-1]


def header_with(**fields: object) -> Edit:
    def edit(lines: list[bytes]) -> list[bytes]:
        header = msgspec.json.decode(lines[0])
        for key, value in fields.items():
            if key.startswith("host."):
                header["host"][key[5:]] = value
            else:
                header[key] = value
        return [msgspec.json.encode(header), *lines[1:]]

    return edit


def command_at(index: int, command: dict[str, object]) -> Edit:
    def edit(lines: list[bytes]) -> list[bytes]:
        line = {"kind": "command", "call": 1, "t": 0, "seq": 0, **command}
        return [*lines[:index], msgspec.json.encode(line), *lines[index:]]

    return edit


REFUSED: dict[str, tuple[Edit, int, str]] = {
    "a billion vCPUs": (header_with(vcpus=10**9), 1, "vcpus must be 1..1024"),
    "100,000 vCPUs": (header_with(vcpus=100_000), 1, "vcpus must be 1..1024"),
    "2^60 ns": (header_with(duration_ns=1 << 60), 1, "duration must be 1.."),
    "maxphyaddr as a string": (header_with(**{"host.maxphyaddr": "52"}), 1, "maxphyaddr must be an integer"),
    "readonly_mem 2": (header_with(**{"host.readonly_mem": 2}), 1, "readonly_mem must be true or false"),
    "a seed of 2^70": (header_with(seed=1 << 70), 1, "seed must be 0.."),
    "a fault at vcpu 9": (header_with(faults=["reader-stall=vcpu=9"]), 1, "vcpu 9 does not exist"),
    "speed without a speed": (command_at(5, {"name": "speed", "args": {}}), 6, "speed must be a positive number"),
    "speed abc": (command_at(5, {"name": "speed", "args": {"speed": "abc"}}), 6, "speed must be"),
    "inject without a fault": (command_at(7, {"name": "inject", "args": {}}), 8, "inject needs a fault"),
    "inject meteor": (command_at(7, {"name": "inject", "args": {"fault": "meteor"}}), 8, "unknown fault"),
    "step -3": (command_at(7, {"name": "step", "args": {"count": "-3"}}), 8, "step count"),
    "an unknown command": (command_at(3, {"name": "rewind", "args": {}}), 4, "unknown command 'rewind'"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_verify_refuses_a_crafted_log(case: str, good: list[bytes], tmp_path: Path) -> None:
    edit, no, fragment = REFUSED[case]
    path = tmp_path / "crafted.jsonl"
    path.write_bytes(b"\n".join(edit(good)) + b"\n")
    with pytest.raises(LogError) as err:
        verify_log(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}:{no}: "), message
    assert fragment in message
    assert "\n" not in message


def test_a_longer_duration_than_the_run_had_stops_at_the_first_extra_event(
    good: list[bytes], tmp_path: Path
) -> None:
    """An hour of virtual time on a finished 200 us log: the replay stops as soon as it
    produces an event the log does not have, instead of running the hour."""
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(header_with(duration_ns=3600 * 10**9)(good)) + b"\n")
    result = verify_log(str(path))
    assert not result.ok
    # Where the recorded run ended (its clean-up at the end time), the longer one goes on.
    assert result.events <= len(good) - 1, result.message


def test_a_megabyte_line_is_cut_in_the_mismatch(good: list[bytes], tmp_path: Path) -> None:
    lines = list(good)
    note = {"kind": "note", "source": "x", "text": "y" * 1_000_000, "t": 0, "seq": 3}
    lines[4] = msgspec.json.encode(note)
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = verify_log(str(path))
    assert not result.ok
    assert result.message.startswith("event 4 differs")
    assert len(result.message) < 1_000
    assert "more characters" in result.message


@pytest.mark.parametrize("kind", ["exit\nand a second line", "\r", "\x1b[2J"])
def test_a_line_break_in_a_refused_value_stays_on_one_line(
    kind: str, good: list[bytes], tmp_path: Path
) -> None:
    """msgspec quotes the value it refused as it was; the fuzzer found an event `kind` with a
    line break in it, whose error then took two lines (or, for a terminal, cleared it)."""
    lines = list(good)
    event = msgspec.json.decode(lines[5])
    event["kind"] = kind
    lines[5] = msgspec.json.encode(event)
    path = tmp_path / "kind.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for read in (check_log, verify_log):
        with pytest.raises(LogError) as refused:
            read(str(path))
        message = str(refused.value)
        assert message.startswith(f"{path}:6: not a slotlab log line")
        assert message.isprintable(), message


def test_a_crlf_log_verifies_and_checks(good: list[bytes], tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\r\n".join(good) + b"\r\n")
    result = verify_log(str(path))
    assert result.ok, result.message
    verdict, log = check_log(str(path))
    assert log.verdict is not None
    assert verdict.verdict == log.verdict.verdict


@pytest.mark.heavy
def test_check_streams_in_bounded_memory(good: list[bytes], tmp_path: Path) -> None:
    """Twenty thousand copies of the run's events (about 3 MB): check holds one line at a
    time, so its peak allocation stays far below the log's size."""
    events = good[1:-1]
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        out.write(good[0] + b"\n")
        for _ in range(20_000 // len(events) + 1):
            out.write(b"\n".join(events) + b"\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        _, log = check_log(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert log.events >= 20_000
    assert peak < size / 4, (peak, size)
