"""A vCPU on the real /dev/kvm: its fd, its kvm_run page, and the kick that gets it out.

KVM_RUN blocks the calling thread for as long as the guest runs without an exit, so every vCPU
runs in a thread of its own. Getting it out is QEMU's kick (kvm_cpu_kick()): set
kvm_run.immediate_exit (read by the kernel on entry, so a thread about to enter comes straight
back), then pthread_kill(SIGUSR1) the thread if it is inside KVM_RUN (the signal makes a running
guest exit with EINTR). The signal needs a real handler: with SIG_IGN the kernel discards it,
with SIG_DFL it kills the process. Python only lets the main thread install one, so the first
vCPU created in the main thread installs a no-op handler for good; it is never restored,
because a late kick to a process back on SIG_DFL would terminate it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import mmap
import os
import signal
import struct
import threading
import time
from typing import TYPE_CHECKING

from engine.backends.kvm.ioctl import (
    KVM_CREATE_VCPU,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_RUN,
    KVM_SET_REGS,
    KVM_SET_SREGS,
    REGS,
    REGS_RCX,
    REGS_RFLAGS,
    REGS_RIP,
    RUN_EXIT_REASON,
    RUN_IMMEDIATE_EXIT,
    RUN_INTERNAL,
    RUN_IO,
    RUN_MMIO,
    RUN_MMIO_DATA,
    RUN_UNION,
    SEGMENT,
    SREGS_CR0,
    SREGS_SIZE,
    kvm_ioctl,
)
from engine.model import constants as c

if TYPE_CHECKING:
    from engine.backends.kvm.vm import KvmVM

KICK_SIGNAL = signal.SIGUSR1
_EXIT_REASON = struct.Struct("<I")
_handler_lock = threading.Lock()
_handler_installed = False


def _ignore_kick(signum: int, frame: object) -> None:
    """The kick's handler: its only job is to exist, so that the signal interrupts KVM_RUN."""


def ensure_kick_handler() -> None:
    """Install the no-op SIGUSR1 handler, once, if this is the main thread; a handler someone
    else installed is kept (it interrupts KVM_RUN as well)."""
    global _handler_installed
    with _handler_lock:
        if _handler_installed:
            return
        current = signal.getsignal(KICK_SIGNAL)
        if current not in (signal.SIG_DFL, signal.SIG_IGN, None):
            _handler_installed = True
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "the first kvm vCPU must be created in the main thread: only it can install the "
                "SIGUSR1 handler that kicks vCPUs out of KVM_RUN"
            )
        signal.signal(KICK_SIGNAL, _ignore_kick)
        _handler_installed = True


@dataclasses.dataclass(frozen=True, slots=True)
class Mmio:
    phys_addr: int
    data: bytes
    len: int
    is_write: bool

    @property
    def value(self) -> int:
        return int.from_bytes(self.data[: self.len], "little")


@dataclasses.dataclass(frozen=True, slots=True)
class PortIo:
    out: bool
    size: int
    port: int
    count: int
    data: bytes


