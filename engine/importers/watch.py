"""`slotlab qemu [--json] [--duration D] -- QEMU_COMMAND...`: kvm_stat for memslots.

Starts the user's QEMU with the memslot trace events, follows the trace while the VM runs
(without --json, one line per memory transaction as it happens), and when QEMU exits, the
duration is up, or slotlab is interrupted, stops QEMU, imports the trace and writes both next
to the session logs, with the command that replays the same traffic on the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

from engine.importers import import_trace
from engine.importers.calls import DEFAULT_TXN_GAP_US, Imported, Transaction
from engine.importers.live import (
    QemuError,
    QemuProcess,
    StopRequest,
    TraceFollower,
    stop_signals,
)
from engine.units import format_ns

POLL_S = 0.1


class WatchResult(msgspec.Struct, kw_only=True):
    calls: int
    creates: int
    deletes: int
    flags_only: int
    transactions: int
    max_window_us: int
    windows_us: list[int]
    vcpus: int
    trace: str
    scenario: str
    replay: str
    stopped_by: str
    qemu_exit: int | None
    qemu_pid: int


def add_qemu_parser(sub: argparse._SubParsersAction, duration: object) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("qemu", help="run a real QEMU and watch its memslot updates")
    p.add_argument("--json", action="store_true", help="no TUI: print one JSON object at the end")
    p.add_argument("--duration", type=duration, default=None, help="wall time, e.g. 10s")
    p.add_argument(
        "--out", metavar="DIR", help="where the trace and scenario go (default sessions/)"
    )
    p.add_argument(
        "qemu_command",
        nargs=argparse.REMAINDER,
        metavar="-- QEMU_COMMAND...",
        help="the QEMU command line to run",
    )


def qemu_command(args: argparse.Namespace) -> list[str]:
    command = list(args.qemu_command)
    if command and command[0] == "--":
        command = command[1:]
    return command


def output_paths(out: str | None) -> tuple[Path, Path, Path]:
    import os

    folder = Path(out or os.environ.get("SLOTLAB_SESSIONS", "sessions"))
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"qemu-{time.strftime('%Y%m%d-%H%M%S')}"
    return folder / f"{stem}.qemu.log", folder / f"{stem}.toml", folder / f"{stem}.stderr"


def describe(txn: Transaction) -> str:
    """One line for a transaction: its calls and the longest window it left open."""
    parts = []
    for c in txn.calls:
        slot = c.old if c.kind == "delete" and c.old is not None else c.call
        size = slot.size
        parts.append(f"{c.kind.upper()} s{c.call.slot_id}@{c.call.gpa:#x}+{size:#x}")
    windows = txn.windows_us()
    window = f"  window {format_ns(max(windows) * 1000)}" if windows else ""
    return f"txn {txn.index:3} thread {txn.tid}: {', '.join(parts)}{window}"


def scenario_so_far(follower: TraceFollower, scenario: Path, command: str) -> Path:
    """The traffic followed so far as a scenario, written beside the one the watch ends with
    (``<stem>-<N>calls.toml``): the same importer, cut at the last complete trace line."""
    follower.poll()
    state = follower.state()
    if state is None:
        raise QemuError("QEMU has made no memslot call yet: nothing to run on the model")
    name = f"{scenario.stem}-{follower.calls}calls"
    result = import_trace(str(follower.path), name=name, command=command, imported=state)
    path = scenario.with_name(f"{scenario.stem}-{follower.calls}calls.toml")
    path.write_text(result.text)
    return path


def finish(
    qemu: QemuProcess, follower: TraceFollower, scenario: Path, stopped_by: str
) -> WatchResult:
    code = qemu.stop()
    follower.poll()
    if not follower.calls:
        why = qemu.last_error()
        raise QemuError(f"QEMU made no memslot call{f': {why}' if why else ''}")
    result = import_trace(str(follower.path), name=scenario.stem, command=" ".join(qemu.argv))
    scenario.write_text(result.text)
    imp = result.imported
    windows = [w for t in imp.transactions for w in t.windows_us()]
    return WatchResult(
        calls=len(imp.calls),
        creates=imp.count("create"),
        deletes=imp.count("delete"),
        flags_only=imp.count("flags"),
        transactions=len(imp.transactions),
        max_window_us=max(windows, default=0),
        windows_us=windows,
        vcpus=imp.vcpus,
        trace=str(follower.path),
        scenario=str(scenario),
        replay=f"slotlab run --scenario {scenario} --strategy STRATEGY  (or: slotlab tui --scenario {scenario})",
        stopped_by=stopped_by,
        qemu_exit=code,
        qemu_pid=qemu.pid,
    )


def watch(args: argparse.Namespace) -> WatchResult:
    """Run QEMU to its end, the duration or an interrupt; always stops QEMU."""
    with stop_signals() as stop:
        return _follow(args, stop)


def _follow(args: argparse.Namespace, stop: StopRequest) -> WatchResult:
    trace, scenario, stderr = output_paths(args.out)
    qemu = QemuProcess(qemu_command(args), trace, stderr)
    follower = TraceFollower(trace)
    deadline = time.monotonic() + args.duration / 1e9 if args.duration else None
    shown = 0
    try:
        while True:
            follower.poll()
            if not args.json:
                shown = _print_new(follower.state(), shown)
            code = qemu.exited()
            if code is not None:
                stopped_by = f"qemu exited with status {code}"
                break
            if deadline is not None and time.monotonic() >= deadline:
                stopped_by = "duration"
                break
            if stop.signum:
                stopped_by = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP: stop QEMU, keep what it did
                break
            time.sleep(POLL_S)
    except BaseException:
        qemu.stop()
        raise
    result = finish(qemu, follower, scenario, stopped_by)
    if not args.json:
        _print_new(follower.state(), shown, final=True)
    return result


def closed_transactions(state: Imported | None, final: bool) -> list[Transaction]:
    """The transactions that cannot grow any more: all but the last while QEMU runs, and
    the last too once the transaction gap has passed since its last call (QEMU stamps its
    lines with gettimeofday, the clock time.time() reads)."""
    if state is None:
        return []
    txns = state.transactions
    if final or not txns:
        return txns
    end = txns[-1].end_us
    quiet = end is not None and time.time() * 1e6 - end > DEFAULT_TXN_GAP_US
    return txns if quiet else txns[:-1]


def _print_new(state: Imported | None, shown: int, final: bool = False) -> int:
    closed = closed_transactions(state, final)
    for txn in closed[shown:]:
        print(describe(txn), flush=True)
    return max(shown, len(closed))


def cmd_qemu(args: argparse.Namespace) -> int:
    result = watch(args)
    if args.json:
        print(msgspec.json.encode(result).decode())
        return 0
    print(
        f"{result.calls} memslot calls ({result.creates} CREATE, {result.deletes} DELETE, "
        f"{result.flags_only} flags-only) in {result.transactions} transactions; longest window "
        f"{format_ns(result.max_window_us * 1000)}; stopped: {result.stopped_by}",
        file=sys.stderr,
    )
    print(f"trace: {result.trace}\nscenario: {result.scenario}\nreplay: {result.replay}")
    return 0
