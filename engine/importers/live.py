"""A real QEMU, started with the memslot trace events, and its trace followed as it is written.

``QemuProcess`` adds ``-trace kvm_set_user_memory -trace kvm_vcpu_ioctl -trace kvm_run_exit
-msg timestamp=on -D TRACE`` to the user's command and starts it in its own session (so a
Ctrl-C at the terminal reaches slotlab, which then stops QEMU) with PR_SET_PDEATHSIG, so QEMU
dies with slotlab even if slotlab is killed outright: never an orphan VM.

``TraceFollower`` reads the lines QEMU has finished writing, checks each with the same parser
as ``slotlab import``, and keeps the records; ``state()`` rebuilds slot tables and
transactions from them (a few hundred calls: cheap enough to redo on every poll).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.importers.calls import DEFAULT_TXN_GAP_US, Imported, MemslotCall, Record, group
from engine.importers.qemu_trace import EVENTS, QemuTraceParser

INSTALL_HINT = (
    "QEMU is not installed: install it with `apt-get install qemu-system-x86 seabios` "
    "(Debian, Ubuntu) or `dnf install qemu-system-x86` (Fedora)"
)
PR_SET_PDEATHSIG = 1
OWN_OPTIONS = ("-D", "-trace", "-msg")


class QemuError(ValueError):
    """Why this QEMU cannot be watched, in one line."""


def qemu_binary(command: list[str]) -> str:
    if not command:
        raise QemuError(
            "give the QEMU command after --, e.g. slotlab qemu -- qemu-system-x86_64 -accel kvm"
        )
    found = shutil.which(command[0])
    if found is None:
        if "qemu" in Path(command[0]).name:
            raise QemuError(INSTALL_HINT)
        raise QemuError(f"{command[0]}: command not found")
    return found


def check_trace_support(binary: str) -> None:
    """QEMU must have the `log` trace backend and the three events: the backend's format
    strings (``TID@SEC.USEC:event ...``) are compiled into the binary, one per event."""
    try:
        with open(binary, "rb") as f:
            head = f.read(4)
            data = head + f.read() if head == b"\x7fELF" else b""
    except OSError as err:
        raise QemuError(f"{binary}: cannot read: {err.strerror}") from None
    if not data:
        return  # a wrapper script: QEMU itself will say if -trace is not understood
    missing = [e for e in EVENTS if f":{e} ".encode() not in data]
    if missing:
        raise QemuError(
            f"{binary} cannot log {', '.join(missing)}: it needs the `log` trace backend "
            "(configure --enable-trace-backends=log) with the kvm trace events"
        )


def traced_command(command: list[str], trace: Path) -> list[str]:
    for arg in command[1:]:
        if arg in OWN_OPTIONS:
            raise QemuError(f"slotlab qemu sets {arg} itself: leave it out of the QEMU command")
    events = [a for e in EVENTS for a in ("-trace", e)]
    return [*command, *events, "-msg", "timestamp=on", "-D", str(trace)]


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when slotlab's thread goes away."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class QemuProcess:
    def __init__(self, command: list[str], trace: Path, stderr: Path) -> None:
        binary = qemu_binary(command)
        check_trace_support(binary)
        self.argv = traced_command(command, trace)
        self.trace = trace
        self.stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace_s: float = 5.0) -> int:
        """SIGTERM (QEMU shuts down cleanly and flushes its log), then SIGKILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def last_error(self) -> str:
        """QEMU's first error on stderr (why it exited), if any."""
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if line.strip() and "warning:" not in line]
        return errors[0] if errors else ""


class TraceFollower:
    def __init__(self, path: Path, txn_gap_us: int = DEFAULT_TXN_GAP_US) -> None:
        self.path = path
        self.txn_gap_us = txn_gap_us
        self.parser = QemuTraceParser(str(path))
        self.records: list[Record] = []
        self.calls = 0
        self._offset = 0
        self._line = 0
        self._partial = b""

    def poll(self) -> list[Record]:
        """The records of every line completed since the last poll."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        new: list[Record] = []
        if not complete and not _:
            return new
        for text in complete.decode(errors="replace").split("\n"):
            self._line += 1
            rec = self.parser.parse(self._line, text + "\n")
            if rec is not None:
                new.append(rec)
                self.calls += isinstance(rec, MemslotCall)
        self.records.extend(new)
        return new

    def state(self) -> Imported | None:
        """Slot tables and transactions so far; None before the first memslot call."""
        if not self.calls:
            return None
        return group(str(self.path), self.records, self.txn_gap_us)


class StopRequest:
    """Which signal asked slotlab to stop QEMU (0: none yet); the watch loop checks it between
    polls. The handler only notes it: a KeyboardInterrupt raised where the signal lands can
    land inside Popen.poll() while it holds the child's waitpid lock, and stopping QEMU then
    waits on that lock for ever."""

    def __init__(self) -> None:
        self.signum = 0


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """SIGINT, SIGTERM and SIGHUP ask the watch to stop QEMU and keep what it did; the
    previous handlers come back afterwards."""
    request = StopRequest()

    def note(signum: int, frame: object) -> None:
        request.signum = request.signum or signum

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            previous[sig] = signal.signal(sig, note)
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
