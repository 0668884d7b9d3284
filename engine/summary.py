"""The summary of a run: what `slotlab run --json` prints and the verdict line records.

Both backends describe a run in the same words, so it is built in one place, as a typed
`Summary`. Its fields are declared in the order the JSON has always had, so `--json` and the
verdict line keep their keys and their bytes.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from engine.checker import Checker, Finding, Verdict


def percentile(values: list[int], p: int) -> int:
    """The p-th percentile by nearest rank, the one definition slotlab uses everywhere: the
    ceil(n * p / 100)-th smallest value (at least the first); 0 for no values. For the ten
    values 1..10, p50 is 5 and p99 is 10. The values need not be sorted."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[rank - 1]


class Latency(msgspec.Struct):
    """Update latency over a run's committed transactions, ns (nearest-rank percentiles)."""

    p50: int = 0
    p99: int = 0
    max: int = 0


class Summary(msgspec.Struct, kw_only=True):
    """One run in numbers. The defaults exist for logs of older schemas, whose verdict lines
    predate a field; a run always sets every field."""

    verdict: str
    explanation: str
    internal_errors: int = 0
    mmio_exits: int = 0
    window_mmio_exits: int = 0
    """KVM_EXIT_MMIO taken while a memory transaction was in flight."""
    exits: dict[str, int] = msgspec.field(default_factory=dict)
    retries: int = 0
    """Every way a vCPU went back into the guest to try the same access again."""
    ud_injected: int = 0
    violations: list[Finding] = msgspec.field(default_factory=list)
    transactions: int = 0
    ioctls: int = 0
    update_latency_ns: Latency = msgspec.field(default_factory=Latency)
    vcpu_stall_ns: int = 0
    injections: int = 0
    events: int = 0
    virtual_ns: int = 0
    seed: int = 0
    scenario: str = ""
    strategy: str = ""
    log: str | msgspec.UnsetType | None = None
    """Where the log was written (None: not recorded). UNSET in a verdict line: where the log
    lives is not part of the run."""
    clock: str | msgspec.UnsetType = msgspec.UNSET
    """"wall" on a wall-clock backend, where virtual_ns holds wall time; absent on the model."""

    @property
    def crashed(self) -> bool:
        """The guest died: KVM_EXIT_INTERNAL_ERROR, an injected #UD, or the VMM stopped it."""
        return self.verdict == "crashed" or self.internal_errors > 0 or self.ud_injected > 0


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
) -> Summary:
    return Summary(
        verdict=verdict.verdict,
        explanation=verdict.explanation,
        internal_errors=exits["KVM_EXIT_INTERNAL_ERROR"],
        mmio_exits=exits["KVM_EXIT_MMIO"],
        window_mmio_exits=checker.window_mmio_exits,
        exits=dict(sorted((k, n) for k, n in exits.items() if n)),
        retries=faults["retry"] + faults["retry_invalidated"] + faults["mmio_len0"],
        ud_injected=checker.ud_injected,
        violations=list(verdict.violations),
        transactions=transactions,
        ioctls=ioctls,
        update_latency_ns=Latency(
            p50=percentile(latencies, 50),
            p99=percentile(latencies, 99),
            max=max(latencies, default=0),
        ),
        vcpu_stall_ns=stall_ns,
        injections=injections,
        events=events,
        virtual_ns=virtual_ns,
        seed=seed,
        scenario=scenario,
        strategy=strategy,
        log=log,
        # On a wall-clock backend virtual_ns holds wall time: say so, without changing the
        # keys of a model run's summary.
        clock=msgspec.UNSET if clock is None else clock,
    )
