"""The command line on the kvm backend: run, check, replay refusal, probe, compare, and the
one-line refusals (a strategy that needs a kernel change, a scenario or fault real KVM cannot
express, no usable /dev/kvm)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine.backends.kvm import kvm_usable
from engine.backends.kvm.ioctl import kvm_module
from engine.backends.kvm.probe import matching_profile
from engine.events import IoctlEnter, IoctlExit
from engine.log import read_log
from tests.engine.helpers import one_line, run_cli

NO_KVM = {"SLOTLAB_KVM_DEVICE": "/nonexistent/kvm"}


def test_run_on_kvm_logs_a_run_that_check_judges_and_replay_refuses(tmp_path: Path) -> None:
    log = tmp_path / "split-legacy.jsonl"
    r = run_cli("run", "--backend", "kvm", "--scenario", "split", "--strategy", "legacy",
                "--duration", "2s", "--log", str(log), "--json")  # fmt: skip
    assert r.returncode == 3, r.stderr  # crashed
    summary = json.loads(r.stdout)
    assert summary["verdict"] == "crashed"
    assert summary["internal_errors"] >= 1
    session = read_log(log)
    assert session.header.host["backend"] == "kvm"
    assert session.header.host["deterministic"] is False
    assert session.verdict is not None
    assert session.verdict.verdict == "crashed"
    kinds = {type(e).__name__ for e in session.events}
    assert {"TxnBegin", "IoctlEnter", "IoctlExit", "MemslotChange", "Exit", "VmStopped"} <= kinds
    # t is when each thing happened in the thread that saw it (tests/kvm/test_stamps.py):
    # monotonic per thread, not along seq.
    vmm = [e.t for e in session.events if isinstance(e, IoctlEnter | IoctlExit)]
    assert vmm == sorted(vmm)

    r = run_cli("replay", "--verify", str(log))
    assert r.returncode == 2
    assert "nondeterministic and cannot be replayed" in one_line(r.stderr)

    r = run_cli("check", str(log))
    assert r.returncode == 3, r.stdout + r.stderr  # crashed
    assert r.stdout.startswith("crashed: ")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--strategy", "atomic-list"], "needs KVM_SET_USER_MEMORY_REGION_LIST"),
        (["--strategy", "mmio-len0"], "needs KVM_EXIT_MMIO with len 0"),
        (["--scenario", "smram-toggle"], "address space 1"),
        (["--fault", "reader-stall"], "fault reader-stall acts inside the model's kernel"),
        (["--host", "nr_address_spaces=2"], "--host describes the model's kernel"),
    ],
)
def test_what_real_kvm_cannot_express_is_refused_in_one_line(args: list[str], needle: str) -> None:
    r = run_cli("run", "--backend", "kvm", "--no-log", *args)
    assert r.returncode == 2
    assert needle in one_line(r.stderr)


def test_without_dev_kvm_one_line_says_how_to_fix_it_and_the_model_still_runs() -> None:
    r = run_cli("run", "--backend", "kvm", "--no-log", env=NO_KVM)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "/nonexistent/kvm does not exist" in line
    assert "load the kvm module" in line
    r = run_cli("kvm", "probe", env=NO_KVM)
    assert r.returncode == 1
    assert one_line(r.stdout).startswith("kvm: not usable: /nonexistent/kvm does not exist")
    r = run_cli("compare", "--backend", "both", "--seeds", "1", env=NO_KVM)
    assert r.returncode == 2
    assert "/nonexistent/kvm does not exist" in one_line(r.stderr)
    r = run_cli("run", "--no-log", "--json", env=NO_KVM)
    assert r.returncode == 3, r.stderr  # crashed
    assert json.loads(r.stdout)["verdict"] == "crashed"


def test_permission_denied_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: str, flags: int) -> int:
        raise PermissionError(13, os.strerror(13), path)

    monkeypatch.setattr(os, "open", denied)  # what open_dev_kvm calls
    usable, reason = kvm_usable()
    assert not usable
    assert "permission denied" in reason
    assert "kvm group" in reason


def test_probe_reports_the_kernel_caps_and_a_passing_self_test() -> None:
    r = run_cli("kvm", "probe", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    probe = json.loads(r.stdout)
    assert probe["usable"]
    assert probe["caps"]["KVM_CAP_NR_MEMSLOTS"] > 0
    assert "KVM_CAP_IMMEDIATE_EXIT" in probe["caps"]
    legacy, inhibit = probe["self_test"]
    assert (legacy["strategy"], legacy["verdict"], legacy["passed"]) == ("legacy", "crashed", True)
    assert (inhibit["strategy"], inhibit["verdict"], inhibit["passed"]) == ("inhibit", "ok", True)
    assert inhibit["transactions"] > 0
    assert inhibit["internal_errors"] == 0


def test_compare_both_puts_model_and_kernel_side_by_side() -> None:
    r = run_cli("compare", "--backend", "both", "--scenario", "split", "--seeds", "2",
                "--duration", "100ms", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["strategy"]: row for row in out["scenarios"]["split"]}
    assert set(rows) == {"legacy", "inhibit"}
    assert rows["legacy"]["model"]["verdicts"] == {"crashed": 2}
    # A real run of 100 ms meets a DELETE..CREATE window only as the host schedules it: under
    # load a run met none (test_race.py asserts the crash over a budget of updates instead).
    # Either way compare must say so with the race as the cause, never "unexplained".
    kvm_legacy = rows["legacy"]["kvm"]["verdicts"]
    assert set(kvm_legacy) <= {"crashed", "ok"}
    assert sum(kvm_legacy.values()) == 2
    if kvm_legacy == {"crashed": 2}:
        assert rows["legacy"]["agree"]
        assert rows["legacy"]["differences"] == []
    for d in rows["legacy"]["differences"]:
        assert d["cause"].startswith("the fetch race is probabilistic"), d
    assert rows["inhibit"]["kvm"]["verdicts"] == {"ok": 2}
    # Seen once under load and not since: say which difference, on what counts.
    assert out["unexplained"] == 0, [
        (name, r["differences"], r["kvm"]["exits"], r["model"]["exits"]) for name, r in rows.items()
    ]
    # Under inhibit, whether a paused guest got to poll its device at all in 100 ms of a loaded
    # host is the host's scheduling (each KVM_RUN between two pauses can meet the next kick
    # first); the kernel showed 0 such exits in 2 of ~21 runs. That one difference is allowed,
    # with its cause; any other would be unexplained.
    for d in rows["inhibit"]["differences"]:
        assert d["what"].startswith("KVM_EXIT_MMIO: model ")
        assert d["what"].endswith(", kvm 0")
        assert "barely ran" in d["cause"]
    assert out["disagreements"] == sum(not r["agree"] for r in rows.values())
    assert out["model_profile"] == matching_profile(kvm_module())
    legacy = rows["legacy"]["facts"]
    assert legacy["kvm"]["internal_errors"] >= kvm_legacy.get("crashed", 0)
    assert legacy["model"]["internal_errors"] > 0
    assert any(line.startswith("strategy atomic-list: needs") for line in out["refused"])

    r = run_cli("compare", "--backend", "kvm", "--scenario", "hotplug", "--seeds", "1",
                "--duration", "100ms")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hotplug" in r.stdout
    assert "agree" not in r.stdout  # kvm alone: no model column to agree with
