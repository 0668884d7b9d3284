"""The monitor: status, verdict, five views of one session, recording line, footer.

The live screen and the replay screen share it and add their own controls. It only ever reads
Snapshots (``show``); whatever it wants done to the run goes through its subclass.
"""

from __future__ import annotations

import functools

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from engine.snapshot import Snapshot
from tui.widgets.event_log import EventDetail, EventLog
from tui.widgets.slot_map import SlotMap
from tui.widgets.slot_table import SlotTable
from tui.widgets.srcu_panel import SrcuPanel
from tui.widgets.status import RecBar, StatusBar, VerdictBanner
from tui.widgets.vcpu_panel import VcpuPanel

VIEWS = ("overview", "slots", "vcpus", "srcu", "events")
# The widget that takes focus when a view is shown.
FOCUS = {
    "overview": "#ov-map",
    "slots": "#table",
    "vcpus": "#vcpus-panel",
    "srcu": "#srcu-panel",
    "events": "#log",
}


def stop_bindings(prefix: str = "") -> list[Binding]:
    """The stepping and breakpoint keys a live run and a replay share (ids prefixed, so a
    keymap can move each screen's own)."""
    return [
        Binding(
            "full_stop,shift+space",
            "step_call",
            "Scheduler step",
            show=False,
            key_display=".",
            id=f"{prefix}step-call",
        ),
        Binding(
            "comma,shift+left",
            "back",
            "Step back",
            show=False,
            key_display=",",
            id=f"{prefix}step-back",
        ),
        Binding("b", "breakpoints", "Breakpoints", show=False, id=f"{prefix}breakpoints"),
    ]


# The panels a snapshot updates, by view (the event log is fed in every view).
PANELS = {
    "overview": ("#ov-map", "#ov-vcpus", "#ov-srcu"),
    "slots": ("#map", "#table"),
    "vcpus": ("#vcpus-panel",),
    "srcu": ("#srcu-panel",),
    "events": (),
}


