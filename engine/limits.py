"""The bounds of every number slotlab reads from a command line, a scenario, a fault file or
a log header: one table, so `--vcpus`, `vcpus = ` in a scenario and `"vcpus":` in a header
refuse the same values with the same words. Each bound says why it is where it is.

A bound is checked before the value is used; the caller adds where it came from (an option,
`file:line`), so the error is one line naming both.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from engine.model import constants as c
from engine.units import parse_duration

U64 = (1 << 64) - 1
NS_PER_S = 1_000_000_000


class LimitError(ValueError):
    """A value outside its documented bounds (or of the wrong type)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    name: str
    lo: int
    hi: int
    why: str

    def check(self, value: Any, where: str = "") -> int:
        """``value`` as an int within [lo, hi]; LimitError naming ``where`` otherwise. Booleans
        are not numbers here, and neither are strings that look like one."""
        if type(value) is int and self.lo <= value <= self.hi:
            return value  # the common case, first: a scenario checks 200,000 of these
        what = _what(self.name, where)
        if not isinstance(value, int) or isinstance(value, bool):
            raise LimitError(f"{what} must be an integer, not {value!r}")
        if not self.lo <= value <= self.hi:
            raise LimitError(f"{what} must be {self.span()}, not {_short(value)}")
        return value

    def span(self) -> str:
        return f"{self.lo}..{self.hi}"

    def argtype(self, unit: str = "") -> Callable[[str], int]:
        """An argparse type: an integer (any base Python reads) within the bound, or with unit
        "ns" a duration as people type it (10ms), or a one-line error saying what is wrong
        (`slotlab sweep: argument --chunk: must be 1..100000, not -1`)."""

        def parse(text: str) -> int:
            if unit and self.lo == 0 and _ZERO.match(text):
                return 0  # where the bound has it (hunt --jitter 0ns: none), not for a run
            try:
                value = parse_duration(text) if unit else int(text, 0)
            except ValueError as err:
                why = str(err) if unit else f"not an integer: {text!r}"
                raise argparse.ArgumentTypeError(why) from None
            if not self.lo <= value <= self.hi:
                shown = repr(text.strip()[:40]) if unit else _short(value)
                raise argparse.ArgumentTypeError(
                    f"must be {self.span()}{' ' + unit if unit else ''}, not {shown}"
                )
            return value

        parse.__name__ = "duration" if unit else "integer"
        return parse


_ZERO = re.compile(r"^\s*0+(\.0*)?\s*(ns|us|µs|ms|s)\s*$")


def _what(name: str, where: str) -> str:
    """`--vcpus` (an option names itself), `f.toml:3: vcpus`, or just `vcpus`."""
    if where.startswith("--"):
        return where
    return f"{where}: {name}" if where else name


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


# --- a run ---------------------------------------------------------------------------------

VCPUS = Bound("vcpus", 1, 1024, "KVM_CAP_MAX_VCPUS on this kernel; every vCPU is a task")
SEED = Bound("seed", 0, U64, "a 64-bit seed, as the logs record it")
DURATION_NS = Bound(
    "duration", 1, 3600 * NS_PER_S, "an hour of virtual time is millions of updates already"
)
PERIOD_NS = Bound(
    "period", 100, 3600 * NS_PER_S, "below 100 ns the VMM would do nothing but transactions"
)
SYNC_NS = Bound("sync", 100, 3600 * NS_PER_S, "dirty-log harvests; 0 would never advance time")
JOBS = Bound("jobs", 1, 256, "worker processes; capped at the CPU count unless forced")
SEEDS = Bound("seeds", 1, 100_000, "runs per strategy in a compare")
PORT = Bound("port", 1, 65535, "a TCP port")
STEP = Bound("step", 1, 1_000_000_000, "events a paused run advances by")

# --- sweeps, hunts and shrinks (engine/sweep) ----------------------------------------------

WORKERS = Bound(
    "workers", 1, JOBS.hi, "Dask worker processes; capped at the CPU count unless forced"
)
JITTER_NS = Bound(
    "jitter", 0, NS_PER_S, "either side of a vCPU quantum of microseconds; a second is a stall"
)
HUNT_WORKERS = Bound("workers", 0, JOBS.hi, "as a sweep's --workers; 0 hunts in this process")
CHUNK = Bound(
    "chunk", 1, 100_000, "runs per Dask task; one task is one worker's, so more only idles others"
)
SWEEP_RUNS = Bound("runs", 1, 1_000_000, "a sweep's grid is built in memory, about 200 bytes a run")
BUDGET = Bound("budget", 1, 1_000_000, "a hunt's runs are planned up front, as a sweep's grid")
DEPTH = Bound("depth", 1, 64, "PCT depth: depth-1 change points, each on a step of the run")
SEED_TRIES = Bound("seed_tries", 0, 100_000, "other seeds shrink re-runs, one run each")

# --- faults (`--fault`, fault files, injections, a log header's faults) --------------------

