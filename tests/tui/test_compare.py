"""The compare screen: every strategy over N seeds in a thread worker, with progress, as a
table and a bar chart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from multiprocessing import resource_tracker
from typing import Any

import pytest
from textual.widgets import DataTable, Input, ProgressBar

from engine.compare import compare_matrix
from engine.matrix import MatrixRow
from engine.vmm.strategies import STRATEGIES
from tui.app import SlotlabApp
from tui.screens.compare import CompareScreen
from tui.widgets.bar_chart import BarChart

from .helpers import live, settle

AppFactory = Callable[..., SlotlabApp]


class FakeCompare:
    """compare_matrix's signature, instant, recording how it was called and which thread
    it ran on."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.threads: list[int] = []
        self.gate = gate
        # Set when the matrix is half done and holding at the gate: every progress report
        # before it has been applied (call_from_thread waits for the UI thread).
        self.halfway = threading.Event()

    def __call__(
        self,
        scenario: str,
        strategies: list[str],
        seeds: int,
        jobs: int,
        faults: list[str],
        progress: Callable[[int, int], None] | None,
    ) -> list[MatrixRow]:
        self.calls.append((scenario, list(strategies), seeds, jobs, list(faults)))
        self.threads.append(threading.get_ident())
        total = len(strategies) * seeds
        for done in range(1, total + 1):
            if self.gate is not None and done == total // 2:
                self.halfway.set()
                self.gate.wait()  # the test always opens it; no wall-clock bound to miss
            if progress is not None:
                progress(done, total)
        return [
            MatrixRow(
                strategy=name,
                runs=seeds,
                crash_rate=1.0 if name == "legacy" else 0.0,
                retries=2.5,
                stall_ns=1000.0 * i,
                latency_p50_ns=10_000 + i,
                latency_p99_ns=20_000 * (i + 1),
                verdicts={"crashed": seeds} if name == "legacy" else {"ok": seeds},
                internal_errors=seeds if name == "legacy" else 0,
                violations={},
                exits={},
                window_mmio_exits=0,
            )
            for i, name in enumerate(strategies)
        ]


@pytest.mark.asyncio
async def test_compare_runs_in_a_worker_and_shows_table_and_chart(
    app_factory: AppFactory,
) -> None:
    fake = FakeCompare()
    app = app_factory(compare_fn=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls == [("split", list(STRATEGIES), 5, screen.jobs, ["race"])]
        assert fake.threads[0] != threading.get_ident()  # not on the UI thread
        table = screen.query_one(DataTable)
        assert table.row_count == len(STRATEGIES)
        assert table.get_row("legacy")[3] == "100%"
        # The widths are known as the rows go in, not measured later on an Idle: a header
        # drawn in between once kept the old widths.
        screen.show_rows(screen.rows)
        widths = {str(key.value): column.width for key, column in table.columns.items()}
        assert widths["strategy"] == max(len(name) for name in STRATEGIES)
        assert widths["crash rate"] == len("crash rate")
        assert not any(column.auto_width for column in table.columns.values())
        chart = str(screen.query_one(BarChart).render())
        assert "crash rate" in chart
        assert "legacy" in chart
        assert "100%" in chart
        bar = screen.query_one(ProgressBar)
        assert bar.progress == bar.total == len(STRATEGIES) * 5
        # Fewer seeds, run again.
        screen.query_one("#seeds", Input).value = "2"
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert fake.calls[-1][2] == 2
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is live(app)


@pytest.mark.asyncio
async def test_progress_shows_while_running(app_factory: AppFactory) -> None:
    gate = threading.Event()
    fake = FakeCompare(gate)
    app = app_factory(compare_fn=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        try:
            await settle(app, pilot)
            await pilot.press("c")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            total = len(STRATEGIES) * 5
            # Wait in a helper thread so the UI keeps serving the worker's progress reports;
            # how long it takes does not matter, only that the worker got half way.
            await asyncio.get_running_loop().run_in_executor(None, fake.halfway.wait)
            await pilot.pause()
            bar = screen.query_one(ProgressBar)
            assert bar.progress == total // 2 - 1
            assert screen.query_one(DataTable).row_count == 0
        finally:
            gate.set()  # a failed assertion must not leave the worker thread waiting
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query_one(DataTable).row_count == len(STRATEGIES)


@pytest.fixture
def no_resource_tracker() -> None:
    """multiprocessing starts its resource tracker once per process, with sys.stderr's fd
    among the fds the child keeps. Stopped here, so the compare below starts it again under
    Textual's captured stderr (fileno -1), as the first compare of a real session does."""
    # _stop is private and missing from typeshed; no public call stops the tracker.
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]


@pytest.mark.asyncio
@pytest.mark.usefixtures("no_resource_tracker")
async def test_compare_with_the_engine_in_two_worker_processes(app_factory: AppFactory) -> None:
    """The real compare_matrix with 2 jobs, from the TUI's worker thread: its runs go to
    processes forked by a forkserver (never forked from this multi-threaded process), which
    must start although Textual has replaced sys.stderr with an object whose fileno is -1."""
    calls: list[int] = []

    def short_compare(
        scenario: str,
        strategies: list[str],
        seeds: int,
        jobs: int,
        faults: list[str],
        progress: Any = None,
    ) -> list[MatrixRow]:
        calls.append(jobs)
        return compare_matrix(
            scenario, strategies, seeds, jobs, faults, progress, duration_ns=300_000
        )

    app = app_factory(compare_fn=short_compare)
    app.compare_jobs = 2
    app.compare_seeds = 1
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.error == ""
        assert calls == [2]
        rows = {r.strategy: r for r in screen.rows}
        assert set(rows) == set(STRATEGIES)
        assert all(r.runs == 1 for r in rows.values())
        assert rows["inhibit"].crash_rate == 0.0
        # Run again (`r`): the same workers' path, no error either.
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.error == ""
        assert calls == [2, 2]


@pytest.mark.asyncio
async def test_compare_error_is_shown_not_raised(app_factory: AppFactory) -> None:
    def broken(*args: Any) -> list[MatrixRow]:
        raise RuntimeError("split/legacy seed 3 failed: boom")

    app = app_factory(compare_fn=broken)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        assert "boom" in screen.error
        assert "compare failed" in str(screen.query_one("#compare-status").render())
