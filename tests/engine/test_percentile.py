"""One percentile, nearest rank, wherever slotlab reports one: a run's update latency and a
compare matrix's row agree on known vectors."""

from __future__ import annotations

from collections import Counter

import pytest

from engine.checker import Checker
from engine.matrix import RunRow, aggregate
from engine.summary import build_summary, percentile

# (values, p, nearest-rank percentile): the ceil(n * p / 100)-th smallest.
KNOWN = [
    (list(range(1, 11)), 50, 5),
    (list(range(1, 11)), 90, 9),
    (list(range(1, 11)), 91, 10),
    (list(range(1, 11)), 99, 10),
    (list(range(1, 11)), 10, 1),
    (list(range(1, 11)), 0, 1),
    (list(range(1, 11)), 100, 10),
    ([7], 50, 7),
    ([7], 99, 7),
    ([3, 1, 2], 50, 2),
    ([40, 10, 30, 20], 50, 20),
    ([40, 10, 30, 20], 75, 30),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 101)), 50, 50),
    ([], 50, 0),
]


@pytest.mark.parametrize(("values", "p", "want"), KNOWN)
def test_nearest_rank(values: list[int], p: int, want: int) -> None:
    assert percentile(values, p) == want


def test_order_of_the_values_does_not_matter() -> None:
    values = [9, 2, 7, 4, 10, 1, 8, 3, 6, 5]
    assert percentile(values, 50) == percentile(sorted(values), 50) == 5


def _summary_latency(latencies: list[int]) -> tuple[int, int, int]:
    s = build_summary(
        verdict=Checker(atomic=True).verdict(),
        checker=Checker(atomic=True),
        exits=Counter(),
        faults=Counter(),
        latencies=latencies,
        transactions=len(latencies),
        ioctls=0,
        stall_ns=0,
        injections=0,
        events=0,
        virtual_ns=0,
        seed=1,
        scenario="split",
        strategy="legacy",
        log=None,
    )
    lat = s.update_latency_ns
    return lat.p50, lat.p99, lat.max


def _row(seed: int, p50: int, p99: int) -> RunRow:
    return RunRow(
        seed=seed, verdict="ok", crashed=False, internal_errors=0, retries=0, stall_ns=0,
        committed=True, p50=p50, p99=p99, violations=[], exits={}, window_mmio_exits=0,
    )  # fmt: skip


def test_a_runs_summary_and_a_matrix_row_use_the_same_percentile() -> None:
    """For n=10 the two used to disagree on p50 (6 against 5)."""
    values = [100 * i for i in range(1, 11)]
    assert _summary_latency(values) == (500, 1000, 1000)
    row = aggregate("legacy", [_row(i + 1, v, v) for i, v in enumerate(values)])
    assert (row.latency_p50_ns, row.latency_p99_ns) == (500, 1000)


def test_no_update_has_no_latency() -> None:
    assert _summary_latency([]) == (0, 0, 0)
