"""`slotlab run --backend kvm`: one scenario under one strategy on the real /dev/kvm."""

from __future__ import annotations

import trio

from engine.backends.kvm.ioctl import kvm_usable
from engine.backends.kvm.session import (
    KvmSession,
    check_faults,
    check_scenario,
    check_strategy,
)
from engine.scenarios import Scenario, load_scenario
from engine.session import RunConfig
from engine.signals import run_interruptible
from engine.summary import Summary


def check_kvm_run(scenario: str | Scenario, strategy: str) -> None:
    """Refuse, with one line, what real KVM cannot run here: no usable /dev/kvm, a strategy
    that needs a kernel change, a scenario the real guest cannot express."""
    check_strategy(strategy)
    usable, reason = kvm_usable()
    if not usable:
        raise ValueError(f"{reason} (the model backend needs none of this: drop --backend kvm)")
    sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
    from engine.backends.kvm.vm import KvmVM

    with KvmVM() as vm:
        check_scenario(sc, vm.nr_address_spaces)


def run_on_kvm(config: RunConfig, log: str | None) -> Summary:
    """Run on the real kernel; the summary has the keys of the model Session's summary()."""
    check_faults(config)
    check_kvm_run(config.scenario, config.strategy)
    session = KvmSession(config, log_path=log)
    trio.run(run_interruptible, session.run, session.interrupt)
    return session.summary()
