"""`slotlab hunt` on the command line: the plan from options, the finding in words."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from engine.sweep.hunt import HuntPlan, HuntResult, Runner, hunt, in_process, on_client


@contextlib.contextmanager
def runner_for(args: argparse.Namespace) -> Iterator[Runner]:
    """`--workers 0`: in this process, no cluster; otherwise sweep's cluster options."""
    if args.workers == 0 and args.scheduler is None:
        yield in_process
        return
    from engine.sweep.cluster import open_client
    from engine.sweep.options import cluster_workers

    with open_client(args.scheduler, cluster_workers(args)) as client:
        yield on_client(client, args.chunk)


def cmd_hunt(args: argparse.Namespace) -> int:
    plan = HuntPlan(
        scenario=args.scenario,
        strategy=args.strategy,
        budget=args.budget,
        first_seed=args.first_seed,
        perturb=not args.no_perturb,
        depth=args.depth,
        max_preempt_ns=args.max_preempt,
        jitter_ns=args.jitter,
        vcpus=args.vcpus,
        duration_ns=args.duration,
    )
    # A scenario or strategy that cannot run fails here, before a cluster starts.
    from engine.sweep.unit import RunSpec, config_of

    config_of(RunSpec(scenario=plan.scenario, strategy=plan.strategy, seed=plan.first_seed))
    with runner_for(args) as runner:
        result = hunt(plan, runner)
    log = None
    if result.found is not None and result.log is not None:
        stem = Path(plan.scenario).stem
        log = args.log or f"sessions/hunt-{stem}-{plan.strategy}-s{result.found.seed}.jsonl"
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_bytes(result.log)
    if args.json:
        out = msgspec.structs.asdict(result)
        out["log"] = log
        out["command"] = result.found.command(log) if result.found else None
        print(msgspec.json.encode(out).decode())
    else:
        print(describe(plan, result, log))
    return 0


def describe(plan: HuntPlan, r: HuntResult, log: str | None) -> str:
    how = (
        f"PCT depth {plan.depth} over {r.handoffs} steps of {r.actors} actors"
        if plan.perturb
        else "plain seeds, no perturbation"
    )
    if r.found is None:
        lines = [
            f"none: {r.runs} runs of {plan.scenario} / {plan.strategy} ({how}) all ended ok",
            f"  the per-run failure rate is below {r.rate_bound:.2g} (95% confidence, rule of three)",
        ]
        if plan.perturb:
            lines.append(
                f"  a bug of depth {plan.depth} is missed by all of them with probability at "
                f"most {r.miss_bound:.3g} (PCT: each run finds it with probability at least "
                f"1/(n k^(d-1)))"
            )
        return "\n".join(lines)
    lines = [
        f"{r.verdict.upper()} after {r.runs} run{'s' if r.runs != 1 else ''} "
        f"({how}): seed {r.found.seed}",
        f"  {r.explanation}",
    ]
    if log:
        lines.append(f"  log: {log}")
    lines.append(f"  reproduce: {r.found.command(log)}")
    return "\n".join(lines)
