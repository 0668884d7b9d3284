"""Importing the shipped QEMU 7.2 traces: slot tables, transactions, the scenario files."""

from __future__ import annotations

import re

import pytest

from engine.importers import import_trace, read_trace
from engine.importers.builtin import CAPTURED as NAMES
from engine.importers.builtin import regenerate, trace_path
from engine.scenarios import load_scenario, parse_scenario
from tests.importers.helpers import as_set, layout_table, tables_by_line, trace_lines

TID = re.compile(r"^(\d+)@")


@pytest.mark.parametrize("name", NAMES)
def test_slot_table_after_every_transaction_matches_an_independent_rebuild(name: str) -> None:
    path = trace_path(name)
    expected = tables_by_line(path)
    imp = read_trace(str(path))
    sc = load_scenario(name)
    assert len(sc.sequence) == len(imp.transactions) + 1
    boot_end = imp.boot_calls[-1].call.line
    assert layout_table(sc, 0) == as_set(expected[boot_end])
    for step, txn in enumerate(imp.transactions, start=1):
        want = as_set(expected[txn.calls[-1].call.line])
        got = {(s.as_id, s.flags, s.gpa, s.size, s.hva) for s in txn.table.values()}
        assert got == want, f"transaction {txn.index}"
        assert layout_table(sc, step) == want, f"layout of step {step}"
    # Every call is in the boot run or exactly one transaction, in file order.
    lines = [c.call.line for c in imp.calls]
    assert lines == sorted(expected)


@pytest.mark.parametrize("name", NAMES)
def test_each_transaction_is_one_listener_commit(name: str) -> None:
    """Checked from the raw lines: one thread, no KVM_RUN by it inside, DELETEs first and
    each pass in ascending GPA."""
    path = trace_lines(trace_path(name))
    imp = read_trace(str(trace_path(name)))
    for txn in imp.transactions:
        first, last = txn.calls[0].call.line, txn.calls[-1].call.line
        tid = TID.match(path[first - 1])
        assert tid is not None
        inside = path[first - 1 : last]
        assert all(line.startswith(tid.group(1) + "@") for line in inside if "kvm_set_user" in line)
        assert not any(
            line.startswith(tid.group(1) + "@") and "type 0xae80" in line for line in inside
        )
        kinds = [c.kind for c in txn.calls]
        dels = kinds.count("delete")
        assert kinds[:dels] == ["delete"] * dels
        for part in (txn.calls[:dels], txn.calls[dels:]):
            gpas = [c.call.gpa for c in part]
            assert gpas == sorted(set(gpas))


def test_pc_boot_shape() -> None:
    """What the capture shows (docs/importers.md): the boot layout, then the PAM split."""
    imp = read_trace(str(trace_path("qemu72-pc-boot")))
    assert sorted((s.gpa, s.size, s.flags) for s in imp.boot.values()) == [
        (0x0, 0x20000000, 0),
        (0xFFFC0000, 0x40000, 2),
    ]
    first = imp.transactions[0]
    assert [c.kind for c in first.calls] == ["delete"] + ["create"] * 4
    assert imp.vcpus == 4
    # The big RAM slot is deleted and re-created by many transactions (the windows).
    assert sum(1 for t in imp.transactions if t.windows_us()) >= 10
    assert imp.count("flags") == 0


def test_hotplug_has_plugs_and_dirty_log_toggles() -> None:
    imp = read_trace(str(trace_path("qemu72-hotplug")))
    creates = {(c.call.gpa, c.call.size) for c in imp.calls if c.kind == "create"}
    assert (0x120000000, 128 << 20) in creates  # pc-dimm
    assert any(size == 256 << 20 for _, size in creates)  # virtio-mem-pci
    toggles = [t for t in imp.transactions if all(c.kind == "flags" for c in t.calls)]
    on = [t for t in toggles if all(c.call.flags & 1 for c in t.calls)]
    off = [t for t in toggles if not any(c.call.flags & 1 for c in t.calls)]
    assert len(on) >= 2
    assert len(off) >= 2
    assert load_scenario("qemu72-hotplug").captured


@pytest.mark.parametrize("name", NAMES)
def test_builtin_scenario_is_the_import_of_its_shipped_trace(name: str) -> None:
    from engine.scenarios.loader import builtin_dir

    assert (builtin_dir() / f"{name}.toml").read_text() == regenerate(name)


def test_gaps_are_capped_and_real_times_kept() -> None:
    path = str(trace_path("qemu72-q35-boot"))
    sc = parse_scenario(import_trace(path, max_gap_ns=50_000).text)
    imp = read_trace(path)
    assert sc.gaps_ns is not None
    assert max(sc.gaps_ns) == 50_000
    assert list(sc.recorded_us) == [
        t.start_us - imp.first_us  # type: ignore[operator]
        for t in imp.transactions
    ]
    short = parse_scenario(import_trace(path, max_gap_ns=10**12).text)
    assert short.gaps_ns is not None
    assert max(short.gaps_ns) > 100_000_000


def test_workloads_put_code_where_the_file_says() -> None:
    path = str(trace_path("qemu72-pc-boot"))
    churn = import_trace(path)
    calm = import_trace(path, workload="data-in-churn")
    assert 'workload = "code-in-churn"' in churn.text
    assert 'workload = "data-in-churn"' in calm.text
    assert churn.workload.code.windows > calm.workload.code.windows
    assert parse_scenario(churn.text).entry == churn.workload.entry
    assert parse_scenario(calm.text).entry == calm.workload.entry
