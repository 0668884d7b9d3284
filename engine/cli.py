"""slotlab's headless command line: run, check, replay --verify, compare, bench, report, ...

Bad input gets one line naming what was wrong and where, and exit status 2. `run` and `check`
exit with the verdict (EXIT_CODES) so a script, or `git bisect run`, can act on it. The full
`slotlab` command (tui.cli) adds the TUI, the browser view and the exports that drive the TUI.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from engine import __version__, limits
from engine.faults import FAULT_KINDS, FaultError
from engine.log import LogError
from engine.scenarios import ScenarioError, builtin_names, load_scenario
from engine.signals import INTERRUPTED, Interrupted, sigterm_interrupts
from engine.sim.perturb import Perturb, parse_perturb
from engine.summary import Summary
from engine.units import format_ns
from engine.vmm.strategies import STRATEGIES

VERDICTS = ("ok", "violation", "crashed", "livelock")
EXIT_CODES = {"ok": 0, "violation": 1, "crashed": 3, "livelock": 4}
EXIT_DISAGREE = 5
"""`check`: the log's own verdict line says something else than the re-judged events."""

EXIT_STATUS_EPILOG = """exit status (run, check):
  0 ok, 1 violation, 3 crashed, 4 livelock; 2 bad input; 5 (check) the log's own verdict
  disagrees with the events. With --expect VERDICT: 0 when the verdict is VERDICT, else 1,
  so `git bisect run slotlab run --expect ok ...` marks a commit good or bad."""


class UsageError(Exception):
    pass


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the default is "nothing" or the help
    already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or default in (None, False, [], argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`slotlab run: argument --seed: ...`), like
    every other kind of bad input; --help still prints the full usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}\n")


# argparse types for engine.limits' bounds (the same for files and headers).
SEED = limits.SEED.argtype()
VCPUS = limits.VCPUS.argtype()


_duration = limits.DURATION_NS.argtype("ns")
"""Every duration option: virtual time of a run, gaps of an import, a QEMU watch's wall time."""


def _perturb(text: str) -> Perturb:
    """As hunt and shrink print it, each number within the bounds hunt's options have."""
    try:
        p = parse_perturb(text)
        limits.SEED.check(p.seed)
        limits.JITTER_NS.check(p.jitter_ns)
        limits.DEPTH.check(p.depth)
        for step, hold in p.points:
            limits.STEP.check(step)
            if hold:  # 0 is PCT's drop
                limits.FAULT_NS.check(hold, "hold")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return p


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
    p.add_argument("--scenario", default="split", help="built-in name or path to a .toml")
    p.add_argument(
        "--strategy",
        default="legacy",
        choices=list(STRATEGIES),
        metavar="STRATEGY",
        help=f"the VMM's update strategy: {', '.join(STRATEGIES)}",
    )
    p.add_argument("--seed", type=SEED, default=1, help="the run's seed")
    p.add_argument(
        "--vcpus", type=VCPUS, default=None, help="vCPUs, 1..1024 (default: the scenario's)"
    )
    p.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="virtual time, e.g. 10ms (default: the scenario's)",
    )
    p.add_argument("--trace", metavar="LOG", help="a QEMU trace log, imported on the fly")
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
        help="a model host option (repeatable), e.g. nr_memslots=16",
    )
    p.add_argument("--naive", action="store_true", help="a VMM that drops MMIO exits aimed at RAM")
    p.add_argument(
        "--backend",
        choices=("model", "kvm"),
        default="model",
        help="the modelled kernel, or this machine's /dev/kvm",
    )


LOG_HELP = "a session log: plain, .gz or .zst, or - for stdin"


def add_log_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", metavar="LOG", help=LOG_HELP)


def add_replay_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verify",
        action="store_true",
        help="headless: re-execute the log and fail (exit 1) unless every event and the "
        "verdict line are identical byte for byte",
    )


def add_expect(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expect",
        choices=VERDICTS,
        metavar="VERDICT",
        help=f"exit 0 when the verdict is VERDICT ({', '.join(VERDICTS)}), else 1",
    )


