"""A session log as a Perfetto trace (protobuf TrackEvents), built with the `perfetto`
package's TraceProtoBuilder; ui.perfetto.dev and trace_processor read it.

One process track, one thread track per actor (the VMM, the memslot machinery, the SRCU
grace-period worker, each vCPU): ioctls, grace periods and SRCU read sides are slices; faults,
exits and memslot steps are instants; memslot generations and the run's counters are counter
tracks. Timestamps are the run's virtual nanoseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TracePacket, TrackEvent
from perfetto.trace_builder.proto_builder import TraceProtoBuilder

from engine.export.counters import counter_samples
from engine.log import SessionLog
from engine.report.lanes import Slice, Span, build_lanes

PID = 1
SEQUENCE = 1
PROCESS_UUID = 1
LANE_UUID_BASE = 100
COUNTER_UUID_BASE = 10_000

# Sorting within one timestamp: slices that end there close before anything opens.
END, OPEN = 0, 1


def perfetto_trace(log: SessionLog) -> bytes:
    h = log.header
    builder = TraceProtoBuilder()
    first = builder.add_packet()
    first.trusted_packet_sequence_id = SEQUENCE
    first.sequence_flags = TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
    first.track_descriptor.uuid = PROCESS_UUID
    first.track_descriptor.process.pid = PID
    first.track_descriptor.process.process_name = (
        f"slotlab {h.scenario} / {h.strategy} / seed {h.seed}"
    )
    lanes, spans = build_lanes(log.events)
    timed: list[tuple[int, int, int, Callable[[Any], None]]] = []

    def at(t: int, rank: int, fill: Callable[[Any], None]) -> None:
        timed.append((t, rank, len(timed), fill))

    def event(uuid: int, kind: int, name: str = "") -> Callable[[Any], None]:
        def fill(te: Any) -> None:
            te.type = kind
            te.track_uuid = uuid
            if name:
                te.name = name

        return fill

    for n, lane in enumerate(lanes):
        uuid = LANE_UUID_BASE + n
        desc = builder.add_packet().track_descriptor
        desc.uuid = uuid
        desc.parent_uuid = PROCESS_UUID
        desc.thread.pid = PID
        desc.thread.tid = n + 1
        desc.thread.thread_name = lane.name
        slices = list(lane.slices)
        if lane.name == "memslots":
            slices += [_span_slice(s) for s in spans]
        for s in slices:
            begin = event(uuid, TrackEvent.TYPE_SLICE_BEGIN, s.label)
            end = event(uuid, TrackEvent.TYPE_SLICE_END)
            if s.t1 > s.t0:
                at(s.t0, OPEN, begin)
                at(s.t1, END, end)
            else:
                at(s.t0, OPEN, begin)
                at(s.t0, OPEN, end)  # right after its begin: a zero-length slice
        for i in lane.instants:
            at(i.t, OPEN, event(uuid, TrackEvent.TYPE_INSTANT, i.label))
    counter_uuids: dict[tuple[str, str], int] = {}
    for c in counter_samples(log.events):
        key = (c.name, c.series)
        if key not in counter_uuids:
            counter_uuids[key] = COUNTER_UUID_BASE + len(counter_uuids)
            desc = builder.add_packet().track_descriptor
            desc.uuid = counter_uuids[key]
            desc.parent_uuid = PROCESS_UUID
            desc.name = c.name if c.series == "count" else f"{c.name} {c.series}"
            desc.counter.SetInParent()

        def fill(te: Any, uuid: int = counter_uuids[key], value: int = c.value) -> None:
            te.type = TrackEvent.TYPE_COUNTER
            te.track_uuid = uuid
            te.counter_value = value

        at(c.t, OPEN, fill)
    for t, _, _, write in sorted(timed, key=lambda x: x[:3]):
        packet = builder.add_packet()
        packet.timestamp = t
        packet.trusted_packet_sequence_id = SEQUENCE
        write(packet.track_event)
    data: bytes = builder.serialize()
    return data


def _span_slice(span: Span) -> Slice:
    return Slice(span.t0, span.t1, f"slot {span.slot}: DELETE ... CREATE", "window")
