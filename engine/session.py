"""A session on the model: the session core over the model backend.

``Session(config)`` is what tests, replays and the TUI build for a model run; it adds to the
core (engine.core.session) the model's own parts, by name: its sequencer, VM and vCPUs.
"""

from __future__ import annotations

from engine.backends.model import ModelBackend
from engine.backends.model.vcpus import VcpuRunner
from engine.core.config import RunConfig, actor_rng
from engine.core.session import SessionCore
from engine.events import Subscriber
from engine.model.vcpu import Vcpu
from engine.model.vm import VM
from engine.sim.pacing import Pacing
from engine.sim.runtime import Sequencer


class Session(SessionCore[ModelBackend]):
    def __init__(
        self,
        config: RunConfig,
        log_path: str | None = None,
        pacing: Pacing | None = None,
        observers: tuple[Subscriber, ...] = (),
    ) -> None:
        super().__init__(config, ModelBackend(pacing), log_path=log_path, observers=observers)

    @property
    def seq(self) -> Sequencer:
        return self.backend.seq

    @property
    def vm(self) -> VM:
        return self.backend.vm

    @property
    def vcpus(self) -> list[Vcpu]:
        return self.backend.vcpus.vcpus

    @property
    def vcpu_runners(self) -> list[VcpuRunner]:
        return self.backend.vcpus.runners


__all__ = ["RunConfig", "Session", "VcpuRunner", "actor_rng"]
