"""The deterministic runtime: integer virtual time and a sequencer over trio tasks.

trio randomises the order of tasks that become runnable together, and its deadline heap breaks
ties by id(); neither may decide what a simulation does. So every actor is a trio task, but only
one runs at a time: the sequencer keeps a heap of (virtual ns, seq, actor) and passes a baton to
the smallest entry, and an actor gives the baton back by sleeping or blocking. Tasks hand the
baton over with trio.lowlevel.reschedule(), so trio's own scheduling order never matters.

Keeping the baton: an actor that sleeps to a time strictly before every other entry would be
popped again at once, so it just advances the clock. vCPU actors go further: they are ordered
strictly against every other actor (the VMM, the SRCU worker, the injector) but only by quantum
against each other. A vCPU released at t0 keeps the baton while it stays below t0 + QUANTUM_NS
and below the next non-vCPU entry, so vCPUs skew by at most a quantum, the way instruction-count
quanta schedule vCPUs in emulators, and a vCPU hitting in stage-2 costs no task switch. The rule
is part of the semantics: live and flat-out runs take exactly the same decisions.

Outside commands (inject, pause, speed, step) are applied at a hand-over and stamped with the
number of the sleep/block call that led to it; replay forces a hand-over at the same call and
applies them there, which makes a live session reproducible byte for byte.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engine.events import EventBus
from engine.sim.pacing import Pacing
from engine.sim.perturb import Pct

INTERRUPTED = "interrupted"  # engine.signals' stop reason (the sim does not import it)


class Finished(Exception):
    """Raised inside an actor when the simulation is over."""


QUANTUM_NS = 1_000

# Bound once: the hand-over calls them at every task switch.
_reschedule = trio.lowlevel.reschedule
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled


class Actor:
    __slots__ = ("abort", "blocked", "horizon", "name", "parked", "quantum_end", "task", "vcpu")

    def __init__(self, name: str, vcpu: bool = False) -> None:
        self.name = name
        self.vcpu = vcpu
        self.task: trio.lowlevel.Task | None = None
        self.blocked = False
        # Waiting for the baton in wait_task_rescheduled: only then may it be rescheduled.
        self.parked = False
        self.quantum_end = 0
        # Sequencer.horizon(), left here by a step() that kept the baton.
        self.horizon = 0
        # Set by Sequencer.start (it needs the bus); built once, not per wait.
        self.abort: Callable[[Any], trio.lowlevel.Abort] = _never_started

    def __repr__(self) -> str:
        return f"Actor({self.name})"


def _never_started(_: Any) -> trio.lowlevel.Abort:
    raise AssertionError("an actor waited for the baton before Sequencer.start")


# Sequencer._pop()'s answer "try again": a marker, never scheduled.
_AGAIN = Actor("(again)")

# The time a dropped actor waits at (engine/sim/perturb.py): after every other entry, so it is
# popped only when no other actor is ready, even past the end of the run.
_DROPPED = 1 << 62


def _abort_for(actor: Actor, seq: Sequencer) -> Callable[[Any], trio.lowlevel.Abort]:
    def abort(_: Any) -> trio.lowlevel.Abort:
        # Only a run being torn down cancels a parked actor.
        seq.tearing_down()
        actor.parked = False
        return trio.lowlevel.Abort.SUCCEEDED

    return abort


CommandFn = Callable[[Any], None]


class Sequencer:
    def __init__(self, bus: EventBus, end_ns: int, pacing: Pacing | None = None) -> None:
        self.bus = bus
        self.end_ns = end_ns
        self.pacing = pacing or Pacing()
        # Non-vCPU actors and vCPU actors wait in separate heaps so a vCPU can see how far it
        # may run ahead: up to the next non-vCPU entry.
        self._strict: list[tuple[int, int, Actor]] = []
        self._vcpus: list[tuple[int, int, Actor]] = []
        self._counter = itertools.count()
        self._finished = trio.Event()
        self._done = False  # _finished.is_set(), read without a call on the hot path
        self.stop_reason = ""
        self._commands: deque[Any] = deque()
        self._command_handler: CommandFn | None = None
        self._poke = trio.Event()
        # Replay: commands recorded with the sleep/block call number they were applied after.
        self._scheduled: deque[tuple[int, Any]] = deque()
        self.calls = 0
        self.handoffs = 0
        # Hand-overs that move the baton to another task (a trio task switch); the others
        # hand it back to the actor that asked.
        self.switches = 0
        # Hand-overs to actors other than vCPUs (the steps of hunt's change points in logs
        # from before 2 Dec 2026), and preemptible() calls (the steps now).
        self.sync_handoffs = 0
        self.gaps = 0
        self._actors: list[Actor] = []
        # `slotlab hunt`'s schedule perturbation (engine/sim/perturb.py); None: the one
        # default schedule, and none of its code runs.
        self.perturb: Pct | None = None

    # --- actors -------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.bus.now

    @property
    def finished(self) -> bool:
        return self._done

    def start(
        self, nursery: trio.Nursery, actor: Actor, body: Callable[[], Awaitable[None]]
    ) -> None:
        """Run body as actor's task; it first runs when the sequencer reaches it."""

        async def task() -> None:
            actor.task = trio.lowlevel.current_task()
            await self._wait_for_baton(actor)
            try:
                await body()
            except Finished:
                return
            # An actor that returns gives the baton away for good.
            await self._pass_baton(actor, forever=True)

        actor.abort = _abort_for(actor, self)
        self._push(self.now, actor)
        self._actors.append(actor)
        nursery.start_soon(task, name=actor.name)

    async def run(self, nursery: trio.Nursery) -> None:
        """Start the first actor, then wait until the simulation ends and cancel the rest."""
        # Every actor task must be parked on its baton before the first one is released.
        while any(a.task is None for a in self._actors):
            await trio.lowlevel.checkpoint()
        await self._release_next()
        await self._finished.wait()
        self.tearing_down()
        nursery.cancel_scope.cancel()

    async def sleep(self, actor: Actor, ns: int) -> None:
        self.calls += 1
        t = self.bus.now + ns
        if self._keeps_baton(actor, t):
            if self.pacing.live:
                await self._pace(t)
                if self._commands or self._done:
                    self._push(t, actor)
                    await self._pass_baton(actor)
                    return
            self.bus.now = t
            return
        self._push(t, actor)
        await self._pass_baton(actor)

    def step(self, actor: Actor, ns: int) -> Awaitable[None] | None:
        """sleep() for the hottest callers, without a coroutine when none is needed: None
        when the run is flat out and the actor keeps the baton (the clock moved; a vCPU's
        actor.horizon is then horizon(actor)), else the awaitable that sleep() would have
        awaited. Same decisions, same call count."""
        if self.pacing.live:
            return self.sleep(actor, ns)
        self.calls += 1
        t = self.bus.now + ns
        # _keeps_baton() and horizon(), written out: this runs for every step of every vCPU.
        strict, vcpus, scheduled = self._strict, self._vcpus, self._scheduled
        end = self.end_ns
        if (
            t <= end
            and not (strict and t >= strict[0][0])
            and not self._commands
            and not (scheduled and scheduled[0][0] == self.calls)
        ):
            if not actor.vcpu:
                if not vcpus or t < vcpus[0][0]:
                    self.bus.now = t
                    return None
            elif t < actor.quantum_end or (
                (not vcpus or t < vcpus[0][0]) and self._takes_back(actor, t)
            ):
                self.bus.now = t
                limit = actor.quantum_end
                if end < limit:
                    limit = end + 1
                if strict and strict[0][0] < limit:
                    limit = strict[0][0]
                actor.horizon = limit - t - 1  # t is below all three
                return None
        if self.perturb is None:  # _push(), written out
            heapq.heappush(vcpus if actor.vcpu else strict, (t, next(self._counter), actor))
        else:
            self._push(t, actor)
        return self._pass_baton(actor)

    def _takes_back(self, actor: Actor, t: int) -> bool:
        """step() for a vCPU past its quantum, nothing due by t: when _push() then
        _pop() would hand the baton straight back (half the hand-overs of a lone vCPU), do
        just what that hand-over does, the order number it would take included. A replay's
        pending commands, a finished run and a perturbed schedule take the long way."""
        if self._scheduled or self._done or self.perturb is not None:
            return False
        next(self._counter)
        actor.quantum_end = t + QUANTUM_NS
        self.handoffs += 1
        return True

    def horizon(self, actor: Actor) -> int:
        """How far past now a vCPU may advance and still keep the baton (see above).

        A pure function of the simulation's state: it must not look at pending commands or
        at the pacing, which a replay (always flat out, commands applied at recorded calls)
        cannot see, or the replay numbers its sleep calls differently and diverges."""
        # min(quantum_end, end_ns + 1, next non-vCPU entry) - now - 1, at least 0; written
        # out, since it runs before every step of every vCPU.
        limit = actor.quantum_end
        if self.end_ns < limit:
            limit = self.end_ns + 1
        strict = self._strict
        if strict and strict[0][0] < limit:
            limit = strict[0][0]
        limit -= self.bus.now + 1
        return limit if limit > 0 else 0

    def _keeps_baton(self, actor: Actor, t: int) -> bool:
        """Whether an actor sleeping to t would be popped again at once."""
        if t > self.end_ns or self._commands:
            return False
        scheduled = self._scheduled
        if scheduled and scheduled[0][0] == self.calls:
            return False
        strict = self._strict
        if strict and t >= strict[0][0]:
            return False
        if actor.vcpu:
            return t < actor.quantum_end
        vcpus = self._vcpus
        return not vcpus or t < vcpus[0][0]

    def preemptible(self, actor: Actor) -> Awaitable[None] | None:
        """`actor` is back in user space between two kernel calls of one operation (the VMM
        between a transaction's ioctls): where a host scheduler can take the CPU from it, and
        the step `slotlab hunt`'s change points count (engine/sim/perturb.py). None, with no
        sequencer call, unless a change point is here."""
        self.gaps += 1
        perturb = self.perturb
        if perturb is None or not perturb.at_gaps:
            return None
        held = perturb.preempt(self.gaps, actor)
        if held is None:
            return None
        self.calls += 1
        self._push(self.bus.now + held if held else _DROPPED, actor)
        return self._pass_baton(actor)

    async def block(self, actor: Actor) -> None:
        """Give up the baton until someone calls wake(actor)."""
        self.calls += 1
        actor.blocked = True
        await self._pass_baton(actor)

    def wake(self, actor: Actor, delay_ns: int = 0) -> None:
        if actor.blocked:
            actor.blocked = False
            self._push(self.bus.now + delay_ns, actor)

    def tearing_down(self) -> None:
        """The actors are about to unwind. After a signal or an outside cancellation, what
        their clean-up code emits (inhibit's `finally`) never happened in the run: the bus
        drops it, so an interrupted log is exactly a prefix of the uninterrupted run's. A run
        that reached its own end keeps its clean-up events, as its logs always have."""
        if not self._done or self.stop_reason == INTERRUPTED:
            self.bus.closed = True

    def finish(self, reason: str) -> None:
        if not self._done:
            self.stop_reason = reason
            self._done = True
            self._finished.set()
            self._poke.set()  # a paused or paced hand-over sees it at once

    # --- commands -----------------------------------------------------------------------

    def set_command_handler(self, fn: CommandFn) -> None:
        self._command_handler = fn

    def send(self, command: Any) -> None:
        """From outside the simulation (the TUI, an API caller): applied at the next
        hand-over. Safe to call from trio guest-mode host callbacks (same thread)."""
        self._commands.append(command)
        self._poke.set()

    @property
    def queued(self) -> int:
        """Commands sent and not yet applied."""
        return len(self._commands)

    def schedule(self, call: int, command: Any) -> None:
        """Replay: apply command at the hand-over that follows sleep/block call number call."""
        self._scheduled.append((call, command))

    def unschedule(self) -> None:
        """Drop the recorded commands not yet applied (a re-executed run takes a new course)."""
        self._scheduled.clear()

    def _apply_commands(self, release_t: int) -> None:
        handler = self._command_handler
        self.bus.now = max(self.bus.now, min(release_t, self.end_ns))
        while self._scheduled and self._scheduled[0][0] <= self.calls:
            _, command = self._scheduled.popleft()
            if handler is not None:
                handler(command)
        while self._commands:
            command = self._commands.popleft()
            if handler is not None:
                handler(command)

    # --- the baton ----------------------------------------------------------------------

    def _push(self, t: int, actor: Actor) -> None:
        order = next(self._counter)
        if self.perturb is not None:
            order += self.perturb.tiebreak(actor)
        heapq.heappush(self._vcpus if actor.vcpu else self._strict, (t, order, actor))

    def _top(self) -> list[tuple[int, int, Actor]] | None:
        """The heap holding the next entry in (t, seq) order."""
        strict, vcpus = self._strict, self._vcpus
        if not strict:
            return vcpus or None
        if not vcpus:
            return strict
        first, other = strict[0], vcpus[0]
        if first[0] != other[0]:
            return strict if first[0] < other[0] else vcpus
        return strict if first[1] < other[1] else vcpus

    async def _pass_baton(self, me: Actor, forever: bool = False) -> None:
        if self.pacing.live:
            nxt = await self._next()
        else:
            # Not paced: no await, so no coroutine per hand-over.
            nxt = self._pop()
            while nxt is _AGAIN:
                nxt = self._pop()
        if nxt is me:
            return
        if nxt is not None:
            self.switches += 1  # _hand_to(), written out: once per task switch
            if nxt.parked:
                nxt.parked = False
                assert nxt.task is not None
                _reschedule(nxt.task)
        if forever:
            return
        me.parked = True  # _wait_for_baton, inlined: this is the hottest await of a run
        await _wait_task_rescheduled(me.abort)
        if self._done:
            self.tearing_down()  # Finished unwinds the actor
            raise Finished

    async def _release_next(self) -> None:
        nxt = await self._next()
        if nxt is not None:
            self._hand_to(nxt)

    def _hand_to(self, actor: Actor) -> None:
        self.switches += 1
        # A cancelled run (Ctrl-C reaching some task, a closed TUI) wakes parked actors with
        # Cancelled itself; rescheduling one of those again is trio's internal error
        # (KeyError or AssertionError in reschedule). Such an actor is unwinding: skip it.
        if actor.parked:
            actor.parked = False
            assert actor.task is not None
            _reschedule(actor.task)

    @staticmethod
    async def _wait_for_baton(actor: Actor) -> None:
        actor.parked = True
        await trio.lowlevel.wait_task_rescheduled(actor.abort)

    async def _next(self) -> Actor | None:
        """Pop the next actor, pacing wall time and applying commands first."""
        while True:
            if self.pacing.live and not self._done:
                heap = self._top()
                t = heap[0][0] if heap else None
                await self._pace(self.bus.now if t == _DROPPED else t)
            nxt = self._pop()
            if nxt is not _AGAIN:
                return nxt

    def _pop(self) -> Actor | None:
        """One try of _next() once paced: the actor, None when the run is over, or _AGAIN
        when the try changed what comes next (commands, a perturbation point)."""
        if self._done:
            return None
        # _top(), written out: once per hand-over.
        heap: list[tuple[int, int, Actor]] | None
        strict, vcpus = self._strict, self._vcpus
        if not strict:
            heap = vcpus or None
        elif not vcpus:
            heap = strict
        else:
            first, other = strict[0], vcpus[0]
            if first[0] != other[0]:
                heap = strict if first[0] < other[0] else vcpus
            else:
                heap = strict if first[1] < other[1] else vcpus
        scheduled = self._scheduled
        if self._commands or (scheduled and scheduled[0][0] <= self.calls):
            self._apply_commands(heap[0][0] if heap else self.end_ns)
            heap = self._top()
        if heap is None:
            if self._commands:
                return _AGAIN
            self.finish("idle")
            return None
        t, _, actor = heap[0]
        if self.end_ns < t < _DROPPED:
            self.bus.now = self.end_ns
            self.finish("duration")
            return None
        heapq.heappop(heap)
        perturb = self.perturb
        if perturb is None:
            self.bus.now = t
            actor.quantum_end = t + QUANTUM_NS
            self.handoffs += 1
            if not actor.vcpu:
                self.sync_handoffs += 1
            return actor
        if t == _DROPPED:
            # PCT: a dropped actor runs again once every other actor is blocked.
            t = self.bus.now
        elif not actor.vcpu and not perturb.at_gaps:
            held = perturb.preempt(self.sync_handoffs + 1, actor)
            if held:  # a log from before 2 Dec 2026: its steps were these hand-overs
                self._push(t + held, actor)
                return _AGAIN
        self.bus.now = t
        actor.quantum_end = t + perturb.quantum(QUANTUM_NS)
        self.handoffs += 1
        if not actor.vcpu:
            self.sync_handoffs += 1
        return actor

    async def _pace(self, next_t: int | None) -> None:
        """Hold the hand-over until wall time catches up with virtual time, or while paused;
        a command (pause, speed, step, inject) interrupts the wait."""
        p = self.pacing
        while not self._done:
            if self._commands:
                return
            self._poke = trio.Event()
            try:
                if p.paused:
                    p.at_call = self.calls
                    if p.step_until_seq > self.bus.seq or p.step_until_call > self.calls:
                        return
                    await self._poke.wait()
                    p.anchor_wall, p.anchor_virtual = trio.current_time(), self.bus.now
                    continue
                if next_t is None or p.speed == math.inf:
                    return
                due = p.anchor_wall + (next_t - p.anchor_virtual) / 1e9 / p.speed
                now = trio.current_time()
                if due <= now:
                    return
                with trio.move_on_after(min(due - now, 0.25)):
                    await self._poke.wait()
            except BaseException:
                self.tearing_down()  # mid-wait
                raise

    def rebase(self) -> None:
        """Restart the wall-clock anchor (after a speed change or a resume)."""
        self.pacing.anchor_wall = trio.current_time()
        self.pacing.anchor_virtual = self.bus.now
        self._poke.set()
