"""Every binding id the TUI has, grouped by where keys must not collide: each screen with
the app's own bindings (which apply everywhere) and the widgets that live on it."""

from __future__ import annotations

from textual.app import App

from tui.keymap import Scopes, bindings_of
from tui.screens.choose import ChoiceScreen
from tui.screens.compare import CompareScreen
from tui.screens.error import ErrorScreen
from tui.screens.fault_form import FaultForm
from tui.screens.help import HelpScreen
from tui.screens.jump import JumpForm
from tui.screens.live import LiveScreen
from tui.screens.replay import ReplayScreen
from tui.widgets.event_log import EventLog
from tui.widgets.slot_map import SlotMap


def _ids(*sources: type) -> dict[str, str]:
    return {b.id: b.key for b in bindings_of(sources) if b.id is not None}


def binding_scopes(app: type[App[int]]) -> Scopes:
    return {
        "live": _ids(app, LiveScreen),
        "replay": _ids(app, ReplayScreen),
        "compare": _ids(app, CompareScreen),
        "error": _ids(app, ErrorScreen),
        # Dialogs and widgets: their keys are theirs while they have focus.
        "help": _ids(HelpScreen),
        "choice": _ids(ChoiceScreen),
        "fault form": _ids(FaultForm),
        "jump": _ids(JumpForm),
        "event log": _ids(EventLog),
        "slot map": _ids(SlotMap),
    }
