"""The replay timeline: where the replay is in the recorded run, with its commands marked."""

from __future__ import annotations

from rich.segment import Segment
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from tui.format import format_ns, speed_text

BAR_LEFT = 2


class Timeline(Widget):
    """Two lines: a bar (click to jump) and the figures under it."""

    COMPONENT_CLASSES = {
        "timeline--done",
        "timeline--pending",
        "timeline--mark",
        "timeline--end",
        "timeline--text",
    }

    class Seek(Message):
        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(
        self, total: int, total_ns: int, marks: dict[int, str], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.total = max(total, 1)
        self.total_ns = total_ns
        self.marks = marks
        """event index -> glyph: c for a command, ! for an injection."""
        self.position = 0
        self.t_ns = 0
        self.speed = 0.0
        self.state = ""
        self.note = ""

    def set_position(self, position: int, t_ns: int, speed: float, state: str, note: str) -> None:
        key = (position, t_ns, speed, state, note)
        if key != (self.position, self.t_ns, self.speed, self.state, self.note):
            self.position, self.t_ns, self.speed, self.state, self.note = key
            self.refresh()

    def _cols(self) -> int:
        return max(self.size.width - BAR_LEFT * 2, 1)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        text = self.get_component_rich_style("timeline--text")
        if y == 0:
            cols = self._cols()
            filled = min(cols, self.position * cols // self.total)
            cells = [" "] * cols
            for index, glyph in self.marks.items():
                cells[min(cols - 1, index * cols // self.total)] = glyph
            segs = [Segment(" [", text)]
            done = self.get_component_rich_style("timeline--done")
            pending = self.get_component_rich_style("timeline--pending")
            mark = self.get_component_rich_style("timeline--mark")
            for i, ch in enumerate(cells):
                if ch != " ":
                    segs.append(Segment(ch, mark + (done if i < filled else pending)))
                else:
                    segs.append(
                        Segment("█" if i < filled else "·", done if i < filled else pending)
                    )
            segs.append(Segment("]", text))
            return Strip(segs).adjust_cell_length(width, text)
        if y == 1:
            line = (
                f"  event {self.position}/{self.total}  t={format_ns(self.t_ns)} / "
                f"{format_ns(self.total_ns)}  {speed_text(self.speed)}  {self.state}  {self.note}"
            )
            return Strip([Segment(line, text)]).adjust_cell_length(width, text)
        return Strip.blank(width, text)

    def on_click(self, event: events.Click) -> None:
        if event.y != 0:
            return
        col = event.x - BAR_LEFT
        cols = self._cols()
        if 0 <= col < cols:
            self.post_message(self.Seek(col * self.total // cols))
