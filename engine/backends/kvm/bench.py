"""The kvm benchmark group: what the real backend costs, against C where C is the floor.

- KVM_RUN round trip (guest `out 0x10, al; jmp $-2`, one KVM_EXIT_IO per call) through
  KvmVcpu.run(), against the same loop in C (kvmbench.c, compiled here with the system `cc`).
- a memslot create+delete cycle (64 KiB, a vCPU exists but is idle) through
  KvmVM.set_user_memory_region, against C.
- time to the first crash of a legacy split (the real race), from the first DELETE's entry to
  the KVM_RUN that returned KVM_EXIT_INTERNAL_ERROR, against the same race as a plain ctypes
  loop (engine/bench/kvm_race.py); the medians of runs alternating between the two are
  compared. Both answer the guest's doorbell exits in the vCPU thread and go straight back
  into KVM_RUN (slotlab as QEMU's kvm_cpu_exec() does, serve.py); slotlab also takes each
  exit's RIP from kvm_run (KVM_CAP_SYNC_REGS) and posts one record per exit, which the event
  loop (sharing the GIL) turns into events. The two do not start the race in the same phase:
  the plain loop issues its first DELETE the moment both vCPUs have exited once (both are out
  of KVM_RUN, held by its barrier), slotlab's VMM when its schedule says, with the vCPUs
  wherever their loop has them (letting the plain loop's vCPUs run one period first moved its
  median by 5%, docs/performance.md).
- pause latency of the inhibit strategy (kick to the last vCPU's return from KVM_RUN, both
  stamped in the thread that made the syscall) for 1 to 4 vCPUs.

Each side is timed per call (per race for the crash: RACES of each) and the medians are
compared, so one scheduling hiccup does not move a figure. C and Python alternate three
times and the ratio uses the middle of each side's three medians. The two C ratios and the
crash ratio carry targets; the rest are reported.
"""

from __future__ import annotations

import errno
import shutil
import statistics
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import trio

from engine.backends.kvm.ioctl import kvm_usable
from engine.backends.kvm.vm import KvmVM
from engine.bench import Measure
from engine.bench.kvm_race import plain_first_crash_ms
from engine.events import Event, Exit, Inhibit, IoctlEnter
from engine.model import constants as c

RATIO_LIMIT = 1.3
CRASH_RATIO_LIMIT = 1.5
VCPUS = 2
GUEST_OUT_LOOP = b"\xe6\x10\xeb\xfc"  # out 0x10, al; jmp $-2
CODE_GPA = 0x1000
EXTRA_GPA, EXTRA_SIZE = 0x100000, 0x10000
WARMUP = 200
RACES, RACES_QUICK = 100, 20
"""Races per side for the time to first crash. Its distribution has a fast mode (about
0.05-0.3 ms) and a slow one (0.4-8 ms); with 15 per side the median moved with how many races
fell in the slow mode, and the ratio read 0.65x to 5.1x within half an hour on a loaded
machine, against 1.04x to 1.67x with 100 (docs/performance.md). A race costs a few ms."""


