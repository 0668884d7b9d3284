"""`slotlab shrink LOG`: the smallest run that still fails the same way.

Greedy delta debugging over the run's own knobs, each candidate one deterministic run: fewer
vCPUs, no faults or fewer of them, fewer perturbation change points (then none, then no
jitter), fewer transactions (the VMM held back at the start so that its first update is the
failing one, booting in the layout that update started from if need be), a prefix of the
layout sequence, a duration cut to just past the failure, and last, other seeds of the reduced
run that fail after fewer transactions. A candidate is kept when its
verdict is the same kind (crashed stays crashed) and it is smaller in the order
(vCPUs, transactions, faults, change points, duration); passes repeat until none is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from engine.log import read_log
from engine.runner import config_from_log
from engine.scenarios import parse_scenario
from engine.session import RunConfig
from engine.sim.perturb import Perturb
from engine.sweep.unit import Outcome, execute_config

Size = tuple[int, int, int, int, int]


class ShrinkError(ValueError):
    pass


@dataclasses.dataclass
class Shrunk:
    config: RunConfig
    outcome: Outcome
    verdict: str
    tried: int
    before: Size
    after: Size


def size_of(config: RunConfig, outcome: Outcome) -> Size:
    p = config.perturb
    return (
        config.vcpus or config.scenario.vcpus,
        outcome.summary.transactions,
        len(config.faults) + len(config.fault_script),
        (len(p.points) + bool(p.jitter_ns) + 1) if p is not None else 0,
        config.duration_ns or config.scenario.duration_ns,
    )


def _with_sequence(config: RunConfig, sequence: list[str]) -> RunConfig | None:
    """The scenario with `sequence` cut down, rewritten in its own text so the log carries it."""
    pattern = re.compile(r"^sequence\s*=\s*\[[^\]]*\]", re.M)
    if not pattern.search(config.scenario_text):
        return None
    text = pattern.sub(lambda _: f"sequence = {json.dumps(sequence)}", config.scenario_text, 1)
    scenario = parse_scenario(text, f"{config.scenario.name}.toml")
    return dataclasses.replace(config, scenario=scenario, scenario_text=text)


_TXN = re.compile(rb'"kind":"txn_begin","txn":(\d+),"as_id":\d+,"layout":"([^"]*)".*?"t":(\d+),')


def _begins(config: RunConfig) -> list[tuple[int, str, int]]:
    """(txn, layout, t) of every transaction the run began."""
    log = execute_config(config, keep_log=True).log or b""
    return [(int(n), layout.decode(), int(t)) for n, layout, t in _TXN.findall(log)]


def _postponed(config: RunConfig, outcome: Outcome) -> Iterator[RunConfig]:
    """Fewer transactions: one change point that holds the VMM back at the start for as long
    as the updates before the failing one took, so its first update lands where the failing one
    did. Without the earlier updates' faults the vCPUs run a little ahead, so shorter holds are
    tried too."""
    if outcome.summary.transactions <= 2:
        return
    begins = _begins(config)
    if len(begins) < 3:
        return
    if begins[1][1] != begins[-1][1]:
        # The first update goes elsewhere: boot in the layout the failing update started from
        # (the sequence rotated), so the first update is the failing one.
        seq = list(config.scenario.sequence)
        i = seq.index(begins[-1][1])
        rotated = _with_sequence(config, seq[i - 1 :] + seq[: i - 1])
        if rotated is None:
            return
        # The VMM draws the same idle times, so its first update still comes at begins[1].
        config = rotated
    want, hold = begins[-1][2], begins[-1][2] - begins[1][2]
    full = config.scenario.duration_ns

    def held(handoff: int, ns: int) -> RunConfig:
        p = Perturb(seed=config.seed, points=[(handoff, ns)])
        return dataclasses.replace(config, perturb=p, duration_ns=full)

    # Which early hand-over is the VMM's: the one that moves the first update to `want`.
    def lands(handoff: int) -> bool:
        moved = _begins(held(handoff, hold))
        return len(moved) > 1 and abs(moved[1][2] - want) < 1_000

    vmm = next((h for h in range(1, 7) if lands(h)), None)
    if vmm is None:
        return
    for step in range(0, 41):
        delta = -1_000 * step if step % 4 else 1_000 * (step // 4)
        if hold + delta > 0:
            yield held(vmm, hold + delta)


def candidates(config: RunConfig, outcome: Outcome, seed_tries: int) -> Iterator[RunConfig]:
    """Smaller variants of config, the biggest cuts first within each knob."""
    replace = dataclasses.replace
    vcpus = config.vcpus or config.scenario.vcpus
    for n in range(1, vcpus):
        yield replace(config, vcpus=n)
    if config.faults:
        yield replace(config, faults=[])
        for i in range(len(config.faults)):
            yield replace(config, faults=config.faults[:i] + config.faults[i + 1 :])
    if config.fault_script:
        yield replace(config, fault_script=[])
        for i in range(len(config.fault_script)):
            script = config.fault_script[:i] + config.fault_script[i + 1 :]
            yield replace(config, fault_script=script)
    p = config.perturb
    if p is not None:
        yield replace(config, perturb=None)
        for i in range(len(p.points)):
            yield replace(config, perturb=p.without_point(i))
        if p.jitter_ns:
            yield replace(config, perturb=msgspec.structs.replace(p, jitter_ns=0))
    yield from _postponed(config, outcome)
    sequence = list(config.scenario.sequence)
    for k in range(2, len(sequence)):
        cut = _with_sequence(config, sequence[:k])
        if cut is not None:
            yield cut
    # The run ends at the failure: a duration just past it loses nothing before it.
    end = outcome.summary.virtual_ns
    duration = config.duration_ns or config.scenario.duration_ns
    for d in (end, end + 1_000, end + 10_000):
        if 0 < d < duration:
            yield replace(config, duration_ns=d)
    for seed in range(1, seed_tries + 1):
        if seed != config.seed:
            yield replace(config, seed=seed, duration_ns=config.scenario.duration_ns)


def shrink(
    config: RunConfig,
    verdict: str,
    seed_tries: int = 32,
    progress: Callable[[int, Size], None] | None = None,
) -> Shrunk:
    outcome = execute_config(config)
    if outcome.summary.verdict != verdict:
        raise ShrinkError(
            f"the log's run does not fail again: it was {verdict}, re-running it gives "
            f"{outcome.summary.verdict}"
        )
    best, best_size, tried = config, size_of(config, outcome), 1
    before = best_size
    improved = True
    while improved:
        improved = False
        for cand in candidates(best, outcome, seed_tries):
            got = execute_config(cand)
            tried += 1
            if got.summary.verdict != verdict:
                continue
            size = size_of(cand, got)
            if size < best_size:
                best, outcome, best_size, improved = cand, got, size, True
                if progress is not None:
                    progress(tried, size)
                break
    final = execute_config(best, keep_log=True)
    return Shrunk(best, final, verdict, tried, before, best_size)


def load_failing(path: str) -> tuple[RunConfig, str]:
    log = read_log(path)
    if log.header.host.get("backend") == "kvm":
        raise ShrinkError(f"{path}:1: a --backend kvm run does not replay, so it cannot shrink")
    if log.verdict is None:
        raise ShrinkError(f"{path}: no verdict line: the run did not finish")
    if log.verdict.verdict == "ok":
        raise ShrinkError(f"{path}: the run ended ok: there is no failure to shrink")
    try:
        return config_from_log(log), log.verdict.verdict
    except ValueError as err:
        raise ShrinkError(f"{path}:1: the header cannot be replayed: {err}") from None


def run_command(config: RunConfig, scenario: str, log: str, faults_file: str | None) -> str:
    """The one `slotlab run` line that reproduces config."""
    from engine.model.host import Host

    parts = [f"slotlab run --scenario {scenario} --strategy {config.strategy}"]
    parts.append(f"--seed {config.seed}")
    if config.vcpus is not None:
        parts.append(f"--vcpus {config.vcpus}")
    if config.duration_ns is not None:
        parts.append(f"--duration {config.duration_ns}ns")
    parts += [f"--fault {f}" for f in config.faults]
    if faults_file:
        parts.append(f"--faults {faults_file}")
    defaults: dict[str, Any] = Host().to_dict()
    parts += [f"--host {k}={v}" for k, v in config.host.items() if defaults.get(k) != v]
    if config.naive:
        parts.append("--naive")
    if config.perturb is not None:
        parts.append(f"--perturb {config.perturb.text()}")
    parts.append(f"--log {log}")
    return " ".join(parts)


def describe(s: Shrunk) -> str:
    names = ("vCPUs", "transactions", "faults", "perturbation", "duration ns")
    changes = [
        f"{n} {a} -> {b}" for n, a, b in zip(names, s.before, s.after, strict=True) if a != b
    ]
    return ", ".join(changes) or "nothing smaller fails the same way"


# --- the command --------------------------------------------------------------------------


def cmd_shrink(args: Any) -> int:
    from pathlib import Path

    from engine.log import LogError
    from engine.runner import verify_log

    if args.seed_tries < 0:
        raise ShrinkError(f"--seed-tries must be at least 0, not {args.seed_tries}")
    try:
        config, verdict = load_failing(args.log)
    except LogError as err:
        raise ShrinkError(str(err)) from None
    result = shrink(config, verdict, args.seed_tries)
    stem = re.sub(r"\.jsonl(\.gz|\.zst)?$", "", args.log)
    out = Path(args.out or f"{stem}.shrunk.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    assert result.outcome.log is not None
    out.write_bytes(result.outcome.log)
    # The reproducer must not depend on the original scenario file: write the one it ran.
    scenario = out.with_suffix(".toml")
    scenario.write_text(result.config.scenario_text)
    faults = None
    if result.config.fault_script:
        faults = str(out.with_suffix(".faults"))
        Path(faults).write_text("".join(f"{t}ns {f}\n" for t, f in result.config.fault_script))
    check = verify_log(str(out))
    command = run_command(result.config, str(scenario), str(out), faults)
    if args.json:
        record = {
            "verdict": verdict,
            "tried": result.tried,
            "before": result.before,
            "after": result.after,
            "log": str(out),
            "verified": check.ok,
            "command": command,
        }
        print(msgspec.json.encode(record).decode())
        return 0 if check.ok else 1
    print(f"{verdict} still, after {result.tried} runs: {describe(result)}")
    print(f"  log: {out} ({'verifies' if check.ok else 'DOES NOT VERIFY: ' + check.message})")
    print(f"  reproduce: {command}")
    return 0 if check.ok else 1
