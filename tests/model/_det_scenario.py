"""A scripted model run for the determinism test: prints every event as one JSON line.

Two vCPUs and a VMM share one VM. Each actor has its own virtual clock; the one furthest behind
runs next (ties go to the lower actor number), so updates, grace periods, faults and exits
interleave the way the engine would interleave them, but with no randomness and no runtime.
"""

from __future__ import annotations

import sys
from collections.abc import Generator

import msgspec

from engine.events import Event
from engine.model import constants as c
from engine.model.guest import assemble
from engine.model.host import Host
from engine.model.region import make_region
from engine.model.srcu import GracePeriod
from engine.model.vcpu import Run, Vcpu, VcpuExit
from engine.model.vm import SYNCHRONIZE, VM

PAGE = c.PAGE_SIZE
CODE0, CODE1 = 0x1000, 0x9000
DATA, LOG, MOVED = 0x10_0000, 0x20_0000, 0x30_0000
UADDR = 0x7F00_0000_0000
END_NS = 220_000

Region = tuple[int, int, int, int, int]

UPDATES: list[tuple[int, list[Region]]] = [
    # (virtual time to start at, the ioctls in order)
    (20_000, [(1, 0, MOVED, 4 * PAGE, UADDR + 0x10_0000)]),  # MOVE data
    (60_000, [(1, 0, DATA, 4 * PAGE, UADDR + 0x10_0000)]),  # and back
    (90_000, [(2, 0, 0, 0, 0), (2, c.KVM_MEM_LOG_DIRTY_PAGES, LOG, 2 * PAGE, UADDR + 0x20_0000)]),
    (130_000, [(2, 0, LOG, 2 * PAGE, UADDR + 0x20_0000)]),  # logging off: FLAGS_ONLY
    # The split race: vCPU 1's code slot goes away and comes back as two slots.
    (160_000, [(3, 0, 0, 0, 0), (3, 0, CODE1, PAGE, UADDR + 0x30_0000)]),
    (161_000, [(4, 0, CODE1 + PAGE, PAGE, UADDR + 0x30_1000)]),
]


def program(vm: VM) -> None:
    code0 = [
        "top:",
        f"inc {DATA:#x}",
        f"load {DATA + PAGE:#x}",
        f"store {LOG + 8:#x}",
        "setc 3",
        "spin:",
        "nop",
        "loop spin",
        "jmp top",
    ]
    code1 = ["top:", f"inc {DATA + 2 * PAGE:#x}", f"load {0x50_0000:#x}", "jmp top"]
    for base, lines in ((CODE0, code0), (CODE1, code1)):
        for gpa, insn in assemble(base, lines).items():
            hva = vm.gpa_to_hva(gpa)
            assert hva is not None
            vm.memory[hva] = insn


def vmm(vm: VM) -> Generator[int, None, None]:
    """The VMM thread: timed updates, each grace period polled like the engine's worker."""
    now = 0
    for at, regions in UPDATES:
        if at > now:
            yield at - now
            now = at
        for region in regions:
            change = vm.ioctl_prepare(make_region(*region))
            if change is not None:
                for step in vm.commit(change):
                    if step is SYNCHRONIZE:
                        gp: GracePeriod = vm.srcu.start_gp()
                        while not gp.poll():
                            yield vm.timing.srcu_poll_expedited_ns
                            now += vm.timing.srcu_poll_expedited_ns
                    else:
                        assert isinstance(step, int)
                        yield step
                        now += step
            vm.ioctl_done(change)
        if vm.active(0).by_id[2].dirty_bitmap is not None:
            vm.get_dirty_log(2)


def vcpu_thread(vcpu: Vcpu) -> Generator[int, None, None]:
    """A VMM vCPU thread: KVM_RUN, handle the exit, again."""
    answer = 100 * (vcpu.index + 1)
    while True:
        run: Run = vcpu.kvm_run()
        while True:
            try:
                yield next(run)
            except StopIteration as stop:
                exit: VcpuExit = stop.value
                break
        if exit.reason == c.KVM_EXIT_MMIO and not exit.is_write:
            answer += 1
            vcpu.mmio_data = answer
        yield vcpu.vm.timing.userspace_exit_ns


def main() -> None:
    vm = VM(Host(nr_address_spaces=2))
    out = sys.stdout.buffer
    encoder = msgspec.json.Encoder()

    def emit(event: Event) -> None:
        out.write(encoder.encode(event) + b"\n")

    vm.bus.subscribe(emit)
    vm.set_user_memory_region(0, 0, CODE0, PAGE, UADDR)
    vm.set_user_memory_region(1, 0, DATA, 4 * PAGE, UADDR + 0x10_0000)
    vm.set_user_memory_region(2, c.KVM_MEM_LOG_DIRTY_PAGES, LOG, 2 * PAGE, UADDR + 0x20_0000)
    vm.set_user_memory_region(3, 0, CODE1, 2 * PAGE, UADDR + 0x30_0000)
    vm.set_user_memory_region(1 << 16, 0, CODE0, PAGE, UADDR)  # SMM view: overlap allowed
    program(vm)

    actors: list[Generator[int, None, None]] = [
        vcpu_thread(Vcpu(vm, 0, CODE0)),
        vcpu_thread(Vcpu(vm, 1, CODE1)),
        vmm(vm),
    ]
    clocks = [0] * len(actors)
    live = set(range(len(actors)))
    while live:
        who = min(live, key=lambda i: (clocks[i], i))
        if clocks[who] >= END_NS:
            break
        vm.bus.now = clocks[who]
        try:
            clocks[who] += next(actors[who])
        except StopIteration:
            live.discard(who)
    out.flush()


if __name__ == "__main__":
    main()
