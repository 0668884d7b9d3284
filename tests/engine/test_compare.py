"""`slotlab compare`: the matrix does not depend on how many processes computed it, rows
aggregate runs the way they say, and the command prints a table or one JSON object."""

from __future__ import annotations

import json
from typing import Any

import pytest

import engine.compare as compare
from engine.bench import compare_bench
from engine.compare import CompareRunError, aggregate, compare_matrix
from engine.matrix import RunRow, run_row
from engine.scenarios import builtin_names
from engine.vmm.strategies import STRATEGIES

from .helpers import one_line, run_cli


def test_parallel_and_serial_matrices_are_identical() -> None:
    args: dict[str, Any] = {"duration_ns": 150_000}
    strategies = ["legacy", "inhibit", "mmio-len0"]
    serial = compare_matrix("merge", strategies, 3, 1, ["race"], **args)
    ticks: list[tuple[int, int]] = []
    parallel = compare_matrix(
        "merge", strategies, 3, 2, ["race"], progress=lambda d, n: ticks.append((d, n)), **args
    )
    assert parallel == serial
    assert [d for d, _ in ticks] == list(range(1, 10))
    assert {n for _, n in ticks} == {9}


def test_progress_counts_every_run_in_process() -> None:
    ticks: list[tuple[int, int]] = []
    compare_matrix(
        "hotplug",
        ["legacy"],
        2,
        1,
        [],
        progress=lambda d, n: ticks.append((d, n)),
        duration_ns=50_000,
    )
    assert ticks == [(1, 2), (2, 2)]


def _run(verdict: str, **kw: Any) -> RunRow:
    run: dict[str, Any] = {
        "seed": 1,
        "verdict": verdict,
        "crashed": verdict == "crashed",
        "internal_errors": 0,
        "retries": 0,
        "stall_ns": 0,
        "committed": True,
        "p50": 100,
        "p99": 200,
        "violations": [],
    }
    run.update(kw)
    return run_row(run)


def test_aggregate() -> None:
    runs = [
        _run("ok", retries=4, stall_ns=1_000, p50=100, p99=300),
        _run("crashed", internal_errors=1, committed=False, p50=0, p99=0),
        _run(
            "violation", crashed=True, internal_errors=2, violations=["atomicity"], p50=300, p99=900
        ),
        _run("ok", retries=2, stall_ns=3_000, p50=200, p99=400),
    ]
    row = aggregate("convert", runs)
    assert row.strategy == "convert"
    assert row.runs == 4
    assert row.crash_rate == 0.5  # a violation run whose guest died counts as a crash too
    assert row.retries == 1.5
    assert row.stall_ns == 1_000.0
    # Runs that committed no update have no latency to report.
    assert row.latency_p50_ns == 200
    assert row.latency_p99_ns == 900
    assert list(row.verdicts.items()) == [("violation", 1), ("crashed", 1), ("ok", 2)]
    assert row.internal_errors == 3
    assert row.violations == {"atomicity": 1}


def test_aggregate_with_no_committed_update() -> None:
    row = aggregate("legacy", [_run("crashed", committed=False, p50=0, p99=0)])
    assert (row.latency_p50_ns, row.latency_p99_ns) == (0, 0)
    assert row.crash_rate == 1.0


def test_bad_input_is_refused_before_any_run() -> None:
    def never(*args: object) -> RunRow:
        raise AssertionError("a run started")

    cases: list[tuple[dict[str, Any], str]] = [
        ({"scenario": "nope"}, "unknown scenario"),
        ({"strategies": ["nope"]}, "unknown strategy"),
        ({"strategies": []}, "at least one strategy"),
        ({"seeds": 0}, "--seeds"),
        ({"jobs": 0}, "--jobs"),
        ({"faults": ["meteor"]}, "unknown fault"),
    ]
    for kwargs, message in cases:
        call: dict[str, Any] = {
            "scenario": "split", "strategies": ["legacy"], "seeds": 1, "jobs": 1, "faults": [],
            "run": never,
        }  # fmt: skip
        call.update(kwargs)
        with pytest.raises(ValueError, match=message):
            compare_matrix(**call)


