"""Compare on every core versus one: the matrix a sweep user waits for."""

from __future__ import annotations

from engine.bench import Measure
from engine.compare import measure_compare_scaling


def run_compare_benchmarks(quick: bool) -> list[Measure]:
    r = measure_compare_scaling(quick)
    cores = min(2, int(r["cores"]))
    return [
        Measure("compare.seconds.1proc", r["seconds_1"], "s"),
        Measure("compare.seconds.2proc", r["seconds_2"], "s"),
        Measure(
            "compare.speedup.2proc",
            r["speedup"],
            "x",
            target=f"at least 0.9 x {cores} cores (same matrix both ways: {r['identical']})",
            ratio=r["speedup"],
            limit=r["target"],
            at_least=True,
        ),
    ]
