"""The VMM thread's loop over a scenario, and the scripted-fault task: the same on every
backend that issues its own memslot updates.

The boot layout is sequence[0]; Scenario.steps (drawing on the VMM's own random stream) says
when to move to which layout next. Between transactions it harvests dirty logs
every sync period, as QEMU's migration thread does while slots log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.core.config import RunConfig, actor_rng
from engine.faults import parse_fault
from engine.vmm.flatview import FlatView

if TYPE_CHECKING:
    from engine.core.ports import Clock
    from engine.faults import Injector
    from engine.vmm.strategies import Strategy
    from engine.vmm.vmm import Vmm

RACE_ALIGN_TRIES = 500
RACE_ALIGN_POLL_NS = 100


class ScenarioDriver:
    def __init__(
        self,
        config: RunConfig,
        vmm: Vmm,
        strategy: Strategy,
        injector: Injector,
        *,
        sync_floor_ns: int,
        script_clock: Clock,
        stop: Callable[[str], None],
        max_transactions: int | None = None,
    ) -> None:
        self.config = config
        self.vmm = vmm
        self.clock = vmm.clock
        self.strategy = strategy
        self.injector = injector
        self.sync_floor_ns = sync_floor_ns
        self.script_clock = script_clock
        self.stop = stop
        self.max_transactions = max_transactions
        self.rng = actor_rng(config.seed, "vmm")

    async def vmm_loop(self) -> None:
        sc, vmm, injector = self.config.scenario, self.vmm, self.injector
        for idle, layout in sc.steps(self.rng):
            await self._idle(idle)
            if layout is None:
                continue
            injector.on_transaction()
            for as_id in range(vmm.kernel.nr_address_spaces):
                view = FlatView.render(layout.for_as(as_id))
                if injector.race_armed():
                    await self._align_race(as_id, view)
                txn = vmm.begin(as_id, layout.name, view, moves=sc.moves)
                if txn is None:
                    continue
                await self.strategy.apply(vmm, txn)
                vmm.commit(txn)
            if vmm.stopped_reason:
                return
            if self.max_transactions is not None and vmm.txn_count >= self.max_transactions:
                self.stop("transactions")
                return
            await self.clock.checkpoint()
        self.stop("scenario played")  # a recorded scenario's steps are over

    async def _idle(self, ns: int) -> None:
        """Between transactions; harvests dirty logs every sync period while slots log."""
        clock = self.clock
        sync = max(self.config.scenario.sync_ns, self.sync_floor_ns)
        end = clock.now() + ns
        while True:
            left = end - clock.now()
            if left <= 0:
                return
            await clock.sleep(min(sync, left))
            await self.vmm.sync_dirty_logs()

    async def _align_race(self, as_id: int, new: FlatView) -> None:
        """`race`: start when some vCPU is about to fetch from a range the update deletes."""
        old = self.vmm.views[as_id]
        doomed = [r for r in old.backed() if not any(r.key == n.key for n in new.backed())]
        if not doomed:
            return
        for _ in range(RACE_ALIGN_TRIES):
            if self.vmm.vcpus.fetching_from(doomed):
                return
            await self.clock.sleep(RACE_ALIGN_POLL_NS)

    async def script(self) -> None:
        """A fault file: each fault applied at its time."""
        clock = self.script_clock
        for t, text in self.config.fault_script:
            delay = t - clock.now()
            if delay > 0:
                await clock.sleep(delay)
            self.injector.apply_now(parse_fault(text))
