"""Every strategy on the current scenario over N seeds, as a table and a bar chart.

The matrix is computed by ``engine.compare.compare_matrix`` in a thread worker (it may spread
runs over worker processes itself); its progress callback reports back to the UI thread and
is also where a cancelled worker stops, since a thread cannot be interrupted otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from engine.api import MatrixRow
from engine.vmm.strategies import STRATEGIES
from tui.format import format_ns
from tui.palette import dismiss_once
from tui.widgets.bar_chart import BarChart
from tui.worker_fds import prepare_worker_processes

CompareFn = Callable[..., list[MatrixRow]]
DEFAULT_SEEDS = 5


COLUMNS = ("strategy", "runs", "verdicts", "crash rate", "retries", "stall", "p50", "p99")


def _cells(r: MatrixRow) -> tuple[str, ...]:
    verdicts = ", ".join(f"{n} {v}" for v, n in r.verdicts.items())
    return (
        r.strategy,
        str(r.runs),
        verdicts,
        f"{r.crash_rate:.0%}",
        f"{r.retries:.1f}",
        format_ns(r.stall_ns),
        format_ns(r.latency_p50_ns),
        format_ns(r.latency_p99_ns),
    )


class CompareCancelled(Exception):
    """Raised from the progress callback to stop a matrix nobody waits for any more."""


class CompareScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back", id="compare-close"),
        Binding("r", "rerun", "Run again", id="compare-rerun"),
    ]

    def __init__(
        self,
        scenario: str,
        faults: list[str],
        compare_fn: CompareFn,
        seeds: int = DEFAULT_SEEDS,
        jobs: int | None = None,
    ) -> None:
        super().__init__()
        self.scenario = scenario
        self.faults = list(faults)
        self.compare_fn = compare_fn
        self.seeds = seeds
        self.jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
        self.rows: list[MatrixRow] = []
        self.error = ""

    def compose(self) -> ComposeResult:
        faults = ", ".join(self.faults) or "none"
        yield Label(
            Text(f" Compare strategies on {self.scenario}  (faults: {faults})"), id="compare-title"
        )
        with Horizontal(id="compare-controls"):
            yield Label("seeds ", classes="form-label")
            yield Input(str(self.seeds), id="seeds", type="integer", classes="form-input")
            yield Label(f"  {self.jobs} job(s)   r runs again, esc goes back", id="compare-hint")
        yield ProgressBar(id="progress", show_eta=False)
        yield Static("", id="compare-status")
        with VerticalScroll(id="compare-body"):
            yield DataTable(id="matrix", cursor_type="row", zebra_stripes=True)
            yield BarChart(id="chart")
        yield Footer()

    def on_mount(self) -> None:
        self._fill_table([])
        self.query_one(BarChart).show_rows([])
        # Keys (r, escape) must reach the screen, not type into the seeds field.
        self.query_one(DataTable).focus()
        self.start()

    def start(self) -> None:
        # Here, on the UI thread: the worker thread below may spawn processes.
        prepare_worker_processes()
        self.query_one("#compare-status", Static).update(
            f"running {len(STRATEGIES)} strategies x {self.seeds} seeds ..."
        )
        self.query_one(ProgressBar).update(total=len(STRATEGIES) * self.seeds, progress=0)
        self.compute(self.seeds)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def compute(self, seeds: int) -> list[MatrixRow]:
        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            if worker.is_cancelled:
                raise CompareCancelled
            try:
                self.app.call_from_thread(self._progress, done, total)
            except RuntimeError:
                raise CompareCancelled from None

        return self.compare_fn(
            self.scenario, list(STRATEGIES), seeds, self.jobs, self.faults, progress
        )

    def _progress(self, done: int, total: int) -> None:
        self.query_one(ProgressBar).update(total=total, progress=done)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare":
            return
        status = self.query_one("#compare-status", Static)
        if event.state == WorkerState.SUCCESS:
            rows = event.worker.result
            assert isinstance(rows, list)
            self.show_rows(rows)
            status.update(f"{len(rows)} strategies x {self.seeds} seeds: done")
        elif event.state == WorkerState.ERROR:
            self.error = str(event.worker.error)
            status.update(Text(f"compare failed: {self.error}"))

    def show_rows(self, rows: list[MatrixRow]) -> None:
        self.rows = rows
        self._fill_table(rows)
        self.query_one(BarChart).show_rows(rows)
        self.query_one(ProgressBar).update(progress=self.query_one(ProgressBar).total or 0)

    def _fill_table(self, rows: list[MatrixRow]) -> None:
        """Columns as wide as their widest cell, set here: left to DataTable, an auto-width
        column is measured in its Idle handler, and a header drawn before that kept the old
        widths over rows drawn after (seen under load)."""
        cells = [_cells(r) for r in rows]
        table = self.query_one(DataTable)
        table.clear(columns=True)
        for i, name in enumerate(COLUMNS):
            width = max([cell_len(name), *(cell_len(row[i]) for row in cells)])
            table.add_column(name, key=name, width=width)
        for r, row in zip(rows, cells, strict=True):
            table.add_row(*row, key=r.strategy)

    def action_rerun(self) -> None:
        try:
            seeds = int(self.query_one("#seeds", Input).value)
        except ValueError:
            seeds = 0
        if seeds < 1:
            self.notify("seeds must be a whole number >= 1", severity="error")
            return
        self.seeds = seeds
        self.start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "seeds":
            self.action_rerun()

    def action_close(self) -> None:
        self.workers.cancel_group(self, "compare")
        dismiss_once(self, None)
