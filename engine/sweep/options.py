"""The command-line options of sweep, hunt and shrink.

Apart from their modules, which import Dask, trio and the whole engine: every `slotlab`
command builds the full parser, and a mistyped option should cost the import of argparse, not
of everything a sweep needs.
"""

from __future__ import annotations

import argparse
from typing import Any

from engine import limits
from engine.vmm.strategies import STRATEGIES

KEEP_CHOICES = ("failing", "all", "none")
"""Which runs' logs a sweep keeps."""


def add_cluster_options(p: argparse.ArgumentParser, workers: limits.Bound, zero: str = "") -> None:
    p.add_argument(
        "--cluster",
        choices=("local",),
        default="local",
        help="a LocalCluster over this machine's cores (the default)",
    )
    p.add_argument(
        "--workers",
        type=workers.argtype(),
        default=None,
        help=f"LocalCluster worker processes, {workers.span()}{zero}, capped at the CPUs "
        "unless --force-workers (default: the CPUs)",
    )
    p.add_argument(
        "--force-workers", action="store_true", help="allow more --workers than there are CPUs"
    )
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="an existing Dask scheduler")
    bounded(p, "--chunk", limits.CHUNK, None, "runs per Dask task (default: auto)")


def cluster_workers(args: argparse.Namespace) -> int | None:
    """--workers as the cluster gets it: capped at the CPUs unless --force-workers; None (the
    CPUs) and hunt's 0 (no cluster) as they are. An existing --scheduler has its own workers."""
    if not args.workers or args.scheduler is not None:
        return args.workers  # type: ignore[no-any-return]
    return limits.capped_at_cpus(limits.WORKERS, args.workers, "--workers", args.force_workers)


def add_sweep_parser(sub: Any, duration: Any) -> None:
    p = sub.add_parser("sweep", help="a grid of runs on Dask, one Parquet row per run")
    p.add_argument("--scenario", action="append", default=[], help="repeatable; or all")
    p.add_argument("--strategy", action="append", default=[], help="repeatable; default all")
    p.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="SET",
        help="a fault set: none, or faults joined by + (repeatable; default none)",
    )
    p.add_argument(
        "--seeds",
        default="10",
        help=f"N (seeds 1..N) or FIRST:LAST; {limits.SWEEP_RUNS.hi:,} runs at most in all",
    )
    p.add_argument(
        "--host-profile",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a model host (repeatable; default: the default host)",
    )
    add_vcpus(p)
    p.add_argument("--duration", type=duration, default=None, help="virtual time per run")
    p.add_argument("--out", default="sweep.parquet", metavar="FILE", help="the Parquet file")
    p.add_argument("--keep", choices=KEEP_CHOICES, default="failing", help="which runs' logs")
    p.add_argument("--logs", metavar="DIR", help="where kept logs go (default: FILE-logs)")
    p.add_argument("--summary", metavar="FILE", help="print the matrix of a sweep's Parquet")
    p.add_argument("--json", action="store_true", help="with --summary: the matrix as JSON")
    add_cluster_options(p, limits.WORKERS)


def add_vcpus(p: argparse.ArgumentParser) -> None:
    bounded(p, "--vcpus", limits.VCPUS, None, "vCPUs (default: the scenario's)")


def bounded(
    p: argparse.ArgumentParser, flag: str, bound: limits.Bound, default: int | None, what: str
) -> None:
    """An integer option within one of engine.limits' bounds, which its help names."""
    p.add_argument(flag, type=bound.argtype(), default=default, help=f"{what}; {bound.span()}")


def add_hunt_parser(sub: Any, duration: Any) -> None:
    p = sub.add_parser(
        "hunt", help="search seeds and perturbed schedules for a failing run, no fault armed"
    )
    p.add_argument("--scenario", default="split", help="built-in name or path to a .toml")
    p.add_argument(
        "--strategy",
        default="legacy",
        choices=list(STRATEGIES),
        metavar="STRATEGY",
        help="the VMM's update strategy",
    )
    bounded(p, "--budget", limits.BUDGET, 1000, "runs at most")
    p.add_argument(
        "--first-seed",
        type=limits.SEED.argtype(),
        default=1,
        help="the seed the search starts at, 0..2^64-1 with the budget's seeds after it",
    )
    bounded(p, "--depth", limits.DEPTH, 5, "PCT depth: depth-1 change points")
    p.add_argument(
        "--max-preempt",
        type=limits.FAULT_NS.argtype("ns"),
        default=0,
        help="hold the VMM this long at most at a change point, up to an hour (default: PCT's drop, until "
        "every other actor is blocked or the run ends)",
    )
    p.add_argument(
        "--jitter",
        type=limits.JITTER_NS.argtype("ns"),
        default=100,
        help="vCPU quantum jitter, 0ns..1s (default 100ns)",
    )
    p.add_argument(
        "--no-perturb", action="store_true", help="plain seeds only: the baseline to compare with"
    )
    add_vcpus(p)
    p.add_argument(
        "--duration", type=duration, default=None, help="virtual time (default: the scenario's)"
    )
    p.add_argument("--log", metavar="PATH", help="where the failing run's log goes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_cluster_options(p, limits.HUNT_WORKERS, "; 0 hunts in this process, no cluster")


def add_shrink_parser(sub: Any) -> None:
    p = sub.add_parser("shrink", help="the smallest run that fails like a failing log")
    p.add_argument("log", help="the failing run's session log")
    p.add_argument("--out", metavar="PATH", help="the shrunk log (default: LOG.shrunk.jsonl)")
    bounded(p, "--seed-tries", limits.SEED_TRIES, 32, "other seeds to try")
    p.add_argument("--json", action="store_true", help="print one JSON object")
