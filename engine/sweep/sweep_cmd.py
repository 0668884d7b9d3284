"""`slotlab sweep`: a grid of runs on Dask into a Parquet file, and its matrix.

    slotlab sweep --scenario split --seeds 1000 --faults none --faults race --out split.parquet
    slotlab sweep --summary split.parquet

Each finished run becomes one row (engine/sweep/store.py). Logs are kept per `--keep`: by
default only those of runs whose verdict is not ok, under `--logs` (default FILE's name with
`-logs`). The summary groups rows by everything but strategy and seed, and prints each group as
the table `slotlab compare` prints.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.compare_table import matrix_table
from engine.matrix import LEGEND, MatrixRow, aggregate, run_row
from engine.sweep.cluster import Result, open_client, run_on
from engine.sweep.grid import build_grid
from engine.sweep.options import cluster_workers
from engine.sweep.unit import RunSpec
from engine.vmm.strategies import STRATEGIES

if TYPE_CHECKING:
    from engine.sweep.store import ResultStore


def cmd_sweep(args: argparse.Namespace) -> int:
    # pyarrow loads only for the commands that need it, not for every `slotlab` invocation.
    from engine.sweep.store import ResultStore

    if args.summary:
        return print_summary(args.summary, args.json)
    grid = build_grid(
        args.scenario,
        args.strategy,
        args.faults,
        args.seeds,
        args.host_profile,
        args.vcpus,
        args.duration,
    )
    store = ResultStore(args.out)
    specs = [s for s in grid.specs() if s.run_id() not in store.done]
    total = len(specs) + len(store.done)
    logs = Path(args.logs or f"{Path(args.out).with_suffix('')}-logs")
    start = time.perf_counter()
    failures = 0
    if specs:
        try:
            failures = _sweep(args, store, specs, total, logs)
        finally:
            store.close()
    wall = time.perf_counter() - start
    skipped = total - len(specs)
    rate = len(specs) / wall if specs and wall > 0 else 0.0
    print(
        f"{len(specs)} runs in {wall:.1f} s ({rate:.1f} runs/s), {failures} not ok; "
        f"{skipped} already in {args.out}"
    )
    return 0


def _sweep(
    args: argparse.Namespace, store: ResultStore, specs: list[RunSpec], total: int, logs: Path
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.sweep.store import row_of

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} runs/s"),
        TextColumn("[red]{task.fields[failures]} failing"),
        console=console,
        disable=not console.is_terminal,
        # Redrawn 4 times a second, not 10: this process shares the cores with the workers.
        refresh_per_second=4,
    )
    counts = {"failures": 0, "done": 0}
    started = time.perf_counter()
    with bar, open_client(args.scheduler, cluster_workers(args)) as client:
        task = bar.add_task(
            "sweep", total=total, completed=total - len(specs), rate=0.0, failures=0
        )

        def finished(results: list[Result]) -> bool:
            for spec, outcome, error in results:
                log = ""
                if outcome is not None and outcome.log is not None:
                    log = _write_log(logs, spec, outcome.log)
                row = row_of(spec, outcome, error, log)
                counts["failures"] += row["verdict"] != "ok"
                store.add(row)
            counts["done"] += len(results)
            rate = counts["done"] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=len(results), rate=rate, failures=counts["failures"])
            return True

        run_on(client, specs, args.keep, finished, args.chunk)
    return counts["failures"]


def _write_log(logs: Path, spec: RunSpec, data: bytes) -> str:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{Path(spec.scenario).stem}-{spec.strategy}-s{spec.seed}-{spec.run_id()}.jsonl"
    path.write_bytes(data)
    return str(path)


# --- the summary --------------------------------------------------------------------------

GroupKey = tuple[str, str, str, int | None, int | None, str]


def matrices(rows: list[dict[str, Any]]) -> dict[GroupKey, list[MatrixRow]]:
    """Rows grouped by (scenario, faults, host profile, vcpus, duration, perturb), each group a
    compare matrix: one aggregate row per strategy, in the registry's order, seeds in order."""
    cells: dict[GroupKey, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        key = (
            r["scenario"],
            r["faults"],
            r["host_profile"],
            r["vcpus"],
            r["duration_ns"],
            r["perturb"],
        )
        cells[key][r["strategy"]].append(r)
    order = {name: i for i, name in enumerate(STRATEGIES)}
    out: dict[GroupKey, list[MatrixRow]] = {}
    for key in sorted(cells, key=lambda k: tuple(str(x) for x in k)):
        by_strategy = cells[key]
        out[key] = [
            aggregate(st, [run_row(r) for r in sorted(by_strategy[st], key=lambda r: r["seed"])])
            for st in sorted(by_strategy, key=lambda s: (order.get(s, len(order)), s))
        ]
    return out


def print_summary(path: str, as_json: bool) -> int:
    import msgspec
    from rich.console import Console

    from engine.sweep.store import read_rows

    groups = matrices(read_rows(path))
    if as_json:
        print(
            msgspec.json.encode(
                [
                    {
                        "scenario": k[0],
                        "faults": k[1],
                        "host_profile": k[2],
                        "vcpus": k[3],
                        "duration_ns": k[4],
                        "perturb": k[5],
                        "rows": rows,
                    }
                    for k, rows in groups.items()
                ]
            ).decode()
        )
        return 0
    console = Console()
    for (scenario, faults, profile, vcpus, duration, _perturb), rows in groups.items():
        label = scenario
        extra = [profile] if profile != "default" else []
        extra += [f"{vcpus} vCPUs"] if vcpus is not None else []
        if extra:
            label += f" ({', '.join(extra)})"
        seeds = max(r.runs for r in rows)
        console.print(matrix_table(label, rows, seeds, faults.split(), duration))
    console.print(LEGEND, style="dim", highlight=False)
    return 0
