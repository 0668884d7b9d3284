"""`slotlab report` in text and Markdown on one fixed run per verdict, against golden files.

Regenerate after a deliberate change (and read the diff): `make golden`.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

from engine.log import read_log
from engine.report.model import build_report
from engine.report.text import render_md, render_text
from tests.report.conftest import RUNS

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("SLOTLAB_REGEN_GOLDEN") == "1"
PRINTABLE = set(string.printable) - set("\t\r\x0b\x0c")


@pytest.mark.parametrize("fmt", ["txt", "md"])
@pytest.mark.parametrize("name", list(RUNS))
def test_report_matches_its_golden_file(verdict_logs: dict[str, Path], name: str, fmt: str) -> None:
    report = build_report(read_log(verdict_logs[name]))
    text = render_text(report) if fmt == "txt" else render_md(report)
    golden = GOLDEN / f"{name}.{fmt}"
    if REGEN:
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: run `make golden`"
    assert text == golden.read_text(), f"{golden} differs: review, then `make golden`"


@pytest.mark.parametrize("width", [72, 60])
@pytest.mark.parametrize("name", list(RUNS))
def test_text_report_fits_a_mail(verdict_logs: dict[str, Path], name: str, width: int) -> None:
    """At most `width` columns, printable ASCII only: no ANSI, no tabs, no control bytes."""
    text = render_text(build_report(read_log(verdict_logs[name])), width)
    for no, line in enumerate(text.splitlines(), 1):
        assert len(line) <= width, f"line {no} is {len(line)} columns: {line!r}"
        assert set(line) <= PRINTABLE, f"line {no} has a control character: {line!r}"
    assert "\x1b" not in text


def test_report_has_the_header_verdict_timeline_and_counters(
    verdict_logs: dict[str, Path],
) -> None:
    text = render_text(build_report(read_log(verdict_logs["crash"])))
    assert "Version:   slotlab " in text
    assert "slotlab run --scenario split --strategy legacy --seed 3" in text
    assert "Verdict: crashed" in text
    lanes = [line.split()[0] for line in text.splitlines() if line[:1].isalpha()]
    assert {"time", "vmm", "memslots", "srcu-gp", "vcpu0", "vcpu1", "window"} <= set(lanes)
    assert "slot 0 DELETE ... CREATE" in text
    # The decisive event is the internal-error exit, marked in the event list.
    assert any(
        line.startswith("=>") and "KVM_EXIT_INTERNAL_ERROR" in line for line in text.splitlines()
    )
    assert "internal errors: 1" in text


def test_window_and_around_choose_what_the_timeline_shows(
    verdict_logs: dict[str, Path],
) -> None:
    log = read_log(verdict_logs["ok"])
    default = build_report(log)
    assert default.window_why.startswith("the first transaction after boot")
    late = build_report(log, window=(500_000, 520_000))
    assert all(500_000 <= row.t <= 520_000 for row in late.events)
    assert late.events
    assert late.events[0].seq > default.events[-1].seq
    around = build_report(log, around=500)
    seqs = [row.seq for row in around.events]
    assert 500 in seqs
    assert min(seqs) <= 500 - 30


def test_reproducing_command_types_durations_as_a_person_would() -> None:
    from engine.report.model import duration_arg
    from engine.units import parse_duration

    for ns in (200_000_000, 1_500_000, 2_000_000_000, 150_000, 1_234):
        text = duration_arg(ns)
        assert parse_duration(text) == ns
    assert duration_arg(200_000_000) == "200ms"
    assert duration_arg(1_500_000) == "1500us"
