"""The `export` subcommand's options. perfetto and chrome are written here; asciicast drives
the TUI, so the full `slotlab` command (tui.cli) takes it before the engine sees it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.log import read_log

FORMATS = ("perfetto", "chrome", "asciicast")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    cols, sep, rows = text.partition("x")
    if not sep or not cols.isdigit() or not rows.isdigit():
        raise argparse.ArgumentTypeError(f"use COLSxROWS, e.g. 120x40, not {text!r}")
    size = int(cols), int(rows)
    if not (80 <= size[0] <= 400 and 24 <= size[1] <= 200):
        raise argparse.ArgumentTypeError(f"the TUI needs 80..400 x 24..200, not {text}")
    return size


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="a session log as a Perfetto/Chrome trace or an asciicast of the TUI replaying it",
    )
    p.add_argument("log", metavar="LOG", help="a session log: plain, .gz or .zst, or - for stdin")
    p.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="perfetto: a Perfetto protobuf trace (ui.perfetto.dev); chrome: the Chrome JSON "
        "trace format (chrome://tracing, Perfetto too); asciicast: a recording of the TUI "
        "replaying the log",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="write here (default: stdout)")
    p.add_argument(
        "--asciicast-version",
        type=int,
        choices=(2, 3),
        default=2,
        help="asciicast format version",
    )
    p.add_argument(
        "--speed",
        type=_positive_float,
        default=1e-4,
        help="asciicast: virtual seconds replayed per recorded second",
    )
    p.add_argument(
        "--size", type=_size, default=(120, 40), metavar="COLSxROWS", help="asciicast: terminal"
    )
    p.add_argument(
        "--fps", type=_positive_float, default=10.0, help="asciicast: frames per recorded second"
    )


def write_output(data: bytes, output: str | None) -> None:
    if output:
        Path(output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "asciicast":
        raise ValueError(
            "export --format asciicast records the TUI: run it with the `slotlab` command"
        )
    log = read_log(args.log)
    if args.format == "perfetto":
        from engine.export.perfetto import perfetto_trace

        write_output(perfetto_trace(log), args.output)
    else:
        from engine.export.chrome import encode

        write_output(encode(log), args.output)
    return 0
