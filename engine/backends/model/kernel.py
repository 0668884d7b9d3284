"""The model's kernel side of the memslot ioctls: engine.model.vm driven in virtual time.

An update's time costs become sleeps of the VMM actor, and where kvm_swap_active_memslots()
calls synchronize_srcu_expedited() the VMM blocks until the SRCU grace-period worker (one
synchronize_srcu_expedited() per request, below) has seen every reader leave.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator

from engine.faults import Injector
from engine.model import batch
from engine.model.region import MemoryRegion
from engine.model.vm import SYNCHRONIZE, VM, Change, Step
from engine.sim.runtime import Actor, Sequencer


class GracePeriodWorker:
    """The SRCU grace-period worker: one synchronize_srcu_expedited() per request."""

    def __init__(self, vm: VM, seq: Sequencer, injector: Injector) -> None:
        self.vm = vm
        self.seq = seq
        self.injector = injector
        self.actor = Actor("srcu-gp")
        self.requests: deque[Actor] = deque()

    async def synchronize(self, waiter: Actor) -> None:
        """Block ``waiter`` until a grace period that started after this call has ended."""
        self.requests.append(waiter)
        self.seq.wake(self.actor)
        await self.seq.block(waiter)

    async def body(self) -> None:
        seq, me, srcu, t = self.seq, self.actor, self.vm.srcu, self.vm.timing
        while True:
            while not self.requests:
                await seq.block(me)
            waiter = self.requests.popleft()
            gp = srcu.start_gp(expedited=True)
            delay = self.injector.gp_delay()
            if delay:
                await seq.sleep(me, delay)
            while not gp.poll():
                await seq.sleep(
                    me, t.srcu_poll_expedited_ns if gp.expedited else t.srcu_poll_normal_ns
                )
            seq.wake(waiter)


class ModelKernel:
    """MemslotBackend and BatchMemslots over the model VM; every event is the VM's own."""

    def __init__(self, vm: VM, seq: Sequencer, actor: Actor, gp: GracePeriodWorker) -> None:
        self.vm = vm
        self.seq = seq
        self.actor = actor
        self.gp = gp
        self.nr_address_spaces = vm.host.nr_address_spaces
        self.nr_memslots = vm.host.nr_memslots
        self.batch = self

    async def drive(self, steps: Generator[Step, None, None]) -> None:
        """Run a model update: time costs become sleeps, SYNCHRONIZE waits for the worker."""
        seq, actor = self.seq, self.actor
        for step in steps:
            if step is SYNCHRONIZE:
                await self.gp.synchronize(actor)
            else:
                assert isinstance(step, int)
                handover = seq.step(actor, step)  # seq.sleep(), no coroutine if it keeps
                if handover is not None:
                    await handover

    def ioctl_now(self, region: MemoryRegion) -> None:
        vm = self.vm
        change = vm.ioctl_prepare(region)
        if change is not None:
            vm.run_now(vm.commit(change))
        vm.ioctl_done(change)

    async def ioctl(self, region: MemoryRegion, quiesced: bool) -> None:
        vm = self.vm
        change = vm.ioctl_prepare(region)
        if change is not None:
            try:
                await self.drive(vm.commit(change))
            except OSError as err:
                # A MOVE that failed in prepare, after its invalidation was rolled back.
                vm.ioctl_failed(change, err)
                raise
        vm.ioctl_done(change)

    def logging(self, slot: int) -> bool:
        as_id = slot >> 16
        if as_id >= self.nr_address_spaces:
            return False
        memslot = self.vm.active(as_id).by_id.get(slot & 0xFFFF)
        return memslot is not None and memslot.dirty_bitmap is not None

    def memslots(self, as_id: int) -> list[MemoryRegion]:
        return self.vm.memslots(as_id)

    async def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        vm = self.vm
        for as_id in range(self.nr_address_spaces):
            for slot in list(vm.active(as_id)):
                if slot.dirty_bitmap is not None and (only is None or slot.id in only):
                    vm.get_dirty_log((as_id << 16) | slot.id)

    # --- the 2022 batch proposals ---------------------------------------------------------

    async def ioctl_list(self, regions: list[MemoryRegion]) -> None:
        await self._batch(
            "KVM_SET_USER_MEMORY_REGION_LIST",
            lambda: batch.prepare_list(self.vm, regions),
            len(regions),
        )

    async def ioctl_all(self, as_id: int, regions: list[MemoryRegion]) -> None:
        await self._batch(
            "KVM_SET_ALL_USER_MEMORY_REGIONS",
            lambda: batch.prepare_all(self.vm, as_id, regions),
            len(regions),
        )

    async def ioctl_convert(
        self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
    ) -> None:
        await self._batch(
            "KVM_CONVERT_MEMORY_REGIONS",
            lambda: batch.prepare_convert(self.vm, as_id, old_ids, regions),
            len(old_ids) + len(regions),
        )

    def converts(self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]) -> bool:
        try:
            batch.prepare_convert(self.vm, as_id, old_ids, regions)
        except OSError:
            return False
        return True

    async def _batch(self, name: str, prepare: Callable[[], list[Change]], entries: int) -> None:
        vm = self.vm
        vm.ioctl_enter(name, None, None, entries)
        try:
            changes = prepare()
        except OSError as err:
            vm.ioctl_exit(name, None, 0, err.errno or 0, "")
            raise
        if changes:
            await self.drive(vm.commit_batch(changes))
        vm.ioctl_exit(name, None, 0, 0, ",".join(sorted({ch.kind for ch in changes})) or "NONE")


class ModelRam:
    """The model's host memory: a sparse dict of hva -> 8-byte word or guest instruction."""

    def __init__(self, memory: dict[int, object]) -> None:
        self.memory = memory

    def read(self, hva: int, size: int) -> int:
        raw = self.memory.get(hva)
        return raw if isinstance(raw, int) else 0

    def write(self, hva: int, value: int, size: int) -> None:
        self.memory[hva] = value
