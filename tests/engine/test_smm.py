"""SMM on a two-address-space host (x86-tdp): an SMI (enter_smm()) moves a vCPU to as_id 1 and
RSM brings it back (kvm_smm_changed(): kvm_arch_vcpu_memslots_id() is 1 in SMM). smram-toggle's
periodic SMIs run a handler from SMRAM, so both address spaces see faults; on a one-address-space
host (x86-pvm) there is no SMM."""

from __future__ import annotations

import trio

from engine.events import Event, Fault, Injected, SmmTransition
from engine.runner import make_config
from engine.session import Session


def _events(scenario: str, strategy: str, **kw: object) -> list[Event]:
    events: list[Event] = []
    session = Session(make_config(scenario, strategy, **kw), observers=(events.append,))  # type: ignore[arg-type]
    trio.run(session.run)
    return events


def test_smram_toggle_exercises_both_address_spaces() -> None:
    for seed in range(1, 4):
        events = _events("smram-toggle", "inhibit", seed=seed)
        smm = [e for e in events if isinstance(e, SmmTransition)]
        assert {e.entered for e in smm} == {True, False}, seed
        # Entries land in the handler in as_id 1; every RSM returns to as_id 0.
        assert all(e.as_id == (1 if e.entered else 0) for e in smm)
        assert all(e.rip == 0x1010 for e in smm if e.entered)
        spaces = {e.as_id for e in events if isinstance(e, Fault)}
        assert spaces == {0, 1}, seed


def test_no_smm_on_a_one_address_space_host() -> None:
    events = _events("smram-toggle", "inhibit", host={"profile": "x86-pvm"})
    assert not [e for e in events if isinstance(e, SmmTransition)]
    assert {e.as_id for e in events if isinstance(e, Fault)} == {0}


def test_an_injected_smi_faults_in_as_id_1() -> None:
    # split maps nothing in as_id 1: the SMI handler's first fetch finds no memslot there.
    events = _events("split", "inhibit", faults=["smi=vcpu=1"], duration_ns=200_000)
    (inj,) = [e for e in events if isinstance(e, Injected)]
    assert (inj.fault, inj.target) == ("smi", "vcpu1")
    (enter,) = [e for e in events if isinstance(e, SmmTransition)]
    assert (enter.vcpu, enter.entered, enter.as_id) == (1, True, 1)
    after = [e for e in events if isinstance(e, Fault) and e.seq > enter.seq and e.vcpu == 1]
    assert after[0].as_id == 1
    assert after[0].outcome == "emulation_failure"
