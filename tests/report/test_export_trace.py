"""`slotlab export --format perfetto|chrome`: a Chrome JSON trace that the format's schema
accepts, with one track per actor and the run's ioctls, grace periods, faults and counters."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.engine.helpers import run_cli

SCHEMA = json.loads((Path(__file__).parent / "chrome_trace.schema.json").read_text())


@pytest.mark.parametrize("fmt", ["chrome"])
def test_export_is_a_valid_chrome_trace_with_one_track_per_actor(
    verdict_logs: dict[str, Path],
    tmp_path: Path,
    fmt: str,
) -> None:
    out = tmp_path / f"crash.{fmt}.json"
    done = run_cli("export", str(verdict_logs["crash"]), "--format", fmt, "-o", str(out))
    assert done.returncode == 0, done.stderr
    trace = json.loads(out.read_text())
    jsonschema.validate(trace, SCHEMA)

    names = {
        e["tid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert sorted(names.values()) == ["memslots", "srcu-gp", "vcpu0", "vcpu1", "vmm"]
    by_track: dict[str, list[dict[str, object]]] = defaultdict(list)
    for e in trace["traceEvents"]:
        if "tid" in e and e["ph"] != "M":
            by_track[names[e["tid"]]].append(e)
    ioctls = [e for e in by_track["vmm"] if e["ph"] == "X" and e["cat"] == "ioctl"]
    assert [e["name"] for e in ioctls] == ["CREATE slot 0", "DELETE slot 0"]
    delete = ioctls[1]
    assert delete["ts"] == pytest.approx(62.58)  # virtual ns as microseconds
    assert any(e["ph"] == "X" and e["cat"] == "gp" for e in by_track["srcu-gp"])
    vcpu1 = [str(e["name"]) for e in by_track["vcpu1"] if e["ph"] == "i"]
    # split's guest loop is inc, load (its device register), jmp: the crash is at one of them.
    rip = next(n.split()[-1] for n in vcpu1 if n.startswith("KVM_EXIT_INTERNAL_ERROR at RIP"))
    assert rip in ("0x1000", "0x1004", "0x1008")
    assert f"fetch fault at {rip}: emulation_failure" in vcpu1
    counters = {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert {"memslots generation", "internal errors", "MMIO exits"} <= counters
    assert trace["otherData"]["verdict"] == "crashed"


def test_a_trace_that_breaks_the_format_is_refused_by_the_schema() -> None:
    """The schema is a real check: a slice without a duration fails it."""
    bad = {"traceEvents": [{"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_export_reads_stdin_and_writes_stdout(verdict_logs: dict[str, Path]) -> None:
    import subprocess
    import sys

    from tests.engine.helpers import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", "-", "--format", "chrome"],
        input=verdict_logs["ok"].read_bytes(),
        capture_output=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), SCHEMA)


def _perfetto_tracks(data: bytes) -> tuple[dict[int, str], dict[int, list[Any]]]:
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    trace = Trace.FromString(data)
    names: dict[int, str] = {}
    events: dict[int, list[Any]] = defaultdict(list)
    last = 0
    for packet in trace.packet:
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            names[d.uuid] = d.thread.thread_name or d.process.process_name or d.name
        elif packet.HasField("track_event"):
            assert packet.timestamp >= last, "packets out of time order"
            last = packet.timestamp
            assert packet.track_event.track_uuid in names, "an event on an undeclared track"
            events[packet.track_event.track_uuid].append(packet)
    return names, events


def test_perfetto_export_is_a_protobuf_trace_with_one_track_per_actor(
    verdict_logs: dict[str, Path], tmp_path: Path
) -> None:
    """Read back with Perfetto's own protobuf classes: the tracks, balanced slices on each,
    the crash on vcpu1, the counters."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TrackEvent

    out = tmp_path / "crash.pftrace"
    done = run_cli("export", str(verdict_logs["crash"]), "--format", "perfetto", "-o", str(out))
    assert done.returncode == 0, done.stderr
    names, events = _perfetto_tracks(out.read_bytes())
    threads = {"vmm", "memslots", "srcu-gp", "vcpu0", "vcpu1"}
    assert threads <= set(names.values())
    by_name = {names[uuid]: evs for uuid, evs in events.items()}
    for name in threads:
        depth = 0
        for packet in by_name.get(name, []):
            kind = packet.track_event.type
            depth += {TrackEvent.TYPE_SLICE_BEGIN: 1, TrackEvent.TYPE_SLICE_END: -1}.get(kind, 0)
            assert depth >= 0, f"{name}: a slice ends that never began"
    vmm = [p.track_event for p in by_name["vmm"]]
    begins = [e.name for e in vmm if e.type == TrackEvent.TYPE_SLICE_BEGIN]
    assert begins == ["CREATE slot 0", "DELETE slot 0"]
    instants = [p.track_event.name for p in by_name["vcpu1"]]
    # The loop polls a doorbell, so the fatal fetch may be any of its instructions.
    assert any(
        f"fetch fault at {rip}: emulation_failure" in instants
        for rip in ("0x1000", "0x1004", "0x1008")
    )
    generation = [p.track_event for p in by_name["memslots generation as0"]]
    assert [e.counter_value for e in generation][-1] == 2
    assert all(e.type == TrackEvent.TYPE_COUNTER for e in generation)


def test_perfetto_trace_processor_reads_the_export(
    verdict_logs: dict[str, Path], tmp_path: Path
) -> None:
    """Perfetto's trace processor, where its binary is on this machine (the package fetches
    it from the network otherwise, which this sandbox has not got)."""
    shell = os.environ.get("TRACE_PROCESSOR_SHELL") or shutil.which("trace_processor_shell")
    if not shell:
        pytest.skip("no trace_processor_shell here and no network to fetch one")
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    out = tmp_path / "crash.pftrace"
    assert (
        run_cli(
            "export", str(verdict_logs["crash"]), "--format", "perfetto", "-o", str(out)
        ).returncode
        == 0
    )
    with TraceProcessor(trace=str(out), config=TraceProcessorConfig(bin_path=shell)) as tp:
        rows = list(tp.query("select name from slice where name like 'DELETE%'"))
    assert [r.name for r in rows] == ["DELETE slot 0"]
