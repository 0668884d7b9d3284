"""A compare matrix's rows: one run reduced to what a row needs, and a strategy's runs
aggregated. Pure functions over plain data, so they run in any worker process (run_one is the
(config, seed) unit of engine.sweep.unit) and both backends share them.

A row aggregates one strategy over its runs:

    strategy         the strategy's name
    runs             how many seeds ran
    crash_rate       share of runs in which the guest died (KVM_EXIT_INTERNAL_ERROR, #UD, or the
                     VMM stopping the VM)
    retries          mean stage-2 fault retries per run
    stall_ns         mean vcpu_stall_ns per run (time vCPUs spent kept out of KVM_RUN)
    latency_p50_ns   median of the runs' median update latency
    latency_p99_ns   99th percentile (nearest rank) of the runs' p99 update latency
    verdicts         verdict -> count, most serious first
    internal_errors  KVM_EXIT_INTERNAL_ERROR exits summed over the runs
    violations       checker violation kind -> count, summed over the runs

Runs that committed no memory update (a guest that crashed in the first one) have no latency
and are left out of the latency percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from engine.summary import Summary, percentile
from engine.sweep.unit import RunSpec, execute

VERDICT_ORDER = ("violation", "crashed", "livelock", "ok")
VERDICT_COLOUR = {"violation": "magenta", "crashed": "red", "livelock": "yellow", "ok": "green"}
LEGEND = (
    "crash: runs whose guest died; int.err: KVM_EXIT_INTERNAL_ERROR exits over all runs; "
    "retries, stall (vCPUs kept out of KVM_RUN): mean per run; p50, p99: update latency"
)


class RunRow(msgspec.Struct, kw_only=True):
    """One run, as a matrix row needs it (the same keys in a sweep's Parquet rows)."""

    seed: int
    verdict: str
    crashed: bool
    internal_errors: int
    retries: int
    stall_ns: int
    committed: bool
    p50: int
    p99: int
    violations: list[str]
    exits: dict[str, int]
    window_mmio_exits: int


class MatrixRow(msgspec.Struct, kw_only=True):
    """One strategy over its runs (the fields are described at the top of this module)."""

    strategy: str
    runs: int
    crash_rate: float
    retries: float
    stall_ns: float
    latency_p50_ns: int
    latency_p99_ns: int
    verdicts: dict[str, int]
    internal_errors: int
    violations: dict[str, int]
    exits: dict[str, int]
    window_mmio_exits: int


RunOne = Callable[[str, str, int, tuple[str, ...], int | None], RunRow]
"""(scenario, strategy, seed, faults, duration_ns) -> the run's row: what a matrix is computed
over. It must be picklable (a module-level function) to run in a worker process."""


def run_one(
    scenario: str, strategy: str, seed: int, faults: tuple[str, ...], duration_ns: int | None
) -> RunRow:
    """One headless run on the model, reduced to what a matrix row needs (cheap to send
    between processes). A module-level function so worker processes can import it."""
    spec = RunSpec(
        scenario=scenario, strategy=strategy, seed=seed, faults=faults, duration_ns=duration_ns
    )
    return row_from_summary(seed, execute(spec).summary)


def row_from_summary(seed: int, s: Summary) -> RunRow:
    """What a matrix row needs from one run's summary, whichever backend ran it."""
    lat = s.update_latency_ns
    return RunRow(
        seed=seed,
        verdict=s.verdict,
        crashed=s.crashed,
        internal_errors=s.internal_errors,
        retries=s.retries,
        stall_ns=s.vcpu_stall_ns,
        committed=lat.max > 0,
        p50=lat.p50,
        p99=lat.p99,
        violations=[v.kind for v in s.violations],
        exits=dict(s.exits),
        window_mmio_exits=s.window_mmio_exits,
    )


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def run_row(stored: Mapping[str, Any]) -> RunRow:
    """A RunRow from a stored row that holds at least its keys (a sweep's Parquet row)."""
    return RunRow(
        seed=int(stored["seed"]),
        verdict=str(stored["verdict"]),
        crashed=bool(stored["crashed"]),
        internal_errors=int(stored["internal_errors"]),
        retries=int(stored["retries"]),
        stall_ns=int(stored["stall_ns"]),
        committed=bool(stored["committed"]),
        p50=int(stored["p50"]),
        p99=int(stored["p99"]),
        violations=[str(v) for v in stored["violations"]],
        exits={str(k): int(n) for k, n in dict(stored.get("exits") or {}).items()},
        window_mmio_exits=int(stored.get("window_mmio_exits", 0)),
    )


def aggregate(strategy: str, runs: Sequence[RunRow]) -> MatrixRow:
    """One matrix row from a strategy's runs (in seed order)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    verdicts = {v: counts[v] for v in VERDICT_ORDER if v in counts}
    verdicts.update({v: n for v, n in sorted(counts.items()) if v not in verdicts})
    violations: dict[str, int] = {}
    for r in runs:
        for kind in r.violations:
            violations[kind] = violations.get(kind, 0) + 1
    committed = [r for r in runs if r.committed]
    n = len(runs)
    return MatrixRow(
        strategy=strategy,
        runs=n,
        crash_rate=round(sum(1 for r in runs if r.crashed) / n, 4) if n else 0.0,
        retries=_mean([r.retries for r in runs]),
        stall_ns=_mean([r.stall_ns for r in runs]),
        latency_p50_ns=percentile([r.p50 for r in committed], 50),
        latency_p99_ns=percentile([r.p99 for r in committed], 99),
        verdicts=verdicts,
        internal_errors=sum(r.internal_errors for r in runs),
        violations=dict(sorted(violations.items())),
        exits=_sum_exits(runs),
        window_mmio_exits=sum(r.window_mmio_exits for r in runs),
    )


def _sum_exits(runs: Sequence[RunRow]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in runs:
        for kind, n in r.exits.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))
