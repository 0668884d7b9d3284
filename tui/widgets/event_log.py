"""The event log: live, filterable, pausable; the selected event's fields in a pane.

Events are kept as the engine emitted them and formatted only when a line is drawn (or when
a filter has to read it), so a fast run costs the log little more than appending references.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from engine import events as ev
from tui.format import event_details, event_summary, format_ns, kind_of

KEEP = 5000
_KIND_CLASS: dict[type[ev.Event], str] = {
    ev.Fault: "log--fault",
    ev.Exit: "log--exit",
    ev.UdInjected: "log--bad",
    ev.VmStopped: "log--bad",
    ev.Violation: "log--bad",
    ev.ReaderUseAfterFree: "log--bad",
    ev.SrcuUnlockMismatch: "log--bad",
    ev.SrcuLock: "log--srcu",
    ev.SrcuUnlock: "log--srcu",
    ev.SrcuGp: "log--srcu",
    ev.IoctlEnter: "log--ioctl",
    ev.IoctlExit: "log--ioctl",
    ev.MemslotChange: "log--slots",
    ev.SwapPublish: "log--slots",
    ev.SwapDone: "log--slots",
    ev.Zap: "log--slots",
    ev.Command: "log--command",
    ev.Injected: "log--command",
}


def parse_filter(text: str) -> list[tuple[bool, str]]:
    """Words that must all appear (case-insensitive); a leading '-' means must not."""
    terms = []
    for word in text.lower().split():
        if word.startswith("-") and len(word) > 1:
            terms.append((False, word[1:]))
        else:
            terms.append((True, word))
    return terms


class EventLog(Widget, can_focus=True):
    """Recent events, newest at the bottom; follows the run unless paused or scrolled.

    A fixed window over the events rather than a ScrollView: a scrollable widget whose
    height grew with every event would force a layout of the whole screen every frame. The
    last line says where the window is.
    """

    COMPONENT_CLASSES = {
        "log--time",
        "log--text",
        "log--cursor",
        "log--fault",
        "log--exit",
        "log--bad",
        "log--srcu",
        "log--ioctl",
        "log--slots",
        "log--command",
        "log--status",
    }
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False, id="log-up"),
        Binding("down,j", "move(1)", "Down", show=False, id="log-down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="log-page-up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="log-page-down"),
        Binding("home", "first", "First", show=False, id="log-first"),
        Binding("end", "last", "Last (follow)", show=False, id="log-last"),
        Binding("enter", "choose", "Details", show=False, id="log-details"),
    ]

    class Selected(Message):
        """The highlighted event changed (cursor or click)."""

        def __init__(self, log: EventLog, event: ev.Event | None, chosen: bool) -> None:
            super().__init__()
            self.log = log
            self.event = event
            self.chosen = chosen

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._events: deque[ev.Event] = deque(maxlen=KEEP)
        self._last_seq = -1
        self._terms: list[tuple[bool, str]] = []
        self._filter_text = ""
        self._visible: list[ev.Event] = []
        self._texts: LRUCache[int, str] = LRUCache(KEEP * 2)
        self._strips: LRUCache[tuple[Hashable, int], Strip] = LRUCache(1024)
        self._styles: dict[str, Style] = {}
        self._top = 0
        self.follow = True
        self.paused = False
        self._cursor_seq = -1

    # --- feeding --------------------------------------------------------------------------

    def reset(self) -> None:
        self._events.clear()
        # Both caches are keyed by seq, and a new session numbers its events from 0 again.
        self._texts.clear()
        self._strips.clear()
        self._visible = []
        self._last_seq = -1
        self._cursor_seq = -1
        self.follow = True
        self._changed()

    def ingest(self, recent: Iterable[ev.Event]) -> None:
        """Take the events newer than the last one seen (unless the log is paused)."""
        if self.paused:
            return
        last = self._last_seq
        fresh = [e for e in recent if e.seq > last]
        if not fresh:
            return
        self._last_seq = fresh[-1].seq
        self._events.extend(fresh)
        if self._terms:
            self._visible.extend(e for e in fresh if self._matches(e))
            if len(self._visible) > KEEP:
                del self._visible[: len(self._visible) - KEEP]
        else:
            self._visible = list(self._events)
        self._changed()

    def set_filter(self, text: str) -> None:
        self._filter_text = text
        self._terms = parse_filter(text)
        self._visible = [e for e in self._events if self._matches(e)]
        self._changed()

    @property
    def filter_text(self) -> str:
        return self._filter_text

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        if not self.paused:
            self.follow = True
        self._changed()
        return self.paused

    def _text(self, event: ev.Event) -> str:
        text = self._texts.get(event.seq)
        if text is None:
            text = f"{kind_of(event)} {event_summary(event)}"
            self._texts.set(event.seq, text)
        return text

    def _matches(self, event: ev.Event) -> bool:
        text = self._text(event).lower()
        return all((word in text) == want for want, word in self._terms)

    # --- the window -------------------------------------------------------------------------

    @property
    def visible_events(self) -> list[ev.Event]:
        return self._visible

    @property
    def window(self) -> list[ev.Event]:
        """The events on screen now, top to bottom."""
        return self._visible[self._top : self._top + self._lines]

    @property
    def _lines(self) -> int:
        return max(self.size.height - 1, 1)

    def _clamp_top(self) -> None:
        last_top = max(0, len(self._visible) - self._lines)
        self._top = last_top if self.follow else min(max(self._top, 0), last_top)

    def _changed(self) -> None:
        self._clamp_top()
        self.refresh()

    def on_resize(self) -> None:
        self._changed()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._strips.clear()

    def _style(self, name: str) -> Style:
        # "" is the widget's own style: Widget.rich_style walks the DOM on every call.
        style = self._styles.get(name)
        if style is None:
            style = self.rich_style if not name else self.get_component_rich_style(name)
            self._styles[name] = style
        return style

    @property
    def selected(self) -> ev.Event | None:
        index = self._index_of(self._cursor_seq)
        return None if index < 0 else self._visible[index]

    def _index_of(self, seq: int) -> int:
        if seq < 0:
            return -1
        visible = self._visible
        lo, hi = 0, len(visible)
        while lo < hi:
            mid = (lo + hi) // 2
            if visible[mid].seq < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < len(visible) and visible[lo].seq == seq else -1

    # --- drawing ------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == self._lines:
            return self._status(width)
        index = self._top + y
        if index >= len(self._visible):
            return Strip.blank(width, self._style(""))
        event = self._visible[index]
        key = (event.seq, event.seq == self._cursor_seq)
        strip = self._strips.get((key, width))
        if strip is None:
            strip = self._event_line(event, key[1], width)
            self._strips.set((key, width), strip)
        return strip

    def _event_line(self, event: ev.Event, selected: bool, width: int) -> Strip:
        style = self._style(_KIND_CLASS.get(type(event), "log--text"))
        time_style = self._style("log--time")
        if selected:
            cursor = self._style("log--cursor")
            style, time_style = style + cursor, time_style + cursor
        stamp = f"{format_ns(event.t):>9} #{event.seq:<6}"
        kind = f" {kind_of(event):<13} "
        summary = event_summary(event)
        segments = [Segment(stamp, time_style), Segment(kind, style), Segment(summary, style)]
        fill = style if selected else self._style("")
        # Padded here and built once: flat out, every line on screen is new at every frame,
        # and Strip.adjust_cell_length() would build a second Strip per line.
        length = len(stamp) + len(kind) + cell_len(summary)
        if length > width:
            return Strip(segments).adjust_cell_length(width, fill)
        segments.append(Segment(" " * (width - length), fill))
        return Strip(segments, width)

    def _status(self, width: int) -> Strip:
        total = len(self._visible)
        shown = (
            f"{self._top + 1}-{min(total, self._top + self._lines)} of {total}" if total else "0"
        )
        state = (
            "PAUSED (l resumes)"
            if self.paused
            else ("following" if self.follow else "scrolled (end follows)")
        )
        filt = f"  filter: {self._filter_text} (esc clears)" if self._filter_text else "  / filters"
        text = f" -- events {shown}, {state}{filt}"
        return Strip([Segment(text, self._style("log--status"))]).adjust_cell_length(
            width, self._style("")
        )

    # --- moving -------------------------------------------------------------------------------

    def _show_index(self, index: int) -> None:
        if index < self._top:
            self._top = index
        elif index >= self._top + self._lines:
            self._top = index - self._lines + 1

    def select_seq(self, seq: int, chosen: bool = False) -> None:
        index = self._index_of(seq)
        if index < 0:
            return
        self._cursor_seq = seq
        self.follow = False
        if not self._top <= index < self._top + self._lines:
            self._top = index - self._lines // 2
        self._changed()
        self.post_message(self.Selected(self, self._visible[index], chosen))

    def action_move(self, delta: int) -> None:
        if not self._visible:
            return
        current = self._index_of(self._cursor_seq)
        if current < 0:
            current = min(len(self._visible), self._top + self._lines)
        index = min(max(current + delta, 0), len(self._visible) - 1)
        event = self._visible[index]
        self._cursor_seq = event.seq
        self.follow = False
        self._show_index(index)
        self._changed()
        self.post_message(self.Selected(self, event, False))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * self._lines)

    def action_first(self) -> None:
        if self._visible:
            self.action_move(-len(self._visible))

    def action_last(self) -> None:
        self._cursor_seq = -1
        self.follow = True
        self._changed()
        self.post_message(self.Selected(self, None, False))

    def action_choose(self) -> None:
        event = self.selected
        if event is not None:
            self.post_message(self.Selected(self, event, True))

    def on_click(self, event: events.Click) -> None:
        index = self._top + event.y
        if event.y < self._lines and 0 <= index < len(self._visible):
            self.select_seq(self._visible[index].seq, chosen=event.chain > 1)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        event.stop()
        self.follow = False
        self._top -= 3
        self._changed()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        event.stop()
        self._top += 3
        if self._top >= len(self._visible) - self._lines:
            self.follow = True
        self._changed()


class EventDetail(Static):
    """Every field of the selected event."""

    def show_event(self, event: ev.Event | None) -> None:
        if event is None:
            self.update(Text("Select an event (up/down, click) to see its fields.", style="dim"))
            return
        text = Text()
        for key, value in event_details(event):
            text.append(f"{key:>16}  ", style=Style(bold=True))
            text.append(f"{value}\n")
        self.update(text)
