"""The host the model pretends to be: which KVM, on which machine.

``profile`` (engine.model.profiles) picks the kernel and hardware whose rules decide outcomes:
x86-tdp by default (Intel EPT, SMM: two address spaces), x86-pvm for this machine's /dev/kvm,
arm64. The other fields mirror the real /dev/kvm of the machines slotlab is developed on (Linux
6.18, 52-bit guest physical addresses, 32,764 user slots), so that the model and the kernel can
be compared call for call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.limits import check_host_option
from engine.model import constants as c
from engine.model.profiles import DEFAULT_PROFILE, Profile, get_profile

TASK_SIZE_MAX = 0x7FFFFFFFF000  # x86-64, 4-level paging: highest userspace address + 1


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """Configuration of the modelled kernel and machine."""

    profile: str = DEFAULT_PROFILE
    """Which kernel and hardware: x86-tdp, x86-pvm or arm64 (engine.model.profiles)."""
    nr_address_spaces: int = 0
    """kvm_arch_nr_memslot_as_ids(): 2 on x86 with SMM, 1 on this PVM host; 0 takes the
    profile's."""
    maxphyaddr: int = 52
    """Guest physical address bits; the last gfn of a slot must stay below 2^(maxphyaddr-12)."""
    task_size_max: int = TASK_SIZE_MAX
    """access_ok() limit for userspace_addr + memory_size."""
    nr_memslots: int = c.KVM_USER_MEM_SLOTS
    """KVM_USER_MEM_SLOTS: ids at or above it are EINVAL."""
    readonly_mem: bool = True
    """kvm_arch_has_readonly_mem(): whether KVM_MEM_READONLY is accepted."""
    nr_cpus: int = 2
    """Host CPUs; KVM_CAP_NR_VCPUS answers this."""
    mmio_caching: bool = True
    """Whether a no-slot fault installs an MMIO SPTE stamped with the generation (stock x86
    does; this PVM host logs "mmio caching disabled", which changes cost, not outcomes)."""
    slot_zap_all: bool = True
    """KVM_X86_QUIRK_SLOT_ZAP_ALL: DELETE and MOVE zap every SPTE, not just the slot's range."""
    fetch_noslot: str = "internal_error"
    """What an instruction fetch from a GPA without a memslot does. "internal_error" is the
    kernel as merged; "mmio_len0" is Sean Christopherson's 2022 proposal (KVM_EXIT_MMIO with
    len 0 that userspace re-enters)."""

    def __post_init__(self) -> None:
        profile = get_profile(self.profile)
        if self.nr_address_spaces == 0:
            object.__setattr__(self, "nr_address_spaces", profile.nr_address_spaces)
        # Every option by type and bounds (engine.limits): `readonly_mem=2` or
        # `maxphyaddr="52"` from a command line or a crafted log header must not get in.
        for field in dataclasses.fields(self):
            check_host_option(field.name, getattr(self, field.name))

    @property
    def max_gfn(self) -> int:
        """kvm_mmu_max_gfn(): the highest gfn a slot may cover."""
        return (1 << (self.maxphyaddr - c.PAGE_SHIFT)) - 1

    @property
    def rules(self) -> Profile:
        return get_profile(self.profile)

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION for what the model implements. A capability it does not
        implement is answered as by a kernel built without it: 0, the `default:` of
        kvm_vm_ioctl_check_extension() and the arch handlers."""
        answers = {
            c.KVM_CAP_USER_MEMORY: 1,
            c.KVM_CAP_NR_VCPUS: self.nr_cpus,
            c.KVM_CAP_NR_MEMSLOTS: self.nr_memslots,
            c.KVM_CAP_SYNC_MMU: 1,
            c.KVM_CAP_DESTROY_MEMORY_REGION_WORKS: 1,
            c.KVM_CAP_JOIN_MEMORY_REGIONS_WORKS: 1,
            c.KVM_CAP_INTERNAL_ERROR_DATA: 1,
            c.KVM_CAP_MAX_VCPUS: 1024,
            c.KVM_CAP_READONLY_MEM: int(self.readonly_mem),
            # The case only exists when KVM_MAX_NR_ADDRESS_SPACES > 1; otherwise it is 0.
            c.KVM_CAP_MULTI_ADDRESS_SPACE: self.nr_address_spaces
            if self.nr_address_spaces > 1
            else 0,
            c.KVM_CAP_IMMEDIATE_EXIT: 1,  # Vcpu.immediate_exit
        }
        if self.profile.startswith("x86"):
            # arch/x86/kvm/x86.c: the bitmask of VM types; the model is KVM_X86_DEFAULT_VM.
            answers[c.KVM_CAP_VM_TYPES] = 1
        # Not modelled, so 0 as on a kernel without them: DIRTY_LOG_RING, GUEST_MEMFD,
        # USER_MEMORY2 (pre-6.8), EXIT_ON_EMULATION_FAILURE, MANUAL_DIRTY_LOG_PROTECT2,
        # MEMORY_FAULT_INFO, MEMORY_ATTRIBUTES.
        return answers.get(cap, 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Host:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown host option(s): {', '.join(unknown)}")
        return cls(**data)
