"""The `slotlab` command: the TUI, the browser view and a TUI replay; everything else is the
engine's headless CLI (engine.cli), which never imports the TUI.

    slotlab                        the TUI: pam-shadow under legacy, slow motion; `r` arms the race
    slotlab tui [options]          the TUI with a scenario, strategy, seed, speed of your choice
    slotlab --break delete         the TUI, stopping at the first DELETE (b edits breakpoints)
    slotlab serve [--host H] [--port P] [tui options]
    slotlab replay LOG [--speed F] [--paused]     the TUI on a recorded session
    slotlab replay LOG --verify    headless verification (engine.cli)
    slotlab export LOG --format asciicast    a recording of the TUI replaying LOG
    slotlab completion bash|zsh|fish         a shell completion script
    slotlab man                    the man page (roff), generated from this parser
    slotlab qemu [--duration D] -- QEMU...   a real QEMU's memslots, live (--json: engine.cli)
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Sequence

from engine.api import (
    BREAKPOINT_KINDS,
    limits,
    open_replay,
    parse_breakpoint,
    register_bench_group,
    validate,
)
from engine.api import headless_cli as engine_cli
from engine.vmm.strategies import STRATEGIES
from tui.options import DEFAULT_SCENARIO, DEFAULT_SPEED, LaunchOptions

EXAMPLES = "examples:\n" + "\n".join(
    line for line in (__doc__ or "").splitlines() if line.startswith("    slotlab")
)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
THEME_NAMES = {"dark": "textual-dark", "light": "textual-light"}


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or inf, not {text!r}") from None
    if not value > 0 or math.isnan(value):
        raise argparse.ArgumentTypeError("speed must be positive (virtual seconds per wall second)")
    return value


def _breakpoint(text: str) -> str:
    try:
        return parse_breakpoint(text).text()
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_break_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--break",
        dest="breaks",
        action="append",
        type=_breakpoint,
        default=[],
        metavar="KIND[=ARG]",
        help=f"stop at the next such event (repeatable; b edits them): {', '.join(BREAKPOINT_KINDS)}",
    )


def add_tui_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        default=DEFAULT_SCENARIO,
        help=f"built-in name or path to a .toml (default {DEFAULT_SCENARIO})",
    )
    p.add_argument(
        "--strategy",
        default="legacy",
        choices=list(STRATEGIES),
        metavar="STRATEGY",
        help=f"the VMM's update strategy: {', '.join(STRATEGIES)}",
    )
    p.add_argument("--seed", type=engine_cli.SEED, default=1, help="the run's seed")
    p.add_argument(
        "--backend",
        choices=("model", "kvm"),
        default="model",
        help="the modelled kernel, or this machine's /dev/kvm",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=DEFAULT_SPEED,
        help=f"virtual seconds per wall second (default {DEFAULT_SPEED:g}; inf = flat out)",
    )
    p.add_argument("--paused", action="store_true", help="start paused (space steps)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="start paused just before the first DELETE, with a hint of what to press",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=None,
        metavar="NAME[=ARGS]",
        help="arm a fault (repeatable; default: none, `r` arms the race)",
    )
    p.add_argument("--no-faults", action="store_true", help="arm no fault")
    p.add_argument("--faults", metavar="FILE", help="scripted faults: lines of `TIME NAME[=ARGS]`")
    p.add_argument(
        "--vcpus", type=engine_cli.VCPUS, default=None, help="1..1024 (default: the scenario's)"
    )
    p.add_argument(
        "--duration",
        type=engine_cli._duration,
        default=None,
        help="virtual time, e.g. 10ms, an hour at most (default: the scenario's)",
    )
    p.add_argument(
        "--host",
        action="append",
        type=engine_cli._host_opt,
        default=[],
        metavar="KEY=VALUE",
        help="a model host option (repeatable), e.g. nr_memslots=16",
    )
    p.add_argument(
        "--log",
        metavar="PATH",
        help="session log path; .gz or .zst compresses (default: sessions/...)",
    )
    p.add_argument("--no-log", action="store_true", help="do not record the session")
    add_break_option(p)
    add_display_options(p)


def add_display_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--theme", choices=list(THEME_NAMES), default=None, help="(default: Textual's own)"
    )
    p.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal")


def _port(text: str) -> int:
    value: int = limits.PORT.argtype()(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole `slotlab` command: the engine's headless commands plus the TUI's; --help,
    the completion scripts and the man page all come from this one parser."""
    parser = engine_cli.build_parser()
    parser.description = (
        "Watch, break and explain KVM memslot updates. With no command: the TUI "
        f"({DEFAULT_SCENARIO} under legacy, slow motion; r arms the race)."
    )
    parser.epilog = f"{EXAMPLES}\n\n{engine_cli.EXIT_STATUS_EPILOG}"
    sub = engine_cli.subcommands(parser)
    add_tui_options(sub.add_parser("tui", help="the monitor (the default command)"))
    serve = sub.add_parser(
        "serve",
        help="the TUI in a browser (textual-serve); takes the tui options too",
    )
    serve.add_argument("--host", dest="bind", default=DEFAULT_HOST, help="the address to listen on")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="the port to listen on")
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="beyond loopback, serve without the token (anyone reaching the port gets the TUI)",
    )
    replay = sub.choices["replay"]
    replay.add_argument(
        "--speed",
        type=_speed,
        default=DEFAULT_SPEED,
        help="TUI: virtual seconds per wall second (inf = flat out)",
    )
    replay.add_argument("--paused", action="store_true", help="TUI: start paused")
    add_break_option(replay)
    add_display_options(replay)
    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="for which shell")
    sub.add_parser("man", help="print the man page (roff); view it with `man -l -`")
    _complete_files(parser)
    return parser


