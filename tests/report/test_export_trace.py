"""`slotlab export --format perfetto|chrome`: a Chrome JSON trace that the format's schema
accepts, with one track per actor and the run's ioctls, grace periods, faults and counters."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

from tests.engine.helpers import run_cli

SCHEMA = json.loads((Path(__file__).parent / "chrome_trace.schema.json").read_text())


@pytest.mark.parametrize("fmt", ["perfetto", "chrome"])
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
    vcpu1 = [e["name"] for e in by_track["vcpu1"] if e["ph"] == "i"]
    assert "fetch fault at 0x1000: emulation_failure" in vcpu1
    assert "KVM_EXIT_INTERNAL_ERROR at RIP 0x1000" in vcpu1
    counters = {e["name"] for e in trace["traceEvents"] if e["ph"] == "C"}
    assert {"memslots generation", "fault retries", "internal errors"} <= counters
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
