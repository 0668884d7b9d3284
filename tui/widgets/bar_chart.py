"""Horizontal bars for the compare matrix: crash rate and update latency per strategy."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.api import MatrixRow
from tui.format import format_ns

BAR = 30


def _bar(fraction: float, width: int) -> str:
    """Eighth-block resolution, so small differences still show."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")).ljust(width, "·")


class BarChart(Static):
    """Bars for the matrix rows: crash rate (of 100 %) and p99 update latency (of the worst)."""

    COMPONENT_CLASSES = {"chart--crash", "chart--ok", "chart--latency", "chart--head"}

    def show_rows(self, rows: list[MatrixRow]) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        if not rows:
            self.update(Text("no results yet", style="dim"))
            return
        name_w = max(len(r.strategy) for r in rows) + 1
        worst = max((r.latency_p99_ns for r in rows), default=0) or 1
        head = self.get_component_rich_style("chart--head")
        text.append(f"{'':<{name_w}} crash rate{'':<{BAR - 4}}update p99 latency\n", style=head)
        for r in rows:
            crash = float(r.crash_rate)
            style = self.get_component_rich_style("chart--crash" if crash > 0 else "chart--ok")
            text.append(f"{r.strategy:<{name_w}} ")
            text.append(_bar(crash, BAR), style=style)
            text.append(f" {crash:>4.0%}  ")
            text.append(
                _bar(r.latency_p99_ns / worst, BAR // 2),
                style=self.get_component_rich_style("chart--latency"),
            )
            text.append(f" {format_ns(r.latency_p99_ns)}\n")
        self.update(text)
