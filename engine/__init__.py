"""slotlab's engine: the KVM model, the trio runtime, the VMM and its strategies.

``open_vm`` is the ioctl-level entry point both backends share.
"""

from __future__ import annotations

from typing import Any

from engine.model.host import Host
from engine.model.vm import VM

__version__ = "0.1.0"
__all__ = ["VM", "Host", "__version__", "open_vm"]


def open_vm(backend: str = "model", **host: Any) -> Any:
    """A VM behind the KVM ioctl surface: ``set_user_memory_region``, ``check_extension``,
    ``get_dirty_log`` and ``memslots``. ``backend="model"`` takes Host options as keywords;
    ``backend="kvm"`` opens the machine's /dev/kvm."""
    if backend == "model":
        return VM(Host.from_dict(host))
    if backend == "kvm":
        from engine.backends.kvm import open_kvm_vm

        return open_kvm_vm(**host)
    raise ValueError(f"unknown backend {backend!r} (choose model or kvm)")
