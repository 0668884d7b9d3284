"""What the real kernel here can run, checked before anything opens /dev/kvm."""

from __future__ import annotations

import contextlib

from engine.backends.kvm.vm import KvmVM
from engine.backends.kvm.x86 import X86Program, translate
from engine.core.config import RunConfig
from engine.faults import FaultError, parse_fault
from engine.scenarios import Scenario
from engine.vmm.strategies import Strategy, get_strategy

FAULTS = ("ioctl-gap", "race", "weeds")
STRATEGIES = ("legacy", "inhibit")


def check_strategy(strategy: str) -> Strategy:
    st = get_strategy(strategy)
    if st.name not in STRATEGIES:
        need = st.kernel_change or "a kernel change"
        raise ValueError(
            f"strategy {st.name} needs {need}; the real kernel here runs only "
            f"{' and '.join(STRATEGIES)}"
        )
    return st


def check_scenario(sc: Scenario, nr_address_spaces: int) -> X86Program:
    """Whether real KVM can express the scenario; its guest program in x86 if so."""
    for layout in sc.layouts.values():
        for as_id, region in layout.regions:
            if as_id >= nr_address_spaces:
                raise ValueError(
                    f"scenario {sc.name} maps {region.name} into address space {as_id}, and this "
                    f"kernel has {nr_address_spaces} (KVM_CAP_MULTI_ADDRESS_SPACE); run it on the model"
                )
    if sc.cpl != 0 or sc.guest_mode:
        raise ValueError(
            f"scenario {sc.name} runs its guest at CPL {sc.cpl}{' in L2' if sc.guest_mode else ''}; "
            "the kvm backend runs real-mode guests at CPL 0 in L1 only"
        )
    try:
        return translate(sc.program, sc.entry)
    except ValueError as err:
        raise ValueError(f"scenario {sc.name}: {err}") from None


def check_faults(config: RunConfig) -> None:
    texts = [*config.faults, *(f for _, f in config.fault_script)]
    for text in texts:
        spec = parse_fault(text)
        if spec.kind.name not in FAULTS:
            raise FaultError(
                f"fault {spec.kind.name} acts inside the model's kernel (SRCU readers, grace "
                f"periods); on real KVM slotlab injects only {', '.join(FAULTS)}"
            )
    if config.host:
        raise ValueError(
            "--host describes the model's kernel; the kvm backend runs the one this machine has"
        )


def address_spaces_hint() -> int:
    """Address spaces of the kernel here, read without keeping a VM; 1 if it cannot be read."""
    with contextlib.suppress(OSError), KvmVM() as vm:
        return vm.nr_address_spaces
    return 1
