"""The real /dev/kvm behind the model's ioctl surface.

ioctl.py    numbers, struct layouts, the ioctl helper, kvm_usable()
vm.py       KvmVM: memslot ioctls, guest memory and vCPUs it owns and releases on close
vcpu.py     KvmVcpu: KVM_RUN, registers, the exit payload, the immediate_exit+SIGUSR1 kick
x86.py      slotlab's guest ISA translated into 16-bit real-mode x86
memory.py   real mappings behind a scenario's HVAs
session.py  KvmSession: a scenario under legacy or inhibit, with the model's VMM, events,
            checker and log, on real vCPU threads and a wall clock
run.py      `slotlab run --backend kvm` (check_kvm_run, run_on_kvm)
probe.py    `slotlab kvm probe`
compare.py  `slotlab compare --backend kvm|both`
bench.py    the kvm benchmark group (kvmbench.c is its C baseline)
"""

from __future__ import annotations

from engine.backends.kvm.ioctl import kvm_usable
from engine.backends.kvm.vcpu import KvmVcpu
from engine.backends.kvm.vm import GuestMemory, KvmVM

__all__ = ["GuestMemory", "KvmVM", "KvmVcpu", "kvm_usable", "open_kvm_vm"]


def open_kvm_vm(**kwargs: object) -> KvmVM:
    """A fresh VM on /dev/kvm. The model's Host options describe a kernel; the real one is
    whatever this machine runs, so any option is refused rather than silently ignored."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise ValueError(f"the kvm backend takes no host options (got {names})")
    return KvmVM()
