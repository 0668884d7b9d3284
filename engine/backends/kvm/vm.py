"""A VM on the real /dev/kvm with the model VM's ioctl surface.

The kernel has no ioctl that lists memslots, so KvmVM remembers every region it set, and
changes that record only after the kernel accepted the call. Setting a slot maps nothing: KVM
does not look at userspace_addr until a vCPU faults on it. Guest memory and vCPUs are opt-in
(``map_memory``, ``create_vcpu``); the VM owns them and ``close`` releases them all, vCPUs first
(kicking any thread still inside KVM_RUN), then the VM's fds, then the mappings.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Callable

from trio.lowlevel import enable_ki_protection

from engine.backends.kvm.ioctl import (
    DIRTY_LOG,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_VM,
    KVM_GET_DIRTY_LOG,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_SET_USER_MEMORY_REGION,
    MEMORY_REGION,
    kvm_ioctl,
    open_dev_kvm,
)
from engine.backends.kvm.vcpu import KvmVcpu
from engine.model import constants as c
from engine.model.constants import KVM_CAP_MULTI_ADDRESS_SPACE, PAGE_SHIFT, PAGE_SIZE
from engine.model.host import Host
from engine.model.region import MemoryRegion, check_slot_arg, make_region


def pack_region(
    slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: int
) -> bytes:
    """struct kvm_userspace_memory_region, or the error the model raises for the same
    arguments (region.make_region())."""
    if (
        type(slot) is int
        and type(flags) is int
        and type(guest_phys_addr) is int
        and type(memory_size) is int
        and type(userspace_addr) is int
    ):
        # The common case: struct refuses exactly the values that do not fit their field.
        # This call is on the update path (bench target kvm.slot_create_delete).
        try:
            return MEMORY_REGION.pack(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        except struct.error:
            pass  # make_region() says which argument and why
    return MEMORY_REGION.pack(
        *make_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)
    )


class GuestMemory:
    """An anonymous private mapping for guest RAM: ``addr`` is what a slot's userspace_addr
    points at. MAP_NORESERVE: large, mostly untouched areas cost no commit charge."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(
                f"guest memory size must be a positive multiple of 4 KiB, not {size:#x}"
            )
        self.size = size
        self._map: mmap.mmap | None = mmap.mmap(
            -1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        )
        # The address without keeping a buffer export alive (which would block close()).
        view = ctypes.c_char.from_buffer(self._map)
        self.addr = ctypes.addressof(view)
        del view

    @property
    def map(self) -> mmap.mmap:
        if self._map is None:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: guest memory is unmapped")
        return self._map

    def read(self, offset: int, size: int) -> bytes:
        return self.map[offset : offset + size]

    def write(self, offset: int, data: bytes) -> None:
        self.map[offset : offset + len(data)] = data

    def close(self) -> None:
        if self._map is not None:
            m, self._map = self._map, None
            m.close()


