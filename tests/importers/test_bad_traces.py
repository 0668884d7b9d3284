"""Bad traces: one line naming the file and line, exit status 2, no traceback."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from engine.importers import import_trace, read_trace
from engine.importers.builtin import trace_path
from tests.engine.helpers import one_line, run_cli
from tests.importers.helpers import trace_lines

GOOD = "1@1.000010:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 size=0x100000 ua=0x7f0000000000 ret=0\n"


def _first_lines(n: int) -> str:
    return "\n".join(trace_lines(trace_path("qemu72-pc-boot"))[:n]) + "\n"


CASES = {
    "truncated": (
        _first_lines(40)
        + "13276@1796137889.215715:kvm_set_user_memory Slot#0 flags=0x0 gpa=0x0 si",
        41,
        "truncated last line",
    ),
    "garbage": (GOOD + "\x1b[31mhello world\n", 2, "not a QEMU trace line"),
    "wrong event": (
        GOOD
        + "1@1.000020:kvm_set_user_memory_region Slot#1 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=0\n",
        2,
        "unknown trace event 'kvm_set_user_memory_region'",
    ),
    "time goes backwards": (
        GOOD
        + GOOD.replace("1.000010", "1.000009")
        .replace("Slot#0", "Slot#1")
        .replace("gpa=0x0", "gpa=0x200000"),
        2,
        "time goes backwards on thread 1",
    ),
    "delete of a never-created slot": (
        GOOD + "1@1.000020:kvm_set_user_memory Slot#7 flags=0x0 gpa=0x0 size=0x0 ua=0x0 ret=0\n",
        2,
        "DELETE of slot 7, which was never created",
    ),
    "malformed arguments": (
        GOOD + "1@1.000020:kvm_set_user_memory Slot#1 flags=0xZ gpa=0x0 size=0x0 ua=0x0 ret=0\n",
        2,
        "malformed kvm_set_user_memory arguments",
    ),
    "overlap": (
        GOOD + GOOD.replace("Slot#0", "Slot#1").replace("1.000010", "1.000011"),
        2,
        "overlaps slot 0 (EEXIST)",
    ),
    "no memslot call": (
        "1@1.000010:kvm_vcpu_ioctl cpu_index 0, type 0xae80, arg (nil)\n"
        "1@1.000020:kvm_run_exit cpu_index 0, reason 2\n",
        2,
        "no KVM_SET_USER_MEMORY_REGION call in the trace",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_trace_is_one_line_with_file_and_line(case: str, tmp_path: Path) -> None:
    text, line, reason = CASES[case]
    log = tmp_path / "bad.qemu.log"
    log.write_text(text)
    done = run_cli("import", "qemu-trace", str(log), "-o", str(tmp_path / "x.toml"))
    assert done.returncode == 2
    message = one_line(done.stderr)
    assert message.startswith(f"slotlab: {log}:{line}: "), message
    assert reason in message
    assert not (tmp_path / "x.toml").exists()


def test_run_trace_reports_a_bad_trace_the_same_way(tmp_path: Path) -> None:
    log = tmp_path / "bad.qemu.log"
    log.write_text(CASES["garbage"][0])
    done = run_cli("run", "--trace", str(log), "--no-log")
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(f"slotlab: {log}:2: not a QEMU trace line")


def test_not_gzip_and_not_text(tmp_path: Path) -> None:
    bad = tmp_path / "x.qemu.log.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"x.qemu.log.gz:1: cannot read"):
        read_trace(str(bad))
    binary = tmp_path / "x.qemu.log"
    binary.write_bytes(GOOD.encode() + b"\xff\xfe\n")
    with pytest.raises(ValueError, match=r"x.qemu.log:2: not text"):
        read_trace(str(binary))


def test_without_timestamps_every_gap_is_the_cap(tmp_path: Path) -> None:
    plain = tmp_path / "plain.qemu.log.gz"
    lines = [line.split(":", 1)[1] for line in trace_lines(trace_path("qemu72-pc-boot"))]
    plain.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    result = import_trace(str(plain), max_gap_ns=7000)
    assert set(result.text.split("gaps_ns = [")[1].split("]")[0].split(", ")) == {"7000"}
    # Without thread ids only KVM_RUN lines and the call order split transactions; the
    # tables after each are still the kernel's.
    assert len(result.imported.calls) == len(read_trace(str(trace_path("qemu72-pc-boot"))).calls)
