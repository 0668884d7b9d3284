"""The model backend: the modelled kernel in deterministic virtual time.

backend.py  ModelBackend: the sequencer, its actors, commands, the machine it opens
kernel.py   ModelKernel (the memslot ioctls in virtual time), the SRCU grace-period worker
vcpus.py    VcpuRunner (a vCPU thread) and ModelVcpus (the VMM's handle on them)
"""

from __future__ import annotations

from engine.backends.model.backend import ModelBackend

__all__ = ["ModelBackend"]
