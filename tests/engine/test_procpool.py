"""compare's worker processes (engine/procpool.py): every result arrives once, a failing call
or a dying worker names its item, and workers are forked only where forking is safe."""

from __future__ import annotations

import os
import threading

import pytest
import trio

from engine import procpool
from engine.compare import CompareRunError, compare_matrix
from engine.matrix import RunRow, run_one
from engine.procpool import JobFailed, batch_size, run_all, start_method


def square_plus(x: int, k: int) -> tuple[int, int]:
    return x * x + k, os.getpid()


def fail_on_seven(x: int) -> int:
    if x == 7:
        raise ValueError(f"seven is not allowed (got {x})")
    return x


def exit_on_three(x: int) -> int:
    if x == 3:
        os._exit(3)
    return x


def broken_seed_2(
    scenario: str, strategy: str, seed: int, faults: tuple[str, ...], duration_ns: int | None
) -> RunRow:
    if seed == 2:
        raise RuntimeError("model exploded")
    return run_one(scenario, strategy, seed, faults, duration_ns)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_every_result_arrives_once_whatever_the_start_method(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procpool, "start_method", lambda: method)
    got: dict[int, int] = {}
    pids: set[int] = set()

    def arrived(index: int, result: tuple[int, int]) -> None:
        assert index not in got
        got[index] = result[0]
        pids.add(result[1])

    run_all(square_plus, [(x,) for x in range(50)], (1,), 2, arrived)
    assert got == {x: x * x + 1 for x in range(50)}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_a_call_that_raises_names_its_item() -> None:
    with pytest.raises(JobFailed) as info:
        run_all(fail_on_seven, [(x,) for x in range(20)], (), 2, lambda i, r: None)
    assert info.value.index == 7
    assert info.value.description == "ValueError: seven is not allowed (got 7)"
    assert "fail_on_seven" in str(info.value)  # the worker's traceback


def test_a_worker_that_dies_names_its_item() -> None:
    with pytest.raises(JobFailed, match=r"died \(exit code 3\)") as info:
        run_all(exit_on_three, [(x,) for x in range(8)], (), 2, lambda i, r: None)
    assert batch_size(8, 2) == 1  # so the batch that held item 3 held only item 3
    assert info.value.index == 3


def test_a_failing_run_in_a_worker_names_the_run_to_reproduce() -> None:
    with pytest.raises(CompareRunError, match=r"split/legacy seed 2 failed: RuntimeError: model"):
        compare_matrix("split", ["legacy"], 3, 2, ["race"], duration_ns=20_000, run=broken_seed_2)


def test_fork_only_from_one_thread_outside_trio(monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread count is set here: other tests of the session may have left threads running.
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert start_method() == "fork"

    async def inside() -> str:
        return start_method()

    # Inside trio.run a forked child would believe it is still in the run.
    assert trio.run(inside) == "forkserver"
    # Another thread could hold a lock the child needs, forever.
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert start_method() == "forkserver"


def test_batches_shrink_to_one_call_at_the_end() -> None:
    left, sizes = 192, []
    while left:
        sizes.append(batch_size(left, 2))
        left -= sizes[-1]
    assert max(sizes) == procpool.MAX_BATCH
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-8:] == [1] * 8
    assert len(sizes) < 192 // 3  # far fewer messages than runs
