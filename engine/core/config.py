"""What a run is asked to do, and the random streams it draws from."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from engine.scenarios import Scenario
from engine.sim.perturb import Perturb


def actor_rng(seed: int, actor: str) -> random.Random:
    """One stream per actor: string seeds hash with SHA-512, stable across processes."""
    return random.Random(f"{seed}/{actor}")


@dataclasses.dataclass
class RunConfig:
    scenario: Scenario
    strategy: str
    seed: int = 1
    vcpus: int | None = None
    duration_ns: int | None = None
    faults: list[str] = dataclasses.field(default_factory=list)
    fault_script: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    host: dict[str, Any] = dataclasses.field(default_factory=dict)
    naive: bool = False
    scenario_text: str = ""
    perturb: Perturb | None = None

    @property
    def nr_vcpus(self) -> int:
        return self.vcpus or self.scenario.vcpus