def build_parser(prog: str = "slotlab") -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Watch, break and explain KVM memslot updates.",
        epilog=EXIT_STATUS_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"slotlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="run one scenario headless and print the verdict", epilog=EXIT_STATUS_EPILOG
    )
    add_run_options(run)
    run.add_argument(
        "--log",
        metavar="PATH",
        help="session log path; .gz or .zst compresses "
        "(default: sessions/<time>-<scenario>-<strategy>.jsonl)",
    )
    run.add_argument("--no-log", action="store_true", help="do not record a session log")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument(
        "--perturb",
        type=_perturb,
        metavar="SPEC",
        help="schedule perturbation as `slotlab hunt` and `shrink` print it",
    )
    add_expect(run)
    rep = sub.add_parser("replay", help="re-execute a session log (--verify: headless)")
    add_log_argument(rep)
    add_replay_verify(rep)
    chk = sub.add_parser(
        "check",
        help="run the checker over a recorded session log",
        epilog=EXIT_STATUS_EPILOG,
    )
    add_log_argument(chk)
    add_expect(chk)
    from engine.export.cli import add_export_parser
    from engine.report.cli import add_report_parser

    add_report_parser(sub)
    add_export_parser(sub)
    sub.add_parser("scenarios", help="list the built-in scenarios")
    sub.add_parser("strategies", help="list the update strategies")
    sub.add_parser("faults", help="list the injectable faults")
    cmp_ = sub.add_parser("compare", help="every strategy on the same seeds, as a matrix")
    cmp_.add_argument("--scenario", default="split", help="a scenario, or all")
    cmp_.add_argument(
        "--seeds", type=limits.SEEDS.argtype(), default=10, help="seeds 1..N per cell"
    )
    cmp_.add_argument(
        "--jobs",
        type=limits.JOBS.argtype(),
        default=os.cpu_count() or 1,
        help="worker processes (capped at the CPUs unless --force-jobs)",
    )
    cmp_.add_argument(
        "--force-jobs", action="store_true", help="allow more --jobs than there are CPUs"
    )
    cmp_.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[=ARGS]",
        help="arm a fault in every run (repeatable)",
    )
    cmp_.add_argument(
        "--duration",
        type=_duration,
        default=None,
        help="virtual time per run (default: the scenario's)",
    )
    cmp_.add_argument(
        "--backend",
        choices=("model", "kvm", "both"),
        default="model",
        help="the model, this machine's /dev/kvm, or both side by side",
    )
    cmp_.add_argument("--json", action="store_true", help="print one JSON object")
    bench = sub.add_parser("bench", help="the benchmark suite (exit 1 when a target is not met)")
    bench.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument(
        "--only", metavar="NAME", help="only the measures whose name starts with NAME"
    )
    from engine.sweep.options import add_hunt_parser, add_shrink_parser, add_sweep_parser

    add_sweep_parser(sub, _duration)
    add_hunt_parser(sub, _duration)
    add_shrink_parser(sub)
    from engine.importers.cli import add_import_parser, add_trace_options

    add_import_parser(sub)
    add_trace_options(run)
    from engine.importers.watch import add_qemu_parser

    add_qemu_parser(sub, _duration)
    kvm = sub.add_parser("kvm", help="the real /dev/kvm backend")
    kvm_sub = kvm.add_subparsers(dest="kvm_command", metavar="KVM_COMMAND")
    probe = kvm_sub.add_parser(
        "probe", help="is /dev/kvm usable, the kernel, its caps, a 1 s self-test of the race"
    )
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.add_argument("--no-self-test", action="store_true", help="skip the 1 s self-test")
    return parser


def reader_gone() -> int:
    """The reader went away (`slotlab scenarios | head`): stop quietly, as cat does. Point
    stdout at /dev/null so the interpreter's final flush does not raise again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 1


def subcommands(parser: argparse.ArgumentParser) -> Any:
    """The parser's subcommand table, so the full `slotlab` command can add its own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("the parser has no subcommands")


def main(argv: Sequence[str] | None = None) -> int:
    return guarded(lambda: dispatch(build_parser().parse_args(argv)))