def test_a_failing_run_names_itself() -> None:
    def broken(scenario: str, strategy: str, seed: int, *rest: object) -> RunRow:
        if seed == 2:
            raise RuntimeError("model exploded")
        return _run("ok")

    with pytest.raises(
        CompareRunError, match=r"split/inhibit seed 2 failed: .*model exploded"
    ) as info:
        compare_matrix("split", ["inhibit"], 3, 1, ["race"], run=broken)
    assert "slotlab run --scenario split --strategy inhibit --seed 2 --fault race" in str(
        info.value
    )


def test_the_matrix_is_a_function_of_run_one() -> None:
    """No engine run: the rows are what the given run_one's results aggregate to, per
    strategy, in the order given."""
    calls: list[tuple[str, str, int]] = []

    def fake(scenario: str, strategy: str, seed: int, *rest: object) -> RunRow:
        calls.append((scenario, strategy, seed))
        crashed = strategy == "legacy" and seed == 1
        return _run("crashed" if crashed else "ok", seed=seed, p50=100 * seed, p99=100 * seed)

    rows = compare_matrix("split", ["inhibit", "legacy"], 2, 1, [], run=fake)
    assert sorted(calls) == [("split", s, seed) for s in ("inhibit", "legacy") for seed in (1, 2)]
    assert [r.strategy for r in rows] == ["inhibit", "legacy"]
    assert rows[1].verdicts == {"crashed": 1, "ok": 1}
    assert rows[0].latency_p50_ns == 100  # nearest rank of [100, 200]


def test_cli_json() -> None:
    done = run_cli(
        "compare", "--scenario", "split", "--seeds", "2", "--jobs", "2",
        "--fault", "race", "--duration", "100us", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == ["split"]
    rows = data["split"]
    assert [r["strategy"] for r in rows] == list(STRATEGIES)
    by_name = {r["strategy"]: r for r in rows}
    assert by_name["legacy"]["verdicts"] == {"crashed": 2}
    assert by_name["inhibit"]["verdicts"] == {"ok": 2}
    assert all(r["runs"] == 2 for r in rows)


def test_cli_table_for_every_scenario() -> None:
    done = run_cli(
        "compare", "--scenario", "all", "--seeds", "1", "--duration", "40us", "--jobs", "2"
    )
    assert done.returncode == 0, done.stderr
    for name in builtin_names():
        assert f"{name}: 1 seed" in done.stdout
    for name in STRATEGIES:
        assert name in done.stdout


def test_cli_all_json_has_every_scenario() -> None:
    done = run_cli("compare", "--scenario", "all", "--seeds", "1", "--duration", "30us", "--json")
    assert done.returncode == 0, done.stderr
    assert list(json.loads(done.stdout)) == builtin_names()


def test_measure_compare_scaling_reports_both_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake(
        scenario: str, strategies: list[str], seeds: int, jobs: int, faults: list[str], **kw: Any
    ) -> list[dict[str, Any]]:
        seen.append(jobs)
        return [{"strategy": s} for s in strategies]

    monkeypatch.setattr(compare_bench, "compare_matrix", fake)
    result = compare_bench.measure_compare_scaling(quick=True)
    assert seen == [1, 2]
    assert result["seconds_1"] >= 0
    assert result["seconds_2"] >= 0
    assert result["identical"] is True
    assert result["target"] > 0
    assert result["runs"] > 0


@pytest.mark.parametrize("backend", ["kvm", "both"])
def test_compare_on_kvm_without_dev_kvm_is_one_line(backend: str) -> None:
    """Wherever /dev/kvm is missing, compare --backend kvm|both refuses in one line, before
    running anything, and names the fix."""
    done = run_cli(
        "compare", "--backend", backend, "--seeds", "1",
        env={"SLOTLAB_KVM_DEVICE": "/nonexistent/kvm"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    line = one_line(done.stderr)
    assert "/nonexistent/kvm does not exist" in line
    assert "drop --backend" in line


def test_several_scenarios_share_one_pool() -> None:
    ticks: dict[str, list[tuple[int, int]]] = {}
    both = compare.compare_matrices(
        ["move", "hotplug"],
        ["legacy", "atomic-list"],
        2,
        2,
        ["race"],
        lambda sc, d, n: ticks.setdefault(sc, []).append((d, n)),
        60_000,
    )
    assert list(both) == ["move", "hotplug"]
    for name in ("move", "hotplug"):
        assert ticks[name] == [(1, 4), (2, 4), (3, 4), (4, 4)]
        alone = compare_matrix(name, ["legacy", "atomic-list"], 2, 1, ["race"], duration_ns=60_000)
        assert both[name] == alone
