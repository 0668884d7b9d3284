"""`slotlab compare --backend kvm|both`: the same scenarios and strategies on the real kernel,
and with `both` on the model too, side by side.

Only legacy and inhibit run on real KVM; every other strategy gets one line naming the kernel
change it would need. Real runs are wall-clock: each lasts --duration (default 300 ms) and
they run one after another, since concurrent runs would share two cores and skew each other.
The model runs as `slotlab compare` runs it (deterministic, one per seed).

With `both` the model runs under the host profile `slotlab kvm probe` says this kernel matches.
Two backends agree on a (scenario, strategy) when their majority verdicts and the exit kinds
they met are the same (engine.backends.kvm.differ). Every difference is printed under the table
with its likely cause in kernel terms or "unexplained", and all of it is in --json.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from engine.backends.kvm.differ import differences, facts, run_model_one
from engine.backends.kvm.ioctl import kvm_module, kvm_usable
from engine.backends.kvm.probe import matching_profile
from engine.backends.kvm.session import STRATEGIES, check_faults, check_scenario
from engine.matrix import VERDICT_COLOUR, MatrixRow, RunRow, aggregate, row_from_summary
from engine.runner import make_config
from engine.scenarios import builtin_names, load_scenario
from engine.units import format_ns
from engine.vmm.strategies import STRATEGIES as ALL_STRATEGIES

COMPARE_DURATION_NS = 300_000_000


class KvmRunRow(RunRow, kw_only=True):
    explanation: str


class BackendsRow(msgspec.Struct, kw_only=True):
    """One strategy of one scenario on the real kernel, and with `both` on the model too (the
    model-side fields are absent without it)."""

    strategy: str
    kvm: MatrixRow
    kvm_explanation: str
    model: MatrixRow | msgspec.UnsetType = msgspec.UNSET
    differences: list[dict[str, str]] | msgspec.UnsetType = msgspec.UNSET
    agree: bool | msgspec.UnsetType = msgspec.UNSET
    facts: dict[str, dict[str, Any]] | msgspec.UnsetType = msgspec.UNSET
    disagreement: str | msgspec.UnsetType = msgspec.UNSET


class BackendsCompare(msgspec.Struct, kw_only=True):
    """What `compare --backend kvm|both --json` prints."""

    scenarios: dict[str, list[BackendsRow]]
    refused: list[str]
    disagreements: int
    unexplained: int
    model_profile: str


def run_kvm_one(
    scenario: str, strategy: str, seed: int, faults: tuple[str, ...], duration_ns: int | None
) -> KvmRunRow:
    """One real run, reduced to the fields a matrix row needs (as engine.compare.run_one)."""
    from engine.backends.kvm.run import run_on_kvm

    config = make_config(
        scenario,
        strategy,
        seed=seed,
        faults=list(faults),
        duration_ns=duration_ns or COMPARE_DURATION_NS,
    )
    s = run_on_kvm(config, None)
    return KvmRunRow(**msgspec.structs.asdict(row_from_summary(seed, s)), explanation=s.explanation)


def _scenarios(name: str) -> tuple[list[str], list[str]]:
    """Scenarios to run, and one line for each that real KVM cannot express."""
    from engine.backends.kvm.vm import KvmVM

    usable, reason = kvm_usable()
    if not usable:
        raise ValueError(f"{reason} (the model's compare needs none of this: drop --backend)")
    names = builtin_names() if name == "all" else [name]
    with KvmVM() as vm:
        spaces = vm.nr_address_spaces
    runnable, refused = [], []
    for n in names:
        try:
            check_scenario(load_scenario(n), spaces)
        except ValueError as err:
            if name != "all":
                raise
            refused.append(str(err))
            continue
        runnable.append(n)
    return runnable, refused


Progress = Callable[[str], None]


def compare_kvm(
    scenario: str,
    seeds: int,
    faults: list[str],
    duration_ns: int | None,
    both: bool,
    progress: Progress | None = None,
) -> BackendsCompare:
    """Rows for every runnable scenario and strategy; raises ValueError for bad input first."""
    from engine.backends.kvm.run import check_kvm_run

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, not {seeds}")
    names, refused = _scenarios(scenario)
    for n in names:
        config = make_config(n, STRATEGIES[0], faults=faults)
        check_faults(config)
        check_kvm_run(n, STRATEGIES[0])
    refused += [
        f"strategy {name}: needs {cls.kernel_change or 'a kernel change'}"
        for name, cls in ALL_STRATEGIES.items()
        if name not in STRATEGIES
    ]
    profile = matching_profile(kvm_module())
    out = BackendsCompare(
        scenarios={}, refused=refused, disagreements=0, unexplained=0, model_profile=profile
    )
    for n in names:
        rows = []
        for strategy in STRATEGIES:
            if progress is not None:
                progress(f"{n}/{strategy} on kvm")
            real = [
                run_kvm_one(n, strategy, seed, tuple(faults), duration_ns)
                for seed in range(1, seeds + 1)
            ]
            row = BackendsRow(
                strategy=strategy,
                kvm=aggregate(strategy, real),
                kvm_explanation=real[0].explanation,
            )
            if both:
                if progress is not None:
                    progress(f"{n}/{strategy} on the model ({profile})")
                modelled = [
                    run_model_one(n, strategy, seed, tuple(faults), profile)
                    for seed in range(1, seeds + 1)
                ]
                row.model = model = aggregate(strategy, modelled)
                diffs = differences(model, row.kvm)
                row.differences = diffs
                row.agree = not diffs
                row.facts = {"model": facts(model), "kvm": facts(row.kvm)}
                row.disagreement = "; ".join(d["what"] for d in diffs)
                if diffs:
                    out.disagreements += 1
                out.unexplained += sum(d["cause"] == "unexplained" for d in diffs)
            rows.append(row)
        out.scenarios[n] = rows
    return out


def compare_backends(args: argparse.Namespace) -> int:
    both = args.backend == "both"
    from rich.console import Console

    err = Console(stderr=True)

    def progress(text: str) -> None:
        if err.is_terminal:
            err.print(f"[dim]{text}...[/]", highlight=False)

    result = compare_kvm(args.scenario, args.seeds, list(args.fault), args.duration, both, progress)
    if args.json:
        print(msgspec.json.encode(result).decode())
        return 0
    console = Console()
    for name, rows in result.scenarios.items():
        console.print(_table(name, rows, both, args.seeds, args.duration))
        for row in rows:
            if row.disagreement:
                console.print(
                    f"[bold magenta]disagreement[/] {name}/{row.strategy}: {row.disagreement}",
                    highlight=False,
                )
                for d in row.differences or []:
                    console.print(f"  {d['what']}: {d['cause']}", highlight=False)
                console.print(f"  kvm: {row.kvm_explanation}", highlight=False)
    for line in result.refused:
        console.print(f"[dim]not on real KVM:[/] {line}", highlight=False)
    if both:
        n, unexplained = result.disagreements, result.unexplained
        console.print(f"model side: --host profile={result.model_profile}", highlight=False)
        console.print(
            "model and kvm agree on every row"
            if n == 0
            else f"[bold magenta]{n} row(s) where the model and the kernel disagree[/], "
            f"{unexplained} difference(s) unexplained"
        )
    return 0


def _cell(row: MatrixRow) -> str:
    return ", ".join(
        f"[{VERDICT_COLOUR.get(v, 'white')}]{k} {v}[/]" for v, k in row.verdicts.items()
    )


def _table(
    scenario: str, rows: list[BackendsRow], both: bool, seeds: int, duration_ns: int | None
) -> Any:
    from rich import box
    from rich.table import Table

    real = format_ns(duration_ns or COMPARE_DURATION_NS)
    table = Table(
        title=f"{scenario}: {seeds} seed(s); kvm runs {real} of wall time each",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("strategy", no_wrap=True)
    if both:
        table.add_column("model", min_width=12)
        table.add_column("int.err", justify="right")
    table.add_column("kvm", min_width=12)
    table.add_column("int.err", justify="right")
    table.add_column("kvm p50", justify="right")
    if both:
        table.add_column("agree", justify="center")
    for row in rows:
        k = row.kvm
        cells = [row.strategy]
        if isinstance(row.model, MatrixRow):
            cells += [_cell(row.model), str(row.model.internal_errors)]
        cells += [
            _cell(k),
            str(k.internal_errors),
            format_ns(k.latency_p50_ns) if k.latency_p50_ns else "-",
        ]
        if both:
            cells.append("[green]yes[/]" if not row.disagreement else "[magenta]NO[/]")
        table.add_row(*cells)
    return table
