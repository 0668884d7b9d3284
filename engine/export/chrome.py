"""A session log as a Chrome JSON trace (the Trace Event Format), which ui.perfetto.dev and
chrome://tracing open.

One process, one track (thread) per actor: the VMM, the memslot machinery, the SRCU grace-period
worker, each vCPU. ioctls, grace periods and SRCU read sides are complete ("X") slices; faults,
exits and memslot steps are thread-scoped instants ("i"); memslot generations and the run's
counters are counter ("C") tracks. Timestamps are microseconds with nanosecond decimals.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.export.counters import counter_samples
from engine.log import SessionLog
from engine.report.lanes import build_lanes

PID = 1
FIXED_TIDS = {"vmm": 1, "memslots": 2, "srcu-gp": 3}
VCPU_TID_BASE = 10


class TraceEvent(msgspec.Struct, omit_defaults=True):
    ph: str
    name: str
    pid: int
    tid: int | None = None
    ts: float | None = None
    dur: float | None = None
    cat: str = ""
    s: str = ""
    args: dict[str, Any] = msgspec.field(default_factory=dict)


class ChromeTrace(msgspec.Struct):
    traceEvents: list[TraceEvent]
    displayTimeUnit: str
    otherData: dict[str, Any]


def _us(t: int) -> float:
    return t / 1000


def _tid(lane: str) -> int:
    if lane in FIXED_TIDS:
        return FIXED_TIDS[lane]
    return VCPU_TID_BASE + int(lane.removeprefix("vcpu"))


def _counters(log: SessionLog) -> list[TraceEvent]:
    return [
        TraceEvent("C", c.name, PID, ts=_us(c.t), args={c.series: c.value})
        for c in counter_samples(log.events)
    ]


def chrome_trace(log: SessionLog) -> ChromeTrace:
    h = log.header
    lanes, spans = build_lanes(log.events)
    events = [
        TraceEvent(
            "M",
            "process_name",
            PID,
            args={"name": f"slotlab {h.scenario} / {h.strategy} / seed {h.seed}"},
        )
    ]
    for lane in lanes:
        tid = _tid(lane.name)
        events.append(TraceEvent("M", "thread_name", PID, tid, args={"name": lane.name}))
        events.append(TraceEvent("M", "thread_sort_index", PID, tid, args={"sort_index": tid}))
        for s in lane.slices:
            args = {"open_end": True} if s.open_end else {}
            events.append(
                TraceEvent(
                    "X", s.label, PID, tid, _us(s.t0), _us(s.t1 - s.t0), cat=s.kind, args=args
                )
            )
        events.extend(
            TraceEvent("i", i.label, PID, tid, _us(i.t), cat=i.glyph, s="t", args={"seq": i.seq})
            for i in lane.instants
        )
    memslots = FIXED_TIDS["memslots"]
    events.extend(
        TraceEvent(
            "X",
            f"slot {span.slot}: DELETE ... CREATE",
            PID,
            memslots,
            _us(span.t0),
            _us(span.t1 - span.t0),
            cat="window",
        )
        for span in spans
    )
    events += _counters(log)
    verdict = log.verdict.verdict if log.verdict is not None else "unfinished"
    other = {"tool": h.tool, "seed": h.seed, "scenario": h.scenario, "strategy": h.strategy}
    other["verdict"] = verdict
    return ChromeTrace(events, "ns", other)


def encode(log: SessionLog) -> bytes:
    return msgspec.json.encode(chrome_trace(log))
