"""strace -f -tt -e trace=ioctl of QEMU 7.2 (captured here): the same import as QEMU's log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.importers import import_trace, read_trace
from engine.importers.calls import TraceError
from engine.scenarios import parse_scenario
from tests.importers.helpers import layout_table, trace_lines

STRACE = Path(__file__).parent / "data" / "qemu72-pc-smp2.strace.gz"
FIELDS = re.compile(
    r"KVM_SET_USER_MEMORY_REGION, \{slot=(\d+), flags=([A-Z_|0-9]+), guest_phys_addr=(\w+), "
    r"memory_size=(\d+), userspace_addr=(\w+)\}\) = 0"
)


def test_strace_tables_match_an_independent_rebuild() -> None:
    table: dict[int, tuple[int, int, int, int]] = {}
    after: dict[int, set[tuple[int, int, int, int, int]]] = {}
    for no, line in enumerate(trace_lines(STRACE), start=1):
        m = FIELDS.search(line)
        if m is None:
            continue
        slot, size = int(m.group(1)), int(m.group(4))
        flags = (2 if "READONLY" in m.group(2) else 0) | (1 if "LOG_DIRTY" in m.group(2) else 0)
        if size == 0:
            del table[slot]
        else:
            table[slot] = (flags, int(m.group(3), 0), size, int(m.group(5), 16))
        after[no] = {(0, *v) for v in table.values()}
    result = import_trace(str(STRACE), "strace")
    sc = parse_scenario(result.text)
    imp = result.imported
    assert imp.count("create") == 22
    assert imp.count("delete") == 13
    assert imp.vcpus == 2
    for step, txn in enumerate(imp.transactions, start=1):
        assert layout_table(sc, step) == after[txn.calls[-1].call.line]


def test_unfinished_and_resumed_calls_are_joined(tmp_path: Path) -> None:
    log = tmp_path / "x.strace"
    log.write_text(
        "[pid 7] 1.000001 ioctl(4, KVM_SET_USER_MEMORY_REGION <unfinished ...>\n"
        "[pid 8] 1.000002 ioctl(5, KVM_RUN, 0) = 0\n"
        "[pid 7] 1.000009 <... ioctl resumed>, {slot=65537, flags=KVM_MEM_LOG_DIRTY_PAGES|KVM_MEM_READONLY, "
        "guest_phys_addr=0x1000, memory_size=4096, userspace_addr=0x7f0000001000}) = 0\n"
        "7 1.000010 ioctl(4, KVM_SET_USER_MEMORY_REGION2, {slot=0, flags=0, guest_phys_addr=0x0, "
        "memory_size=4096, userspace_addr=0x7f0000000000, guest_memfd_offset=0, guest_memfd=0}) = 0\n"
        "--- SIGUSR1 {si_signo=SIGUSR1} ---\n"
    )
    imp = read_trace(str(log), "strace")
    (first, second) = imp.boot.values()
    assert (first.as_id, first.id, first.flags, first.gpa) == (1, 1, 3, 0x1000)
    assert (second.as_id, second.gpa, second.hva) == (0, 0, 0x7F0000000000)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "7 1.0 ioctl(4, KVM_SET_USER_MEMORY_REGION, 0x7ffd) = 0\n",
            "the memslot struct is not decoded",
        ),
        ("hello\n", "not strace -e trace=ioctl output"),
        (
            "7 2.0 ioctl(4, KVM_RUN, 0) = 0\n7 1.0 ioctl(4, KVM_RUN, 0) = 0\n",
            "time goes backwards on thread 7",
        ),
    ],
)
def test_bad_strace(tmp_path: Path, text: str, reason: str) -> None:
    log = tmp_path / "x.strace"
    log.write_text(text)
    with pytest.raises(TraceError, match=reason) as err:
        read_trace(str(log), "strace")
    assert str(err.value).startswith(f"{log}:")
