"""Numbers from the kernel's UAPI and kvm_host.h, under the kernel's own names."""

from __future__ import annotations

from typing import Final

PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT

# struct kvm_userspace_memory_region.flags (bits 0-15 are userspace-visible).
KVM_MEM_LOG_DIRTY_PAGES: Final = 1 << 0
KVM_MEM_READONLY: Final = 1 << 1
KVM_MEM_GUEST_MEMFD: Final = 1 << 2
# The v1 ioctl rejects anything outside this mask before looking at the slot.
KVM_SET_USER_MEMORY_REGION_V1_FLAGS: Final = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
# Kernel-internal: marks the copy of a slot that is being deleted or moved.
KVM_MEMSLOT_INVALID: Final = 1 << 16

KVM_MEM_SLOTS_NUM: Final = 32767  # SHRT_MAX
KVM_INTERNAL_MEM_SLOTS: Final = 3  # x86: TSS, APIC access page, identity page table
KVM_USER_MEM_SLOTS: Final = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS  # 32764
KVM_MEM_MAX_NR_PAGES: Final = (1 << 31) - 1

# Bit 63 of a memslot set's generation while a swap is in flight.
KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS: Final = 1 << 63

U32_MAX: Final = (1 << 32) - 1
U64_MAX: Final = (1 << 64) - 1

# KVM_CHECK_EXTENSION capability numbers.
KVM_CAP_USER_MEMORY: Final = 3
KVM_CAP_NR_VCPUS: Final = 9
KVM_CAP_NR_MEMSLOTS: Final = 10
KVM_CAP_SYNC_MMU: Final = 16
KVM_CAP_DESTROY_MEMORY_REGION_WORKS: Final = 21
KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: Final = 30
KVM_CAP_INTERNAL_ERROR_DATA: Final = 40
KVM_CAP_MAX_VCPUS: Final = 66
KVM_CAP_READONLY_MEM: Final = 81
KVM_CAP_MULTI_ADDRESS_SPACE: Final = 118
KVM_CAP_IMMEDIATE_EXIT: Final = 136
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: Final = 168
KVM_CAP_DIRTY_LOG_RING: Final = 192
KVM_CAP_EXIT_ON_EMULATION_FAILURE: Final = 204
KVM_CAP_USER_MEMORY2: Final = 231
KVM_CAP_MEMORY_FAULT_INFO: Final = 232
KVM_CAP_MEMORY_ATTRIBUTES: Final = 233
KVM_CAP_GUEST_MEMFD: Final = 234
KVM_CAP_VM_TYPES: Final = 235

# kvm_run.exit_reason
KVM_EXIT_UNKNOWN: Final = 0
KVM_EXIT_IO: Final = 2
KVM_EXIT_HLT: Final = 5
KVM_EXIT_MMIO: Final = 6
KVM_EXIT_SHUTDOWN: Final = 8
KVM_EXIT_INTR: Final = 10
KVM_EXIT_INTERNAL_ERROR: Final = 17

EXIT_REASON_NAMES: Final = {
    KVM_EXIT_UNKNOWN: "KVM_EXIT_UNKNOWN",
    KVM_EXIT_IO: "KVM_EXIT_IO",
    KVM_EXIT_HLT: "KVM_EXIT_HLT",
    KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
    KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN",
    KVM_EXIT_INTR: "KVM_EXIT_INTR",
    KVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR",
}

KVM_INTERNAL_ERROR_EMULATION: Final = 1