def _complete_files(parser: argparse.ArgumentParser) -> None:
    """Paths complete as files in every shell (shtab reads `complete` off each action)."""
    import shtab

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _complete_files(child)
        elif action.dest in ("log", "faults", "output", "out", "summary"):
            # shtab reads `complete` off argparse's actions, which declare no such attribute.
            action.complete = shtab.FILE  # type: ignore[attr-defined]


def options_from_args(args: argparse.Namespace) -> LaunchOptions:
    if args.vcpus is not None:
        limits.VCPUS.check(args.vcpus, "--vcpus")
    for key, value in args.host:
        limits.check_host_option(key, value, f"--host {key}")
    faults = [] if args.no_faults or args.fault is None else args.fault
    opts = LaunchOptions(
        scenario=args.scenario,
        strategy=args.strategy,
        seed=args.seed,
        speed=args.speed,
        paused=args.paused or args.demo,
        demo=args.demo,
        faults=faults,
        faults_file=args.faults,
        vcpus=args.vcpus,
        duration_ns=args.duration,
        host=dict(args.host),
        record=not args.no_log,
        log_path=args.log,
        theme=THEME_NAMES[args.theme] if args.theme else None,
        backend=args.backend,
        breaks=list(args.breaks),
    )
    opts.config()  # every check a run makes, before the terminal changes mode
    return opts


def spool_stdin_for_tui() -> str:
    """`zcat x.gz | slotlab replay -`: the piped log goes to a temporary file, and the TUI then
    takes its keys from the terminal (/dev/tty), as `less` does."""
    import atexit
    import os
    import tempfile

    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError as err:
        raise ValueError(
            f"replay -: no terminal to take keys from (/dev/tty: {err.strerror}); "
            "give a file, or use --verify"
        ) from None
    data = sys.stdin.buffer.read()
    fd, path = tempfile.mkstemp(prefix="slotlab-stdin-", suffix=".jsonl")
    with os.fdopen(fd, "wb") as spool:
        spool.write(data)  # compressed or not: the reader recognises it by its magic bytes
    atexit.register(os.unlink, path)
    os.dup2(tty, sys.stdin.fileno())
    os.close(tty)
    return path


def check_backend(options: LaunchOptions) -> None:
    """The real /dev/kvm must be usable and able to run this scenario and strategy (one line
    saying why not, before the terminal changes mode)."""
    if options.backend != "kvm":
        return
    validate(options.config(), options.backend)


def check_keymap_env() -> None:
    """A keymap with an unknown id or a clash is one line and status 2, before the terminal
    changes mode (KeymapError is a ValueError)."""
    from tui.app import SlotlabApp
    from tui.bindings import binding_scopes
    from tui.keymap import load_keymap

    load_keymap(scopes=binding_scopes(SlotlabApp))


