"""The compare matrix as a Rich table: how the CLI renders rows (engine/matrix.py)."""

from __future__ import annotations

from typing import Any

from engine.matrix import VERDICT_COLOUR, MatrixRow
from engine.units import format_ns


def matrix_table(
    scenario: str,
    rows: list[MatrixRow],
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
            f"[{VERDICT_COLOUR.get(v, 'white')}]{n} {v}[/]" for v, n in r.verdicts.items()
        )
        if r.violations:
            found = ", ".join(f"{n} {k}" for k, n in r.violations.items())
            verdicts += f" [dim]({found})[/]"
        table.add_row(
            r.strategy,
            verdicts,
            f"{r.crash_rate:.0%}",
            str(r.internal_errors),
            f"{r.retries:.1f}",
            format_ns(r.stall_ns),
            format_ns(r.latency_p50_ns) if r.latency_p50_ns else "-",
            format_ns(r.latency_p99_ns) if r.latency_p99_ns else "-",
        )
    return table