def _build_c(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError(errno.ENOENT, "no C compiler (cc) to build the kvm baseline")
    source = Path(str(resources.files("engine.backends.kvm").joinpath("kvmbench.c")))
    binary = tmp / "kvmbench"
    result = subprocess.run(
        [cc, "-O2", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise OSError(errno.EINVAL, f"building kvmbench.c failed: {result.stderr.strip()[:300]}")
    return binary


def _c_median(binary: Path, mode: str, n: int) -> float:
    out = subprocess.run(
        [str(binary), mode, str(n)], capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise OSError(errno.EIO, f"kvmbench {mode} failed: {out.stderr.strip()[:300]}")
    fields = dict(item.split("=") for item in out.stdout.split())
    return int(fields["median_ns"]) / 1000


def _vm_with_guest() -> tuple[KvmVM, int]:
    vm = KvmVM()
    try:
        code = vm.map_memory(0x10000)
        code.write(CODE_GPA, GUEST_OUT_LOOP)
        vm.set_user_memory_region(0, 0, 0, 0x10000, code.addr)
        extra = vm.map_memory(EXTRA_SIZE)
        vcpu = vm.create_vcpu(0)
        vcpu.setup_flat_real_mode(CODE_GPA)
    except BaseException:
        vm.close()
        raise
    return vm, extra.addr


def _py_run_median(n: int) -> float:
    vm, _ = _vm_with_guest()
    with vm:
        vcpu = vm.vcpus[0]
        run, clock = vcpu.run, time.perf_counter_ns
        times = []
        for i in range(-WARMUP, n):
            t0 = clock()
            reason = run()
            t1 = clock()
            if reason != c.KVM_EXIT_IO:
                raise OSError(errno.EIO, f"the benchmark guest exited with reason {reason}")
            if i >= 0:
                times.append(t1 - t0)
    return statistics.median(times) / 1000


def _py_slot_median(n: int) -> float:
    vm, extra = _vm_with_guest()
    with vm:
        setm, clock = vm.set_user_memory_region, time.perf_counter_ns
        times = []
        for i in range(-WARMUP, n):
            t0 = clock()
            setm(1, 0, EXTRA_GPA, EXTRA_SIZE, extra)
            setm(1, 0, EXTRA_GPA, 0, extra)
            t1 = clock()
            if i >= 0:
                times.append(t1 - t0)
    return statistics.median(times) / 1000


def _versus_c(binary: Path, mode: str, n: int) -> tuple[float, float]:
    py_fn = _py_run_median if mode == "run" else _py_slot_median
    c_runs, py_runs = [], []
    for _ in range(3):
        c_runs.append(_c_median(binary, mode, n))
        py_runs.append(py_fn(n))
    return statistics.median(py_runs), statistics.median(c_runs)


def _session_events(
    strategy: str, vcpus: int, duration_ns: int, max_transactions: int | None = None
) -> list[Event]:
    from engine.backends.kvm.session import KvmSession
    from engine.runner import make_config

    events: list[Event] = []
    config = make_config("split", strategy, vcpus=vcpus, duration_ns=duration_ns)
    session = KvmSession(config, observers=(events.append,), max_transactions=max_transactions)
    trio.run(session.run)
    return events


def _first_crash_ms(limit_ns: int) -> float | None:
    """One legacy split through slotlab: ms from the first DELETE's entry after boot to the
    first KVM_EXIT_INTERNAL_ERROR, both stamped in the thread that made the syscall."""
    events = _session_events("legacy", VCPUS, limit_ns)
    deletes = [
        e.own_t for e in events if isinstance(e, IoctlEnter) and e.memory_size == 0 and e.own_t > 0
    ]
    # Each vCPU's exits reach the event loop in their own order: the earliest stamp wins.
    crash = [
        e.own_t for e in events if isinstance(e, Exit) and e.reason == "KVM_EXIT_INTERNAL_ERROR"
    ]
    if not deletes or not crash:
        return None
    return (min(crash) - deletes[0]) / 1e6


def race_versus_plain(runs: int) -> list[Measure]:
    """slotlab's time to first crash against the plain loop's (engine/bench/kvm_race.py),
    alternating run by run so both see the same machine."""
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(runs):
        one = _first_crash_ms(2_000_000_000)
        if one is not None:
            ours.append(one)
        base = plain_first_crash_ms(2.0)
        if base is not None:
            plain.append(base)
    out = [
        Measure("kvm.legacy_split.runs_crashed", len(ours), f"of {runs}"),
        Measure("kvm.legacy_split.plain_runs_crashed", len(plain), f"of {runs}"),
    ]
    if not ours or not plain:
        return out
    mine, theirs = statistics.median(ours), statistics.median(plain)
    ratio = mine / theirs
    return [
        Measure("kvm.legacy_split.first_crash_median", mine, "ms"),
        Measure("kvm.legacy_split.first_crash_max", max(ours), "ms"),
        Measure("kvm.legacy_split.plain_first_crash_median", theirs, "ms"),
        Measure("kvm.legacy_split.plain_first_crash_max", max(plain), "ms"),
        Measure(
            "kvm.legacy_split.first_crash_vs_plain",
            ratio,
            "x",
            target=f"median time to first crash within {CRASH_RATIO_LIMIT:g}x of a plain ctypes loop",
            ratio=ratio,
            limit=CRASH_RATIO_LIMIT,
        ),
        *out,
    ]


def _pause_us(vcpus: int, transactions: int) -> list[float]:
    events = _session_events("inhibit", vcpus, 20_000_000_000, transactions + 1)
    return [e.latency_ns / 1000 for e in events if isinstance(e, Inhibit) and e.phase == "all_out"]


def run_kvm_benchmarks(quick: bool) -> list[Measure]:
    usable, reason = kvm_usable()
    if not usable:
        raise OSError(errno.ENODEV, reason)
    n = 2_000 if quick else 20_000
    out: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="slotlab-kvmbench-") as tmp:
        binary = _build_c(Path(tmp))
        for mode, name, what in (
            ("run", "kvm.run_roundtrip", "KVM_RUN round trip"),
            ("slot", "kvm.slot_create_delete", "64 KiB slot create+delete, vCPU idle"),
        ):
            py, cc = _versus_c(binary, mode, n)
            out.append(Measure(f"{name}.python", py, "us"))
            out.append(Measure(f"{name}.c", cc, "us"))
            ratio = py / cc
            out.append(
                Measure(
                    f"{name}.python_vs_c",
                    ratio,
                    "x",
                    target=f"{what} from slotlab within {RATIO_LIMIT:g}x of C",
                    ratio=ratio,
                    limit=RATIO_LIMIT,
                )
            )
    out.extend(race_versus_plain(RACES_QUICK if quick else RACES))
    for vcpus in (1, 2, 3, 4):
        lat = sorted(_pause_us(vcpus, 40 if quick else 200))
        if not lat:
            continue
        out.append(Measure(f"kvm.inhibit_pause.{vcpus}vcpu.median", statistics.median(lat), "us"))
        out.append(Measure(f"kvm.inhibit_pause.{vcpus}vcpu.p90", lat[int(len(lat) * 0.9)], "us"))
    return out
