"""A Line API base for the big panels: rows described by hashable keys, drawn to cached Strips.

A panel turns a snapshot into a list of row keys (tuples of the values a row shows). Only
rows whose key changed are refreshed, and a row is drawn once per (key, width): at 64 vCPUs
or 1,024 slots, a frame costs what the changed, visible rows cost, not the whole panel.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

# Enough for the visible rows of this frame and the last one. More is worse: at 64 vCPUs every
# row's key changes every frame, so a large cache fills with strips no frame will ask for
# again, each holding Textual's own per-strip caches, and the garbage collector's full
# collections over them stall frames (a 4096-row cache cost 60 ms pauses at 64 x 1,024).
ROW_CACHE = 256


class RowView(ScrollView, can_focus=True):
    """Rows are keys; subclasses draw a key with ``render_row``."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set()

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self._rows: list[Hashable] = []
        self._cache: LRUCache[tuple[Hashable, int], Strip] = LRUCache(ROW_CACHE)
        self._styles: dict[str, Style] = {}
        self._content_width = 0

    # --- styles -------------------------------------------------------------------------

    @property
    def base_style(self) -> Style:
        """The widget's own style (its background), looked up once per theme: Widget.rich_style
        walks up the DOM on every call, which adds up over hundreds of lines a frame."""
        style = self._styles.get("")
        if style is None:
            style = self._styles[""] = self.rich_style
        return style

    def style(self, name: str) -> Style:
        """A component class's Rich style, looked up once per theme."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name)
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        # A new theme repaints every row: cached strips carry the old colours.
        self._styles.clear()
        self._cache.clear()
        self.refresh()

    # --- rows ---------------------------------------------------------------------------

    @property
    def rows(self) -> Sequence[Hashable]:
        return self._rows

    def set_rows(self, rows: list[Hashable], content_width: int = 0) -> None:
        """Replace the rows, refreshing only the visible lines whose key changed."""
        old = self._rows
        self._rows = rows
        width = max(content_width, 0)
        if len(old) != len(rows) or width != self._content_width:
            self._content_width = width
            self.virtual_size = Size(width, len(rows))
            self.refresh()
            return
        top = int(self.scroll_offset.y)
        for y in range(top, min(top + self.size.height, len(rows))):
            if old[y] != rows[y]:
                self.refresh_line(y)

    def render_line(self, y: int) -> Strip:
        index = y + int(self.scroll_offset.y)
        width = self.size.width
        if index >= len(self._rows):
            return Strip.blank(width, self.base_style)
        key = self._rows[index]
        full = max(width, self._content_width)
        cache_key = (key, full)
        strip = self._cache.get(cache_key)
        if strip is None:
            strip = self.render_row(key, full).adjust_cell_length(full, self.base_style)
            self._cache.set(cache_key, strip)
        x = int(self.scroll_offset.x)
        return strip.crop(x, x + width)

    def render_row(self, key: Hashable, width: int) -> Strip:
        """Draw one row. ``width`` is at least the widget's width."""
        raise NotImplementedError

    # --- helpers for subclasses ---------------------------------------------------------

    @staticmethod
    def strip(parts: Sequence[tuple[str, Style]]) -> Strip:
        return Strip([Segment(text, style) for text, style in parts if text])
