"""The `report` subcommand: its options and what it does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine import limits
from engine.log import read_log
from engine.units import parse_duration

FORMATS = ("text", "md", "html")


def _width(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 40 <= value <= 400:
        raise argparse.ArgumentTypeError(f"must be 40..400 columns, not {value}")
    return value


def _window(text: str) -> tuple[int, int]:
    first, sep, second = text.partition("..")
    if not sep:
        raise argparse.ArgumentTypeError(f"use T1..T2, e.g. 60us..75us, not {text!r}")
    try:
        t0 = 0 if first.strip() in ("", "0") else parse_duration(first)
        t1 = parse_duration(second)
        # No run is longer (limits.DURATION_NS): past it a window is a typo, not a view.
        limits.DURATION_NS.check(t1, "T2")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if t1 <= t0:
        raise argparse.ArgumentTypeError(f"T2 must be after T1 in {text!r}")
    return t0, t1


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an event seq: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an event seq is 0 or more, not {value}")
    return value


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="a session log as a report to paste into a mail (text), md or html",
        description="A report on one run: how to reproduce it, the verdict, a timeline of "
        "the window that matters with one lane per actor, the events and the counters.",
    )
    p.add_argument("log", metavar="LOG", help="a session log: plain, .gz or .zst, or - for stdin")
    p.add_argument("--format", choices=FORMATS, default="text", help="text, md or html")
    p.add_argument("--width", type=_width, default=72, help="columns of the text and md timeline")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--around",
        type=_seq,
        metavar="SEQ",
        help="show the events around this seq (default: the window that led to the "
        "verdict, or the first transaction for ok)",
    )
    where.add_argument(
        "--window",
        type=_window,
        metavar="T1..T2",
        help="show this span of virtual time, e.g. 60us..75us; T2 an hour at most",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")


def cmd_report(args: argparse.Namespace) -> int:
    from engine.report.model import build_report

    report = build_report(read_log(args.log), window=args.window, around=args.around)
    if args.format == "html":
        from engine.report.html import render_html

        text = render_html(report)
    elif args.format == "md":
        from engine.report.text import render_md

        text = render_md(report, args.width)
    else:
        from engine.report.text import render_text

        text = render_text(report, args.width)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
