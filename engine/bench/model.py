"""Model benchmarks in the style of memslot_perf_test (tools/testing/selftests/kvm/memslot_perf_test.c).

The test area is the selftest's: 2^17 pages at GPA 0x10000000, split evenly across 8, 512, 4096
and 32,764 slots (the last slot takes the remainder). At each size:

- create_all: every slot created through the full ioctl path (set_user_memory_region);
- lookup: MemslotSet.lookup() for random gfns over the populated range; lookup_same: one gfn
  over and over, the same comparisons with the branch predictor and caches warm, which splits
  the lookup's growth into comparison count (lookup_same) and mispredicted branches and cache
  misses (the rest);
- create, delete: one more DELETE and CREATE at that size, full ioctl path;
- map: a vCPU faulting in pages one by one (a write to each, as the selftest's map test does).

Then a stage-2 hit: a guest loop ``load X; jmp`` whose pages are mapped, timed through the
kvm_run generator (ns per guest instruction, both yielding after every instruction and batched
up to the engine's quantum as the engine drives it), against a bare dict.get on the stage-2
dict for the same two pages.

Each figure is the median of several repeats, timed with perf_counter_ns, with the garbage
collector off while the clock runs (as timeit does). The targets are ratios between figures of
this same run.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

from engine.bench import Measure, format_table
from engine.model import constants as c
from engine.model.guest import assemble
from engine.model.vcpu import Run, Vcpu
from engine.model.vm import VM
from engine.sim.runtime import QUANTUM_NS

SIZES = (8, 512, 4096, c.KVM_USER_MEM_SLOTS)
AREA_PAGES = 1 << 17
BASE_GPA = 0x1000_0000
BASE_GFN = BASE_GPA >> c.PAGE_SHIFT
UADDR = 0x7F00_0000_0000

LOOKUP_LIMIT = 2.0
UPDATE_LIMIT = 3.0
HIT_LIMIT = 2.5
INSN_LIMIT = 3.0
"""A guest instruction that hits stage-2 (batched as the engine runs it) against a dict.get:
loops run in closed form (engine/model/cycles.py), so most instructions cost a share of one
step."""


class _Plan:
    def __init__(self, quick: bool) -> None:
        self.repeats = 3 if quick else 7
        self.create_all_repeats = 3 if quick else 5
        self.lookups = 2_000 if quick else 5_000
        self.updates = 300 if quick else 2_000
        self.map_pages = 1_024 if quick else 4_096
        self.hits = 5_000 if quick else 20_000


Region = tuple[int, int, int, int, int]


def _layout(n: int) -> list[Region]:
    """(slot, flags, gpa, size, uaddr) for n slots covering the test area."""
    per = AREA_PAGES // n
    regions = []
    for i in range(n):
        pages = per if i < n - 1 else AREA_PAGES - per * (n - 1)
        gpa = BASE_GPA + i * per * c.PAGE_SIZE
        uaddr = UADDR + i * per * c.PAGE_SIZE
        regions.append((i, 0, gpa, pages * c.PAGE_SIZE, uaddr))
    return regions


def _timed(fn: Callable[[], None]) -> int:
    """Run fn with the collector off; its wall time in ns."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        fn()
        return time.perf_counter_ns() - start
    finally:
        gc.enable()


def _create_all(n: int, repeats: int) -> tuple[VM, float]:
    """A VM with n slots, and the median ms it took to create them."""
    regions = _layout(n)
    times = []
    vm = VM()
    for _ in range(repeats):
        vm = VM()
        set_region = vm.set_user_memory_region

        def create(set_region: Callable[..., None] = set_region) -> None:
            for region in regions:
                set_region(*region)

        times.append(_timed(create))
    return vm, statistics.median(times) / 1e6


def _lookup(vm: VM, plan: _Plan, rng: random.Random, same: bool = False) -> float:
    """Median ns per MemslotSet.lookup() of a random gfn in the populated range (of one
    random gfn repeated, with ``same``)."""
    lookup = vm.active(0).lookup
    gfns = [BASE_GFN + rng.randrange(AREA_PAGES) for _ in range(1 if same else plan.lookups)]
    gfns *= plan.lookups // len(gfns)
    assert all(lookup(g) is not None for g in gfns)

    def run() -> None:
        for gfn in gfns:
            lookup(gfn)

    return statistics.median(_timed(run) for _ in range(plan.repeats)) / len(gfns)