class MonitorScreen(Screen[None]):
    # The footer lists a screen's bindings before the app's and cuts what does not fit: the
    # app-wide keys that matter most come first here (same ids as the app's, so a keymap
    # moves both), and the app's own copies stay out of the footer.
    BINDINGS = [
        Binding("q", "app.quit", "Quit", id="quit"),
        Binding("question_mark,f1", "app.help", "Help", key_display="?", id="help"),
        Binding("c", "app.compare", "Compare", id="compare"),
        Binding("1", "view('overview')", "Overview", show=False, id="view-overview"),
        Binding("2", "view('slots')", "Slots", show=False, id="view-slots"),
        Binding("3", "view('vcpus')", "vCPUs", show=False, id="view-vcpus"),
        Binding("4", "view('srcu')", "SRCU", show=False, id="view-srcu"),
        Binding("5", "view('events')", "Events", show=False, id="view-events"),
        Binding("slash", "filter", "Filter", show=False, id="filter"),
        Binding("v", "verdict", "Whole verdict", show=False, id="verdict"),
        Binding("l", "toggle_log", "Pause log", show=False, id="log-pause"),
        Binding("z", "zoom(2.0)", "Zoom in", show=False, id="zoom-in"),
        Binding("Z", "zoom(0.5)", "Zoom out", show=False, id="zoom-out"),
        Binding("less_than_sign", "pan(-1)", "Pan left", show=False, id="pan-left"),
        Binding("greater_than_sign", "pan(1)", "Pan right", show=False, id="pan-right"),
        Binding("0", "reset_zoom", "Reset zoom", show=False, id="zoom-reset"),
        Binding("escape", "leave_filter", "Clear filter", show=False, id="filter-leave"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.last: Snapshot | None = None
        self._stops = ""

    # --- layout -------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield VerdictBanner(id="verdict")
        with TabbedContent(initial="overview", id="views"):
            with TabPane("1 Overview", id="overview"):
                yield SlotMap(compact=True, id="ov-map")
                with Horizontal(id="ov-row"):
                    yield VcpuPanel(id="ov-vcpus")
                    yield SrcuPanel(compact=True, id="ov-srcu")
                yield EventLog(id="ov-log")
            with TabPane("2 Slots", id="slots"):
                yield SlotMap(id="map")
                yield SlotTable(id="table")
            with TabPane("3 vCPUs", id="vcpus"):
                yield VcpuPanel(id="vcpus-panel")
            with TabPane("4 SRCU", id="srcu"):
                yield SrcuPanel(id="srcu-panel")
            with TabPane("5 Events", id="events"):
                yield Input(
                    placeholder="/ filter: words that must appear, -word excludes; esc clears",
                    id="filter",
                )
                with Horizontal(id="events-row"):
                    yield EventLog(id="log")
                    with Vertical(id="detail-box"):
                        yield EventDetail(id="detail")
        yield from self.compose_controls()
        yield Static("", id="breaks", markup=False)
        yield RecBar("", id="rec")
        yield Footer()
        w, h = self.MIN_SIZE
        yield Static(f"enlarge the terminal (at least {w}x{h})", id="too-small")

    def compose_controls(self) -> ComposeResult:
        """Extra widgets above the recording line (the replay timeline)."""
        yield from ()

    SHORT = 32
    """Below this many rows the screen is laid out tighter (see .-short in the stylesheet)."""
    NARROW = 160
    """Below this many columns the event's fields go under the log, not beside it."""
    MIN_SIZE = (60, 16)
    """Below this the screen only asks for a larger terminal."""

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        width, height = self.size
        wanted = {
            "-short": height < self.SHORT,
            "-narrow": width < self.NARROW,
            "-tiny": width < self.MIN_SIZE[0] or height < self.MIN_SIZE[1],
        }
        changed = [name for name, on in wanted.items() if self.has_class(name) != on]
        # Each class change restyles the whole screen: one restyle for all of them.
        for name in changed:
            self.set_class(wanted[name], name, update=False)
        if changed:
            self.update_node_styles()

    def action_verdict(self) -> None:
        self.query_one(VerdictBanner).toggle()

    def on_mount(self) -> None:
        self._fit()
        self.query_one("#detail", EventDetail).show_event(None)
        self.query_one("#ov-map", SlotMap).focus()

    # --- drawing ------------------------------------------------------------------------

    @property
    def view(self) -> str:
        return self.query_one(TabbedContent).active or "overview"

    def show(self, snap: Snapshot) -> None:
        """Draw a snapshot: the status, the verdict, the logs and the visible view."""
        self.last = snap
        status, verdict, logs = self._bars
        status.show(snap)
        verdict.show_verdict(snap.verdict)
        for log in logs:
            log.ingest(snap.events)
        for widget in self._visible_panels():
            # Every panel has update_snapshot; _visible_panels() yields them as Widget.
            widget.update_snapshot(snap)  # type: ignore[attr-defined]

    @functools.cached_property
    def _bars(self) -> tuple[StatusBar, VerdictBanner, list[EventLog]]:
        """Looked up once: the screen composes them for good, and a DOM query at every frame
        walked every node of the screen."""
        return self.query_one(StatusBar), self.query_one(VerdictBanner), list(self.query(EventLog))

    @functools.cached_property
    def _panels(self) -> dict[str, list[Widget]]:
        """Each view's panels, looked up once for the same reason."""
        return {view: [self.query_one(i) for i in ids] for view, ids in PANELS.items()}

    def _visible_panels(self) -> list[Widget]:
        return self._panels[self.view]

    def reset_views(self) -> None:
        """A new session: forget the previous one's events and selection."""
        for log in self.query(EventLog):
            log.reset()
        self.query_one("#detail", EventDetail).show_event(None)
        self.last = None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if self.last is not None:
            self.show(self.last)

    # --- actions ------------------------------------------------------------------------

    def action_view(self, view: str) -> None:
        self.query_one(TabbedContent).active = view
        self.query_one(FOCUS[view]).focus()
        if self.last is not None:
            self.show(self.last)

    def action_filter(self) -> None:
        self.action_view("events")
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        """Esc clears the filter (the log's last line says so) and leaves the input."""
        box = self.query_one("#filter", Input)
        if box.value:
            box.value = ""
            for log in self.query(EventLog):
                log.set_filter("")  # now, not when Input.Changed arrives
        if self.focused is box:
            self.query_one("#log", EventLog).focus()

    def action_toggle_log(self) -> None:
        paused = False
        for log in self.query(EventLog):
            paused = log.toggle_pause()
        self.notify("event log paused" if paused else "event log follows the run", timeout=2)

    def _maps(self) -> list[SlotMap]:
        return list(self.query(SlotMap))

    def action_zoom(self, factor: float) -> None:
        for m in self._maps():
            m.zoom_by(factor)

    def action_pan(self, steps: int) -> None:
        for m in self._maps():
            m.pan(steps)

    def action_reset_zoom(self) -> None:
        for m in self._maps():
            m.reset_view()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            for log in self.query(EventLog):
                log.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one("#log", EventLog).focus()

    def on_event_log_selected(self, message: EventLog.Selected) -> None:
        if message.log.id == "ov-log" and message.chosen and message.event is not None:
            self.action_view("events")
            self.query_one("#log", EventLog).select_seq(message.event.seq)
            return
        if message.log.id == "log":
            self.query_one("#detail", EventDetail).show_event(message.event)

    def show_stops(self, breakpoints: str, stopped_at: str) -> None:
        """The breakpoint line: the list, and the one the run stopped at (hidden when both
        are empty, so a session without breakpoints keeps its rows)."""
        text = f"⏸ stopped at {stopped_at}" if stopped_at else ""
        if breakpoints:
            text = f"{text}   breakpoints: {breakpoints}" if text else f"breakpoints: {breakpoints}"
        # Every frame asks; only a change may redraw, since Static.update() lays the whole
        # screen out again (a layout per frame took 40% of the screen-update time).
        if text == self._stops:
            return
        self._stops = text
        line = self.query_one("#breaks", Static)
        line.set_class(bool(text), "-on")
        line.update(text)

    def set_recording_text(self, text: str) -> None:
        self.query_one(RecBar).show_text(text)
