"""QEMU's trace log (the `log` backend, `-trace kvm_set_user_memory [-trace kvm_vcpu_ioctl
-trace kvm_run_exit] -D FILE [-msg timestamp=on]`), line by line.

    TID@SEC.USEC:kvm_set_user_memory Slot#N flags=0xF gpa=0xG size=0xS ua=0xU ret=R
    TID@SEC.USEC:kvm_vcpu_ioctl cpu_index C, type 0xT, arg P     (0xae80 is KVM_RUN)
    TID@SEC.USEC:kvm_run_exit cpu_index C, reason X

QEMU 7.2 writes ``Slot#N`` with N = slot | as_id << 16; 8.0 and later write
``AddrSpace#A Slot#N``. Without ``-msg timestamp=on`` the ``TID@SEC.USEC:`` prefix is absent.
Each line is stamped with gettimeofday() by the thread that writes it, so stamps only increase
within a thread: two threads' lines can land in the file a little out of order.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from engine.importers.calls import (
    MemslotCall,
    Record,
    TraceError,
    VcpuExit,
    VcpuRun,
    clip,
    parse_lines,
)

EVENTS = ("kvm_set_user_memory", "kvm_vcpu_ioctl", "kvm_run_exit")
KVM_RUN = 0xAE80

_PREFIX = re.compile(r"^(?:(\d+)@(\d+)\.(\d{6}):)?([A-Za-z_]\w*) (.*)$")
_SET = re.compile(
    r"^(?:AddrSpace#(\d+) )?Slot#(\d+) flags=0x([0-9a-f]+) gpa=0x([0-9a-f]+) "
    r"size=0x([0-9a-f]+) ua=0x([0-9a-f]+) ret=(-?\d+)$"
)
_IOCTL = re.compile(r"^cpu_index (\d+), type 0x([0-9a-f]+), arg (?:\(nil\)|0x[0-9a-f]+)$")
_EXIT = re.compile(r"^cpu_index (\d+), reason (\d+)$")


class QemuTraceParser:
    """Turns lines into records, checking each as it comes (also for a log still being
    written: ``slotlab qemu`` feeds it lines as QEMU writes them)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamped: bool | None = None
        self.last_by_tid: dict[int, tuple[int, int]] = {}  # tid -> (t_us, line)

    def parse(self, line_no: int, text: str) -> Record | None:
        line = text.rstrip("\n")
        if not line.strip():
            return None
        m = _PREFIX.match(line)
        if m is None:
            raise TraceError(self.path, line_no, f"not a QEMU trace line: {clip(line)}")
        tid_s, sec, usec, event, args = m.groups()
        stamped = tid_s is not None
        if self.stamped is None:
            self.stamped = stamped
        elif stamped != self.stamped:
            raise TraceError(
                self.path, line_no, "some lines have a TID@time prefix and some do not"
            )
        tid = int(tid_s) if tid_s else 0
        t_us = int(sec) * 1_000_000 + int(usec) if sec else None
        if event not in EVENTS:
            raise TraceError(
                self.path,
                line_no,
                f"unknown trace event {event!r} (expected one of {', '.join(EVENTS)})",
            )
        if t_us is not None:
            prev = self.last_by_tid.get(tid)
            if prev is not None and t_us < prev[0]:
                raise TraceError(
                    self.path,
                    line_no,
                    f"time goes backwards on thread {tid}: {_stamp(t_us)} after {_stamp(prev[0])} at line {prev[1]}",
                )
            self.last_by_tid[tid] = (t_us, line_no)
        return self._event(line_no, tid, t_us, event, args)

    def _event(
        self, line_no: int, tid: int, t_us: int | None, event: str, args: str
    ) -> Record | None:
        if event == "kvm_set_user_memory":
            s = _SET.match(args)
            if s is None:
                raise TraceError(
                    self.path, line_no, f"malformed kvm_set_user_memory arguments: {clip(args)}"
                )
            as_id, slot, flags, gpa, size, ua, ret = s.groups()
            raw_slot = int(slot) | (int(as_id) << 16 if as_id else 0)
            if raw_slot >= 1 << 32:
                raise TraceError(self.path, line_no, f"slot {slot} is out of range")
            return MemslotCall(
                line_no, tid, t_us, raw_slot, int(flags, 16), int(gpa, 16), int(size, 16),
                int(ua, 16), int(ret),
            )  # fmt: skip
        if event == "kvm_vcpu_ioctl":
            i = _IOCTL.match(args)
            if i is None:
                raise TraceError(
                    self.path, line_no, f"malformed kvm_vcpu_ioctl arguments: {clip(args)}"
                )
            return (
                VcpuRun(line_no, tid, t_us, int(i.group(1)))
                if int(i.group(2), 16) == KVM_RUN
                else None
            )
        e = _EXIT.match(args)
        if e is None:
            raise TraceError(self.path, line_no, f"malformed kvm_run_exit arguments: {clip(args)}")
        return VcpuExit(line_no, tid, t_us, int(e.group(1)), int(e.group(2)))


def _stamp(t_us: int) -> str:
    return f"{t_us // 1_000_000}.{t_us % 1_000_000:06d}"


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a trace file, gzip or plain; a last line without its newline
    (a log cut off mid-write) is reported as truncated if it does not parse."""
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise TraceError(path, 1, f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise TraceError(path, line, "not text (invalid UTF-8): not a trace") from None
    yield from enumerate(text.splitlines(keepends=True), start=1)


def parse_records(path: str, lines: Iterable[tuple[int, str]]) -> list[Record]:
    return parse_lines(path, lines, QemuTraceParser(path).parse)


def read_qemu_trace(path: str) -> list[Record]:
    return parse_records(path, read_lines(path))
