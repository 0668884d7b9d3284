"""Host profiles: which kernel on which hardware the model is, where that changes an outcome.

Every rule is the kernel function it comes from (or a measurement on this machine):

x86-tdp   Intel with EPT (stock x86 KVM, CONFIG_KVM_SMM).
          - A stage-2 fault on a KVM_MEMSLOT_INVALID slot retries:
            arch/x86/kvm/mmu/mmu.c kvm_mmu_faultin_pfn() returns RET_PF_RETRY.
          - A fault with no slot is emulated (kvm_handle_noslot_fault(), RET_PF_EMULATE), and
            VMX hands the emulator no instruction bytes (kvm_mmu_page_fault(..., insn=NULL)),
            so x86_emulate_instruction() fetches them through kvm_fetch_guest_virt() ->
            kvm_vcpu_read_guest_page() -> __gfn_to_hva_many(), which answers KVM_HVA_ERR_BAD
            for a NULL *or INVALID* slot (virt/kvm/kvm_main.c): the MMIO access then fails to
            emulate if the code's own slot is INVALID or gone.
          - A failed emulation at CPL 0 in L1 exits KVM_EXIT_INTERNAL_ERROR, else queues #UD
            (arch/x86/kvm/x86.c handle_emulation_failure()).
          - Two address spaces (kvm_arch_nr_memslot_as_ids(): SMM is as_id 1).
x86-pvm   This machine's /dev/kvm (kvm_pvm, shadow paging; real-kvm.md): real-mode guests are
          fully emulated, so every access, fetch or data, goes through the emulator's
          gfn->hva lookup and an INVALID slot is no slot: data accesses exit as MMIO
          (measured: `move` under legacy gives MMIO exits at GPAs mapped before and after),
          fetches fail to emulate. KVM_CAP_MULTI_ADDRESS_SPACE is 0 here: one address space.
arm64     arch/arm64/kvm/mmu.c kvm_handle_guest_abort(): gfn_to_hva_memslot_prot() (that is,
          __gfn_to_hva_many()) decides, so an INVALID slot is no slot and nothing retries. A
          data abort goes to io_mem_abort() (KVM_EXIT_MMIO, decoded from the ESR syndrome: no
          instruction fetch); an instruction abort injects a prefetch abort into the guest
          (kvm_inject_pabt()). One address space.

AMD with decode assists differs from x86-tdp: svm's npf_interception() passes the VMCB's
instruction bytes, so an MMIO access need not fetch; the model does not have that profile.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    name: str
    summary: str
    nr_address_spaces: int
    invalid_retry: bool
    """A stage-2 fault on an INVALID slot retries (RET_PF_RETRY) rather than seeing no slot."""
    emulated: bool
    """Every guest access runs in the emulator (hva lookup), none through stage-2 faults."""
    mmio_fetch: bool
    """Emulating an MMIO access fetches the instruction through the hva lookup first."""
    fetch_fault: str
    """What an instruction fetch from no slot does: emulation_failure or pabt_injected."""
    mmio_sptes: bool
    """A no-slot fault installs an MMIO SPTE stamped with the generation (x86 EPT; kvm_pvm
    logs "mmio caching disabled"; arm64 has none)."""


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "x86-tdp",
            "Intel EPT host: faults on INVALID slots retry; MMIO emulation fetches its instruction",
            2,
            invalid_retry=True,
            emulated=False,
            mmio_fetch=True,
            fetch_fault="emulation_failure",
            mmio_sptes=True,
        ),
        Profile(
            "x86-pvm",
            "kvm_pvm (this machine): real mode fully emulated; INVALID is no slot for every access",
            1,
            invalid_retry=False,
            emulated=True,
            mmio_fetch=True,
            fetch_fault="emulation_failure",
            mmio_sptes=False,
        ),
        Profile(
            "arm64",
            "arm64 stage-2: no retry on INVALID; data aborts exit as MMIO, instruction aborts inject a prefetch abort",
            1,
            invalid_retry=False,
            emulated=False,
            mmio_fetch=False,
            fetch_fault="pabt_injected",
            mmio_sptes=False,
        ),
    )
}
DEFAULT_PROFILE = "x86-tdp"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown host profile {name!r} (known: {', '.join(PROFILES)})") from None
