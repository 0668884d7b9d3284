"""The counter tracks of a trace export: memslot generations, and the run's counters as they
grow (the same ones the verdict line's summary totals)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import msgspec

from engine import events as ev
from engine.events import Event

EXIT_COUNTERS = {"KVM_EXIT_MMIO": "MMIO exits", "KVM_EXIT_INTERNAL_ERROR": "internal errors"}
RETRY_OUTCOMES = ("retry", "retry_invalidated", "mmio_len0")


class CounterSample(msgspec.Struct, frozen=True):
    name: str
    t: int
    series: str
    value: int


def counter_samples(events: Iterable[Event]) -> list[CounterSample]:
    out: list[CounterSample] = []
    seen: Counter[str] = Counter()
    for e in events:
        if isinstance(e, ev.SwapPublish | ev.SwapDone):
            out.append(CounterSample("memslots generation", e.t, f"as{e.as_id}", e.generation))
            continue
        name = ""
        if isinstance(e, ev.Fault) and e.outcome in RETRY_OUTCOMES:
            name = "fault retries"
        elif isinstance(e, ev.Exit):
            name = EXIT_COUNTERS.get(e.reason, "")
        elif isinstance(e, ev.TxnCommit):
            name = "transactions"
        elif isinstance(e, ev.Violation):
            name = "violations"
        if name:
            seen[name] += 1
            out.append(CounterSample(name, e.t, "count", seen[name]))
    return out
