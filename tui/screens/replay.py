"""`slotlab replay LOG`: the recorded run, re-executed under a timeline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding

from engine.api import open_replay
from tui.options import faster, slower
from tui.palette import may_open
from tui.screens.breakpoints import BreakpointForm
from tui.screens.jump import JumpForm
from tui.screens.monitor import MonitorScreen, stop_bindings
from tui.widgets.status import StatusBar
from tui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from engine.snapshot import Snapshot
    from tui.app import SlotlabApp

JUMP_FRACTION = 10


class ReplayScreen(MonitorScreen):
    BINDINGS = [
        Binding("p", "play", "Play/pause", id="replay-play"),
        Binding("space", "step", "Step", id="replay-step"),
        *stop_bindings("replay-"),
        Binding("plus,equals_sign", "faster", "Faster", key_display="+", id="replay-faster"),
        Binding("minus", "slower", "Slower", key_display="-", id="replay-slower"),
        Binding("j", "jump", "Jump", id="replay-jump"),
        Binding("left_square_bracket", "skip(-1)", "Back 10%", key_display="[", id="replay-back"),
        Binding("right_square_bracket", "skip(1)", "Fwd 10%", key_display="]", id="replay-forward"),
        Binding("B", "seek(0)", "To start", show=False, id="replay-start"),
        Binding("e", "to_end", "To end", show=False, id="replay-end"),
    ]

    def __init__(self, path: str, speed: float, paused: bool) -> None:
        super().__init__()
        self.driver = open_replay(path)
        self.driver.speed = speed
        self.driver.paused = paused

    @property
    def slotlab(self) -> SlotlabApp:
        from tui.app import SlotlabApp

        return cast(SlotlabApp, self.app)

    def compose_controls(self) -> ComposeResult:
        d = self.driver
        yield Timeline(d.total, d.total_ns, d.marks, id="timeline")

    def on_mount(self) -> None:
        self.query_one(StatusBar).mode = "replay"
        self._start(None)

    def _start(self, until: int | None) -> None:
        live = self.driver.build(until)
        self.reset_views()
        self.slotlab.host.start(live)
        self.slotlab.refresh_now()

    def show(self, snap: Snapshot) -> None:
        super().show(snap)
        d = self.driver
        state = "finished" if snap.finished else ("paused" if snap.paused else "playing")
        self.query_one(Timeline).set_position(snap.seq, snap.t_ns, d.speed, state, d.status())
        self.set_recording_text(f"▶ REPLAY {d.path}  (not recorded)  {d.status()}")

    def session_finished(self) -> None:
        self.slotlab.refresh_now()

    # --- controls ---------------------------------------------------------------------------

    def _poke(self) -> None:
        self.slotlab.host.poke()
        self.slotlab.refresh_now()

    async def action_play(self) -> None:
        host = self.slotlab.host
        if not host.running:
            # Finished: play again from the start.
            async with host.switching:
                self.driver.paused = False
                await host.stop()
                self._start(None)
            return
        pacing = self.driver.pacing
        # A breakpoint pauses the pacing without the driver: go by what the engine does.
        self.driver.set_paused(not (pacing.paused if pacing is not None else self.driver.paused))
        self._poke()

    def action_step(self) -> None:
        self.driver.step()
        self._poke()

    def action_step_call(self) -> None:
        if self.slotlab.host.running:
            self.driver.step_call()
            self._poke()

    async def action_back(self) -> None:
        await self.seek(self.driver.position - 1)

    def action_breakpoints(self) -> None:
        if may_open(self.app, BreakpointForm):
            self.app.push_screen(BreakpointForm(self.slotlab.host.breakpoints))

    def action_faster(self) -> None:
        self.driver.set_speed(faster(self.driver.speed))
        self._poke()

    def action_slower(self) -> None:
        speed = self.driver.speed
        self.driver.set_speed(1.0 if math.isinf(speed) else slower(speed))
        self._poke()

    async def seek(self, target: int) -> None:
        target = max(0, min(target, self.driver.total))
        host = self.slotlab.host
        async with host.switching:
            if host.running and target >= self.driver.position:
                self.driver.seek_forward(target)
                self._poke()
                return
            # Backwards (or after the end): a run cannot go back; rebuild and fast-forward.
            await host.stop()
            self._start(target)

    async def action_seek(self, target: int) -> None:
        await self.seek(target)

    async def action_skip(self, direction: int) -> None:
        step = max(1, self.driver.total // JUMP_FRACTION)
        await self.seek(self.driver.position + direction * step)

    async def action_to_end(self) -> None:
        await self.seek(self.driver.total)

    def action_jump(self) -> None:
        async def chosen(target: int | None) -> None:
            if target is not None:
                await self.seek(target)

        if not may_open(self.app, JumpForm):
            return
        self.app.push_screen(JumpForm.for_replay(self.driver.total, self.driver.times), chosen)

    async def on_timeline_seek(self, message: Timeline.Seek) -> None:
        await self.seek(message.seq)