FAULT_VCPU = Bound("vcpu", 0, VCPUS.hi - 1, "a vCPU index; it must also exist in the run")
FAULT_NS = Bound("duration", 1, 3600 * NS_PER_S, "a delay, window or stall in virtual time")
FAULT_TIME_NS = Bound("time", 0, 3600 * NS_PER_S, "when a scripted fault fires")
INTERVAL = Bound("interval", 1, (1 << 31) - 1, "every Nth opportunity")
TIMES = Bound("times", -1, (1 << 31) - 1, "how often it may fire; -1 for no limit")

# --- a scenario ----------------------------------------------------------------------------

REGIONS = Bound(
    "regions", 0, 65_536, "per layout; QEMU traces with thousands of slots load in linear time"
)
GPA = Bound("gpa", 0, U64, "a guest physical address; gpa + size must fit in 64 bits too")
SIZE = Bound("size", 1, U64, "bytes; page-aligned, and gpa + size must fit in 64 bits")
HVA = Bound("hva", 0, U64, "a host virtual address; hva + size must fit in 64 bits")
PRIORITY = Bound("priority", 0, (1 << 31) - 1, "QEMU's memory-region priority is an int")
AS_ID = Bound("as_id", 0, 1, "two address spaces at most (x86 with SMM)")
SLOT = Bound("slot", 0, c.KVM_USER_MEM_SLOTS - 1, "KVM_USER_MEM_SLOTS user slots")
ENTRY = Bound("entry", 0, U64, "the RIP every vCPU starts at")

# --- the model host (`--host KEY=VALUE`, a log header's host) ------------------------------

HOST_INTS = {
    "nr_address_spaces": Bound(
        "nr_address_spaces", 0, 2, "kvm_arch_nr_memslot_as_ids(); 0 takes the profile's"
    ),
    "maxphyaddr": Bound("maxphyaddr", 32, 57, "x86 guest physical address widths"),
    "task_size_max": Bound(
        "task_size_max", 1 << 32, 1 << 57, "access_ok()'s limit: 32- to 57-bit user space"
    ),
    "nr_memslots": Bound("nr_memslots", 1, c.KVM_USER_MEM_SLOTS, "KVM_USER_MEM_SLOTS"),
    "nr_cpus": Bound("nr_cpus", 1, 1024, "KVM_CAP_NR_VCPUS"),
}
HOST_FLAGS = ("readonly_mem", "mmio_caching", "slot_zap_all")
HOST_CHOICES = {"fetch_noslot": ("internal_error", "mmio_len0")}
HOST_NAMES = ("profile",)
"""Names checked where they are looked up (engine.model.profiles): here, only that they are."""
HOST_TEXT = {"backend": ("model", "kvm")}
"""Keys a log header's host may carry besides the model's own options."""


def check_host_option(key: str, value: Any, where: str = "") -> Any:
    """One model host option, checked by type and bounds; LimitError otherwise."""
    what = _what(key, where)
    if key in HOST_INTS:
        return HOST_INTS[key].check(value, where)
    if key in HOST_FLAGS:
        if not isinstance(value, bool):
            raise LimitError(f"{what} must be true or false, not {value!r}")
        return value
    if key in HOST_NAMES:
        if not isinstance(value, str):
            raise LimitError(f"{what} must be a name, not {value!r}")
        return value
    if key in HOST_CHOICES:
        if value not in HOST_CHOICES[key]:
            choices = " or ".join(HOST_CHOICES[key])
            raise LimitError(f"{what} must be {choices}, not {value!r}")
        return value
    known = ", ".join([*HOST_NAMES, *HOST_INTS, *HOST_FLAGS, *HOST_CHOICES])
    raise LimitError(f"unknown host option {key!r} (known: {known})")


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def capped_at_cpus(bound: Bound, value: int, option: str, force: bool) -> int:
    """More worker processes than CPUs only slows every run down (64 on 2 cores started 33
    processes; 500 Dask workers leaked 708 semaphores): ``value`` capped at the CPUs, saying
    so on stderr, unless the user insists with --force-OPTION."""
    bound.check(value, option)
    n = cpus()
    if value <= n or force:
        return value
    flag = option.replace("--", "--force-", 1)
    print(
        f"slotlab: {option} {value} capped at {n}, the CPUs here ({flag} to insist)",
        file=sys.stderr,
    )
    return n


def check_range(base: Bound, size: Bound, start: int, length: int, where: str = "") -> None:
    """``start + length`` must still be a 64-bit address."""
    if start + length > U64 + 1:
        raise LimitError(f"{_what(base.name, where)} + {size.name} must not pass 2^64")


def describe() -> list[str]:
    """One line per bound, for `slotlab limits`-style help and the docs."""
    bounds = [v for v in globals().values() if isinstance(v, Bound)]
    bounds += HOST_INTS.values()
    return [f"{b.name:18} {b.span():>28}  {b.why}" for b in bounds]
