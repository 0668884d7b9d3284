"""`slotlab compare`: every strategy on the same seeds, side by side.

Each (strategy, seed) is one headless run with no log. Runs are independent and CPU-bound, so
they go to worker processes (engine/procpool.py, at most ``jobs`` at once); with one job they run
in this process, in order. `compare --scenario all` shares one pool among every scenario's runs.
Every run is deterministic and the rows are assembled in (strategy, seed) order, so the matrix
does not depend on how many workers computed it, or in which order they finished.

The rows (engine/matrix.py) are pure, and so is the matrix over its run_one; this module only
runs it. The command that renders it is engine/compare_cmd.py.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.matrix import (
    LEGEND,
    VERDICT_COLOUR,
    VERDICT_ORDER,
    MatrixRow,
    RunOne,
    RunRow,
    aggregate,
    run_one,
)
from engine.matrix import row_from_summary as row_from_summary
from engine.procpool import JobFailed, run_all
from engine.runner import make_config
from engine.vmm.strategies import get_strategy

Progress = Callable[[int, int], None]


class CompareRunError(RuntimeError):
    """A run failed inside the engine (a bug, not bad input): names the run to reproduce."""


def validate(
    scenario: str, strategies: list[str], seeds: int, jobs: int, faults: list[str]
) -> None:
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, not {seeds}")
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {jobs}")
    if not strategies:
        raise ValueError("compare needs at least one strategy")
    for name in strategies:
        get_strategy(name)
    # Loads the scenario and parses every fault: bad input fails here, not in a worker.
    make_config(scenario, strategies[0], faults=faults)


def compare_matrix(
    scenario: str,
    strategies: list[str],
    seeds: int,
    jobs: int,
    faults: list[str],
    progress: Progress | None = None,
    duration_ns: int | None = None,
    run: RunOne = run_one,
) -> list[MatrixRow]:
    """Run every (strategy, seed) for seeds 1..seeds and return one row per strategy, in the
    order given. Raises ValueError for bad input before any run starts. Synchronous (every run
    calls trio.run), so call it from a thread when inside a trio or asyncio loop."""
    each = None if progress is None else (lambda _scenario, done, total: progress(done, total))
    return compare_matrices([scenario], strategies, seeds, jobs, faults, each, duration_ns, run)[
        scenario
    ]


ScenarioProgress = Callable[[str, int, int], None]


def compare_matrices(
    scenarios: list[str],
    strategies: list[str],
    seeds: int,
    jobs: int,
    faults: list[str],
    progress: ScenarioProgress | None = None,
    duration_ns: int | None = None,
    run: RunOne = run_one,
) -> dict[str, list[MatrixRow]]:
    """compare_matrix for several scenarios at once: one pool of workers for all their runs
    (started once, and kept busy across scenario boundaries). progress(scenario, done, total)
    counts each scenario's runs.

    The matrix is a function of `run` alone: each (scenario, strategy, seed) is one call, and
    the rows aggregate the results in (strategy, seed) order, whichever worker computed
    them. `run` must be picklable (a module-level function) when jobs > 1."""
    for scenario in scenarios:
        validate(scenario, strategies, seeds, jobs, faults)
    keys = [(sc, st, seed) for sc in scenarios for st in strategies for seed in range(1, seeds + 1)]
    per_scenario = len(strategies) * seeds
    done: dict[str, int] = dict.fromkeys(scenarios, 0)

    def finished(key: RunKey) -> None:
        done[key[0]] += 1
        if progress is not None:
            progress(key[0], done[key[0]], per_scenario)

    call = (tuple(faults), duration_ns)
    if jobs == 1 or len(keys) == 1:
        results = _run_serial(run, keys, call, finished)
    else:
        results = _run_parallel(run, keys, call, jobs, finished)
    return {
        sc: [
            aggregate(st, [results[(sc, st, seed)] for seed in range(1, seeds + 1)])
            for st in strategies
        ]
        for sc in scenarios
    }


RunKey = tuple[str, str, int]  # scenario, strategy, seed
RunArgs = tuple[tuple[str, ...], int | None]  # faults, duration
Finished = Callable[[RunKey], None]


def _failed(key: RunKey, args: RunArgs, description: str) -> CompareRunError:
    (scenario, strategy, seed), faults = key, args[0]
    flags = "".join(f" --fault {f}" for f in faults)
    return CompareRunError(
        f"{scenario}/{strategy} seed {seed} failed: {description} "
        f"(reproduce: slotlab run --scenario {scenario} --strategy {strategy} --seed {seed}{flags})"
    )


def _run_serial(
    run: RunOne, keys: list[RunKey], args: RunArgs, finished: Finished
) -> dict[RunKey, RunRow]:
    results: dict[RunKey, RunRow] = {}
    for key in keys:
        try:
            results[key] = run(*key, *args)
        except Exception as err:
            raise _failed(key, args, f"{type(err).__name__}: {err}") from err
        finished(key)
    return results


def _run_parallel(
    run: RunOne, keys: list[RunKey], args: RunArgs, jobs: int, finished: Finished
) -> dict[RunKey, RunRow]:
    """Every run in a worker process (engine/procpool.py), at most jobs at once. This process
    only hands batches of runs out and collects results (a thread of its own running sims as
    well was measured: it wins nothing, since handing out work then waits on the GIL)."""
    results: dict[RunKey, RunRow] = {}

    def arrived(index: int, row: RunRow) -> None:
        results[keys[index]] = row
        finished(keys[index])

    try:
        run_all(run, keys, args, jobs, arrived)
    except JobFailed as err:
        raise _failed(keys[err.index], args, err.description) from err
    return results


__all__ = [
    "LEGEND",
    "VERDICT_COLOUR",
    "VERDICT_ORDER",
    "CompareRunError",
    "MatrixRow",
    "RunOne",
    "RunRow",
    "aggregate",
    "compare_matrices",
    "compare_matrix",
    "row_from_summary",
    "run_one",
    "validate",
]