def _create_delete(vm: VM, n: int, plan: _Plan, rng: random.Random) -> tuple[float, float]:
    """Median us of one CREATE and of one DELETE with n slots present: delete a random slot,
    create it again, and time each call."""
    regions = _layout(n)
    set_region = vm.set_user_memory_region
    clock = time.perf_counter_ns
    creates: list[float] = []
    deletes: list[float] = []
    for _ in range(plan.repeats):
        picks = [regions[rng.randrange(n)] for _ in range(plan.updates)]
        spent = [0, 0]

        def run(picks: list[Region] = picks, spent: list[int] = spent) -> None:
            for region in picks:
                t0 = clock()
                set_region(region[0], 0, 0, 0, 0)
                t1 = clock()
                set_region(*region)
                t2 = clock()
                spent[0] += t1 - t0
                spent[1] += t2 - t1

        _timed(run)
        deletes.append(spent[0] / len(picks))
        creates.append(spent[1] / len(picks))
    assert len(vm.active(0)) == n
    return statistics.median(creates) / 1e3, statistics.median(deletes) / 1e3


def _map_program(vm: VM, pages: int) -> None:
    """Page i holds `store <page i+1>; jmp <page i+1>`: each page is first written (a write
    fault that maps it), then executed (a stage-2 hit)."""
    for i in range(pages):
        here = BASE_GPA + i * c.PAGE_SIZE
        following = here + c.PAGE_SIZE
        lines = [f"store {following + 8:#x}", f"jmp {following:#x}"]
        if i == pages - 1:
            lines = ["halt"]
        for gpa, insn in assemble(here, lines).items():
            hva = vm.gpa_to_hva(gpa)
            assert hva is not None
            vm.memory[hva] = insn


def _map(vm: VM, plan: _Plan) -> float:
    """Median ns per page fault while a vCPU faults in map_pages pages."""
    pages = plan.map_pages + 1
    _map_program(vm, pages)
    stage2 = vm.stage2[0]
    vcpu = Vcpu(vm, 0, BASE_GPA)
    per_fault = []
    for _ in range(plan.repeats):
        stage2.zap_all()
        vcpu.rip = BASE_GPA
        vcpu.faults.clear()
        run = vcpu.kvm_run()

        def go(run: Run = run) -> None:
            for _ in run:
                pass

        spent = _timed(go)
        faults = sum(vcpu.faults.values())
        # The first page is fetched before it is written: one fault more than pages.
        assert faults == pages, vcpu.faults
        per_fault.append(spent / faults)
    assert not vm.srcu.holders
    return statistics.median(per_fault)


