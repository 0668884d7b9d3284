"""`slotlab bench --only kvm`'s race figures: slotlab's time to first crash and the plain ctypes
loop's, taken in the same run, and the ratio held to its target. Structure only: how fast
either side crashes is the bench's to report, never a test's to assert."""

from __future__ import annotations

from engine.backends.kvm.bench import CRASH_RATIO_LIMIT, race_versus_plain
from engine.bench.kvm_race import plain_first_crash_ms


def test_the_plain_loop_crashes_and_reports_from_its_first_delete() -> None:
    # Split under legacy crashes on every try here (tests/kvm/test_race.py); 2 s is a cap.
    crashed = [plain_first_crash_ms(2.0) for _ in range(3)]
    assert any(ms is not None for ms in crashed)
    assert all(ms is None or ms >= 0 for ms in crashed)


def test_the_race_measures_pair_slotlab_with_the_plain_loop() -> None:
    measures = {m.name: m for m in race_versus_plain(2)}
    prefix = "kvm.legacy_split."
    assert measures[prefix + "runs_crashed"].unit == "of 2"
    assert measures[prefix + "plain_runs_crashed"].unit == "of 2"
    # A legacy split crashes on every try (tests/kvm/test_race.py), on both sides.
    assert measures[prefix + "runs_crashed"].value >= 1
    assert measures[prefix + "plain_runs_crashed"].value >= 1
    for name in ("first_crash_median", "plain_first_crash_median"):
        assert measures[prefix + name].unit == "ms"
        assert measures[prefix + name].value >= 0
    ratio = measures[prefix + "first_crash_vs_plain"]
    assert ratio.limit == CRASH_RATIO_LIMIT
    assert ratio.value == measures[prefix + "first_crash_median"].value / (
        measures[prefix + "plain_first_crash_median"].value
    )
    assert ratio.met is (ratio.value <= CRASH_RATIO_LIMIT)
