"""The report as plain text (a mail to a kernel list) and as Markdown: the same content.

Plain text is ASCII, at most `width` columns, with no control characters but newlines, so it
survives any mail client. The timeline gives each actor a lane; a column is a slice of virtual
time, and when several things happen in one column the most serious shows.
"""

from __future__ import annotations

import textwrap

from engine.report.lanes import LEGEND, Lane
from engine.report.model import EventRow, Report, command_text
from engine.units import format_ns

LABEL = 9
"""Lane names take this many columns, then one space, then the plot."""
MAX_EVENTS = 40
MAX_VIOLATIONS = 3
SLICE_FILL = {"ioctl": "=", "gp": "~", "srcu_read": "-"}


def ascii_only(text: str) -> str:
    return text.encode("ascii", "replace").decode()


class Plot:
    def __init__(self, t0: int, t1: int, width: int) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1)
        self.cols = max(width - LABEL - 1, 10)

    def col(self, t: int) -> int:
        c = (t - self.t0) * self.cols // (self.t1 - self.t0)
        return min(max(c, 0), self.cols - 1)

    def visible(self, t0: int, t1: int) -> bool:
        return t1 >= self.t0 and t0 <= self.t1

    def lane(self, lane: Lane, glyphs: set[str]) -> str:
        """The lane's row; the instants' glyphs it shows are added to `glyphs`."""
        row = [" "] * self.cols
        weight = [0] * self.cols
        for s in lane.slices:
            if not self.visible(s.t0, s.t1):
                continue
            a, b = self.col(s.t0), self.col(s.t1)
            fill = SLICE_FILL.get(s.kind, "=")
            for c in range(a, b + 1):
                row[c] = fill
            if s.kind == "ioctl":
                row[a] = "["
                row[b] = ">" if s.open_end or s.t1 > self.t1 else "]"
                label = s.label
                if b - a - 1 >= len(label) + 2:
                    row[a + 2 : a + 2 + len(label)] = list(label)
        for i in lane.instants:
            if self.t0 <= i.t <= self.t1:
                c = self.col(i.t)
                if i.weight >= weight[c]:
                    row[c], weight[c] = i.glyph, i.weight
        glyphs.update(g for g, w in zip(row, weight, strict=True) if w)
        return f"{lane.name[:LABEL]:<{LABEL}} " + "".join(row).rstrip()

    def ruler(self) -> list[str]:
        step = 16 if self.cols >= 48 else 10
        ticks = list(range(0, self.cols, step))
        marks = [" "] * self.cols
        labels = [" "] * (self.cols + 12)
        for c in ticks:
            marks[c] = "+"
            text = format_ns(self.t0 + (self.t1 - self.t0) * c // self.cols)
            if c + len(text) <= self.cols:
                labels[c : c + len(text)] = list(text)
        rule = "".join(m if m == "+" else "-" for m in marks)
        pad = " " * (LABEL + 1)
        return [f"{'time':<{LABEL}} " + "".join(labels).rstrip(), pad + rule]

    def span_row(self, t0: int, t1: int, open_end: bool, label: str) -> str:
        row = [" "] * self.cols
        a, b = self.col(t0), self.col(t1)
        for c in range(a, b + 1):
            row[c] = "-"
        row[a] = "<" if t0 >= self.t0 else "-"
        row[b] = ">" if not open_end and t1 <= self.t1 else "-"
        if b - a - 1 >= len(label) + 2:
            start = a + (b - a - len(label)) // 2 + 1
            row[start : start + len(label)] = list(label)
        return f"{'window':<{LABEL}} " + "".join(row).rstrip()


def timeline(report: Report, width: int) -> list[str]:
    plot = Plot(report.window_t0, report.window_t1, width)
    out = plot.ruler()
    used: set[str] = set()
    for lane in report.lanes:
        line = plot.lane(lane, used)
        if line[LABEL + 1 :].strip() or lane.name in ("vmm", "srcu-gp"):
            out.append(line)
    for span in report.spans:
        if plot.visible(span.t0, span.t1):
            label = f"slot {span.slot} DELETE ... CREATE"
            out.append(plot.span_row(span.t0, span.t1, span.open_end, label))
    legend = [f"{g} {LEGEND[g]}" for g in LEGEND if g in used]
    cell = format_ns((plot.t1 - plot.t0) / plot.cols)
    out.append("")
    out += textwrap.wrap(f"one column = {cell}; [=] ioctl, ~ grace period, - SRCU read side", width)
    out += _columns(legend, width)
    return out


def _columns(items: list[str], width: int) -> list[str]:
    """Legend entries two to a line when they fit, else one."""
    colw = (width - 2) // 2
    if any(len(i) > colw - 1 for i in items):
        return items
    return [
        "".join(f"{i:<{colw}}" for i in items[k : k + 2]).rstrip() for k in range(0, len(items), 2)
    ]


def event_lines(rows: list[EventRow], width: int) -> list[str]:
    shown = rows
    if len(rows) > MAX_EVENTS:
        keep = MAX_EVENTS // 2
        shown = [*rows[:keep], *rows[-keep:]]
    out: list[str] = []
    for i, r in enumerate(shown):
        if len(rows) > MAX_EVENTS and i == MAX_EVENTS // 2:
            out.append(f"{'':>6} ... {len(rows) - MAX_EVENTS} events not shown ...")
        mark = "=>" if r.decisive else "  "
        head = f"{mark}{r.seq:>6} {format_ns(r.t):>7} {r.actor:<8} "
        out += textwrap.wrap(
            ascii_only(r.text),
            width,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_on_hyphens=False,
        ) or [head.rstrip()]
    return out


def command_lines(argv: list[str], width: int) -> list[str]:
    """The command, broken with backslashes where a shell would take it back."""
    lines: list[str] = []
    cur = "  "
    for word in command_text(argv).split(" "):
        # Room for the word, and for " \\" should the next one not fit.
        if cur.strip() and len(cur) + 1 + len(word) + 2 > width:
            lines.append(cur + " \\")
            cur = "      " + word
        else:
            cur += ("" if not cur.strip() else " ") + word
    lines.append(cur)
    return lines


def header_fields(r: Report) -> list[tuple[str, str]]:
    host = " ".join(f"{k}={v}" for k, v in r.host)
    return [
        ("Version", r.tool),
        ("Scenario", f"{r.scenario}: {r.scenario_summary}" if r.scenario_summary else r.scenario),
        ("Strategy", r.strategy),
        ("Seed", str(r.seed)),
        ("vCPUs", f"{r.vcpus}, {format_ns(r.duration_ns)} virtual"),
        ("Faults", ", ".join(r.faults) or "none"),
        ("Host", host),
    ]


def title(r: Report) -> str:
    return f"slotlab report: {r.verdict}, {r.scenario} / {r.strategy} / seed {r.seed}"


def _wrap(text: str, width: int, indent: str = "", first: str | None = None) -> list[str]:
    return textwrap.wrap(
        ascii_only(text),
        width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
    ) or [indent.rstrip()]


def violation_lines(r: Report, width: int) -> list[str]:
    out: list[str] = []
    for v in r.violations[:MAX_VIOLATIONS]:
        out += _wrap(v, width, "    ", first="  - ")
    if len(r.violations) > MAX_VIOLATIONS:
        out.append(f"  ... and {len(r.violations) - MAX_VIOLATIONS} more")
    return out


def render_text(r: Report, width: int = 72) -> str:
    out = [title(r), "=" * min(len(title(r)), width), ""]
    for key, value in header_fields(r):
        head = f"{key + ':':<10} "
        out += textwrap.wrap(
            ascii_only(value), width, initial_indent=head, subsequent_indent=" " * len(head)
        )
    out += ["", "Reproduce:", *command_lines(r.command, width), ""]
    out += [
        f"Verdict: {r.verdict}"
        + ("" if r.finished else " (re-judged: the log has no verdict line)")
    ]
    out += _wrap(r.explanation, width, "  ")
    out += violation_lines(r, width)
    out += ["", f"Timeline: {format_ns(r.window_t0)} .. {format_ns(r.window_t1)}"]
    out += _wrap(r.window_why, width, "  ")
    out += ["", *timeline(r, width), "", "Events in the window (=> the decisive one):"]
    out += event_lines(r.events, width)
    out += ["", "Counters:"]
    out += [f"  {k + ':':<17}{v}"[:width] for k, v in r.counters]
    return "\n".join(line.rstrip() for line in out) + "\n"


def render_md(r: Report, width: int = 72) -> str:
    out = [f"# {title(r)}", ""]
    out += [f"- **{k}**: {ascii_only(v)}" for k, v in header_fields(r)]
    out += ["", "Reproduce:", "", "```sh", *command_lines(r.command, width), "```", ""]
    rejudged = "" if r.finished else " (re-judged: the log has no verdict line)"
    out += [f"## Verdict: {r.verdict}{rejudged}", "", *_wrap(r.explanation, width), ""]
    out += violation_lines(r, width)
    if r.violations:
        out.append("")
    out += [f"## Timeline: {format_ns(r.window_t0)} .. {format_ns(r.window_t1)}", ""]
    out += [*_wrap(r.window_why, width), "", "```text", *timeline(r, width), "```", ""]
    out += ["## Events in the window (=> the decisive one)", "", "```text"]
    out += [*event_lines(r.events, width), "```", ""]
    out += ["## Counters", "", "| counter | value |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in r.counters]
    return "\n".join(line.rstrip() for line in out) + "\n"
