"""`slotlab compare`: every strategy on the same seeds, side by side.

Each (strategy, seed) is one headless run with no log. Runs are independent and CPU-bound, so
they go to worker processes (trio-parallel, at most ``jobs`` at once); with one job they run in
this process, in order. `compare --scenario all` shares one pool among every scenario's runs.
Every run is deterministic and the rows are assembled in (strategy, seed) order, so the matrix
does not depend on how many workers computed it, or in which order they finished.

A row aggregates one strategy over its runs:

    strategy         the strategy's name
    runs             how many seeds ran
    crash_rate       share of runs in which the guest died (KVM_EXIT_INTERNAL_ERROR, #UD, or the
                     VMM stopping the VM)
    retries          mean stage-2 fault retries per run
    stall_ns         mean vcpu_stall_ns per run (time vCPUs spent kept out of KVM_RUN)
    latency_p50_ns   median of the runs' median update latency
    latency_p99_ns   99th percentile (nearest rank) of the runs' p99 update latency
    verdicts         verdict -> count, most serious first
    internal_errors  KVM_EXIT_INTERNAL_ERROR exits summed over the runs
    violations       checker violation kind -> count, summed over the runs

Runs that committed no memory update (a guest that crashed in the first one) have no latency
and are left out of the latency percentiles.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from engine.runner import make_config
from engine.scenarios import builtin_names
from engine.sweep.unit import RunSpec, execute
from engine.units import format_ns
from engine.vmm.strategies import STRATEGIES, get_strategy

VERDICT_ORDER = ("violation", "crashed", "livelock", "ok")
VERDICT_COLOUR = {"violation": "magenta", "crashed": "red", "livelock": "yellow", "ok": "green"}

Progress = Callable[[int, int], None]
LEGEND = (
    "crash: runs whose guest died; int.err: KVM_EXIT_INTERNAL_ERROR exits over all runs; "
    "retries, stall (vCPUs kept out of KVM_RUN): mean per run; p50, p99: update latency"
)


def run_one(
    scenario: str, strategy: str, seed: int, faults: tuple[str, ...], duration_ns: int | None
) -> dict[str, Any]:
    """One headless run, reduced to what a matrix row needs (cheap to send between
    processes). A module-level function so worker processes can import it."""
    spec = RunSpec(
        scenario=scenario, strategy=strategy, seed=seed, faults=faults, duration_ns=duration_ns
    )
    return row_from_summary(seed, execute(spec).summary)


def row_from_summary(seed: int, s: dict[str, Any]) -> dict[str, Any]:
    """What a matrix row needs from one run's summary, whichever backend ran it."""
    lat = s["update_latency_ns"]
    crashed = s["verdict"] == "crashed" or s["internal_errors"] > 0 or s["ud_injected"] > 0
    return {
        "seed": seed,
        "verdict": s["verdict"],
        "crashed": crashed,
        "internal_errors": s["internal_errors"],
        "retries": s["retries"],
        "stall_ns": s["vcpu_stall_ns"],
        "committed": lat["max"] > 0,
        "p50": lat["p50"],
        "p99": lat["p99"],
        "violations": [v["kind"] for v in s["violations"]],
        "exits": dict(s.get("exits", {})),
        "window_mmio_exits": s.get("window_mmio_exits", 0),
    }


