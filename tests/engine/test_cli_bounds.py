"""Every number on a command line is bounded (issue 12): out of bounds,
not a number, or a float where an integer goes is one line naming the option and exit status
2, before any cluster starts or any run is made. In process: nothing here forks a worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import limits
from engine.cli import build_parser
from engine.sweep.cluster import run_on
from engine.sweep.options import cluster_workers
from engine.sweep.unit import RunSpec

from .helpers import refused

HUGE = str(10**30)
SWEEP = ["sweep", "--scenario", "split", "--strategy", "legacy", "--seeds", "2"]
HUNT = ["hunt", "--scenario", "split", "--budget", "3", "--workers", "0"]

BAD = {
    "sweep --chunk -1 (hung)": ([*SWEEP, "--chunk", "-1"], "--chunk: must be 1..100000, not -1"),
    "sweep --chunk 0": ([*SWEEP, "--chunk", "0"], "--chunk: must be 1..100000, not 0"),
    "sweep --chunk 10^10": ([*SWEEP, "--chunk", "10000000000"], "--chunk: must be 1..100000"),
    "sweep --chunk 1.5": ([*SWEEP, "--chunk", "1.5"], "--chunk: not an integer: '1.5'"),
    "sweep --workers 0": ([*SWEEP, "--workers", "0"], "--workers: must be 1..256, not 0"),
    "sweep --workers -3": ([*SWEEP, "--workers", "-3"], "--workers: must be 1..256, not -3"),
    "sweep --workers 500": ([*SWEEP, "--workers", "500"], "--workers: must be 1..256, not 500"),
    "sweep --workers 10^30": ([*SWEEP, "--workers", HUGE], "--workers: must be 1..256, not 1000"),
    "sweep --workers abc": ([*SWEEP, "--workers", "abc"], "--workers: not an integer: 'abc'"),
    "sweep --vcpus 0": ([*SWEEP, "--vcpus", "0"], "--vcpus: must be 1..1024, not 0"),
    "sweep --vcpus 2.0": ([*SWEEP, "--vcpus", "2.0"], "--vcpus: not an integer"),
    "sweep --seeds 10^10": (
        [*SWEEP[:-1], "10000000000"],
        "--seeds (a count) must be 1..1000000, not 10000000000",
    ),
    "sweep --seeds past 2^64": ([*SWEEP[:-1], f"1:{1 << 64}"], "--seeds must be 0..1844"),
    "sweep grid too big": (
        [*SWEEP[:-1], "400000", "--strategy", "inhibit", "--strategy", "atomic-list"],
        "--scenario x --strategy x --faults x --host-profile must be 1..1000000, not 1200000",
    ),
    "hunt --budget 0": ([*HUNT, "--budget", "0"], "--budget: must be 1..1000000, not 0"),
    "hunt --budget 10^30": ([*HUNT, "--budget", HUGE], "--budget: must be 1..1000000"),
    "hunt --depth 0": ([*HUNT, "--depth", "0"], "--depth: must be 1..64, not 0"),
    "hunt --depth -1": ([*HUNT, "--depth", "-1"], "--depth: must be 1..64, not -1"),
    "hunt --first-seed -1": ([*HUNT, "--first-seed", "-1"], "--first-seed: must be 0..1844"),
    "hunt --first-seed nan": ([*HUNT, "--first-seed", "nan"], "--first-seed: not an integer"),
    "hunt seeds past 2^64": (
        [*HUNT, "--first-seed", str((1 << 64) - 2)],
        "--first-seed + --budget - 1 must be 0..",
    ),
    "hunt --workers -1": ([*HUNT, "--workers", "-1"], "--workers: must be 0..256, not -1"),
    "hunt --workers 500": ([*HUNT, "--workers", "500"], "--workers: must be 0..256, not 500"),
    "hunt --chunk 0": ([*HUNT, "--chunk", "0"], "--chunk: must be 1..100000, not 0"),
    "hunt --vcpus 2000": ([*HUNT, "--vcpus", "2000"], "--vcpus: must be 1..1024, not 2000"),
    "hunt --jitter 2s": ([*HUNT, "--jitter", "2s"], "--jitter: must be 0..1000000000 ns, not '2s'"),
    "hunt --max-preempt 2h": (
        [*HUNT, "--max-preempt", "7200s"],
        "--max-preempt: must be 1..3600000000000 ns, not '7200s'",
    ),
    "hunt --jitter -0ns": ([*HUNT, "--jitter=-0ns"], "--jitter: bad duration '-0ns'"),
    "hunt --max-preempt 0ns": ([*HUNT, "--max-preempt", "0ns"], "--max-preempt: bad duration"),
    "compare --duration 10^30 s (hung)": (
        ["compare", "--duration", HUGE + "s"],
        "--duration: must be 1..3600000000000 ns, not '1000",
    ),
    "sweep --duration 2h": ([*SWEEP, "--duration", "7200s"], "--duration: must be 1..36"),
    "run --max-gap 10^30 s": (
        ["run", "--trace", "t.log", "--max-gap", HUGE + "s"],
        "--max-gap: must be 1..3600000000000 ns",
    ),
    "import --txn-gap 2h": (
        ["import", "qemu-trace", "t.log", "--txn-gap", "7200s"],
        "--txn-gap: must be 1..3600000000000 ns",
    ),
    "import --vcpus 1.5": (["import", "qemu-trace", "t.log", "--vcpus", "1.5"], "--vcpus: not an"),
    "qemu --duration 2h": (["qemu", "--duration", "7200s"], "--duration: must be 1..36"),
    "run --perturb jitter 10^18": (
        ["run", "--perturb", f"seed=1,jitter={10**18}"],
        "--perturb: jitter must be 0..1000000000",
    ),
    "run --perturb step 0": (
        ["run", "--perturb", "seed=1,jitter=0,at=0:0"],
        "--perturb: step must be 1..1000000000, not 0",
    ),
    "run --perturb 100 points": (
        ["run", "--perturb", "seed=1,jitter=0,at=" + "+".join(f"{i}:0" for i in range(1, 101))],
        "--perturb: depth must be 1..64, not 101",
    ),
    "run --perturb hold 10^17": (
        ["run", "--perturb", f"seed=1,jitter=0,at=1:{10**17}"],
        "--perturb: hold: duration must be 1..3600000000000",
    ),
    "report --window past an hour": (
        ["report", "x.jsonl", "--window", "0..7200s"],
        "--window: T2: duration must be 1..3600000000000",
    ),
    "shrink --seed-tries -1": (
        ["shrink", "x.jsonl", "--seed-tries", "-1"],
        "--seed-tries: must be 0..100000, not -1",
    ),
    "shrink --seed-tries 10^30": (
        ["shrink", "x.jsonl", "--seed-tries", HUGE],
        "--seed-tries: must be 0..100000",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_number_is_one_line_naming_the_option(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv, fragment = BAD[case]
    out = tmp_path / "never.parquet"
    extra = ["--out", str(out)] if argv[0] == "sweep" else []
    line = refused(capsys, *argv, *extra)
    assert fragment in line
    assert not out.exists()


def test_a_zero_duration_only_where_the_bound_has_it() -> None:
    hunt = build_parser().parse_args(["hunt", "--jitter", "0ns", "--max-preempt", "1us"])
    assert (hunt.jitter, hunt.max_preempt) == (0, 1000)
    assert build_parser().parse_args(["hunt", "--jitter", "0.0 us"]).jitter == 0


def _workers(*argv: str) -> int | None:
    return cluster_workers(build_parser().parse_args(list(argv)))


def test_workers_are_capped_at_the_cpus_unless_forced(capsys: pytest.CaptureFixture[str]) -> None:
    """The planned worker count, not 500 processes started."""
    cpus = limits.cpus()
    many = str(cpus + 100)
    assert _workers("sweep", "--workers", many) == cpus
    assert f"--workers {many} capped at {cpus}" in capsys.readouterr().err
    assert _workers("sweep", "--workers", many, "--force-workers") == cpus + 100
    assert _workers("hunt", "--workers", many) == cpus
    assert f"--workers {many} capped at {cpus}" in capsys.readouterr().err
    assert _workers("sweep", "--workers", "1") == 1
    assert _workers("sweep") is None  # the cluster's default: the CPUs
    assert _workers("hunt", "--workers", "0") == 0  # in process, no cluster
    # An existing scheduler's workers are its own: nothing to cap.
    assert _workers("sweep", "--workers", many, "--scheduler", "tcp://h:1") == cpus + 100
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("chunk", [0, -1])
def test_run_on_refuses_a_chunk_that_would_never_end(chunk: int) -> None:
    """The loop that hung: refused before the (here absent) cluster is touched."""
    spec = RunSpec(scenario="split", strategy="legacy", seed=1)
    with pytest.raises(limits.LimitError, match=r"--chunk must be 1\.\.100000"):
        run_on(None, [spec], "none", lambda _: True, chunk)
