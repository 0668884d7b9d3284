"""A session on the real /dev/kvm: the session core over the kvm backend (backend.py).

``KvmSession(config)`` keeps the name callers know; the kvm parts are reachable by name.
"""

from __future__ import annotations

from engine.backends.kvm.backend import (
    DEFAULT_DURATION_NS,
    RECORDED_CAP_NS,
    SYNC_FLOOR_NS,
    KvmBackend,
)
from engine.backends.kvm.checker import KvmChecker
from engine.backends.kvm.checks import (
    FAULTS,
    STRATEGIES,
    check_faults,
    check_scenario,
    check_strategy,
)
from engine.backends.kvm.clock import WallClockBus
from engine.backends.kvm.memory import ScenarioMemory
from engine.backends.kvm.vcpus import KvmVcpuRunner
from engine.backends.kvm.vm import KvmVM
from engine.core.config import RunConfig
from engine.core.session import SessionCore
from engine.events import Subscriber


class KvmSession(SessionCore[KvmBackend]):
    def __init__(
        self,
        config: RunConfig,
        log_path: str | None = None,
        observers: tuple[Subscriber, ...] = (),
        max_transactions: int | None = None,
    ) -> None:
        super().__init__(
            config,
            KvmBackend(),
            log_path=log_path,
            observers=observers,
            max_transactions=max_transactions,
        )

    @property
    def wall_bus(self) -> WallClockBus:
        return self.backend.bus

    @property
    def vm(self) -> KvmVM:
        return self.backend.vm

    @property
    def memory(self) -> ScenarioMemory:
        return self.backend.memory

    @property
    def vcpu_runners(self) -> list[KvmVcpuRunner]:
        return self.backend.vcpus.runners

    @property
    def stopping(self) -> bool:
        return self.backend.stopping

    def request_stop(self, reason: str = "vm stopped") -> None:
        self.stop(reason)


__all__ = [
    "DEFAULT_DURATION_NS",
    "FAULTS",
    "RECORDED_CAP_NS",
    "STRATEGIES",
    "SYNC_FLOOR_NS",
    "KvmChecker",
    "KvmSession",
    "check_faults",
    "check_scenario",
    "check_strategy",
]