def _stage2_hit(vm: VM, plan: _Plan) -> tuple[float, float, float, float]:
    """ns per guest instruction on stage-2 hits, yielding after every instruction and batched
    up to the engine's quantum; ns per bare dict.get on a dict as large as stage-2; ns per
    stage-2 hit (the translation an access performs when its SPTE is present)."""
    code = BASE_GPA + (AREA_PAGES - 2) * c.PAGE_SIZE
    data = code + c.PAGE_SIZE
    for gpa, insn in assemble(code, ["top:", f"load {data:#x}", "jmp top"]).items():
        hva = vm.gpa_to_hva(gpa)
        assert hva is not None
        vm.memory[hva] = insn
    vcpu = Vcpu(vm, 1, code)
    run = vcpu.kvm_run()
    step = run.__next__
    for _ in range(50):  # fault both pages in
        step()
    faults = sum(vcpu.faults.values())
    hits = plan.hits

    def one_per_yield() -> None:
        for _ in range(hits):
            step()

    def batched() -> None:
        end = vcpu.instructions + hits
        while vcpu.instructions < end:
            step()

    figures = []
    for horizon, drive in ((0, one_per_yield), (QUANTUM_NS, batched)):
        vcpu.horizon_ns = horizon
        per_insn = []
        for _ in range(plan.repeats):
            before = vcpu.instructions
            spent = _timed(drive)
            per_insn.append(spent / (vcpu.instructions - before))
        figures.append(statistics.median(per_insn))
    assert sum(vcpu.faults.values()) == faults, "the hit loop faulted"
    run.close()

    # The same dict, probed for the same two pages the guest loop touches.
    table = dict(vm.stage2[0].pages)
    probe = [code >> c.PAGE_SHIFT, data >> c.PAGE_SHIFT] * (hits // 2)
    assert all(gfn in table for gfn in probe[:2])
    get = table.get

    def bare() -> None:
        for key in probe:
            get(key)

    # Both sides take their best repeat, as timeit advises: noise only ever adds time.
    dict_ns = min(_timed(bare) for _ in range(plan.repeats)) / len(probe)

    # The hit path itself, exactly as kvm_run() performs it on a fetch or a load: the SPTE
    # lookup by gfn and the host address it yields.
    pages = vm.stage2[0].pages.get
    gpas = [code, data] * (hits // 2)

    def hit(shift: int = c.PAGE_SHIFT) -> None:
        for gpa in gpas:
            spte = pages(gpa >> shift)
            if spte is not None:
                spte + gpa

    hit_ns = min(_timed(hit) for _ in range(plan.repeats)) / len(gpas)
    return figures[0], figures[1], dict_ns, hit_ns


def run_model_benchmarks(quick: bool) -> list[Measure]:
    plan = _Plan(quick)
    rng = random.Random(20211104)  # the scalable-memslots v5.5 posting date
    out: list[Measure] = []
    lookup: dict[int, float] = {}
    create: dict[int, float] = {}
    delete: dict[int, float] = {}
    vm = VM()
    for n in SIZES:
        vm, create_all_ms = _create_all(n, plan.create_all_repeats)
        out.append(Measure(f"model.create_all.{n}", create_all_ms, "ms"))
        lookup[n] = _lookup(vm, plan, rng)
        out.append(Measure(f"model.lookup.{n}", lookup[n], "ns"))
        out.append(Measure(f"model.lookup_same.{n}", _lookup(vm, plan, rng, same=True), "ns"))
        create[n], delete[n] = _create_delete(vm, n, plan, rng)
        out.append(Measure(f"model.create.{n}", create[n], "us"))
        out.append(Measure(f"model.delete.{n}", delete[n], "us"))
        out.append(Measure(f"model.map.{n}", _map(vm, plan), "ns/fault"))

    lo, hi = SIZES[0], SIZES[-1]
    for name, figures, limit in (
        ("lookup", lookup, LOOKUP_LIMIT),
        ("create", create, UPDATE_LIMIT),
        ("delete", delete, UPDATE_LIMIT),
    ):
        ratio = figures[hi] / figures[lo]
        what = "lookup" if name == "lookup" else f"one {name.upper()}"
        out.append(
            Measure(
                f"model.{name}.{hi}_vs_{lo}",
                ratio,
                "x",
                target=f"{what} at {hi:,} slots within {limit:g}x of {lo}",
                ratio=ratio,
                limit=limit,
            )
        )

    # vm still holds the largest layout, with map's pages in stage-2.
    per_yield_ns, batched_ns, dict_ns, hit_ns = _stage2_hit(vm, plan)
    out.append(Measure("model.guest_insn.per_yield", per_yield_ns, "ns/insn"))
    out.append(Measure("model.guest_insn.batched", batched_ns, "ns/insn"))
    out.append(Measure("model.dict_get", dict_ns, "ns"))
    out.append(Measure("model.stage2_hit", hit_ns, "ns"))
    insn_ratio = batched_ns / dict_ns
    out.append(
        Measure(
            "model.guest_insn_vs_dict_get",
            insn_ratio,
            "x",
            target=f"a guest instruction (batched) within {INSN_LIMIT:g}x of a bare dict lookup",
            ratio=insn_ratio,
            limit=INSN_LIMIT,
        )
    )
    ratio = hit_ns / dict_ns
    out.append(
        Measure(
            "model.stage2_hit_vs_dict_get",
            ratio,
            "x",
            target=f"stage-2 hit within {HIT_LIMIT:g}x of a bare dict lookup",
            ratio=ratio,
            limit=HIT_LIMIT,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.bench.model", description="slotlab model benchmarks"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and iterations")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    measures = run_model_benchmarks(args.quick)
    print(format_table(measures))
    print(f"\n{time.perf_counter() - start:.1f} s{' (quick)' if args.quick else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
