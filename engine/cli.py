"""slotlab's headless command line: run, replay --verify, compare, scenarios, strategies.

Bad input gets one line naming what was wrong and where, and exit status 2; a failed
verification exits 1. The full `slotlab` command (tui.cli) adds the TUI and the browser view.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine.faults import FAULT_KINDS, FaultError
from engine.log import LogError
from engine.runner import check_log, make_config, run_session, summary_json, verify_log
from engine.scenarios import ScenarioError, builtin_names, load_scenario
from engine.sim.perturb import Perturb, parse_perturb
from engine.units import format_ns, parse_duration
from engine.vmm.strategies import STRATEGIES


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`slotlab run: argument --seed: ...`), like
    every other kind of bad input; --help still prints the full usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _perturb(text: str) -> Perturb:
    try:
        return parse_perturb(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _host_opt(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--host takes KEY=VALUE, not {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, int(value, 0)
    except ValueError:
        return key, value


def default_log_path(scenario: str, strategy: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(scenario).stem
    return str(
        Path(os.environ.get("SLOTLAB_SESSIONS", "sessions")) / f"{stamp}-{name}-{strategy}.jsonl"
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario", default="split", help="built-in name or path to a .toml (default: split)"
    )
    p.add_argument("--trace", metavar="LOG", help="a QEMU trace log, imported on the fly")
    p.add_argument("--strategy", default="legacy", choices=list(STRATEGIES), metavar="STRATEGY")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vcpus", type=int, default=None)
    p.add_argument("--duration", type=_duration, default=None, help="virtual time, e.g. 10ms")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[=ARGS]",
        help="arm a fault (repeatable)",
    )
    p.add_argument("--faults", metavar="FILE", help="scripted faults: lines of `TIME NAME[=ARGS]`")
    p.add_argument(
        "--host",
        action="append",
        type=_host_opt,
        default=[],
        metavar="KEY=VALUE",
        help="model host option",
    )
    p.add_argument("--naive", action="store_true", help="a VMM that drops MMIO exits aimed at RAM")
    p.add_argument("--backend", choices=("model", "kvm"), default="model")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slotlab", description="Watch, break and explain KVM memslot updates.")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one scenario headless and print the verdict")
    add_run_options(run)
    run.add_argument(
        "--log",
        metavar="PATH",
        help="session log path (default: sessions/<time>-<scenario>-<strategy>.jsonl)",
    )
    run.add_argument("--no-log", action="store_true", help="do not record a session log")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument(
        "--perturb",
        type=_perturb,
        metavar="SPEC",
        help="schedule perturbation as `slotlab hunt` and `shrink` print it",
    )
    rep = sub.add_parser("replay", help="re-execute a session log")
    rep.add_argument("log")
    rep.add_argument(
        "--verify", action="store_true", help="fail unless the events are identical byte for byte"
    )
    chk = sub.add_parser("check", help="run the checker over a recorded session log")
    chk.add_argument("log")
    sub.add_parser("scenarios", help="list the built-in scenarios")
    sub.add_parser("strategies", help="list the update strategies")
    sub.add_parser("faults", help="list the injectable faults")
    cmp_ = sub.add_parser("compare", help="every strategy on the same seeds, as a matrix")
    cmp_.add_argument("--scenario", default="split", help="a scenario, or all")
    cmp_.add_argument("--seeds", type=int, default=10)
    cmp_.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    cmp_.add_argument("--fault", action="append", default=[], metavar="NAME[=ARGS]")
    cmp_.add_argument("--duration", type=_duration, default=None)
    cmp_.add_argument("--backend", choices=("model", "kvm", "both"), default="model")
    cmp_.add_argument("--json", action="store_true")
    bench = sub.add_parser("bench", help="the benchmark suite")
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--only", metavar="NAME")
    from engine.sweep.hunt_cmd import add_hunt_parser
    from engine.sweep.sweep_cmd import add_sweep_parser

    add_sweep_parser(sub, _duration)
    add_hunt_parser(sub, _duration)
    from engine.sweep.shrink import add_shrink_parser

    add_shrink_parser(sub)
    from engine.importers.cli import add_import_parser, add_trace_options

    add_import_parser(sub)
    add_trace_options(run)
    from engine.importers.watch import add_qemu_parser

    add_qemu_parser(sub, _duration)
    kvm = sub.add_parser("kvm", help="the real /dev/kvm backend")
    kvm_sub = kvm.add_subparsers(dest="kvm_command")
    probe = kvm_sub.add_parser(
        "probe", help="is /dev/kvm usable, the kernel, its caps, a 1 s self-test of the race"
    )
    probe.add_argument("--json", action="store_true")
    probe.add_argument("--no-self-test", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except (UsageError, ValueError, ScenarioError, FaultError, LogError) as err:
        # StoreError (a bad sweep Parquet) is a ValueError too.
        print(f"slotlab: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`slotlab scenarios | head`): stop quietly, as cat does. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("slotlab: interrupted", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace) -> int:
    if args.command is None or args.command == "run":
        if args.command is None:
            args = build_parser().parse_args(["run"])
        return cmd_run(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "scenarios":
        for name in builtin_names():
            sc = load_scenario(name)
            mark = "[captured from a real VMM] " if sc.captured else ""
            print(f"{name:15} {mark}{sc.summary}")
        return 0
    if args.command == "strategies":
        for name, cls in STRATEGIES.items():
            print(f"{name:14} {cls.summary}")
        return 0
    if args.command == "faults":
        for kind in FAULT_KINDS.values():
            params = ",".join(f"{k}={v}" for k, v in kind.params.items())
            print(f"{kind.name:13} {kind.summary} [{params}; fires at {kind.opportunity}]")
        return 0
    if args.command == "compare":
        from engine.compare import cmd_compare

        return cmd_compare(args)
    if args.command == "import":
        from engine.importers.cli import cmd_import

        return cmd_import(args)
    if args.command == "qemu":
        from engine.importers.watch import cmd_qemu

        return cmd_qemu(args)
    if args.command == "kvm":
        from engine.backends.kvm.probe import cmd_kvm

        return cmd_kvm(args)
    if args.command == "sweep":
        from engine.sweep.sweep_cmd import cmd_sweep

        return cmd_sweep(args)
    if args.command == "hunt":
        from engine.sweep.hunt_cmd import cmd_hunt

        return cmd_hunt(args)
    if args.command == "shrink":
        from engine.sweep.shrink import cmd_shrink

        return cmd_shrink(args)
    if args.command == "bench":
        from engine.bench.suite import cmd_bench

        return cmd_bench(args)
    raise UsageError(f"unknown command {args.command!r}")


def run_config(args: argparse.Namespace) -> Any:
    if args.trace:
        from engine.importers.cli import import_from_args

        text = import_from_args(args, "qemu-trace", args.trace).text
        args.scenario = trace_scenario_path(args.trace, text)
    if args.backend == "kvm":
        from engine.backends.kvm.run import check_kvm_run

        check_kvm_run(args.scenario, args.strategy)
    if args.vcpus is not None and not 1 <= args.vcpus <= 1024:
        raise UsageError(f"--vcpus must be 1..1024, not {args.vcpus}")
    return make_config(
        args.scenario,
        args.strategy,
        seed=args.seed,
        vcpus=args.vcpus,
        duration_ns=args.duration,
        faults=args.fault,
        faults_file=args.faults,
        host=dict(args.host),
        naive=args.naive,
        perturb=getattr(args, "perturb", None),
    )


def trace_scenario_path(trace: str, text: str) -> str:
    """An imported trace's scenario, written where a run can read it (and a log header
    records it): beside the session logs."""
    from engine.importers.scenario import scenario_name

    folder = Path(os.environ.get("SLOTLAB_SESSIONS", "sessions"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scenario_name(trace)}.toml"
    path.write_text(text)
    return str(path)


def cmd_run(args: argparse.Namespace) -> int:
    config = run_config(args)
    log = None if args.no_log else (args.log or default_log_path(args.scenario, args.strategy))
    if args.backend == "kvm":
        from engine.backends.kvm.run import run_on_kvm

        summary = run_on_kvm(config, log)
    else:
        summary = run_session(config, log)
    if args.json:
        print(summary_json(summary))
    else:
        print_summary(summary)
    return 0


def print_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"ok": "green", "crashed": "red", "livelock": "yellow", "violation": "magenta"}[
        s["verdict"]
    ]
    console = Console()
    console.print(
        f"[bold {colour}]{s['verdict'].upper()}[/]  {s['scenario']} / {s['strategy']} / seed {s['seed']}"
    )
    console.print(s["explanation"], highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    lat = s["update_latency_ns"]
    rows = [
        ("transactions", str(s["transactions"])),
        ("ioctls", str(s["ioctls"])),
        ("internal errors", str(s["internal_errors"])),
        ("MMIO exits", str(s["mmio_exits"])),
        ("fault retries", str(s["retries"])),
        ("#UD injected", str(s["ud_injected"])),
        (
            "update latency",
            # Every completed update takes time in the kernel: a zero maximum means none did.
            f"p50 {format_ns(lat['p50'])}  p99 {format_ns(lat['p99'])}  max {format_ns(lat['max'])}"
            if lat["max"]
            else "no update completed",
        ),
        ("vCPU stall", format_ns(s["vcpu_stall_ns"])),
        ("events", f"{s['events']} over {format_ns(s['virtual_ns'])} virtual"),
        ("log", str(s["log"])),
    ]
    for k, v in rows:
        table.add_row(f"[dim]{k}[/]", v)
    console.print(table)
    for v in s["violations"][:5]:
        console.print(f"[magenta]{v['kind']}[/]: {v['message']}", highlight=False)


def cmd_check(args: argparse.Namespace) -> int:
    verdict, log = check_log(args.log)
    print(f"{verdict.verdict}: {verdict.explanation}")
    for v in verdict.violations:
        print(f"  {v['kind']}: {v['message']}")
    if log.verdict is None:
        print("(the log has no verdict line: the run did not finish)")
    elif log.verdict.verdict != verdict.verdict:
        print(f"the log's own verdict was {log.verdict.verdict}: they disagree")
        return 1
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.verify:
        raise UsageError("headless replay needs --verify (the TUI opens a log without it)")
    result = verify_log(args.log)
    print(("verified: " if result.ok else "MISMATCH: ") + result.message)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
