"""Compare on every core versus one: the matrix a sweep user waits for."""

from __future__ import annotations

import math
import os
import time
from typing import Any

from engine.bench import Measure
from engine.compare import compare_matrix
from engine.matrix import MatrixRow
from engine.vmm.strategies import STRATEGIES


def run_compare_benchmarks(quick: bool) -> list[Measure]:
    r = measure_compare_scaling(quick)
    cores = min(2, int(r["cores"]))
    return [
        Measure("compare.seconds.1proc", r["seconds_1"], "s"),
        Measure("compare.seconds.2proc", r["seconds_2"], "s"),
        Measure(
            "compare.speedup.2proc",
            r["speedup"],
            "x",
            target=f"at least 0.9 x {cores} cores (same matrix both ways: {r['identical']})",
            ratio=r["speedup"],
            limit=r["target"],
            at_least=True,
        ),
    ]


SCALING_SCENARIO = "split"
SCALING_FAULTS = ["race"]


def _cores() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def measure_compare_scaling(quick: bool) -> dict[str, Any]:
    """The same compare matrix on one process (in this one) and on two worker processes:
    wall seconds for each and the speed-up. Worker start-up is part of the two-process time,
    as it is for a user. The full run takes the best of two rounds of each, alternated, so
    another program's burst on the machine does not decide the figure. The target is 0.9 x
    the cores used: 1.8 on two cores."""
    seeds = 16 if quick else 24
    rounds = 1 if quick else 2
    strategies = list(STRATEGIES)
    walls: dict[int, float] = {1: math.inf, 2: math.inf}
    rows: dict[int, list[MatrixRow]] = {}
    for _ in range(rounds):
        for jobs in (1, 2):
            start = time.perf_counter()
            rows[jobs] = compare_matrix(SCALING_SCENARIO, strategies, seeds, jobs, SCALING_FAULTS)
            walls[jobs] = min(walls[jobs], time.perf_counter() - start)
    available = _cores()
    return {
        "scenario": SCALING_SCENARIO,
        "faults": SCALING_FAULTS,
        "runs": seeds * len(strategies),
        "rounds": rounds,
        "cores": available,
        "seconds_1": round(walls[1], 3),
        "seconds_2": round(walls[2], 3),
        "speedup": round(walls[1] / walls[2], 3) if walls[2] > 0 else 0.0,
        "target": round(0.9 * min(2, available), 2),
        "identical": rows[1] == rows[2],
    }