def guarded(command: Callable[[], int]) -> int:
    """Run one command, as both command lines (this one and tui.cli) do: bad input is one line
    and status 2, never a traceback; SIGINT, and SIGTERM outside a run's own handler, end it
    with `slotlab: interrupted` and 130 or 143, whatever the command was doing."""
    try:
        with sigterm_interrupts():
            return command()
    except (UsageError, ValueError, ScenarioError, FaultError, LogError) as err:
        # StoreError (a bad sweep Parquet) is a ValueError too.
        print(f"slotlab: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return reader_gone()
    except KeyboardInterrupt:
        print("slotlab: interrupted", file=sys.stderr)
        return 130
    except Interrupted as err:
        print("slotlab: interrupted", file=sys.stderr)
        return err.exit_status


def dispatch(args: argparse.Namespace) -> int:
    if args.command is None or args.command == "run":
        if args.command is None:
            args = build_parser().parse_args(["run"])
        return cmd_run(args)
    if args.command == "replay":
        return cmd_replay(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "report":
        from engine.report.cli import cmd_report

        return cmd_report(args)
    if args.command == "export":
        from engine.export.cli import cmd_export

        return cmd_export(args)
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
        from engine.compare_cmd import cmd_compare

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
    from engine.runner import make_config

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
    from engine.runner import run_session, summary_json

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
    return exit_status(summary.verdict, args.expect)


def exit_status(verdict: str, expect: str | None) -> int:
    if expect is not None:
        return 0 if verdict == expect else 1
    return EXIT_CODES[verdict]


def print_summary(s: Summary) -> None:
    from rich.console import Console
    from rich.table import Table

    colour = {"ok": "green", "crashed": "red", "livelock": "yellow", "violation": "magenta"}[
        s.verdict
    ]
    console = Console()
    console.print(
        f"[bold {colour}]{s.verdict.upper()}[/]  {s.scenario} / {s.strategy} / seed {s.seed}"
    )
    console.print(s.explanation, highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    lat = s.update_latency_ns
    rows = [
        ("transactions", str(s.transactions)),
        ("ioctls", str(s.ioctls)),
        ("internal errors", str(s.internal_errors)),
        ("MMIO exits", str(s.mmio_exits)),
        ("fault retries", str(s.retries)),
        ("#UD injected", str(s.ud_injected)),
        (
            "update latency",
            # Every completed update takes time in the kernel: a zero maximum means none did.
            f"p50 {format_ns(lat.p50)}  p99 {format_ns(lat.p99)}  max {format_ns(lat.max)}"
            if lat.max
            else "no update completed",
        ),
        ("vCPU stall", format_ns(s.vcpu_stall_ns)),
        ("events", f"{s.events} over {format_ns(s.virtual_ns)} virtual"),
        ("log", str(s.log) if s.log else "not recorded (--no-log)"),
    ]
    for k, v in rows:
        table.add_row(f"[dim]{k}[/]", v)
    console.print(table)
    for found in s.violations[:5]:
        console.print(f"[magenta]{found.kind}[/]: {found.message}", highlight=False)


def cmd_check(args: argparse.Namespace) -> int:
    from engine.runner import check_log

    verdict, log = check_log(args.log)
    print(f"{verdict.verdict}: {verdict.explanation}")
    for v in verdict.violations:
        print(f"  {v.kind}: {v.message}")
    if log.verdict is None:
        # Nothing to agree with: the judgement above covers a run cut short, not a result.
        print("the log has no verdict line: the run did not finish")
        return EXIT_DISAGREE
    if log.verdict.verdict == INTERRUPTED:
        print(f"the run was interrupted: {log.verdict.explanation}")
    elif log.verdict.verdict != verdict.verdict:
        print(f"the log's own verdict was {log.verdict.verdict}: they disagree")
        return EXIT_DISAGREE
    return exit_status(verdict.verdict, args.expect)


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.verify:
        raise UsageError("headless replay needs --verify (the TUI opens a log without it)")
    from engine.runner import verify_log

    result = verify_log(args.log)
    print(("verified: " if result.ok else "MISMATCH: ") + result.message)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
