"""Benchmarks: measurements of slotlab itself, not tests.

Every group returns a list of Measure records. A target is always a ratio of two figures taken
in the same run, so a busy or slow machine moves both sides together and the verdict stays
meaningful where an absolute time would not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Measure"]


@dataclasses.dataclass(frozen=True, slots=True)
class Measure:
    """One figure, and optionally the target it is held to."""

    name: str
    value: float
    unit: str
    target: str = ""
    """What is asked of the figure, in words; empty when it is informative only."""
    ratio: float | None = None
    """The quantity the target is about (often value itself)."""
    limit: float | None = None
    at_least: bool = False
    """The target is ratio >= limit (a throughput) rather than ratio <= limit (a cost)."""

    @property
    def met(self) -> bool | None:
        """None when there is nothing to meet; otherwise whether ratio is within limit."""
        if not self.target or self.ratio is None or self.limit is None:
            return None
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit

    def figure(self) -> str:
        """The value with its unit, to about three significant digits."""
        value = self.value
        size = abs(value)
        if size >= 1000:
            text = f"{value:,.0f}"
        elif size >= 100:
            text = f"{value:.0f}"
        elif size >= 10:
            text = f"{value:.1f}"
        else:
            text = f"{value:.2f}"
        return f"{text} {self.unit}" if self.unit else text

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["met"] = self.met
        return out


def format_table(measures: list[Measure]) -> str:
    """A plain-text table, for entry points that do without Rich."""
    rows = [("measure", "figure", "met", "target")]
    verdict = {True: "yes", False: "NO", None: "-"}
    rows += [(m.name, m.figure(), verdict[m.met], m.target) for m in measures]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, (name, fig, met, target) in enumerate(rows):
        lines.append(
            f"{name:<{widths[0]}}  {fig:>{widths[1]}}  {met:^{widths[2]}}  {target}".rstrip()
        )
        if i == 0:
            lines.append("-" * (sum(widths) + 4 + max(len(r[3]) for r in rows) + 2))
    return "\n".join(lines)