class KvmVcpu:
    """One vCPU. ``run()`` may be called from any thread, one at a time; ``kick()`` from any
    other thread; ``close()`` kicks a thread still inside KVM_RUN and waits for it."""

    def __init__(self, vm: KvmVM, index: int) -> None:
        ensure_kick_handler()
        self.index = index
        self.fd = -1
        self._page: mmap.mmap | None = None
        self._lock = threading.Lock()
        self._thread: int | None = None  # ident of the thread inside run(), if any
        self._closing = False
        self._regs = bytearray(REGS.size)
        self.returned_ns = 0
        """time.monotonic_ns() taken in the calling thread the instant KVM_RUN last returned."""
        fd = kvm_ioctl(vm.vm_fd_checked(), KVM_CREATE_VCPU, index)
        try:
            self._page = mmap.mmap(
                fd, vm.vcpu_mmap_size(), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    @property
    def page(self) -> mmap.mmap:
        if self._page is None or self._closing:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: vCPU {self.index} is closed")
        return self._page

    @property
    def closed(self) -> bool:
        return self._closing

    # --- KVM_RUN and the kick ----------------------------------------------------------------

    def run(self) -> int:
        """KVM_RUN once. Returns the exit reason; a kick (EINTR) is KVM_EXIT_INTR whatever
        exit_reason holds, since immediate_exit leaves the previous value there."""
        page = self.page
        with self._lock:
            if self._closing:
                return c.KVM_EXIT_INTR
            self._thread = threading.get_ident()
        try:
            # fcntl.ioctl releases the GIL for the call and does not retry on EINTR.
            try:
                fcntl.ioctl(self.fd, KVM_RUN, 0)
            finally:
                self.returned_ns = time.monotonic_ns()
            # Read while still marked as inside run(): close() waits for that to end.
            reason: int = _EXIT_REASON.unpack_from(page, RUN_EXIT_REASON)[0]
        except InterruptedError:
            reason = c.KVM_EXIT_INTR
        finally:
            with self._lock:
                self._thread = None
        return reason

    def kick(self) -> None:
        """Make the vCPU leave KVM_RUN now, or refuse to enter it, until the flag is cleared."""
        with self._lock:
            if self._page is None:
                return
            self._page[RUN_IMMEDIATE_EXIT] = 1
            if self._thread is not None:
                # Under the lock the thread is still inside run(), so its ident is alive.
                signal.pthread_kill(self._thread, KICK_SIGNAL)

    def clear_kick(self) -> None:
        """Clear immediate_exit; the kernel never does."""
        self.page[RUN_IMMEDIATE_EXIT] = 0

    @property
    def in_kvm_run(self) -> bool:
        return self._thread is not None

    # --- registers ---------------------------------------------------------------------------

    def get_regs(self) -> tuple[int, ...]:
        kvm_ioctl(self.fd_checked(), KVM_GET_REGS, self._regs)
        return REGS.unpack(self._regs)

    def set_regs(self, regs: tuple[int, ...]) -> None:
        kvm_ioctl(self.fd_checked(), KVM_SET_REGS, bytearray(REGS.pack(*regs)))

    def rip(self) -> int:
        return self.get_regs()[REGS_RIP]

    def set_rip(self, rip: int) -> None:
        regs = list(self.get_regs())
        regs[REGS_RIP] = rip
        self.set_regs(tuple(regs))

    def setup_flat_real_mode(self, rip: int, rcx: int = 0) -> None:
        """16-bit real mode with every segment at base 0 and a 4 GiB limit ("unreal mode").

        The limits only live in the hidden segment caches that KVM_SET_SREGS writes; the
        guest never reloads a segment register, so they stay. With 32-bit address-size
        prefixes the guest then reaches any GPA below 4 GiB without paging or a GDT.
        """
        sregs = bytearray(SREGS_SIZE)
        kvm_ioctl(self.fd_checked(), KVM_GET_SREGS, sregs)
        # base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable, padding
        SEGMENT.pack_into(sregs, 0, 0, 0xFFFFFFFF, 0, 11, 1, 0, 0, 1, 0, 1, 0, 0, 0)
        for index in range(1, 6):  # ds es fs gs ss: read/write data
            SEGMENT.pack_into(
                sregs, index * SEGMENT.size, 0, 0xFFFFFFFF, 0, 3, 1, 0, 0, 1, 0, 1, 0, 0, 0
            )
        cr0 = struct.unpack_from("<Q", sregs, SREGS_CR0)[0]
        struct.pack_into("<Q", sregs, SREGS_CR0, cr0 & ~1)  # PE clear: real mode
        kvm_ioctl(self.fd_checked(), KVM_SET_SREGS, sregs)
        regs = [0] * 18
        regs[REGS_RIP] = rip
        regs[REGS_RFLAGS] = 2  # bit 1 is reserved and always set
        regs[REGS_RCX] = rcx
        self.set_regs(tuple(regs))

    def fd_checked(self) -> int:
        if self.fd < 0 or self._closing:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: vCPU {self.index} is closed")
        return self.fd

    # --- the exit's payload ------------------------------------------------------------------

    def mmio(self) -> Mmio:
        phys, data, length, is_write = RUN_MMIO.unpack_from(self.page, RUN_UNION)
        return Mmio(phys, bytes(data), length, bool(is_write))

    def complete_mmio_read(self, data: bytes) -> None:
        """The value of a KVM_EXIT_MMIO read; KVM hands it to the guest on the next KVM_RUN."""
        page = self.page
        page[RUN_MMIO_DATA : RUN_MMIO_DATA + 8] = data[:8].ljust(8, b"\0")

    def port_io(self) -> PortIo:
        page = self.page
        direction, size, port, count, offset = RUN_IO.unpack_from(page, RUN_UNION)
        return PortIo(
            direction == 1, size, port, count, bytes(page[offset : offset + size * count])
        )

    def internal_error(self) -> tuple[int, list[int]]:
        page = self.page
        suberror, ndata = RUN_INTERNAL.unpack_from(page, RUN_UNION)
        data = list(struct.unpack_from(f"<{min(ndata, 16)}Q", page, RUN_UNION + 8))
        return suberror, data

    # --- teardown ------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Kick a thread out of KVM_RUN if one is in it, then unmap the page and close the fd."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        deadline = time.monotonic() + timeout
        interrupted: BaseException | None = None
        while True:
            try:
                with self._lock:
                    if self._thread is None:
                        break
                    if self._page is not None:
                        self._page[RUN_IMMEDIATE_EXIT] = 1
                    signal.pthread_kill(self._thread, KICK_SIGNAL)
                if time.monotonic() > deadline:
                    raise OSError(
                        errno.EBUSY,
                        f"vCPU {self.index}: a thread stayed in KVM_RUN for {timeout} s",
                    )
                time.sleep(0.0002)
            except KeyboardInterrupt as err:
                # Ctrl-C while closing (pthread_kill and sleep run signal handlers): finish
                # releasing the vCPU first, then let the interrupt through.
                interrupted = err
        with self._lock:
            page, self._page = self._page, None
        if page is not None:
            page.close()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        if interrupted is not None:
            raise interrupted
