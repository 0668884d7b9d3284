"""The model against the kernel, per scenario and strategy: what differs, and why in kernel terms.

Two rows agree when their majority verdicts match and the same exit kinds occur on both sides
(a kind counts when any run took it: counts differ by construction, since a real run lasts
300 ms of wall time and a model run 1 ms of virtual time). Each difference gets the likeliest
cause the kernel explains, or "unexplained", which is what a fidelity bug looks like.
"""

from __future__ import annotations

from typing import Any

from engine.matrix import MatrixRow, RunRow, row_from_summary
from engine.sweep.unit import RunSpec, execute

# What the guest met. KVM_EXIT_INTR (the accel blocker's kicks) and KVM_EXIT_IO are how each
# backend drives its vCPUs, not outcomes.
COMPARED_EXITS = ("KVM_EXIT_MMIO", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SHUTDOWN", "ud_injected")

WINDOW = (
    "the real update window is far longer: each synchronize_srcu_expedited() of a DELETE or "
    "MOVE waits for the emulating vCPU to drop kvm->srcu (about 0.7 ms on kvm_pvm, "
    "real-kvm.md 4.3) against a few us in the model, so accesses fall into it more often"
)
RACE = (
    "the fetch race is probabilistic: a vCPU must fetch from the code slot's GPA between the "
    "DELETE's invalidation and the CREATE; over {kvm} kvm and {model} model runs of "
    "different lengths one side met it and the other did not"
)


RATES = (
    "the fetch race is probabilistic: the guest crashed in {kvm_crashed} of {kvm} kvm runs and "
    "{model_crashed} of {model} model runs, so both sides meet it and which verdict is the "
    "majority is chance"
)

STARVED = (
    "the guest barely ran between pauses on the real host: inhibit_end() resumes a vCPU "
    "whose thread must be scheduled and re-enter KVM_RUN (0.2-0.36 ms here, real-kvm.md 3), "
    "and when the next pause's kick comes first, KVM_RUN sees immediate_exit and returns "
    "EINTR before the guest reaches its device access ({intr} such exits, and no other in "
    "any kvm run); the model resumes vCPUs at once"
)


def run_model_one(
    scenario: str, strategy: str, seed: int, faults: tuple[str, ...], profile: str
) -> RunRow:
    """One model run under the host profile the local kernel matches."""
    spec = RunSpec(
        scenario=scenario, strategy=strategy, seed=seed, faults=faults, host={"profile": profile}
    )
    return row_from_summary(seed, execute(spec).summary)


def _majority(row: MatrixRow) -> str:
    """The most frequent verdict; a tie goes to the first in name order, so a row's majority
    does not depend on which of its runs finished first."""
    verdicts = row.verdicts
    return min(verdicts, key=lambda v: (-verdicts[v], v)) if verdicts else "-"


def _crash_cause(model: MatrixRow, kvm: MatrixRow) -> str:
    if model.crash_rate == 0 and kvm.crash_rate == 0:
        return "unexplained"
    if model.crash_rate > 0 and kvm.crash_rate > 0:
        # Both sides crash, at rates that differ by chance (two runs of 100 ms on a loaded
        # host, say, one of which met no window): the verdicts may differ, the kernel does not.
        return RATES.format(
            kvm_crashed=kvm.verdicts.get("crashed", 0),
            kvm=kvm.runs,
            model_crashed=model.verdicts.get("crashed", 0),
            model=model.runs,
        )
    return RACE.format(kvm=kvm.runs, model=model.runs)


def _exit_cause(kind: str, model: MatrixRow, kvm: MatrixRow) -> str:
    if kind == "KVM_EXIT_MMIO":
        if kvm.exits.get(kind, 0) and kvm.window_mmio_exits:
            return WINDOW
        intr = kvm.exits.get("KVM_EXIT_INTR", 0)
        if intr and all(k == "KVM_EXIT_INTR" for k, n in kvm.exits.items() if n):
            # The kernel's vCPUs returned for the kicks alone, in every run: the guest never
            # got as far as its device, whatever the model's guest met there. Whether a
            # paused guest runs at all between pauses is the host's scheduling.
            return STARVED.format(intr=intr)
        return "unexplained"
    if kind in ("KVM_EXIT_INTERNAL_ERROR", "ud_injected"):
        return _crash_cause(model, kvm)
    return "unexplained"


def differences(model: MatrixRow, kvm: MatrixRow) -> list[dict[str, str]]:
    """Every difference between two aggregated rows, each with its likely cause."""
    out: list[dict[str, str]] = []
    for kind in COMPARED_EXITS:
        m, k = model.exits.get(kind, 0), kvm.exits.get(kind, 0)
        if (m > 0) != (k > 0):
            out.append(
                {"what": f"{kind}: model {m}, kvm {k}", "cause": _exit_cause(kind, model, kvm)}
            )
    vm, vk = _majority(model), _majority(kvm)
    if vm != vk:
        cause = next((d["cause"] for d in out if d["cause"] != "unexplained"), "")
        out.insert(
            0,
            {
                "what": f"verdict: model {vm}, kvm {vk}",
                "cause": cause or _crash_cause(model, kvm),
            },
        )
    return out


def facts(row: MatrixRow) -> dict[str, Any]:
    """The per-side figures the comparison reports."""
    return {
        "verdict": _majority(row),
        "exits": {k: row.exits.get(k, 0) for k in COMPARED_EXITS},
        "window_mmio_exits": row.window_mmio_exits,
        "internal_errors": row.internal_errors,
        "lost_dirty": row.violations.get("lost_dirty", 0),
        "latency_p50_ns": row.latency_p50_ns,
    }
