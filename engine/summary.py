"""The summary of a run: what `slotlab run --json` prints and the verdict line records.

Both backends describe a run in the same words, so it is built in one place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.checker import Checker, Verdict


def percentile(sorted_values: list[int], p: int) -> int:
    """Nearest-rank percentile of an already sorted list; 0 for none."""
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, (len(sorted_values) * p) // 100)]


def build_summary(
    *,
    verdict: Verdict,
    checker: Checker,
    exits: Counter[str],
    faults: Counter[str],
    latencies: list[int],
    transactions: int,
    ioctls: int,
    stall_ns: int,
    injections: int,
    events: int,
    virtual_ns: int,
    seed: int,
    scenario: str,
    strategy: str,
    log: str | None,
    clock: str | None = None,
) -> dict[str, Any]:
    exit_total, fault_total = exits, faults
    lat = sorted(latencies)
    summary = {
        "verdict": verdict.verdict,
        "explanation": verdict.explanation,
        "internal_errors": exit_total["KVM_EXIT_INTERNAL_ERROR"],
        "mmio_exits": exit_total["KVM_EXIT_MMIO"],
        "window_mmio_exits": checker.window_mmio_exits,
        "exits": dict(sorted((k, n) for k, n in exit_total.items() if n)),
        # Every way a vCPU went back into the guest to try the same access again.
        "retries": fault_total["retry"]
        + fault_total["retry_invalidated"]
        + fault_total["mmio_len0"],
        "ud_injected": checker.ud_injected,
        "violations": verdict.violations,
        "transactions": transactions,
        "ioctls": ioctls,
        "update_latency_ns": {
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else 0,
        },
        "vcpu_stall_ns": stall_ns,
        "injections": injections,
        "events": events,
        "virtual_ns": virtual_ns,
        "seed": seed,
        "scenario": scenario,
        "strategy": strategy,
        "log": log,
    }
    if clock is not None:
        # On a wall-clock backend virtual_ns holds wall time: say so, without changing the
        # keys of a model run's summary.
        summary["clock"] = clock
    return summary
