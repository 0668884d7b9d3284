"""Virtual-time costs of the modelled kernel's steps, in ns.

Orders of magnitude follow what this project's kvm backend measures on its development host
(`slotlab bench`: a KVM_RUN round trip of about 7 us, a memslot ioctl of 10-20 us with vCPUs out
of the guest); guest instructions are
cheap so a demo's vCPUs make visible progress between updates.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    insn_ns: int = 10
    """One guest instruction that hits stage-2."""
    vmexit_ns: int = 500
    """VM exit into KVM and srcu_read_lock before handling it."""
    vmentry_ns: int = 500
    """srcu_read_unlock and VM entry back into the guest."""
    fault_map_ns: int = 1_500
    """Resolving a gfn to a host page and installing the SPTE."""
    emulate_ns: int = 800
    """Decoding and emulating an access KVM cannot map (MMIO, read-only write)."""
    userspace_exit_ns: int = 3_000
    """KVM_RUN returning to userspace, the VMM's dispatch, and re-entering."""
    ioctl_ns: int = 4_000
    """Memslot ioctl entry, validation and allocation before the first swap."""
    swap_ns: int = 300
    """Publishing a memslot set (rcu_assign_pointer under slots_arch_lock)."""
    zap_ns: int = 2_000
    """kvm_arch_flush_shadow_memslot()."""
    commit_ns: int = 1_000
    """kvm_commit_memory_region() after the last swap."""
    srcu_poll_expedited_ns: int = 500
    """Between drain checks of an expedited grace period (spins, then reschedules)."""
    srcu_poll_normal_ns: int = 20_000
    """Between drain checks of a normal grace period."""
