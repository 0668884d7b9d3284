"""A sweep's grid: scenarios x strategies x fault sets x seeds x host profiles, as RunSpecs.

Everything is validated before a single run is handed out, so bad input is one line naming the
option, not a failure in a worker on another host.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from engine import limits
from engine.faults import parse_fault
from engine.model.host import Host
from engine.scenarios import builtin_names, load_scenario
from engine.sweep.unit import RunSpec
from engine.vmm.strategies import STRATEGIES, get_strategy


class HostProfile(msgspec.Struct, frozen=True):
    name: str
    options: dict[str, Any]


class Grid(msgspec.Struct, kw_only=True):
    scenarios: list[str]
    strategies: list[str]
    fault_sets: list[tuple[str, ...]]
    seeds: list[int]
    hosts: list[HostProfile]
    vcpus: int | None = None
    duration_ns: int | None = None

    def specs(self) -> list[RunSpec]:
        """Every run, seed innermost so a partial sweep covers each cell a little."""
        return [
            RunSpec(
                scenario=sc,
                strategy=st,
                seed=seed,
                faults=faults,
                host_profile=host.name,
                host=host.options,
                vcpus=self.vcpus,
                duration_ns=self.duration_ns,
            )
            for host in self.hosts
            for faults in self.fault_sets
            for sc in self.scenarios
            for st in self.strategies
            for seed in self.seeds
        ]


def parse_seeds(text: str) -> list[int]:
    """`N` (seeds 1..N) or `A:B` (seeds A..B, inclusive)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"--seeds {text!r}: expected N or FIRST:LAST")
    first, last = (1, int(m.group(1))) if m.group(2) is None else (int(m.group(1)), int(m.group(2)))
    if first < 0 or last < first or (m.group(2) is None and last < 1):
        raise ValueError(f"--seeds {text!r}: the range is empty")
    limits.SEED.check(last, "--seeds")
    # Counted before the list is built: 10**10 seeds would be 80 GB of it.
    limits.SWEEP_RUNS.check(last - first + 1, "--seeds (a count)")
    return list(range(first, last + 1))


def parse_fault_set(text: str) -> tuple[str, ...]:
    """`none`, or faults joined with `+` (each as --fault takes it)."""
    if text.strip() == "none":
        return ()
    faults = tuple(f.strip() for f in text.split("+"))
    for f in faults:
        try:
            parse_fault(f)
        except ValueError as err:
            raise ValueError(f"--faults {text!r}: {err}") from None
    return faults


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text, 0)
    except ValueError:
        return text


def parse_host_profile(text: str) -> HostProfile:
    """`NAME:KEY=VALUE,KEY=VALUE` (host options as `run --host` takes them), or `default`."""
    name, _, rest = text.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"--host-profile {text!r}: expected NAME:KEY=VALUE,...")
    options: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--host-profile {text!r}: {item!r} is not KEY=VALUE")
        options[key] = _value(value)
    try:
        Host.from_dict(options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--host-profile {text!r}: {err}") from None
    return HostProfile(name, options)


def build_grid(
    scenarios: list[str],
    strategies: list[str],
    fault_sets: list[str],
    seeds: str,
    hosts: list[str],
    vcpus: int | None,
    duration_ns: int | None,
) -> Grid:
    names = builtin_names() if scenarios == ["all"] else scenarios or ["split"]
    for name in names:
        load_scenario(name)
    chosen = strategies or list(STRATEGIES)
    for st in chosen:
        get_strategy(st)
    if vcpus is not None and not 1 <= vcpus <= 1024:
        raise ValueError(f"--vcpus must be 1..1024, not {vcpus}")
    profiles = [parse_host_profile(h) for h in hosts] or [HostProfile("default", {})]
    if len({p.name for p in profiles}) != len(profiles):
        raise ValueError("--host-profile: two profiles share a name")
    grid = Grid(
        scenarios=names,
        strategies=chosen,
        fault_sets=[parse_fault_set(f) for f in fault_sets] or [()],
        seeds=parse_seeds(seeds),
        hosts=profiles,
        vcpus=vcpus,
        duration_ns=duration_ns,
    )
    runs = len(grid.seeds) * len(names) * len(chosen) * len(grid.fault_sets) * len(profiles)
    limits.SWEEP_RUNS.check(runs, "--seeds x --scenario x --strategy x --faults x --host-profile")
    return grid
