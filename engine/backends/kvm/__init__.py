"""The real /dev/kvm behind the model's ioctl surface."""

from __future__ import annotations

from engine.backends.kvm.ioctl import kvm_usable
from engine.backends.kvm.vm import KvmVM

__all__ = ["KvmVM", "kvm_usable", "open_kvm_vm"]


def open_kvm_vm(**kwargs: object) -> KvmVM:
    """A fresh VM on /dev/kvm. The model's Host options describe a kernel; the real one is
    whatever this machine runs, so any option is refused rather than silently ignored."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise ValueError(f"the kvm backend takes no host options (got {names})")
    return KvmVM()
