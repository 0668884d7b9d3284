"""`slotlab hunt`: look for a failing run with no fault armed, by perturbing the schedule.

Run i of a hunt is seed first_seed + i, with the PCT perturbation derived from that seed
(engine/sim/perturb.py): depth-1 change points spread over the steps (the VMM's returns to user
space between a transaction's ioctls) a plain run of the configuration makes, each dropping the
VMM as PCT does (by default; or holding it up to max_preempt_ns), and vCPU quanta jittered.
The runs go
out as sweep's units, on the same cluster; the hunt stops once it knows the lowest-numbered
failing run (every run before it has finished), so the figure it reports does not depend on
which worker was fastest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

from engine import limits
from engine.sim.perturb import derive, pct_miss_bound
from engine.sweep.cluster import Result, run_chunk, run_on
from engine.sweep.unit import Outcome, RunSpec, config_of, execute


class HuntPlan(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    strategy: str
    budget: int
    first_seed: int = 1
    perturb: bool = True
    depth: int = 5
    max_preempt_ns: int = 0
    """0: PCT's drop. A thread dropped to the lowest priority runs again only when every other
    thread is blocked, and running vCPUs never block: the VMM stays preempted until an inhibit
    has blocked every vCPU or the run ends, which reaches the guest's next access however slow
    its rhythm is (as an overloaded host can do to a QEMU thread) without knowing that rhythm.
    Else each change point holds the VMM for up to this long."""
    jitter_ns: int = 100
    vcpus: int | None = None
    duration_ns: int | None = None


class HuntResult(msgspec.Struct, kw_only=True):
    runs: int
    """Runs it took: the index of the first failing run plus one, or the budget."""
    found: RunSpec | None
    verdict: str
    explanation: str
    handoffs: int
    """k: the steps of a plain run change points are drawn over (0: none to act on)."""
    actors: int
    depth: int
    miss_bound: float
    """PCT: chance that runs this many all miss a bug of this depth (1.0 without perturbation)."""
    rate_bound: float
    """Rule of three: the per-run failure rate is below this with 95% confidence."""
    log: bytes | None = None


def calibrate(plan: HuntPlan) -> tuple[int, int, int]:
    """(steps of a whole plain run, actors, max preempt ns or 0): the scale change points
    need. A plain run that ends early (a crash) is scaled up to the full duration."""
    spec = RunSpec(
        scenario=plan.scenario,
        strategy=plan.strategy,
        seed=plan.first_seed,
        vcpus=plan.vcpus,
        duration_ns=plan.duration_ns,
    )
    config = config_of(spec)
    out = execute(spec)
    duration = config.duration_ns or config.scenario.duration_ns
    done = max(out.summary.virtual_ns, 1)
    steps = out.gaps if done >= duration else math.ceil(out.gaps * duration / done)
    return steps, out.actors, plan.max_preempt_ns


def specs_of(plan: HuntPlan, handoffs: int, preempt_ns: int) -> list[RunSpec]:
    return [
        RunSpec(
            scenario=plan.scenario,
            strategy=plan.strategy,
            seed=seed,
            vcpus=plan.vcpus,
            duration_ns=plan.duration_ns,
            perturb=derive(seed, plan.depth, handoffs, preempt_ns, plan.jitter_ns)
            if plan.perturb
            else None,
        )
        for seed in range(plan.first_seed, plan.first_seed + plan.budget)
    ]


Runner = Callable[[list[RunSpec], Callable[[list[Result]], bool]], None]


def in_process(specs: list[RunSpec], on_chunk: Callable[[list[Result]], bool]) -> None:
    """The same units without a cluster, one at a time (tests, and `--workers 0`)."""
    for spec in specs:
        if not on_chunk(run_chunk([spec], "failing")):
            return


def on_client(client: Any, chunk: int | None = None) -> Runner:
    return lambda specs, on_chunk: run_on(client, specs, "failing", on_chunk, chunk)


def hunt(
    plan: HuntPlan, runner: Runner, progress: Callable[[int, int], None] | None = None
) -> HuntResult:
    limits.BUDGET.check(plan.budget, "--budget")
    limits.DEPTH.check(plan.depth, "--depth")
    limits.SEED.check(plan.first_seed + plan.budget - 1, "--first-seed + --budget - 1")
    handoffs, actors, preempt = calibrate(plan)
    specs = specs_of(plan, handoffs, preempt)
    index = {s.seed: i for i, s in enumerate(specs)}
    finished = [False] * len(specs)
    failing: dict[int, tuple[RunSpec, Outcome | None, str]] = {}
    state = {"next": 0, "done": 0}

    def first_known() -> int | None:
        """The lowest failing index once every run before it has finished."""
        while state["next"] < len(specs) and finished[state["next"]]:
            if state["next"] in failing:
                return state["next"]
            state["next"] += 1
        return None

    def on_chunk(results: list[Result]) -> bool:
        for spec, outcome, error in results:
            i = index[spec.seed]
            finished[i] = True
            if outcome is None or outcome.summary.verdict != "ok":
                failing[i] = (spec, outcome, error)
        state["done"] += len(results)
        if progress is not None:
            progress(state["done"], len(specs))
        return first_known() is None

    runner(specs, on_chunk)
    first = first_known()
    runs = len(specs) if first is None else first + 1
    bound = pct_miss_bound(actors, handoffs, plan.depth, runs) if plan.perturb else 1.0
    common: dict[str, Any] = {
        "runs": runs,
        "handoffs": handoffs,
        "actors": actors,
        "depth": plan.depth if plan.perturb else 0,
        "miss_bound": bound,
        "rate_bound": min(1.0, 3.0 / runs),
    }
    if first is None:
        return HuntResult(found=None, verdict="ok", explanation="", **common)
    spec, outcome, error = failing[first]
    if outcome is None:
        return HuntResult(found=spec, verdict="error", explanation=error, **common)
    s = outcome.summary
    return HuntResult(
        found=spec, verdict=s.verdict, explanation=s.explanation, log=outcome.log, **common
    )
