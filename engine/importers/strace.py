"""`strace -f [-tt|-ttt] -e trace=ioctl` output of any VMM (QEMU, crosvm, Firecracker,
cloud-hypervisor), as the same records as QEMU's trace log.

    14240 15:12:36.917174 ioctl(8, KVM_SET_USER_MEMORY_REGION, {slot=2, flags=0,
          guest_phys_addr=0xc0000, memory_size=65536, userspace_addr=0x7f7befec0000}) = 0
    14240 15:12:36.878779 ioctl(9, KVM_RUN, 0) = 0
    [pid 14240] 15:12:36.9 ioctl(9, KVM_RUN, 0 <unfinished ...>
    [pid 14240] 15:12:37.1 <... ioctl resumed>) = 0

strace decodes KVM_SET_USER_MEMORY_REGION and KVM_SET_USER_MEMORY_REGION2 with their struct
fields (the slot field holds as_id << 16 as the kernel reads it). A call another thread
interrupted is printed in two pieces, joined here. Stamps are taken when the call starts
(the QEMU log stamps its line after the ioctl returns). -tt stamps are the time of day: a
thread's stamp going backwards by more than 12 hours is midnight; by less, an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.importers.calls import MemslotCall, Record, TraceError, VcpuRun, clip, parse_lines

MEMSLOT_IOCTLS = ("KVM_SET_USER_MEMORY_REGION", "KVM_SET_USER_MEMORY_REGION2")
FLAG_NAMES = {"KVM_MEM_LOG_DIRTY_PAGES": 1, "KVM_MEM_READONLY": 2, "KVM_MEM_GUEST_MEMFD": 4}
DAY_US = 86_400_000_000

_LINE = re.compile(
    r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?"
    r"(?:(\d+)\.(\d+)\s+|(\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s+)?"
    r"(.*)$"
)
_CALL = re.compile(r"^ioctl\((\d+), (\w+)(?:, (.*?))?(?: <unfinished \.\.\.>|\) += (.*))$")
_RESUMED = re.compile(r"^<\.\.\. ioctl resumed>(.*?)\) += (.*)$")
_RET = re.compile(r"^(-?\d+|0x[0-9a-f]+)(?: (\w+) \(.*\))?$")
_NOISE = re.compile(r"^(---.*---|\+\+\+.*\+\+\+|strace: .*)$")


class StraceParser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pending: dict[int, tuple[int, int | None, str, str]] = {}  # pid -> call start
        self.last_by_pid: dict[int, int] = {}
        self.days: dict[int, int] = {}
        self.vm_fd: int | None = None

    def parse(self, line_no: int, text: str) -> Record | None:
        line = text.rstrip("\n")
        if not line.strip():
            return None
        m = _LINE.match(line)
        assert m is not None  # every part is optional
        pid = int(m.group(1) or m.group(2) or 0)
        t_us = self._time(line_no, pid, m)
        rest = m.group(9)
        if _NOISE.match(rest):
            return None
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            start = self.pending.pop(pid, None)
            if start is None:
                return None  # the call began before the trace did
            start_line, start_t, fd_name, head = start
            args = (head + resumed.group(1)).strip().removeprefix(",").strip()
            return self._finish(start_line, pid, start_t, fd_name, args, resumed.group(2))
        call = _CALL.match(rest)
        if call is None:
            if rest.startswith("ioctl("):
                raise TraceError(self.path, line_no, f"malformed ioctl line: {clip(rest)}")
            raise TraceError(self.path, line_no, f"not strace -e trace=ioctl output: {clip(rest)}")
        fd, name, args, ret = call.groups()
        if name == "KVM_RUN":
            return VcpuRun(line_no, pid, t_us, int(fd))
        if name not in MEMSLOT_IOCTLS:
            return None
        if ret is None:
            self.pending[pid] = (line_no, t_us, fd, args or "")
            return None
        return self._finish(line_no, pid, t_us, fd, args or "", ret)

    def _time(self, line_no: int, pid: int, m: re.Match[str]) -> int | None:
        if m.group(3) is not None:
            t = int(m.group(3)) * 1_000_000 + int(m.group(4).ljust(6, "0")[:6])
        elif m.group(5) is not None:
            frac = (m.group(8) or "0").ljust(6, "0")[:6]
            t = (int(m.group(5)) * 3600 + int(m.group(6)) * 60 + int(m.group(7))) * 1_000_000
            t += int(frac)
            prev = self.last_by_pid.get(pid)
            day = self.days.get(pid, 0)
            if prev is not None and t + day < prev - DAY_US // 2:
                day += DAY_US
                self.days[pid] = day
            t += day
        else:
            return None
        prev = self.last_by_pid.get(pid)
        if prev is not None and t < prev:
            raise TraceError(self.path, line_no, f"time goes backwards on thread {pid}")
        self.last_by_pid[pid] = t
        return t

    def _finish(
        self, line_no: int, pid: int, t_us: int | None, fd: str, args: str, ret: str
    ) -> MemslotCall:
        fields = _struct(self.path, line_no, args)
        if self.vm_fd is None:
            self.vm_fd = int(fd)
        elif int(fd) != self.vm_fd:
            raise TraceError(
                self.path, line_no, f"a second VM (fd {fd}): the importer takes one VM per trace"
            )
        r = _RET.match(ret.strip())
        if r is None:
            raise TraceError(self.path, line_no, f"malformed return value {ret!r}")
        value = int(r.group(1), 0)
        return MemslotCall(
            line_no, pid, t_us, fields["slot"], fields["flags"], fields["guest_phys_addr"],
            fields["memory_size"], fields["userspace_addr"], value if value >= 0 else -1,
        )  # fmt: skip


def _struct(path: str, line_no: int, args: str) -> dict[str, int]:
    text = args.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise TraceError(path, line_no, f"the memslot struct is not decoded: {clip(text)}")
    out: dict[str, int] = {}
    for part in text[1:-1].split(", "):
        key, sep, value = part.partition("=")
        if not sep:
            raise TraceError(path, line_no, f"malformed struct field {part!r}")
        out[key.strip()] = _value(path, line_no, key.strip(), value.strip())
    for need in ("slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr"):
        if need not in out:
            raise TraceError(path, line_no, f"the memslot struct has no {need!r}")
    return out


def _value(path: str, line_no: int, key: str, value: str) -> int:
    value = re.sub(r"/\*.*?\*/", "", value).strip()  # -X verbose: 0x2 /* KVM_MEM_READONLY */
    total = 0
    for term in value.split("|"):
        term = term.strip()
        if term in FLAG_NAMES:
            total |= FLAG_NAMES[term]
            continue
        try:
            total |= int(term, 0)
        except ValueError:
            raise TraceError(path, line_no, f"{key}={value!r} is not a number") from None
    return total


def parse_strace(path: str, lines: Iterable[tuple[int, str]]) -> list[Record]:
    return parse_lines(path, lines, StraceParser(path).parse)
