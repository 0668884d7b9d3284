"""Worker processes for many short, independent, CPU-bound calls: compare's runs.

Three costs decide whether two processes finish a matrix in half the time of one, and each is
cut here:

- Start-up. A spawned interpreter re-imports the engine before its first run (about 0.5 s of
  CPU per worker). When this process is single-threaded and outside any trio run, the workers
  are forked instead: they start with everything imported. Forking is not safe otherwise: a
  lock another thread holds at the fork stays held forever in the child, and a child forked
  inside `trio.run` believes it is still inside that run, so its own `trio.run` refuses to
  start. Then a forkserver (spawned once per process, the module of `fn` preloaded) forks
  them, or spawn where there is no forkserver.
- Round trips. Calls go out in batches, large while much work is left and down to one call at
  the end (guided self-scheduling), so the parent handles a few dozen messages, not one per
  call, and no worker waits long on another at the tail.
- The parent. It only sends batches and reads results over a pipe per worker; nothing else runs
  in it (no event loop, no feeder or manager thread), so it takes little CPU from the workers.

Results come back by index in completion order; the caller orders them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import trio

from engine.signals import leave_stopping_to_parent

Item = tuple[Any, ...]
Batch = list[tuple[int, Item]]

MAX_BATCH = 8
"""Calls per message at most: a batch is cheap to send, and this bounds the wait at the tail."""


class JobFailed(Exception):
    """A call raised in a worker (or its worker died): `index` names the item, `description`
    is `Type: message`, and the worker's traceback follows in str()."""

    def __init__(self, index: int, description: str, remote_traceback: str = "") -> None:
        super().__init__(index, description, remote_traceback)
        self.index = index
        self.description = description
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        if not self.remote_traceback:
            return self.description
        return f"{self.description}\n\nIn the worker process:\n{self.remote_traceback}"


def start_method() -> str:
    """fork when it is safe (see the module docstring), else forkserver, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    # macOS's system libraries are not fork-safe, which is why Python spawns there by default.
    forkable = "fork" in methods and sys.platform != "darwin"
    if forkable and threading.active_count() == 1 and not trio.lowlevel.in_trio_run():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def batch_size(left: int, workers: int) -> int:
    """Guided self-scheduling: a quarter of each worker's fair share of what is left."""
    return max(1, min(MAX_BATCH, left // (4 * workers)))


def run_all(
    fn: Callable[..., Any],
    items: Sequence[Item],
    fixed: Item,
    jobs: int,
    on_result: Callable[[int, Any], None],
) -> None:
    """fn(*items[i], *fixed) for every i on at most `jobs` worker processes; on_result(i,
    result) in this process as each arrives. The first call that raises stops the rest (the
    workers are killed) and raises JobFailed. fn and fixed must pickle unless forked."""
    method = start_method()
    # Any: typeshed declares Process on each concrete context, not on the BaseContext returned
    # for a method chosen at run time.
    ctx: Any = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([fn.__module__])
    todo = list(enumerate(items))
    workers: list[tuple[BaseProcess, Connection]] = []
    busy: dict[Connection, Batch] = {}
    clean = False
    try:
        for _ in range(min(jobs, len(todo))):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, fn, fixed), daemon=True)
            proc.start()
            theirs.close()
            workers.append((proc, mine))
        for _, conn in workers:
            _hand_out(conn, todo, busy, len(workers))
        while busy:
            for ready in wait(list(busy)):
                assert isinstance(ready, Connection)  # wait() returns what it was given
                conn = ready
                batch = busy.pop(conn)
                try:
                    ok, payload = conn.recv()
                except EOFError:
                    proc = next(p for p, c in workers if c is conn)
                    proc.join(1)
                    raise JobFailed(
                        batch[0][0], f"the worker process died (exit code {proc.exitcode})"
                    ) from None
                if not ok:
                    offset, description, where = payload
                    raise JobFailed(batch[offset][0], description, where)
                for (index, _), result in zip(batch, payload, strict=True):
                    on_result(index, result)
                _hand_out(conn, todo, busy, len(workers))
        clean = True
    finally:
        _stop(workers, clean)


def _hand_out(
    conn: Connection, todo: list[tuple[int, Item]], busy: dict[Connection, Batch], n: int
) -> None:
    if not todo:
        return
    size = batch_size(len(todo), n)
    batch, todo[:size] = todo[:size], []
    busy[conn] = batch
    conn.send([item for _, item in batch])


def _stop(workers: list[tuple[BaseProcess, Connection]], clean: bool) -> None:
    """After the last result every worker is told to exit; after a failure or an interrupt
    they are killed, since their remaining work is not wanted."""
    for proc, conn in workers:
        if clean:
            with contextlib.suppress(OSError):  # one that already exited needs no telling
                conn.send(None)
        else:
            proc.kill()
        conn.close()
    for proc, _ in workers:
        proc.join()


def _serve(conn: Connection, fn: Callable[..., Any], fixed: Item) -> None:
    """A worker: batches of items in, lists of results out, until told to stop (None) or the
    parent goes away (EOF)."""
    # Ctrl-C reaches the whole process group; the parent decides, and kills us if it stops.
    leave_stopping_to_parent()
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        results = []
        for offset, item in enumerate(batch):
            try:
                results.append(fn(*item, *fixed))
            except Exception as err:
                where = "".join(traceback.format_exception(err))
                conn.send((False, (offset, f"{type(err).__name__}: {err}", where)))
                break
        else:
            try:
                conn.send((True, results))
            except Exception as err:  # a result that does not pickle: say so, do not die
                conn.send(
                    (False, (0, f"cannot send results back: {type(err).__name__}: {err}", ""))
                )
