"""Runs on Dask: a LocalCluster over this machine's cores, or an existing scheduler.

Work goes out in chunks of RunSpecs (one Dask task each), so the scheduler's cost per task
(about a millisecond, in this very process for a LocalCluster) is paid once per chunk, not per
run. Only a bounded number of chunks is in flight, so a sweep of millions of runs never builds
millions of futures, and results come back in completion order to be streamed to the store.
Which worker ran a chunk never matters: every run is a pure function of its spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from engine.sweep.unit import Outcome, RunSpec, execute

Keep = str  # "failing", "all" or "none"
Result = tuple[RunSpec, Outcome | None, str]  # spec, outcome (None: it raised), error
KEEP_CHOICES = ("failing", "all", "none")


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_chunk(specs: Sequence[RunSpec], keep: Keep) -> list[Result]:
    """A worker's task: each run of the chunk, keeping its log bytes only as asked. A run
    that raises (an engine bug) is reported, not fatal to the sweep."""
    out: list[Result] = []
    for spec in specs:
        try:
            outcome = execute(spec, keep_log=keep != "none")
        except Exception as err:
            out.append((spec, None, f"{type(err).__name__}: {err}"))
            continue
        if keep == "failing" and outcome.summary.verdict == "ok":
            outcome.log = None
        out.append((spec, outcome, ""))
    return out


@contextlib.contextmanager
def open_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A distributed.Client on the scheduler at `tcp://HOST:PORT`, or on a new LocalCluster of
    `workers` single-threaded processes (default: the cores this process may use)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://")):
            raise ValueError(f"--scheduler {scheduler!r}: expected tcp://HOST:PORT")
        try:
            client = Client(scheduler, timeout=10)
        except OSError as err:
            raise ValueError(f"--scheduler {scheduler}: cannot connect: {err}") from None
        with client:
            yield client
        return
    n = workers or usable_cores()
    if n < 1:
        raise ValueError(f"--workers must be at least 1, not {n}")
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: never collide with another cluster
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def worker_count(client: Any) -> int:
    return max(1, int(sum(client.nthreads().values())))


def run_on(
    client: Any,
    specs: Sequence[RunSpec],
    keep: Keep,
    on_chunk: Callable[[list[Result]], bool],
    chunk: int | None = None,
) -> None:
    """Every spec on the cluster, in chunks; on_chunk gets each chunk's results as it finishes
    and returns False to stop (hunt's first failure): what is still queued is cancelled."""
    from distributed import as_completed

    if not specs:
        return
    slots = worker_count(client)
    size = chunk or max(1, min(64, len(specs) // (slots * 8) or 1))
    chunks = [list(specs[i : i + size]) for i in range(0, len(specs), size)]
    ahead = slots * 3
    queue = iter(chunks)
    live = {client.submit(run_chunk, c, keep, pure=False) for c in _take(queue, ahead)}
    pending = as_completed(list(live))
    for future in pending:
        live.discard(future)
        results = future.result()
        if not on_chunk(results):
            client.cancel(list(live))
            return
        for c in _take(queue, 1):
            nxt = client.submit(run_chunk, c, keep, pure=False)
            live.add(nxt)
            pending.add(nxt)


def _take(it: Iterator[list[RunSpec]], n: int) -> list[list[RunSpec]]:
    out = []
    for c in it:
        out.append(c)
        if len(out) == n:
            break
    return out
