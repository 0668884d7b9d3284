"""The report as one self-contained html file: the text report's content, with the timeline
drawn as inline SVG. No script, no external font, stylesheet or image: it opens offline and
can be attached to a mail or a bug."""

from __future__ import annotations

from html import escape

from engine.report.lanes import FATAL, LEGEND, NOTABLE, Lane
from engine.report.model import Report
from engine.report.text import command_lines, header_fields, title
from engine.units import format_ns

PLOT_W = 900
LABEL_W = 90
LANE_H = 26
TOP = 34

STYLE = """
body { font-family: sans-serif; max-width: 1040px; margin: 2em auto; color: #222; }
pre, code, svg text { font-family: monospace; }
pre { background: #f4f4f4; padding: .6em; overflow-x: auto; }
table { border-collapse: collapse; }
td, th { border-bottom: 1px solid #ddd; padding: .2em .8em; text-align: left; }
.verdict-ok { color: #1a7f37; } .verdict-crashed { color: #c62828; }
.verdict-livelock { color: #b26a00; } .verdict-violation { color: #8e24aa; }
tr.decisive { background: #ffe0e0; font-weight: bold; }
svg { border: 1px solid #ccc; background: #fff; }
"""
SLICE_COLOUR = {"ioctl": "#4a78c2", "gp": "#8e6fc1", "srcu_read": "#9ccc9c"}
WEIGHT_COLOUR = {FATAL: "#d32f2f", NOTABLE: "#ef8f00"}


def _svg(r: Report) -> str:
    t0, t1 = r.window_t0, max(r.window_t1, r.window_t0 + 1)
    lanes = [lane for lane in r.lanes if _visible(lane, t0, t1) or lane.name == "vmm"]
    height = TOP + LANE_H * (len(lanes) + 1) + 10
    width = LABEL_W + PLOT_W + 20

    def x(t: int) -> float:
        return LABEL_W + (min(max(t, t0), t1) - t0) * PLOT_W / (t1 - t0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline">'
    ]
    for k in range(11):
        tx = LABEL_W + PLOT_W * k / 10
        label = format_ns(t0 + (t1 - t0) * k // 10)
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 8}" x2="{tx:.1f}" y2="{height - 6}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{TOP - 14}" font-size="10" text-anchor="middle">{label}</text>'
        )
    bottom = TOP + LANE_H * len(lanes)
    for span in r.spans:
        if span.t1 >= t0 and span.t0 <= t1:
            a, b = x(span.t0), x(span.t1)
            out.append(
                f'<rect class="window" x="{a:.1f}" y="{TOP - 6}" width="{max(b - a, 1):.1f}" '
                f'height="{bottom - TOP + 6}" fill="#ffcdd2" fill-opacity="0.45">'
                f"<title>slot {span.slot}: DELETE ... CREATE</title></rect>"
            )
            out.append(
                f'<text x="{(a + b) / 2:.1f}" y="{bottom + 16}" font-size="11" '
                f'text-anchor="middle" fill="#c62828">slot {span.slot} DELETE ... CREATE</text>'
            )
    for n, lane in enumerate(lanes):
        y = TOP + n * LANE_H
        out.append(f'<text x="4" y="{y + 16}" font-size="12">{escape(lane.name)}</text>')
        out.append(
            f'<line x1="{LABEL_W}" y1="{y + LANE_H}" x2="{LABEL_W + PLOT_W}" y2="{y + LANE_H}" stroke="#f0f0f0"/>'
        )
        for s in lane.slices:
            if s.t1 < t0 or s.t0 > t1:
                continue
            a, b = x(s.t0), x(s.t1)
            colour = SLICE_COLOUR.get(s.kind, "#888")
            out.append(
                f'<rect class="slice {s.kind}" x="{a:.1f}" y="{y + 5}" width="{max(b - a, 1.5):.1f}" '
                f'height="{LANE_H - 10}" fill="{colour}" rx="2"><title>{escape(s.label)} '
                f"({format_ns(s.t0)} .. {format_ns(s.t1)})</title></rect>"
            )
            if s.kind == "ioctl" and b - a > 7 * len(s.label):
                out.append(
                    f'<text x="{a + 4:.1f}" y="{y + 17}" font-size="11" fill="#fff">{escape(s.label)}</text>'
                )
        for i in lane.instants:
            if not t0 <= i.t <= t1:
                continue
            colour = WEIGHT_COLOUR.get(i.weight, "#555")
            out.append(
                f'<g class="instant"><line x1="{x(i.t):.1f}" y1="{y + 3}" x2="{x(i.t):.1f}" '
                f'y2="{y + LANE_H - 3}" stroke="{colour}" stroke-width="2"/>'
                f'<text x="{x(i.t) + 2:.1f}" y="{y + 11}" font-size="9" fill="{colour}">'
                f"{escape(i.glyph)}</text><title>seq {i.seq} at {format_ns(i.t)}: "
                f"{escape(i.label)}</title></g>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _visible(lane: Lane, t0: int, t1: int) -> bool:
    return any(s.t1 >= t0 and s.t0 <= t1 for s in lane.slices) or any(
        t0 <= i.t <= t1 for i in lane.instants
    )


def _glyphs(r: Report) -> set[str]:
    t0, t1 = r.window_t0, r.window_t1
    return {i.glyph for lane in r.lanes for i in lane.instants if t0 <= i.t <= t1}


def render_html(r: Report) -> str:
    e = escape
    shown = _glyphs(r)
    verdict_class = f"verdict-{r.verdict}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title(r))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(title(r))}</h1>",
        "<table>",
        *(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in header_fields(r)),
        "</table>",
        "<p>Reproduce:</p>",
        f"<pre>{e(chr(10).join(command_lines(r.command, 100)))}</pre>",
        f'<h2>Verdict: <span class="{verdict_class}">{e(r.verdict)}</span></h2>',
        f"<p>{e(r.explanation)}</p>",
    ]
    if not r.finished:
        out.append("<p>(re-judged: the log has no verdict line)</p>")
    if r.violations:
        out += ["<ul>", *(f"<li>{e(v)}</li>" for v in r.violations[:5]), "</ul>"]
    out += [
        f"<h2>Timeline: {format_ns(r.window_t0)} .. {format_ns(r.window_t1)}</h2>",
        f"<p>{e(r.window_why)}</p>",
        _svg(r),
        "<p>Bars: ioctls (blue), grace periods (purple), SRCU read side (green); "
        "marks: faults, exits and memslot steps (red: fatal). "
        + "; ".join(f"<code>{e(g)}</code> {e(t)}" for g, t in LEGEND.items() if g in shown)
        + "</p>",
        "<h2>Events in the window</h2>",
        "<table><tr><th>seq</th><th>t</th><th>actor</th><th>event</th></tr>",
    ]
    for row in r.events:
        cls = ' class="decisive"' if row.decisive else ""
        out.append(
            f"<tr{cls}><td>{row.seq}</td><td>{format_ns(row.t)}</td>"
            f"<td>{e(row.actor)}</td><td>{e(row.text)}</td></tr>"
        )
    out += ["</table>", "<h2>Counters</h2>", "<table>"]
    out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in r.counters]
    out += ["</table>", "</body></html>"]
    return "\n".join(out) + "\n"