class KvmVM:
    """One KVM VM (no vCPUs) and the memslot table its ioctls have built."""

    # Under trio, a Ctrl-C is held until these return (trio's KI protection): it must not land
    # between a syscall handing back an fd and this VM owning it, nor half-way through close.
    @enable_ki_protection
    def __init__(self, device: str | None = None) -> None:
        self.kvm_fd = -1
        self.vm_fd = -1
        self.closed = False
        # Keyed by the full slot number (as_id << 16 | id), which also sorts by id within an as_id.
        self._slots: dict[int, MemoryRegion] = {}
        self.vcpus: list[KvmVcpu] = []
        self._memory: list[GuestMemory] = []
        self._mmap_size = 0
        self._host: Host | None = None
        try:
            self.kvm_fd = open_dev_kvm(device)
            self.vm_fd = kvm_ioctl(self.kvm_fd, KVM_CREATE_VM, 0)
            # The cap is 0 where the kernel has only one address space.
            self.nr_address_spaces = max(1, self.check_extension(KVM_CAP_MULTI_ADDRESS_SPACE))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> KvmVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @enable_ki_protection
    def close(self) -> None:
        """Release everything; safe to call twice, and after a failed __init__. A failure
        half-way still releases the rest, then raises the first error."""
        self.closed = True
        first: BaseException | None = None
        for vcpu in self.vcpus:
            try:
                vcpu.close()
            except BaseException as err:  # keep releasing the others
                first = first or err
        self.vcpus.clear()
        for name in ("vm_fd", "kvm_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)
        for memory in self._memory:
            try:
                memory.close()
            except BaseException as err:  # a caller's buffer still exported: unmap the rest
                first = first or err
        self._memory.clear()
        if first is not None:
            raise first

    def vm_fd_checked(self) -> int:
        return self._vm()

    def vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE: the kvm_run page plus what follows it (PIO data, ring)."""
        if not self._mmap_size:
            self._mmap_size = kvm_ioctl(self.kvm_fd, KVM_GET_VCPU_MMAP_SIZE)
        return self._mmap_size

    @enable_ki_protection
    def create_vcpu(self, index: int | None = None) -> KvmVcpu:
        """KVM_CREATE_VCPU and its kvm_run mapping; owned (and closed) by the VM."""
        self._vm()
        vcpu = KvmVcpu(self, len(self.vcpus) if index is None else index)
        self.vcpus.append(vcpu)
        return vcpu

    def map_memory(self, size: int) -> GuestMemory:
        """Anonymous memory for guest RAM; owned (and unmapped) by the VM."""
        self._vm()
        memory = GuestMemory(size)
        self._memory.append(memory)
        return memory

    @property
    def host(self) -> Host:
        """This kernel in the model's terms, as far as KVM_CHECK_EXTENSION tells (the VMM
        sizes its slot ids and address spaces from it)."""
        if self._host is None:
            self._host = Host(
                nr_address_spaces=self.nr_address_spaces,
                nr_memslots=min(self.check_extension(c.KVM_CAP_NR_MEMSLOTS), c.KVM_USER_MEM_SLOTS),
                readonly_mem=bool(self.check_extension(c.KVM_CAP_READONLY_MEM)),
                nr_cpus=max(1, self.check_extension(c.KVM_CAP_NR_VCPUS)),
            )
        return self._host

    def region(self, slot: int) -> MemoryRegion | None:
        """The region last set for a full slot number, if it exists."""
        return self._slots.get(slot)

    def _vm(self) -> int:
        # The model answers EIO for a closed VM; a closed fd number might be reused by now.
        if self.vm_fd < 0:
            raise OSError(errno.EIO, f"{os.strerror(errno.EIO)}: VM is closed")
        return self.vm_fd

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd, which answers for this VM (not just the host)."""
        if not isinstance(cap, int) or isinstance(cap, bool):
            raise TypeError(f"cap must be an int, not {type(cap).__name__}")
        return kvm_ioctl(self._vm(), KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(
        self,
        slot: int,
        flags: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION."""
        arg = pack_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        fd = self.vm_fd
        if fd < 0:
            self._vm()  # raises
        # A write-only struct: fcntl.ioctl passes a copy, which is all the kernel reads, and
        # costs less than the ctypes call (the request fits in fcntl's signed int).
        fcntl.ioctl(fd, KVM_SET_USER_MEMORY_REGION, arg)
        # Accepted, so it was a delete, or a create, move, flags-only change or no-op whose
        # result is exactly the region passed (size and uaddr cannot have changed).
        if memory_size == 0:
            del self._slots[slot]
        else:
            self._slots[slot] = MemoryRegion(
                slot, flags, guest_phys_addr, memory_size, userspace_addr
            )

    def region_call(self, region: MemoryRegion) -> Callable[[], None]:
        """set_user_memory_region(*region) checked and packed now, issued when the result is
        called: a caller that stamps the syscall (clock.StampedCall) has only the call itself
        between its stamp and the kernel."""
        arg = pack_region(*region)

        def issue() -> None:
            fcntl.ioctl(self._vm(), KVM_SET_USER_MEMORY_REGION, arg)
            if region.memory_size == 0:
                del self._slots[region.slot]
            else:
                self._slots[region.slot] = region

        return issue

    def get_dirty_log(self, slot: int) -> list[int]:
        """KVM_GET_DIRTY_LOG: page offsets from the slot base written since the last call."""
        check_slot_arg(slot)
        known = self._slots.get(slot)
        npages = 0 if known is None else known.memory_size >> PAGE_SHIFT
        # The kernel copies ALIGN(npages, 64) bits; for an unknown slot it fails before copying.
        words = max(1, (npages + 63) // 64)
        bitmap = (ctypes.c_uint64 * words)()
        arg = bytearray(DIRTY_LOG.pack(slot, 0, ctypes.addressof(bitmap)))
        kvm_ioctl(self._vm(), KVM_GET_DIRTY_LOG, arg)
        return [
            index * 64 + bit
            for index, word in enumerate(bitmap)
            if word
            for bit in range(64)
            if word >> bit & 1
        ]

    def memslots(self, as_id: int = 0) -> list[MemoryRegion]:
        """The slots of an address space as last set, in slot-id order."""
        if not 0 <= as_id < self.nr_address_spaces:
            raise ValueError(f"as_id {as_id} out of range (this host has {self.nr_address_spaces})")
        return [r for _, r in sorted(self._slots.items()) if r.as_id == as_id]
