"""Running a session (engine.api.LiveSession) in trio guest mode on Textual's asyncio loop.

One guest run per session: starting a session starts a run, stopping one cancels its root
scope and waits for trio to finish (every actor's finally-blocks run, the log is closed), and
only then may the next run start, since trio allows one run per thread. Both sides share one
thread, so the UI may call the engine's synchronous entry points (``LiveSession.send``) directly;
``Sequencer.send`` sets a trio Event, and trio's reschedule forces a guest tick, so a sleeping
engine wakes without any extra poke.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import outcome
import trio
import trio.testing

from engine.api import Breakpoints, LiveSession
from engine.snapshot import Snapshot

DoneCallback = Callable[["EngineHost", outcome.Outcome[Any]], None]


class EngineHost:
    """Owns the running session, its tracker and its guest run."""

    def __init__(self, on_done: DoneCallback) -> None:
        self._on_done = on_done
        self.live: LiveSession | None = None
        self._scope: trio.CancelScope | None = None
        self._done: asyncio.Future[outcome.Outcome[Any]] | None = None
        self._stopping = False
        self._closed = False
        self.breakpoints = Breakpoints()
        """The user's list: every session this host starts stops at them."""
        self.switching = asyncio.Lock()
        """Held while one session is stopped and the next started: two restarts asked for
        at once (keys typed fast) must not interleave."""

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    def start(self, live: LiveSession) -> None:
        if self._closed:
            # The app is going: a restart that was under way when it quit must not start a
            # guest run the closing host loop would cut off in the middle.
            return
        if self.running:
            raise RuntimeError("a session is already running; stop it first")
        loop = asyncio.get_running_loop()
        self.live = live
        live.breakpoints = self.breakpoints
        self._stopping = False
        # Created here, entered by the run: a stop() before trio's first tick still cancels.
        self._scope = trio.CancelScope()
        done: asyncio.Future[outcome.Outcome[Any]] = loop.create_future()
        self._done = done

        def finished(result: outcome.Outcome[Any]) -> None:
            if not done.done():
                done.set_result(result)
            if not self._stopping:
                self._on_done(self, result)

        trio.lowlevel.start_guest_run(
            self._main,
            live,
            self._scope,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=finished,
            # Textual's drivers (the web driver in particular) let asyncio own the wakeup fd.
            host_uses_signal_set_wakeup_fd=True,
        )

    @staticmethod
    async def _main(live: LiveSession, scope: trio.CancelScope) -> Any:
        with scope:
            # Pacing anchors wall time at 0, trio's clock starts anywhere: anchor it to now,
            # or a paced run would think it is far behind and run flat out.
            live.rebase()
            return await live.run()
        return None

    def interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM: the run stops at its next hand-over and logs an `interrupted`
        verdict with its counters (engine.signals), as a headless run does."""
        if self.live is not None and self.running:
            self._stopping = True  # ending, not failing: no "engine done" report
            self.live.interrupt(signum)

    async def close(self) -> None:
        """For good (the app is unmounting): after any restart under way, stop the run, and
        start no other."""
        self._closed = True
        async with self.switching:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the run and wait until trio has finished with it."""
        done = self._done
        if done is None:
            return
        if not done.done() and self.live is not None and self.live.interrupted_by:
            await done  # it ends by itself, verdict line and all; cancelling would cut that
        if not done.done():
            self._stopping = True
            await self._park()
            assert self._scope is not None
            self._scope.cancel()
            await done

    async def _park(self) -> None:
        """Bring every actor to rest before cancelling.

        Cancelling while one actor runs and has just handed the baton on is unsafe in the
        sequencer as it stands: the cancellation reschedules a parked actor, and the baton's
        own reschedule of that actor then trips trio's assertion (TrioInternalError). Paused,
        every actor waits inside a trio primitive and cancellation is clean. Pausing here sets
        the pacing directly, not through a command: the session is being abandoned and its
        log (cut short, with no verdict) must not gain a pause its user never asked for.
        """
        live = self.live
        pacing = live.pacing if live is not None else None
        if live is None or pacing is None:
            return  # a wall-clock session has no baton: cancelling it is clean
        for _ in range(3):
            pacing.paused = True
            pacing.step_until_seq = -1
            if self.running:
                live.rebase()
            await self.settle()
            # A command queued before the pause (resume, step) may have undone it.
            if pacing.paused and pacing.step_until_seq <= live.events:
                return

    async def wait_done(self) -> outcome.Outcome[Any] | None:
        """Until the session ends by itself (verdict, error) or is stopped."""
        if self._done is None:
            return None
        return await asyncio.shield(self._done)

    # --- talking to the engine -----------------------------------------------------------

    def send(self, name: str, **args: str) -> bool:
        """A command for the running session (validated first; FaultError on bad input, and
        ValueError for a pacing command a real VM cannot take). False when there is no live
        run to take it."""
        if self.live is None or not self.running:
            return False
        self.live.send(name, **args)
        return True

    def poke(self) -> None:
        """After the UI changed the pacing directly (replay controls): wake a waiting
        sequencer so it re-reads it."""
        if self.live is not None and self.running:
            self.live.rebase()

    def snapshot(self, events: bool = True) -> Snapshot | None:
        if self.live is None:
            return None
        return self.live.snapshot(events=events)

    async def settle(self) -> None:
        """Wait until the engine can make no progress without the UI: paused (and any step
        done) or finished. For tests and screenshots, which must not depend on wall time."""
        done = self._done
        if done is None or done.done():
            return
        loop = asyncio.get_running_loop()
        quiet: asyncio.Future[None] = loop.create_future()

        async def watch() -> None:
            try:
                await trio.testing.wait_all_tasks_blocked()
            finally:
                # Also when the run ends under us: the waiter must never hang.
                if not quiet.done():
                    quiet.set_result(None)

        try:
            trio.lowlevel.spawn_system_task(watch)
        except RuntimeError:
            # The run is winding down (its main task returned): only the end is left.
            await done
            return
        waiters: list[asyncio.Future[Any]] = [quiet, done]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
