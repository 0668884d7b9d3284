"""The model is deterministic: the same script gives the same events, byte for byte, whatever
the interpreter's hash seed (set and dict-of-str iteration order is the usual way to lose
that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).with_name("_det_scenario.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(hash_seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(SCENARIO)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_same_events_under_different_hash_seeds() -> None:
    first = _run("0")
    second = _run("3141592653")
    assert first == second

    # The scenario must exercise enough of the model for the comparison to mean something.
    events = [json.loads(line) for line in first.splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"fault", "exit", "swap_publish", "srcu_gp", "zap", "dirty_log", "memslot"} <= kinds
    outcomes = {e["outcome"] for e in events if e["kind"] == "fault"}
    assert {"mapped", "dirty", "mmio", "emulation_failure"} <= outcomes
    assert {e["vcpu"] for e in events if e["kind"] == "exit"} == {0, 1}
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(events)))
    times = [e["t"] for e in events]
    assert times == sorted(times)
