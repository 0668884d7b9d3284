"""`slotlab kvm probe`: is /dev/kvm usable, which kernel, the capabilities that matter, and a
one-second self-test of the race (legacy split must crash, inhibit must survive)."""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

import msgspec
import trio

from engine.backends.kvm.ioctl import KVM_API_VERSION, device_path, kvm_module, kvm_usable
from engine.model import constants as c

CAPS = (
    ("KVM_CAP_NR_MEMSLOTS", c.KVM_CAP_NR_MEMSLOTS, "user memslots per address space"),
    ("KVM_CAP_MULTI_ADDRESS_SPACE", c.KVM_CAP_MULTI_ADDRESS_SPACE, "address spaces (SMM); 0: one"),
    ("KVM_CAP_READONLY_MEM", c.KVM_CAP_READONLY_MEM, "KVM_MEM_READONLY slots"),
    ("KVM_CAP_USER_MEMORY2", c.KVM_CAP_USER_MEMORY2, "KVM_SET_USER_MEMORY_REGION2"),
    ("KVM_CAP_IMMEDIATE_EXIT", c.KVM_CAP_IMMEDIATE_EXIT, "kvm_run.immediate_exit (the kick)"),
    ("KVM_CAP_SYNC_MMU", c.KVM_CAP_SYNC_MMU, "MMU notifiers"),
    (
        "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
        c.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        "manual dirty-log protection",
    ),
    ("KVM_CAP_EXIT_ON_EMULATION_FAILURE", c.KVM_CAP_EXIT_ON_EMULATION_FAILURE, ""),
    ("KVM_CAP_NR_VCPUS", c.KVM_CAP_NR_VCPUS, "recommended vCPUs"),
    ("KVM_CAP_MAX_VCPUS", c.KVM_CAP_MAX_VCPUS, ""),
    ("KVM_CAP_GUEST_MEMFD", c.KVM_CAP_GUEST_MEMFD, ""),
)

SELF_TEST_NS = 400_000_000
"""Per half of the self-test; the whole probe stays around a second."""


def _self_test(strategy: str) -> dict[str, Any]:
    from engine.backends.kvm.session import KvmSession
    from engine.runner import make_config

    config = make_config("split", strategy, duration_ns=SELF_TEST_NS)
    session = KvmSession(config)
    start = time.perf_counter()
    trio.run(session.run)
    s = session.summary()
    expect = "crashed" if strategy == "legacy" else "ok"
    return {
        "scenario": "split",
        "strategy": strategy,
        "verdict": s.verdict,
        "expected": expect,
        "passed": s.verdict == expect,
        "transactions": s.transactions - 1,  # the boot layout is not an update
        "internal_errors": s.internal_errors,
        "seconds": round(time.perf_counter() - start, 3),
        "explanation": s.explanation,
    }


def matching_profile(module: str, machine: str | None = None) -> str:
    """The model's host profile (engine.model.profiles) this kernel matches: kvm_pvm is
    x86-pvm (measured, real-kvm.md); kvm_intel is x86-tdp (EPT); arm64 is arm64. AMD has no
    profile of its own (decode assists spare the MMIO emulator its fetch): x86-tdp is the
    nearest."""
    arch = machine or platform.machine()
    if arch in ("aarch64", "arm64"):
        return "arm64"
    if "kvm_pvm" in module.split(","):
        return "x86-pvm"
    return "x86-tdp"


def probe(self_test: bool = True) -> dict[str, Any]:
    """Everything `slotlab kvm probe` reports, as data."""
    usable, reason = kvm_usable()
    out: dict[str, Any] = {
        "device": device_path(),
        "usable": usable,
        "reason": reason,
        "kernel": platform.release(),
    }
    if not usable:
        return out
    from engine.backends.kvm.vm import KvmVM

    with KvmVM() as vm:
        out["api_version"] = KVM_API_VERSION
        out["kvm_module"] = kvm_module()
        out["profile"] = matching_profile(out["kvm_module"])
        out["caps"] = {name: vm.check_extension(cap) for name, cap, _ in CAPS}
    if self_test:
        out["self_test"] = [_self_test("legacy"), _self_test("inhibit")]
    return out


def cmd_kvm(args: argparse.Namespace) -> int:
    if args.kvm_command != "probe":
        raise ValueError("slotlab kvm needs a subcommand: probe")
    result = probe(self_test=not args.no_self_test)
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        _print(result)
    if not result["usable"]:
        return 1
    return 0 if all(t["passed"] for t in result.get("self_test", [])) else 1


def _print(r: dict[str, Any]) -> None:
    if not r["usable"]:
        print(f"kvm: not usable: {r['reason']}")
        return
    print(f"kvm: {r['reason']}")
    print(f"kernel {r['kernel']}, KVM implementation {r['kvm_module']}")
    print(f"model host profile it matches: {r['profile']} (--host profile={r['profile']})")
    width = max(len(name) for name, _, _ in CAPS)
    for name, _, what in CAPS:
        note = f"  ({what})" if what else ""
        print(f"  {name:<{width}}  {r['caps'][name]}{note}")
    for t in r.get("self_test", []):
        mark = "pass" if t["passed"] else "FAIL"
        print(
            f"self-test {mark}: {t['scenario']}/{t['strategy']} -> {t['verdict']} (expected "
            f"{t['expected']}) after {t['transactions']} update(s), {t['internal_errors']} "
            f"internal error(s), {t['seconds']:.2f} s"
        )
        if not t["passed"]:
            print(f"  {t['explanation']}")
