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
import mmap
import os
import signal
import struct
import threading
import time
from _thread import get_ident
from fcntl import ioctl
from time import monotonic_ns
from typing import TYPE_CHECKING, NamedTuple

from engine.backends.kvm.ioctl import (
    KVM_CAP_SYNC_REGS,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_VCPU,
    KVM_GET_REGS,
    KVM_GET_SREGS,
    KVM_RUN,
    KVM_SET_REGS,
    KVM_SET_SREGS,
    KVM_SYNC_X86_REGS,
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
    RUN_SYNC_REGS,
    RUN_UNION,
    RUN_VALID_REGS,
    SEGMENT,
    SREGS_CR0,
    SREGS_SIZE,
    kvm_ioctl,
)
from engine.model import constants as c

if TYPE_CHECKING:
    from engine.backends.kvm.vm import KvmVM

KICK_SIGNAL = signal.SIGUSR1
_EXIT_REASON_WORD = RUN_EXIT_REASON // 4  # kvm_run as u32 words
_RIP_QWORD = (RUN_SYNC_REGS + 8 * REGS_RIP) // 8  # kvm_run as u64 words
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


class Mmio(NamedTuple):
    """kvm_run.mmio as read after the exit (a tuple: built once per exit, on the vCPU's path
    between KVM_RUN returning and re-entering)."""

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
        self._words: memoryview | None = None
        self._qwords: memoryview | None = None
        self._lock = threading.Lock()
        self._thread: int | None = None  # ident of the thread inside run(), if any
        self._kicking = False  # a kicker holds _lock and may be about to signal _thread
        self._closing = False
        self._regs = bytearray(REGS.size)
        self._sync_regs = False
        self.returned_ns = 0
        """time.monotonic_ns() taken in the calling thread the instant KVM_RUN last returned."""
        self.fd = kvm_ioctl(vm.vm_fd_checked(), KVM_CREATE_VCPU, index)
        # Nothing owns this vCPU until the constructor returns, so a failure from here on
        # releases what it took (a Ctrl-C before this line is held off: vm.create_vcpu).
        try:
            self._page = mmap.mmap(
                self.fd, vm.vcpu_mmap_size(), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
            # Typed views of the page: one indexing per field read on the exit path.
            self._words = memoryview(self._page).cast("I")
            self._qwords = memoryview(self._page).cast("Q")
            self._can_sync_regs = bool(
                kvm_ioctl(vm.vm_fd_checked(), KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS)
                & KVM_SYNC_X86_REGS
            )
        except BaseException:
            self._release()
            raise

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
        exit_reason holds, since immediate_exit leaves the previous value there.

        This is the vCPU's hot path (bench target kvm.run_roundtrip), so it takes no lock on
        the way in: the thread's ident is published before ``_closing`` is read, and close()
        sets ``_closing`` before it reads ``_thread`` (both under the GIL), so either this call
        sees the close and stays out of the kernel, or close() sees the thread and kicks it.
        """
        words = self._words
        if words is None:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: vCPU {self.index} is closed")
        self._thread = get_ident()
        try:
            if self._closing:  # close() has begun: stay out of the kernel
                return c.KVM_EXIT_INTR
            # fcntl.ioctl releases the GIL for the call and does not retry on EINTR.
            try:
                ioctl(self.fd, KVM_RUN, 0)
            except InterruptedError:
                self.returned_ns = monotonic_ns()
                return c.KVM_EXIT_INTR
            except BaseException:
                self.returned_ns = monotonic_ns()
                raise
            self.returned_ns = monotonic_ns()
            # Read while still marked as inside run(): close() waits for that to end.
            reason: int = words[_EXIT_REASON_WORD]
            return reason
        finally:
            self._thread = None
            if self._kicking:
                # A kicker read our ident and may not have signalled it yet: wait for it, so
                # it never signals a thread that has gone.
                with self._lock:
                    pass

    def _signal_locked(self) -> None:
        """immediate_exit, then SIGUSR1 to the thread inside run(), if any (self._lock held)."""
        self._kicking = True
        try:
            if self._page is not None:
                self._page[RUN_IMMEDIATE_EXIT] = 1
            thread = self._thread
            if thread is not None:
                # run() waits for _lock while _kicking is set: the thread is alive.
                signal.pthread_kill(thread, KICK_SIGNAL)
        finally:
            self._kicking = False

    def kick(self) -> None:
        """Make the vCPU leave KVM_RUN now, or refuse to enter it, until the flag is cleared."""
        with self._lock:
            self._signal_locked()

    def sync_regs_on_exit(self) -> bool:
        """Ask KVM to store the registers in kvm_run at every return from KVM_RUN
        (KVM_CAP_SYNC_REGS), so exit_rip() needs no KVM_GET_REGS; False where the kernel
        cannot (exit_rip() then makes the ioctl)."""
        if self._can_sync_regs:
            self.page_qwords()[RUN_VALID_REGS // 8] = KVM_SYNC_X86_REGS
            self._sync_regs = True
        return self._sync_regs

    def exit_rip(self) -> int:
        """RIP as of the last return from KVM_RUN (call before the next one)."""
        if self._sync_regs:
            return self.page_qwords()[_RIP_QWORD]
        return self.get_regs()[REGS_RIP]

    def page_qwords(self) -> memoryview:
        if self._qwords is None or self._closing:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: vCPU {self.index} is closed")
        return self._qwords

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
        return Mmio(phys, data, length, is_write != 0)

    def complete_mmio_read(self, data: bytes) -> None:
        """The value of a KVM_EXIT_MMIO read; KVM hands it to the guest on the next KVM_RUN."""
        n = min(len(data), 8)
        self.page[RUN_MMIO_DATA : RUN_MMIO_DATA + n] = data[:n]

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
                    self._signal_locked()
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
        self._release()
        if interrupted is not None:
            raise interrupted

    def _release(self) -> None:
        """Unmap the page and close the fd, with no thread left inside KVM_RUN."""
        for view in (self._words, self._qwords):
            if view is not None:
                view.release()
        self._words = self._qwords = None
        with self._lock:
            page, self._page = self._page, None
        if page is not None:
            page.close()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
