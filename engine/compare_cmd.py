"""`slotlab compare`, the command: bad input first, a progress bar while the matrix runs
(engine/compare.py), then the matrix as Rich tables (engine/compare_table.py) or one JSON object
of MatrixRow lists keyed by scenario (--json). `--backend kvm|both` goes to
engine/backends/kvm/compare.py.
"""

from __future__ import annotations

import argparse
import time

import msgspec

from engine import limits
from engine.compare import compare_matrices, validate
from engine.compare_table import matrix_table
from engine.matrix import LEGEND
from engine.scenarios import builtin_names
from engine.vmm.strategies import STRATEGIES


def capped_jobs(jobs: int, force: bool) -> int:
    """--jobs capped at the CPU count, saying so, unless --force-jobs."""
    return limits.capped_at_cpus(limits.JOBS, jobs, "--jobs", force)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.backend in ("kvm", "both"):
        return _kvm_compare(args)
    names = builtin_names() if args.scenario == "all" else [args.scenario]
    strategies = list(STRATEGIES)
    # Bad input is reported before the progress bar appears.
    for name in names:
        validate(name, strategies, args.seeds, args.jobs, args.fault)
    args.jobs = capped_jobs(args.jobs, args.force_jobs)

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
        # No refresh thread: the workers are forked only from a single-threaded process
        # (engine/procpool.py), so the bar is redrawn as runs finish, at most 10 times a second.
        auto_refresh=False,
    )
    drawn = [0.0]
    with bar:
        tasks = {
            name: bar.add_task(f"{name} ({args.jobs} job{'s' if args.jobs != 1 else ''})")
            for name in names
        }

        def advance(name: str, done: int, total: int) -> None:
            now = time.monotonic()
            redraw = now - drawn[0] >= 0.1 or done == total
            if redraw:
                drawn[0] = now
            bar.update(tasks[name], completed=done, total=total, refresh=redraw)

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
