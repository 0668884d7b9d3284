"""A VM on the real /dev/kvm with the model VM's ioctl surface.

The kernel has no ioctl that lists memslots, so KvmVM remembers every region it set, and
changes that record only after the kernel accepted the call. Nothing here maps guest memory:
KVM does not look at userspace_addr until a vCPU faults on it.
"""

from __future__ import annotations

import ctypes
import errno
import os

from engine.backends.kvm.ioctl import (
    DEV_KVM,
    DIRTY_LOG,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_VM,
    KVM_GET_DIRTY_LOG,
    KVM_SET_USER_MEMORY_REGION,
    MEMORY_REGION,
    kvm_ioctl,
    open_dev_kvm,
)
from engine.model.constants import KVM_CAP_MULTI_ADDRESS_SPACE, PAGE_SHIFT
from engine.model.region import MemoryRegion, check_slot_arg, make_region


class KvmVM:
    """One KVM VM (no vCPUs) and the memslot table its ioctls have built."""

    def __init__(self, device: str = DEV_KVM) -> None:
        self.kvm_fd = -1
        self.vm_fd = -1
        self.closed = False
        # Keyed by the full slot number (as_id << 16 | id), which also sorts by id within an as_id.
        self._slots: dict[int, MemoryRegion] = {}
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

    def close(self) -> None:
        self.closed = True
        for name in ("vm_fd", "kvm_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

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
        region = make_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        kvm_ioctl(self._vm(), KVM_SET_USER_MEMORY_REGION, bytearray(MEMORY_REGION.pack(*region)))
        # Accepted, so it was a delete, or a create, move, flags-only change or no-op whose
        # result is exactly the region passed (size and uaddr cannot have changed).
        if memory_size == 0:
            del self._slots[region.slot]
        else:
            self._slots[region.slot] = region

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
