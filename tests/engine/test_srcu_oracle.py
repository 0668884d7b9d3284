"""The SRCU oracle on whole runs: a kernel whose memslot swaps skip
synchronize_srcu_expedited() (`busted`) ends in a violation on every built-in scenario with two
or more vCPUs, with no fault injected: a use-after-free of a memslot set an SRCU reader holds, or
(where the guest's MMIO emulation fetches through the INVALID code slot first) atomicity. No
strategy that waits for readers is ever accused."""

from __future__ import annotations

import pytest

from engine.runner import make_config, run_session
from engine.scenarios import builtin_names, load_scenario

NO_READERS = "no SRCU reader holds a memslot set across an update"


def _has_readers(name: str) -> bool:
    """Scenarios imported from QEMU traces replay the VMM's calls under a plain store loop, and
    a hand-written scenario whose guest never exits says so in its description: nothing reads
    kvm->srcu across an update there (busted needs reader-stall)."""
    sc = load_scenario(name)
    return sc.provenance.get("source") != "qemu-trace" and NO_READERS not in sc.summary


MULTI = [n for n in builtin_names() if load_scenario(n).vcpus >= 2 and _has_readers(n)]


def test_the_multi_vcpu_scenarios_are_the_ones_expected() -> None:
    assert set(MULTI) >= {"split", "merge", "resize", "bar-overlay", "hotplug", "dirty-log"}


@pytest.mark.parametrize("scenario", MULTI)
def test_busted_is_a_violation_on_every_seed_under_x86_tdp(scenario: str) -> None:
    # On EPT the guest runs in hardware and its vCPUs read kvm->srcu only in exits (the
    # device register poll): a busted swap is a use-after-free, unless a vCPU first meets the
    # INVALID code slot in an MMIO emulation's instruction fetch, which does not retry.
    for seed in range(1, 6):
        summary = run_session(make_config(scenario, "busted", seed=seed))
        kinds = {v.kind for v in summary.violations}
        assert summary.verdict == "violation", (scenario, seed)
        assert kinds <= {"srcu_uaf", "atomicity", "lost_dirty"}, (scenario, seed)


@pytest.mark.parametrize("strategy", ["legacy", "inhibit", "atomic-list", "replace-all"])
def test_strategies_that_wait_for_readers_are_never_accused(strategy: str) -> None:
    for scenario in MULTI:
        summary = run_session(make_config(scenario, strategy, seed=1))
        kinds = {v.kind for v in summary.violations}
        assert "srcu_uaf" not in kinds, (scenario, strategy)