def run_app(options: LaunchOptions, mouse: bool = True) -> int:
    from tui import hostloop
    from tui.app import SlotlabApp

    check_keymap_env()
    app = SlotlabApp(options)
    hostloop.run(app.run_async(mouse=mouse))
    if app.engine_error:
        where = f"; session log: {app.error_log}" if app.error_log else ""
        print(f"slotlab: the engine failed: {app.engine_error}{where}", file=sys.stderr)
        return 1
    if app.interrupted_by:
        print("slotlab: interrupted", file=sys.stderr)
    return app.return_code or 0


def serve_command(passthrough: Sequence[str]) -> str:
    """The command textual-serve starts for each browser tab."""
    return shlex.join([sys.executable, "-m", "tui.cli", "tui", *passthrough])


def cmd_serve(argv: Sequence[str]) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(["serve", *argv])
    tui_parser = engine_cli.Parser(prog="slotlab serve")
    add_tui_options(tui_parser)
    check_backend(options_from_args(tui_parser.parse_args(rest)))
    check_keymap_env()
    from tui.serve import serve

    serve(serve_command(rest), args.bind, args.port, args.no_auth)
    return 0


def register_bench() -> None:
    """The TUI's benchmark group joins the engine's suite (the engine cannot import it)."""
    register_bench_group("tui", "tui.bench", "run_tui_benchmarks")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return engine_cli.guarded(lambda: _dispatch(args))


def _dispatch(args: list[str]) -> int:
    if not args:
        return run_app(LaunchOptions())
    if args[0].startswith("--break"):
        args = ["tui", *args]  # `slotlab --break delete`: the default TUI, with breakpoints
    if args[0] == "serve":
        return cmd_serve(args[1:])
    if args[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0
    ns = build_parser().parse_args(args)
    command = ns.command
    if command == "tui":
        options = options_from_args(ns)
        check_backend(options)
        return run_app(options, mouse=not ns.no_mouse)
    if command == "completion":
        import shtab

        print(shtab.complete(build_parser(), shell=ns.shell))
        return 0
    if command == "man":
        from argparse_manpage.manpage import Manpage

        from engine.api import VERSION

        data = {"project_name": "slotlab", "version": VERSION}
        sys.stdout.write(str(Manpage(build_parser(), _data=data)))
        return 0
    if command == "export" and ns.format == "asciicast":
        from engine.api import write_output
        from tui.asciicast import export_asciicast

        cast = export_asciicast(ns.log, ns.size, ns.speed, ns.fps, ns.asciicast_version)
        write_output(cast, ns.output)
        return 0
    if command == "replay" and not ns.verify:
        if ns.log == "-":
            ns.log = spool_stdin_for_tui()
        open_replay(ns.log)  # a bad log is one line and status 2, before the TUI starts
        options = LaunchOptions(
            replay=ns.log,
            speed=ns.speed,
            paused=ns.paused,
            theme=THEME_NAMES[ns.theme] if ns.theme else None,
            breaks=list(ns.breaks),
        )
        return run_app(options, mouse=not ns.no_mouse)
    if command == "qemu" and "--json" not in args[: args.index("--") if "--" in args else None]:
        return run_qemu_tui(engine_cli.build_parser().parse_args(args))
    if command == "bench":
        register_bench()
    return engine_cli.dispatch(ns)


def run_qemu_tui(ns: argparse.Namespace) -> int:
    """`slotlab qemu -- QEMU...` with the live view; QEMU never outlives it."""
    from engine.api import QemuProcess, output_paths, qemu_command
    from tui import hostloop
    from tui.qemu_watch import QemuWatchApp

    trace, scenario, stderr = output_paths(ns.out)
    # A refusal (no QEMU, no trace backend, -D given) is one line, before the terminal changes.
    qemu = QemuProcess(qemu_command(ns), trace, stderr)
    app = QemuWatchApp(qemu, scenario, ns.duration)
    try:
        code = hostloop.run(app.run_async())
    finally:
        qemu.stop()
    if app.result is None:
        print(
            f"slotlab: {app.error or 'QEMU was stopped before its first memslot call'}",
            file=sys.stderr,
        )
        return 2
    r = app.result
    print(
        f"{r.calls} memslot calls ({r.creates} CREATE, {r.deletes} DELETE, {r.flags_only} "
        f"flags-only) in {r.transactions} transactions; stopped: {r.stopped_by}\n"
        f"trace: {r.trace}\nscenario: {r.scenario}\nreplay: {r.replay}"
    )
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
