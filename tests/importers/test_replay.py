"""Imported traces run like any scenario: under legacy slotlab's VMM issues QEMU's calls, and
the race crashes legacy but none of the fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.importers import import_trace, read_trace
from engine.importers.builtin import trace_path
from engine.scenarios import load_scenario, parse_scenario
from engine.session import RunConfig
from tests.engine.helpers import run_cli
from tests.importers.helpers import run_calls

KIND = {"create": "CREATE", "delete": "DELETE", "flags": "FLAGS_ONLY", "move": "MOVE"}


@pytest.mark.parametrize("name", ["qemu72-pc-boot", "qemu72-q35-boot", "qemu72-hotplug"])
def test_legacy_issues_the_traced_calls_transaction_by_transaction(name: str) -> None:
    # Code in the calm RAM, so that legacy survives to the end of the trace.
    path = str(trace_path(name))
    text = import_trace(path, workload="data-in-churn").text
    verdict, txns = run_calls(RunConfig(scenario=parse_scenario(text), strategy="legacy"))
    assert verdict == "ok"
    imp = read_trace(path)
    after_boot = txns[1:]
    assert len(after_boot) == len(imp.transactions)
    for got, txn in zip(after_boot, imp.transactions, strict=True):
        want = [(KIND[c.kind], c.call.gpa, c.call.size, c.call.flags) for c in txn.calls]
        assert got == want, f"transaction {txn.index} (trace line {txn.calls[0].call.line})"


@pytest.mark.parametrize("name", ["qemu72-pc-boot", "qemu72-q35-boot"])
@pytest.mark.parametrize(
    ("strategy", "crashes"),
    [("legacy", True), ("inhibit", False), ("atomic-list", False), ("replace-all", False)],
)
def test_race_on_the_boot_traces(name: str, strategy: str, crashes: bool) -> None:
    from engine.runner import run_session

    config = RunConfig(scenario=load_scenario(name), strategy=strategy, faults=["race"])
    summary = run_session(config)
    assert (summary.verdict == "crashed") is crashes, summary.explanation
    if not crashes:
        assert summary.verdict == "ok"
        # The whole trace was replayed: every transaction after boot, plus boot itself.
        assert summary.transactions == len(read_trace(str(trace_path(name))).transactions) + 1


def test_run_trace_imports_on_the_fly(tmp_path: Path) -> None:
    done = run_cli(
        "run", "--trace", str(trace_path("qemu72-hotplug")), "--strategy", "atomic-list",
        "--no-log", "--json", "--max-gap", "20us",
        env={"SLOTLAB_SESSIONS": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verdict"] == "ok"
    written = load_scenario(str(tmp_path / "qemu72-hotplug.toml"))
    assert written.gaps_ns is not None
    assert max(written.gaps_ns) == 20_000
    assert summary["transactions"] == len(written.sequence)


def test_compare_takes_an_imported_scenario(tmp_path: Path) -> None:
    out = tmp_path / "pc.toml"
    out.write_text(import_trace(str(trace_path("qemu72-pc-boot"))).text)
    done = run_cli(
        "compare", "--scenario", str(out), "--seeds", "1", "--jobs", "1",
        "--duration", "300us", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["strategy"]: r for r in json.loads(done.stdout)[str(out)]}
    assert rows["legacy"]["crash_rate"] == 1.0
    assert rows["inhibit"]["crash_rate"] == 0.0
