"""What a monitor reads: immutable views of a run (views.py), the Tracker that builds them
(tracker.py) from its history and a backend's SnapshotSource (source.py)."""

from __future__ import annotations

from engine.snapshot.source import holes as _holes
from engine.snapshot.tracker import Tracker
from engine.snapshot.views import (
    AddressSpaceView,
    GpView,
    IoctlView,
    RangeView,
    ReaderView,
    SetView,
    SlotView,
    Snapshot,
    SrcuView,
    TxnView,
    VcpuView,
    VerdictView,
)

__all__ = [
    "AddressSpaceView",
    "GpView",
    "IoctlView",
    "RangeView",
    "ReaderView",
    "SetView",
    "SlotView",
    "Snapshot",
    "SrcuView",
    "Tracker",
    "TxnView",
    "VcpuView",
    "VerdictView",
    "_holes",
]
