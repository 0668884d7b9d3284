"""Faults and their knobs, with the semantics of Linux fault injection
(Documentation/fault-injection): `interval` considers every Nth opportunity, `probability` is
the percentage of considered opportunities that fail, `times` caps the failures (-1: no cap).
Every injection is an Injected event."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.events import Event, EventBus, Injected
from engine.faults import FAULT_KINDS, FaultError, Injector, parse_fault, parse_fault_file


def injector(*specs: str, seed: int = 1) -> tuple[Injector, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    return Injector(bus, random.Random(seed), [parse_fault(s) for s in specs]), events


def fires(inj: Injector, opportunities: int) -> list[int]:
    """Which of n ioctl gaps got a delay (1-based)."""
    return [i for i in range(1, opportunities + 1) if inj.ioctl_gap()]


def test_defaults_and_parameters() -> None:
    spec = parse_fault("race")
    assert spec.params == {"window": "100us"}
    assert (spec.probability, spec.interval, spec.times) == (100.0, 1, -1)
    spec = parse_fault("reader-stall=vcpu=1,duration=1ms")
    assert spec.integer("vcpu") == 1
    assert spec.duration("duration") == 1_000_000
    assert spec.times == 1  # a one-shot by default, like its kind says
    assert spec.text() == "reader-stall=vcpu=1,duration=1ms"
    assert parse_fault("weeds=gpa=0xdead0000").integer("gpa") == 0xDEAD0000
    assert parse_fault(" gp-delay ").kind is FAULT_KINDS["gp-delay"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown fault ''"),
        ("meteor", "unknown fault 'meteor'"),
        ("race=window", "is not key=value"),
        ("race=window=", "is not key=value"),
        ("race=colour=red", "unknown parameter 'colour'"),
        ("race=window=10", "bad duration '10'"),
        ("weeds=vcpu=first", "fault weeds"),
        ("race=probability=101", "probability must be 0..100"),
        ("race=probability=-1", "probability must be 0..100"),
        ("race=interval=0", "interval must be 1.."),
        ("race=times=-2", "times must be -1.."),
        ("race=times=1.5", "fault race"),
    ],
)
def test_bad_faults(text: str, message: str) -> None:
    with pytest.raises(FaultError, match=message):
        parse_fault(text)


def test_always_fires_by_default() -> None:
    inj, events = injector("ioctl-gap=delay=7us")
    assert fires(inj, 5) == [1, 2, 3, 4, 5]
    assert inj.injections == 5
    assert all(isinstance(e, Injected) and e.fault == "ioctl-gap" for e in events)
    assert len(events) == 5


def test_the_delay_is_the_parameter() -> None:
    inj, _ = injector("ioctl-gap=delay=7us")
    assert inj.ioctl_gap() == 7_000
    inj, _ = injector("gp-delay=delay=1ms")
    assert inj.gp_delay() == 1_000_000
    assert inj.ioctl_gap() == 0  # not armed


def test_interval_considers_every_nth_opportunity() -> None:
    inj, _ = injector("ioctl-gap=interval=3")
    assert fires(inj, 10) == [3, 6, 9]


def test_times_caps_the_failures() -> None:
    inj, events = injector("ioctl-gap=times=2")
    assert fires(inj, 10) == [1, 2]
    assert len(events) == 2
    inj, _ = injector("ioctl-gap=times=0")
    assert fires(inj, 10) == []
    inj, _ = injector("ioctl-gap=times=-1")
    assert len(fires(inj, 50)) == 50


def test_interval_and_times_combine() -> None:
    inj, _ = injector("ioctl-gap=interval=4,times=2")
    assert fires(inj, 20) == [4, 8]


def test_probability_zero_and_hundred() -> None:
    inj, _ = injector("ioctl-gap=probability=0")
    assert fires(inj, 100) == []
    inj, _ = injector("ioctl-gap=probability=100")
    assert len(fires(inj, 100)) == 100


def test_probability_is_a_rate_and_reproducible() -> None:
    inj, _ = injector("ioctl-gap=probability=25", seed=7)
    hits = fires(inj, 2_000)
    assert 400 < len(hits) < 600  # 25 % of 2,000, far outside chance on either side
    again, _ = injector("ioctl-gap=probability=25", seed=7)
    assert fires(again, 2_000) == hits  # the injector's own stream decides
    other, _ = injector("ioctl-gap=probability=25", seed=8)
    assert fires(other, 2_000) != hits


def test_probability_applies_after_interval() -> None:
    inj, _ = injector("ioctl-gap=interval=2,probability=50", seed=3)
    hits = fires(inj, 400)
    assert all(h % 2 == 0 for h in hits)
    assert 60 < len(hits) < 140


def test_times_counts_only_failures() -> None:
    inj, _ = injector("ioctl-gap=probability=10,times=3", seed=5)
    hits = fires(inj, 1_000)
    assert len(hits) == 3
    assert hits[-1] > 3  # opportunities that did not fail did not use up `times`


def test_race_armed_until_used_up() -> None:
    inj, _ = injector("race=times=1")
    assert inj.race_armed()
    assert inj.race_window() == 100_000
    assert not inj.race_armed()
    assert inj.race_window() == 0


def test_vcpu_faults_fire_per_transaction_and_act_on_the_vcpu() -> None:
    inj, events = injector("reader-stall=vcpu=1,duration=30us", "weeds=vcpu=0,gpa=0x5000")
    stalled: list[tuple[int, int]] = []
    jumped: list[tuple[int, int]] = []

    def stall(vcpu: int, ns: int) -> bool:
        stalled.append((vcpu, ns))
        return True

    def jump(vcpu: int, gpa: int) -> bool:
        jumped.append((vcpu, gpa))
        return True

    inj.stall_vcpu, inj.jump_vcpu = stall, jump
    for _ in range(3):
        inj.on_transaction()
    # Both default to times=1.
    assert stalled == [(1, 30_000)]
    assert jumped == [(0, 0x5000)]
    assert [(e.fault, e.target) for e in events if isinstance(e, Injected)] == [
        ("reader-stall", "vcpu1"),
        ("weeds", "vcpu0"),
    ]


def test_a_fault_on_a_vcpu_that_does_not_exist_is_not_logged() -> None:
    inj, events = injector()
    inj.apply_now(parse_fault("reader-stall=vcpu=9"))
    assert events == []
    assert inj.injections == 0


def test_apply_now_arms_a_one_shot_for_the_next_opportunity() -> None:
    inj, events = injector()
    inj.apply_now(parse_fault("ioctl-gap=delay=3us,probability=0,interval=5,times=-1"))
    # Injected on purpose: the knobs do not apply, it fires once at the next gap.
    assert fires(inj, 10) == [1]
    assert len(events) == 1


def test_fault_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.txt"
    path.write_text(
        "# when  what\n"
        "200us gp-delay=delay=5us   # slow grace period\n"
        "\n"
        "50us race\n"
        "1ms reader-stall=vcpu=1\n"
    )
    script = parse_fault_file(str(path))
    assert [(t, s.text()) for t, s in script] == [
        (50_000, "race=window=100us"),
        (200_000, "gp-delay=delay=5us"),
        (1_000_000, "reader-stall=vcpu=1,duration=200us"),
    ]
    assert all(s.times == 1 for _, s in script)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("50us race\nlater race\n", 2, "bad duration 'later'"),
        ("50us\n", 1, "unknown fault ''"),
        ("# c\n50us meteor\n", 2, "unknown fault 'meteor'"),
        ("50us race=window=0us\n", 1, "must be positive"),
    ],
)
def test_bad_fault_file(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "faults.txt"
    path.write_text(text)
    with pytest.raises(FaultError, match=rf"^{path}:{line}: .*{message}"):
        parse_fault_file(str(path))