def _nearest_rank(values: list[int], p: int) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[rank - 1]


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def aggregate(strategy: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One matrix row from a strategy's runs (in seed order)."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    verdicts = {v: counts[v] for v in VERDICT_ORDER if v in counts}
    verdicts.update({v: n for v, n in sorted(counts.items()) if v not in verdicts})
    violations: dict[str, int] = {}
    for r in runs:
        for kind in r["violations"]:
            violations[kind] = violations.get(kind, 0) + 1
    committed = [r for r in runs if r["committed"]]
    n = len(runs)
    return {
        "strategy": strategy,
        "runs": n,
        "crash_rate": round(sum(1 for r in runs if r["crashed"]) / n, 4) if n else 0.0,
        "retries": _mean([r["retries"] for r in runs]),
        "stall_ns": _mean([r["stall_ns"] for r in runs]),
        "latency_p50_ns": _nearest_rank([r["p50"] for r in committed], 50),
        "latency_p99_ns": _nearest_rank([r["p99"] for r in committed], 99),
        "verdicts": verdicts,
        "internal_errors": sum(r["internal_errors"] for r in runs),
        "violations": dict(sorted(violations.items())),
        "exits": _sum_exits(runs),
        "window_mmio_exits": sum(r.get("window_mmio_exits", 0) for r in runs),
    }


def _sum_exits(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in runs:
        for kind, n in r.get("exits", {}).items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


class CompareRunError(RuntimeError):
    """A run failed inside the engine (a bug, not bad input): names the run to reproduce."""


def _validate(
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
) -> list[dict[str, Any]]:
    """Run every (strategy, seed) for seeds 1..seeds and return one row per strategy, in the
    order given. Raises ValueError for bad input before any run starts. Synchronous: it runs
    trio itself, so call it from a thread when inside a trio or asyncio loop."""
    each = None if progress is None else (lambda _scenario, done, total: progress(done, total))
    return compare_matrices([scenario], strategies, seeds, jobs, faults, each, duration_ns)[
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
) -> dict[str, list[dict[str, Any]]]:
    """compare_matrix for several scenarios at once: one pool of workers for all their runs
    (started once, and kept busy across scenario boundaries). progress(scenario, done, total)
    counts each scenario's runs."""
    for scenario in scenarios:
        _validate(scenario, strategies, seeds, jobs, faults)
    keys = [(sc, st, seed) for sc in scenarios for st in strategies for seed in range(1, seeds + 1)]
    per_scenario = len(strategies) * seeds
    done: dict[str, int] = dict.fromkeys(scenarios, 0)

    def finished(key: RunKey) -> None:
        done[key[0]] += 1
        if progress is not None:
            progress(key[0], done[key[0]], per_scenario)

    call = (tuple(faults), duration_ns)
    if jobs == 1 or len(keys) == 1:
        results = _run_serial(keys, call, finished)
    else:
        results = trio.run(_run_parallel, keys, call, jobs, finished)
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


def _failed(key: RunKey, args: RunArgs, err: BaseException) -> CompareRunError:
    (scenario, strategy, seed), faults = key, args[0]
    flags = "".join(f" --fault {f}" for f in faults)
    return CompareRunError(
        f"{scenario}/{strategy} seed {seed} failed: {type(err).__name__}: {err} "
        f"(reproduce: slotlab run --scenario {scenario} --strategy {strategy} --seed {seed}{flags})"
    )


def _run_serial(
    keys: list[RunKey], args: RunArgs, finished: Finished
) -> dict[RunKey, dict[str, Any]]:
    results: dict[RunKey, dict[str, Any]] = {}
    for key in keys:
        try:
            results[key] = run_one(*key, *args)
        except Exception as err:
            raise _failed(key, args, err) from err
        finished(key)
    return results


async def _run_parallel(
    keys: list[RunKey], args: RunArgs, jobs: int, finished: Finished
) -> dict[RunKey, dict[str, Any]]:
    """Every run in a trio-parallel worker process, at most jobs at once. This process only
    hands runs out and collects results (a thread of its own running sims as well was
    measured: it wins nothing, since handing out work then waits on the GIL)."""
    import trio_parallel

    results: dict[RunKey, dict[str, Any]] = {}
    failure: list[CompareRunError] = []
    limiter = trio.CapacityLimiter(jobs)

    async with trio_parallel.open_worker_context() as ctx:

        async def one(key: RunKey, cancel: trio.CancelScope) -> None:
            try:
                result = await ctx.run_sync(
                    run_one, *key, *args, kill_on_cancel=True, limiter=limiter
                )
            except Exception as err:
                if not failure:
                    failure.append(_failed(key, args, err))
                cancel.cancel()
                return
            results[key] = result
            finished(key)

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(one, key, nursery.cancel_scope)
    if failure:
        raise failure[0]
    return results


# --- the command ------------------------------------------------------------------------


def cmd_compare(args: argparse.Namespace) -> int:
    if args.backend in ("kvm", "both"):
        return _kvm_compare(args)
    names = builtin_names() if args.scenario == "all" else [args.scenario]
    strategies = list(STRATEGIES)
    # Bad input is reported before the progress bar appears.
    for name in names:
        _validate(name, strategies, args.seeds, args.jobs, args.fault)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress_console = Console(stderr=True)
    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console,
        transient=True,
        disable=not progress_console.is_terminal,
    )
    with bar:
        tasks = {
            name: bar.add_task(f"{name} ({args.jobs} job{'s' if args.jobs != 1 else ''})")
            for name in names
        }

        def advance(name: str, done: int, total: int) -> None:
            bar.update(tasks[name], completed=done, total=total)

        matrices = compare_matrices(
            names, strategies, args.seeds, args.jobs, args.fault, advance, args.duration
        )
    if args.json:
        print(msgspec.json.encode(matrices).decode())
        return 0
    console = Console()
    for name, rows in matrices.items():
        console.print(matrix_table(name, rows, args.seeds, args.fault, args.duration))
    console.print(LEGEND, style="dim", highlight=False)
    return 0


def _kvm_compare(args: argparse.Namespace) -> int:
    # Imported here: the kvm backend's compare builds on this module.
    from engine.backends.kvm.compare import compare_backends

    return compare_backends(args)


def matrix_table(
    scenario: str,
    rows: list[dict[str, Any]],
    seeds: int,
    faults: list[str],
    duration_ns: int | None,
) -> Any:
    from rich import box
    from rich.table import Table

    extras = [f"{seeds} seed{'s' if seeds != 1 else ''}"]
    extras += [f"--fault {f}" for f in faults]
    if duration_ns is not None:
        extras.append(f"{format_ns(duration_ns)} each")
    table = Table(
        title=f"{scenario}: {', '.join(extras)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("strategy", no_wrap=True)
    table.add_column("verdicts", min_width=14)
    table.add_column("crash", justify="right", no_wrap=True)
    table.add_column("int.err", justify="right", no_wrap=True)
    table.add_column("retries", justify="right", no_wrap=True)
    table.add_column("stall", justify="right", no_wrap=True)
    table.add_column("p50", justify="right", no_wrap=True)
    table.add_column("p99", justify="right", no_wrap=True)
    for r in rows:
        verdicts = ", ".join(
            f"[{VERDICT_COLOUR.get(v, 'white')}]{n} {v}[/]" for v, n in r["verdicts"].items()
        )
        if r["violations"]:
            found = ", ".join(f"{n} {k}" for k, n in r["violations"].items())
            verdicts += f" [dim]({found})[/]"
        table.add_row(
            r["strategy"],
            verdicts,
            f"{r['crash_rate']:.0%}",
            str(r["internal_errors"]),
            f"{r['retries']:.1f}",
            format_ns(r["stall_ns"]),
            format_ns(r["latency_p50_ns"]) if r["latency_p50_ns"] else "-",
            format_ns(r["latency_p99_ns"]) if r["latency_p99_ns"] else "-",
        )
    return table


# --- the benchmark ----------------------------------------------------------------------

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
    rows: dict[int, list[dict[str, Any]]] = {}
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
