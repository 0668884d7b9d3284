"""Runs on Dask: a LocalCluster over this machine's cores, or an existing scheduler.

Work goes out in chunks of RunSpecs (one Dask task each), so the scheduler's cost per task
(about a millisecond, in this very process for a LocalCluster) is paid once per chunk, not per
run. Chunks shrink as the sweep ends (guided self-scheduling), so no worker sits idle for long
while another finishes a big last chunk. Only a bounded number of chunks is in flight, so a
sweep of millions of runs never builds millions of futures, and results come back in
completion order to be streamed to the store. Which worker ran a chunk never matters: every
run is a pure function of its spec.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from engine import limits
from engine.signals import deferred, raise_if_noted, workers_ignore_ctrl_c
from engine.sweep.unit import Outcome, RunSpec, execute

Keep = str  # "failing", "all" or "none"
Result = tuple[RunSpec, Outcome | None, str]  # spec, outcome (None: it raised), error


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


# Dask's defaults suit a long-lived cluster watched on its dashboard; a LocalCluster for a sweep
# has processes busy with runs on a machine whose cores are all in use. Measured: in a worker
# running a chunk, its other threads took 13% on top of the runs (the statistical profiler
# samples every 10 ms, the event-loop health tick wakes every 20 ms), 1% with these; the client
# process (scheduler, nannies) idled at 3.8% of a core, 0.7% with these: CPU the workers get.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}


@contextlib.contextmanager
def open_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A distributed.Client on the scheduler at `tcp://HOST:PORT`, or on a new LocalCluster of
    `workers` single-threaded processes (default: the cores this process may use)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://")):
            raise ValueError(f"--scheduler {scheduler!r}: expected tcp://HOST:PORT")
        with deferred():
            try:
                client = Client(scheduler, timeout=10)
            except OSError as err:
                raise ValueError(f"--scheduler {scheduler}: cannot connect: {err}") from None
            with client:
                yield client
        return
    n = limits.WORKERS.check(workers or limits.cpus(), "--workers")
    # From the cluster's start to its close a signal is acted on only where run_on waits.
    with deferred(), dask.config.set(LOCAL_CLUSTER_CONFIG):
        with workers_ignore_ctrl_c():
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # any free port: never collide with another cluster
                # A worker's own errors (a heartbeat to a scheduler that closed under a
                # Ctrl-C) are noise here: a run that fails is a row, a worker lost a failed
                # future.
                silence_logs=logging.CRITICAL,
            )
        with cluster, Client(cluster) as client:
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
    """Every spec on the cluster, in chunks (`chunk` runs each, or guided sizes); on_chunk gets
    each chunk's results as it finishes and returns False to stop (hunt's first failure): what
    is still queued is cancelled."""
    from distributed import as_completed

    if not specs:
        return
    if chunk is not None:
        limits.CHUNK.check(chunk, "--chunk")  # 0 or less would never get past the first
    slots = worker_count(client)
    ahead = slots * 3
    queue = chunked(specs, slots, chunk)
    live = {client.submit(run_chunk, c, keep, pure=False) for c in _take(queue, ahead)}
    pending = as_completed(list(live))
    for future in _finished(pending):
        live.discard(future)
        results = future.result()
        if not on_chunk(results):
            client.cancel(list(live))
            return
        for c in _take(queue, 1):
            nxt = client.submit(run_chunk, c, keep, pure=False)
            live.add(nxt)
            pending.add(nxt)


POLL_S = 0.05
"""How often a wait for the next chunk looks for a SIGINT or SIGTERM (engine.signals.deferred)."""


def _finished(pending: Any) -> Iterator[Any]:
    """as_completed's futures as they finish. Its own wait cannot be broken by a signal that
    is only noted, so this one looks between short waits."""
    while not pending.is_empty():
        raise_if_noted()
        batch = pending.next_batch(block=False)
        if not batch:
            time.sleep(POLL_S)
        yield from batch


MAX_CHUNK = 64
MIN_CHUNK = 4
"""A chunk of a few runs still outweighs its Dask task's cost in the worker and scheduler."""


def chunked(specs: Sequence[RunSpec], slots: int, size: int | None) -> Iterator[list[RunSpec]]:
    """Chunks of `size` runs, or guided: a quarter of each worker's fair share of what is left,
    MAX_CHUNK at most, down to MIN_CHUNK at the end."""
    i = 0
    while i < len(specs):
        n = size or max(MIN_CHUNK, min(MAX_CHUNK, (len(specs) - i) // (4 * slots)))
        yield list(specs[i : i + n])
        i += n


def _take(it: Iterator[list[RunSpec]], n: int) -> list[list[RunSpec]]:
    out = []
    for c in it:
        out.append(c)
        if len(out) == n:
            break
    return out
