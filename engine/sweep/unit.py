"""The unit of work of compare, sweep and hunt: a pure (config, seed) -> summary + log digest.

A RunSpec names everything a run depends on, in plain data that pickles cheaply to a Dask
worker or a compare worker process. execute() runs it headless with the log recorded into
memory, not a file: the digest (SHA-256 of the whole log) says whether two runs were the same
run, and the bytes are only returned when the caller wants to keep them. They are the bytes
`slotlab run --log` writes for the same run.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import msgspec
import trio

from engine.events import Event
from engine.log import verdict_line
from engine.runner import make_config
from engine.session import RunConfig, Session
from engine.signals import run_interruptible
from engine.sim.perturb import Perturb
from engine.summary import Summary


class RunSpec(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    strategy: str
    seed: int
    faults: tuple[str, ...] = ()
    host_profile: str = "default"
    host: dict[str, Any] = msgspec.field(default_factory=dict)
    vcpus: int | None = None
    duration_ns: int | None = None
    perturb: Perturb | None = None

    def run_id(self) -> str:
        """Stable across processes and sessions: the resume key of a sweep's Parquet."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()[:20]

    def command(self, log: str | None = None) -> str:
        """The `slotlab run` line that reproduces this run."""
        parts = [f"slotlab run --scenario {self.scenario} --strategy {self.strategy}"]
        parts.append(f"--seed {self.seed}")
        parts += [f"--fault {f}" for f in self.faults]
        parts += [f"--host {k}={v}" for k, v in self.host.items()]
        if self.vcpus is not None:
            parts.append(f"--vcpus {self.vcpus}")
        if self.duration_ns is not None:
            parts.append(f"--duration {self.duration_ns}ns")
        if self.perturb is not None:
            parts.append(f"--perturb {self.perturb.text()}")
        parts.append(f"--log {log}" if log else "--no-log")
        return " ".join(parts)


class Outcome(msgspec.Struct, kw_only=True):
    summary: Summary
    digest: str
    handoffs: int
    sync_handoffs: int
    """Hand-overs to actors other than vCPUs (hunt's steps in logs before 2 Dec 2026)."""
    gaps: int = 0
    """The VMM's returns to user space between a transaction's ioctls: hunt's steps."""
    actors: int
    log: bytes | None = None


@functools.lru_cache(maxsize=64)
def _base_config(scenario: str, strategy: str, faults: tuple[str, ...]) -> RunConfig:
    # A worker runs thousands of specs over a handful of scenarios: parse and assemble each
    # scenario once. RunConfig is only read by a Session, so sharing the base is safe.
    return make_config(scenario, strategy, faults=list(faults))


def config_of(spec: RunSpec) -> RunConfig:
    """Raises ValueError (one line) for a spec that cannot run."""
    base = _base_config(spec.scenario, spec.strategy, spec.faults)
    return RunConfig(
        scenario=base.scenario,
        strategy=spec.strategy,
        seed=spec.seed,
        vcpus=spec.vcpus,
        duration_ns=spec.duration_ns,
        faults=list(spec.faults),
        fault_script=[],
        host=dict(spec.host),
        naive=False,
        scenario_text=base.scenario_text,
        perturb=spec.perturb,
    )


def execute(spec: RunSpec, keep_log: bool = False) -> Outcome:
    return execute_config(config_of(spec), keep_log)


def execute_config(config: RunConfig, keep_log: bool = False) -> Outcome:
    """Run a config headless; the log is built in memory, hashed, and returned if asked."""
    encoder = msgspec.json.Encoder()
    buf = bytearray()

    def record(event: Event) -> None:
        encoder.encode_into(event, buf, len(buf))
        buf.append(0x0A)

    session = Session(config, observers=(record,))
    head = bytearray(encoder.encode(session.header()) + b"\n")
    # A signal stops the run at its next hand-over and raises Interrupted: a sweep's in-process
    # runs (hunt's calibration, compare --jobs 1) stop as `slotlab run` does.
    trio.run(run_interruptible, session.run, session.interrupt)
    summary = session.summary()
    verdict = verdict_line(summary.verdict, summary.explanation, summary)
    head += buf
    head += encoder.encode(verdict) + b"\n"
    return Outcome(
        summary=summary,
        digest=hashlib.sha256(head).hexdigest(),
        handoffs=session.seq.handoffs,
        sync_handoffs=session.seq.sync_handoffs,
        gaps=session.seq.gaps,
        actors=len(session.vcpus) + 2 + bool(config.fault_script),
        log=bytes(head) if keep_log else None,
    )
