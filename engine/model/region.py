"""struct kvm_userspace_memory_region as a record, and the argument checks both backends share.

The checks here are not the kernel's: they are what stands between a Python caller and the
32-byte struct. A value that cannot be packed into its field is refused before any ioctl, by the
model and by the real backend alike, so the two raise the same exception for the same bad call.
"""

from __future__ import annotations

from typing import NamedTuple

from engine.model.constants import U32_MAX, U64_MAX


class MemoryRegion(NamedTuple):
    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int

    @property
    def as_id(self) -> int:
        return self.slot >> 16

    @property
    def id(self) -> int:
        return self.slot & 0xFFFF


_FIELDS = (
    ("slot", U32_MAX, "__u32"),
    ("flags", U32_MAX, "__u32"),
    ("guest_phys_addr", U64_MAX, "__u64"),
    ("memory_size", U64_MAX, "__u64"),
    ("userspace_addr", U64_MAX, "__u64"),
)


def check_field(name: str, value: object, limit: int, ctype: str) -> int:
    # bool is an int to Python but never a sensible slot number or address.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= limit:
        raise OverflowError(f"{name}={value} does not fit in {ctype}")
    return value


def make_region(
    slot: object,
    flags: object,
    guest_phys_addr: object,
    memory_size: object,
    userspace_addr: object,
) -> MemoryRegion:
    values = (slot, flags, guest_phys_addr, memory_size, userspace_addr)
    checked = [check_field(n, v, lim, ct) for (n, lim, ct), v in zip(_FIELDS, values, strict=True)]
    return MemoryRegion(*checked)


def check_slot_arg(slot: object) -> int:
    return check_field("slot", slot, U32_MAX, "__u32")
