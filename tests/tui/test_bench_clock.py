"""What `slotlab bench --only tui` counts as a frame and as throughput, on a fake clock."""

from __future__ import annotations

import types

import pytest
from textual.screen import Screen

import tui.bench
from engine.events import Event
from tui.app import SlotlabApp
from tui.bench import _FrameClock, _SteadyRate


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def costs(self, seconds: float) -> types.FunctionType:
        def work(_: object) -> None:
            self.now += seconds

        return work  # type: ignore[return-value]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(tui.bench, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def test_a_frame_is_one_snapshot_drawn_and_every_screen_update_after_it(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SlotlabApp, "refresh_now", clock.costs(3.0))
    monkeypatch.setattr(Screen, "_on_timer_update", clock.costs(2.0))
    with _FrameClock() as frames:
        Screen._on_timer_update(None)  # type: ignore[arg-type]  # before any snapshot: not a frame
        SlotlabApp.refresh_now(None)  # type: ignore[arg-type]
        Screen._on_timer_update(None)  # type: ignore[arg-type]
        Screen._on_timer_update(None)  # type: ignore[arg-type]  # a layout pass asked for after it
        SlotlabApp.refresh_now(None)  # type: ignore[arg-type]
        Screen._on_timer_update(None)  # type: ignore[arg-type]
        SlotlabApp.refresh_now(None)  # type: ignore[arg-type]
    assert frames.frames == [7.0, 5.0]
    SlotlabApp.refresh_now(None)  # type: ignore[arg-type]  # unwrapped again: not timed
    assert frames.frames == [7.0, 5.0]


def test_throughput_counts_from_the_given_event_to_the_end(clock: FakeClock) -> None:
    rate = _SteadyRate(from_seq=100)
    for seq in range(1000):
        clock.now = seq * 0.001
        rate(Event(t=0, seq=seq))
    clock.now = 1.0
    assert rate.per_second(1000) == pytest.approx(900 / 0.9)


def test_throughput_of_a_run_that_ends_before_its_mark_is_an_error(clock: FakeClock) -> None:
    rate = _SteadyRate(from_seq=100)
    rate(Event(t=0, seq=5))
    with pytest.raises(RuntimeError, match="before event #100"):
        rate.per_second(6)
