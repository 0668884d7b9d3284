"""A real KVM_EXIT_INTERNAL_ERROR keeps the kernel's own fields (suberror, data[:ndata]) and is
classified from them, not assumed to be a fetch failure."""

from __future__ import annotations

from pathlib import Path

from engine.events import Exit
from engine.log import read_log
from tests.engine.helpers import run_cli


def test_internal_error_carries_and_classifies_its_data(tmp_path: Path) -> None:
    log = tmp_path / "split.jsonl"
    r = run_cli("run", "--backend", "kvm", "--scenario", "split", "--strategy", "legacy",
                "--duration", "300ms", "--log", str(log))  # fmt: skip
    assert log.exists(), r.stderr  # exit status says the verdict (3: crashed)
    errors = [
        e
        for e in read_log(log).events
        if isinstance(e, Exit) and e.reason == "KVM_EXIT_INTERNAL_ERROR"
    ]
    assert errors, "legacy split did not crash in 300 ms"
    e = errors[0]
    assert e.suberror == 1
    assert e.internal_data, "internal.data was dropped"
    # The emulation_failure flags word: no instruction bytes, the fetch itself failed.
    assert e.internal_data[0] & 1 == 0
    assert e.internal == "emulation failure (instruction fetch failed)"
