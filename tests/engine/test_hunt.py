"""`slotlab hunt`: perturbed schedules replay, change the run, and find a rare legacy crash."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.cli import main
from engine.runner import verify_log
from engine.sim.perturb import GAPS, Perturb, derive, parse_perturb, pct_miss_bound
from engine.sweep.hunt import HuntPlan, calibrate, hunt, in_process, specs_of
from engine.sweep.unit import Outcome, RunSpec, execute

# vCPUs spin in a slot no update touches and pass through the one that turns read-only for
# 15 instructions out of every 4,000: legacy crashes only when a pass meets a DELETE's window.
RARE = (
    """
name = "rare"
vcpus = 2
period = "50us"
duration = "400us"
entry = 0xffc0
sequence = ["ram", "rom"]
program = '''
top:
  setc 2000
spin:
  inc [0x3000]
  loop spin
"""
    + "  nop\n" * 15
    + """  jmp top
'''
[layouts.ram]
regions = [
  { name = "low", kind = "ram", gpa = 0x0, size = 0x10000, hva = 0x7f0000000000 },
  { name = "bios", kind = "ram", gpa = 0x10000, size = 0x10000, hva = 0x7f0000010000 },
]
[layouts.rom]
regions = [
  { name = "low", kind = "ram", gpa = 0x0, size = 0x10000, hva = 0x7f0000000000 },
  { name = "bios", kind = "rom", gpa = 0x10000, size = 0x10000, hva = 0x7f0000010000 },
]
"""
)


@pytest.fixture
def rare(tmp_path: Path) -> str:
    path = tmp_path / "rare.toml"
    path.write_text(RARE)
    return str(path)


def test_perturb_text_round_trips() -> None:
    p = derive(7, depth=4, steps=500, max_preempt_ns=20_000, jitter_ns=150)
    assert p.depth == 4
    assert p.at_gaps
    assert all(1 <= h <= 500 and 1 <= ns <= 20_000 for h, ns in p.points)
    assert parse_perturb(p.text()) == p
    assert derive(7, 4, 500, 20_000, 150) == p
    # By default a change point is PCT's drop (hold 0: until the others block or the run ends).
    assert all(ns == 0 for _, ns in derive(7, 4, 500, 0, 150).points)
    # A perturbation from a log written before 2 Dec 2026 (steps were hand-overs) reads as one.
    old = parse_perturb("seed=3,jitter=300,at=40:30000+200:5000")
    assert not old.at_gaps
    assert old.text() == "seed=3,jitter=300,at=40:30000+200:5000"
    assert b"steps" not in msgspec.json.encode(old)


@pytest.mark.parametrize("text", ["seed=1", "seed=1,jitter=2,at=5:1+3:1", "x"])
def test_bad_perturb_is_one_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["run", "--no-log", "--perturb", text])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--perturb" in err
    assert err.count("\n") == 1


def test_a_perturbed_run_replays_and_differs(rare: str, tmp_path: Path) -> None:
    plain = RunSpec(scenario=rare, strategy="inhibit", seed=3)
    perturbed = RunSpec(
        scenario=rare,
        strategy="inhibit",
        seed=3,
        perturb=Perturb(seed=3, jitter_ns=300, points=[(40, 30_000), (200, 5_000)]),
    )
    a, b = execute(plain), execute(perturbed, keep_log=True)
    assert a.digest != b.digest
    assert b.log is not None
    log = tmp_path / "p.jsonl"
    log.write_bytes(b.log)
    assert verify_log(str(log)).ok
    assert b'"perturb":{"seed":3' in b.log.split(b"\n", 1)[0]


def test_only_a_log_whose_header_needs_perturb_steps_is_schema_4(rare: str, tmp_path: Path) -> None:
    """`steps` changes what a perturbed header's change points count, so a slotlab that reads
    schema 3 only must refuse such a log rather than replay it on another schedule; every other
    log stays what schema 3 wrote, byte for byte."""
    runs = {
        "plain": None,
        "before 2 Dec 2026": Perturb(seed=3, jitter_ns=300, points=[(40, 30_000)]),
        "gaps": Perturb(seed=3, jitter_ns=300, points=[(1, 0)], steps=GAPS),
    }
    schemas = {}
    for name, perturb in runs.items():
        out = execute(RunSpec(scenario=rare, strategy="legacy", seed=3, perturb=perturb), True)
        assert out.log is not None
        schemas[name] = msgspec.json.decode(out.log.split(b"\n", 1)[0])["schema"]
        log = tmp_path / f"{len(schemas)}.jsonl"
        log.write_bytes(out.log)
        assert verify_log(str(log)).ok, name
    assert schemas == {"plain": 3, "before 2 Dec 2026": 3, "gaps": 4}


def test_a_dropped_vmm_runs_again_only_once_every_vcpu_is_blocked(
    rare: str, tmp_path: Path
) -> None:
    """PCT's drop at the first return to user space inside an update: under inhibit every
    vCPU is blocked there, so the VMM carries on and applies every update; under legacy the
    vCPUs run on, the VMM never comes back, and a vCPU meets the half-done update."""
    drop = Perturb(seed=2, points=[(1, 0)], steps=GAPS)

    def run(strategy: str, perturb: Perturb | None) -> Outcome:
        return execute(RunSpec(scenario=rare, strategy=strategy, seed=2, perturb=perturb), True)

    plain, dropped = run("inhibit", None), run("inhibit", drop)
    assert dropped.summary.verdict == "ok"
    assert dropped.summary.transactions == plain.summary.transactions
    assert dropped.gaps == plain.gaps > 1
    crashed = run("legacy", drop)
    assert crashed.summary.verdict == "crashed"
    assert crashed.gaps == 1
    assert crashed.summary.transactions < plain.summary.transactions
    # A hold in ns instead brings the VMM back after that long.
    held = run("legacy", Perturb(seed=2, points=[(1, 5_000)], steps=GAPS))
    assert held.summary.transactions == plain.summary.transactions
    assert crashed.log is not None
    log = tmp_path / "dropped.jsonl"
    log.write_bytes(crashed.log)
    assert verify_log(str(log)).ok


def test_hunt_finds_the_rare_legacy_crash_and_it_replays(rare: str, tmp_path: Path) -> None:
    plan = HuntPlan(scenario=rare, strategy="legacy", budget=40)
    result = hunt(plan, in_process)
    assert result.found is not None
    assert result.verdict == "crashed"
    assert result.found.perturb is not None
    assert result.log is not None
    log = tmp_path / "found.jsonl"
    log.write_bytes(result.log)
    assert verify_log(str(log)).ok
    # Every run before it ended ok: the hunt reports the first failing one.
    handoffs, _, preempt = calibrate(plan)
    for spec in specs_of(plan, handoffs, preempt)[: result.runs - 1]:
        assert execute(spec).summary.verdict == "ok"


@pytest.mark.heavy
def test_hunt_finds_the_demo_crash_that_plain_seeds_miss() -> None:
    """pam-shadow, the TUI's default, under legacy with no fault: seeds 1-20 all survive as
    they are, while most of the hunt's perturbed runs of the same seeds crash (docs/scale.md:
    about 5 plain runs in 100 crash, against three in four perturbed)."""
    plain = hunt(
        HuntPlan(scenario="pam-shadow", strategy="legacy", budget=20, perturb=False), in_process
    )
    assert plain.found is None
    assert plain.runs == 20
    plan = HuntPlan(scenario="pam-shadow", strategy="legacy", budget=20)
    found = hunt(plan, in_process)
    assert found.found is not None
    assert found.verdict == "crashed"
    assert found.runs == 1
    steps, _, preempt = calibrate(plan)
    crashed = [execute(s).summary.verdict == "crashed" for s in specs_of(plan, steps, preempt)]
    assert sum(crashed) >= 14


def test_hunt_reports_none_with_its_bounds(rare: str) -> None:
    result = hunt(HuntPlan(scenario=rare, strategy="inhibit", budget=6), in_process)
    assert result.found is None
    assert result.runs == 6
    assert result.rate_bound == 0.5
    assert result.handoffs > 0
    assert result.miss_bound == pct_miss_bound(result.actors, result.handoffs, 5, 6)
    assert 0 < result.miss_bound < 1


def test_a_strategy_with_one_ioctl_per_update_has_no_step_to_preempt(rare: str) -> None:
    """atomic-list never returns to user space inside an update: the change points have
    nothing to act on, and the hunt claims nothing about deeper bugs."""
    result = hunt(HuntPlan(scenario=rare, strategy="atomic-list", budget=3), in_process)
    assert result.found is None
    assert result.handoffs == 0
    assert result.miss_bound == 1.0


@pytest.mark.heavy
def test_hunt_command_on_a_local_cluster(
    rare: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two worker processes, one run per task: the same first failure as in process."""
    log = tmp_path / "h.jsonl"
    argv = ["hunt", "--scenario", rare, "--budget", "40", "--workers", "2", "--chunk", "1"]
    assert main([*argv, "--log", str(log)]) == 0
    out = capsys.readouterr().out
    want = hunt(HuntPlan(scenario=rare, strategy="legacy", budget=40), in_process)
    assert want.found is not None
    assert out.startswith(f"CRASHED after {want.runs} run")
    assert f": seed {want.found.seed}\n" in out
    assert f"reproduce: slotlab run --scenario {rare} --strategy legacy" in out
    assert verify_log(str(log)).ok
