"""`slotlab import qemu-trace|strace LOG`: a trace in, a scenario file out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli import VCPUS, _duration
from engine.importers import DEFAULT_TXN_GAP_US, FORMATS, WORKLOADS, ImportResult, import_trace
from engine.importers.scenario import DEFAULT_MAX_GAP_NS, scenario_name
from engine.units import format_ns


def add_trace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-gap",
        type=_duration,
        default=DEFAULT_MAX_GAP_NS,
        help=f"cap on the idle time kept before each step (default {format_ns(DEFAULT_MAX_GAP_NS)})",
    )
    p.add_argument(
        "--txn-gap",
        type=_duration,
        default=DEFAULT_TXN_GAP_US * 1000,
        help="a longer pause between two calls ends a transaction (default 100ms)",
    )
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default=WORKLOADS[0],
        help="the guest the vCPUs run (default code-in-churn)",
    )


def add_import_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    imp = sub.add_parser("import", help="a real VMM's trace as a scenario (qemu-trace, strace)")
    imp.add_argument("format", choices=FORMATS, help="what wrote the trace")
    imp.add_argument("log", help="the trace file (.gz is read too)")
    imp.add_argument("-o", "--output", metavar="SCENARIO.toml", help="default: NAME.toml here")
    imp.add_argument("--name", help="scenario name (default: from the file name)")
    imp.add_argument(
        "--vcpus", type=VCPUS, default=None, help="1..1024 (default: the vCPUs the trace shows)"
    )
    imp.add_argument(
        "--vmm-command", default="", help="the VMM's command line, recorded in the file"
    )
    add_trace_options(imp)


def import_from_args(args: argparse.Namespace, fmt: str, log: str) -> ImportResult:
    if args.vcpus is not None and not 1 <= args.vcpus <= 1024:
        raise ValueError(f"--vcpus must be 1..1024, not {args.vcpus}")
    command = getattr(args, "vmm_command", "") or _cmdline_next_to(log)
    return import_trace(
        log,
        fmt,
        workload=args.workload,
        max_gap_ns=args.max_gap,
        txn_gap_us=max(1, args.txn_gap // 1000),
        name=getattr(args, "name", None),
        vcpus=args.vcpus,
        command=command,
    )


def _cmdline_next_to(log: str) -> str:
    """A capture ships its command as NAME.cmdline beside NAME.qemu.log (or .strace)."""
    path = Path(log)
    stem = path.name.split(".")[0]
    cmdline = path.with_name(f"{stem}.cmdline")
    return cmdline.read_text().strip() if cmdline.is_file() else ""


def cmd_import(args: argparse.Namespace) -> int:
    result = import_from_args(args, args.format, args.log)
    name = args.name or scenario_name(args.log)
    out = Path(args.output or f"{name}.toml")
    out.write_text(result.text)
    imp = result.imported
    print(
        f"{out}: {len(imp.calls)} calls ({imp.count('create')} CREATE, {imp.count('delete')} DELETE, "
        f"{imp.count('flags')} flags-only) in {len(imp.transactions)} transactions after boot; "
        f"workload {result.workload.name}, code at {result.workload.entry:#x}",
        file=sys.stderr,
    )
    print(f"replay it: slotlab run --scenario {out} --strategy legacy|inhibit|atomic-list|...")
    return 0
