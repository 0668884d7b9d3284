"""The 2022 race on the real kernel, through the same sessions the model runs: legacy split
and merge crash the guest within a bounded time, inhibit survives 1,000 updates, and every
scenario real KVM can express gets the model's verdict."""

from __future__ import annotations

import time

import pytest
import trio

from engine.backends.kvm.run import run_on_kvm
from engine.backends.kvm.session import KvmSession
from engine.events import Event, Exit, Inhibit, TxnBegin
from engine.runner import make_config, run_session

CRASH_BOUND_S = 1.0


def events_of(
    scenario: str, strategy: str, duration_ns: int, **kw: int
) -> tuple[KvmSession, list[Event]]:
    events: list[Event] = []
    session = KvmSession(
        make_config(scenario, strategy, duration_ns=duration_ns),
        observers=(events.append,),
        **kw,  # type: ignore[arg-type]
    )
    trio.run(session.run)
    return session, events


@pytest.mark.parametrize("scenario", ["split", "merge"])
def test_legacy_crashes_the_guest_within_a_bounded_time(scenario: str) -> None:
    started = time.monotonic()
    session, events = events_of(scenario, "legacy", 5_000_000_000)
    wall = time.monotonic() - started
    s = session.summary()
    assert s["verdict"] == "crashed", s["explanation"]
    assert s["internal_errors"] >= 1
    first_update = next(e.t for e in events if isinstance(e, TxnBegin) and e.txn > 1)
    crash = next(e for e in events if isinstance(e, Exit) and e.reason == "KVM_EXIT_INTERNAL_ERROR")
    # On this host 92-97 % of such updates kill the guest, within about a millisecond.
    assert (crash.t - first_update) / 1e9 < CRASH_BOUND_S
    assert wall < CRASH_BOUND_S + 1.0  # the VM stops at the crash; nothing waits for the duration
    # The fetch fails inside the loop (inc or jmp), reported at the model's addresses.
    assert crash.rip in (0x1000, 0x1004)
    assert crash.suberror == 1
    assert (
        "KVM_SET_USER_MEMORY_REGION(slot" in s["explanation"] or "deleted slot" in s["explanation"]
    )


def test_inhibit_survives_a_thousand_split_and_merge_updates() -> None:
    session, events = events_of("split", "inhibit", 60_000_000_000, max_transactions=1001)
    s = session.summary()
    assert s["transactions"] - 1 >= 1000  # the boot layout is not an update
    assert s["internal_errors"] == 0
    assert s["mmio_exits"] == 0
    assert s["verdict"] == "ok", s["explanation"]
    assert s["ioctls"] == 3000  # DELETE + 2 CREATE per split, 2 DELETE + CREATE per merge
    pauses = [e for e in events if isinstance(e, Inhibit) and e.phase == "all_out"]
    assert len(pauses) == 1000
    assert s["vcpu_stall_ns"] > 0


# Every scenario that real KVM can express, on both strategies it can express: the kernel and
# the model must reach the same verdict (the race is near-certain on this host, so a
# crash the model predicts shows up within the first few updates).
SCENARIOS = ["split", "merge", "resize", "bar-overlay", "hotplug", "move", "dirty-log", "weeds"]


@pytest.mark.parametrize("strategy", ["legacy", "inhibit"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_kernel_reaches_the_models_verdict(scenario: str, strategy: str) -> None:
    model = run_session(make_config(scenario, strategy))
    # Lost dirty pages on real KVM are inferred from guest RAM (a lower bound), so dirty-log
    # gets more rounds to show them; a loaded machine runs fewer per second.
    duration = 1_000_000_000 if scenario == "dirty-log" else 250_000_000
    real = run_on_kvm(make_config(scenario, strategy, duration_ns=duration), None)
    both = f"\nmodel: {model}\nkvm:   {real}"
    assert set(real) == set(model), both
    assert real["verdict"] == model["verdict"], both
    assert (real["internal_errors"] > 0) == (model["internal_errors"] > 0), both
    assert {v["kind"] for v in real["violations"]} == {v["kind"] for v in model["violations"]}, both
