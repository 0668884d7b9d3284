"""Scenarios as data: TOML files naming layouts, the order the VMM moves through them, and the
guest program the vCPUs run. A malformed file is rejected with its path, the line and why.

    name = "split"
    summary = "one line"
    vcpus = 2                 # default vCPU count
    period = "50us"           # virtual time between memory transactions
    duration = "1ms"          # default run length
    entry = 0x1000            # RIP every vCPU starts at
    cpl = 0                   # guest privilege level (3: a user task; L2 via guest_mode = true)
    moves = false             # issue KVM_MR_MOVE when a range only changes GPA (the selftests do)
    sync = "20us"             # harvest dirty logs this often while any slot logs
    smi = "100us"             # a periodic SMI to each vCPU in turn (2-address-space hosts)
    smm_entry = 0x2000        # where the SMI handler starts (it ends with rsm)
    sequence = ["merged", "split"]   # first is the boot layout; then cycled
    program = '''
    top:
      inc [0x3000]
      jmp top
    '''
    [layouts.merged]
    regions = [{ name = "ram", kind = "ram", gpa = 0, size = 0x20000, hva = 0x7f0000000000 }]

A scenario imported from a real VMM's trace (engine/importers) plays its sequence once, in
order, instead of cycling, and says where it came from:

    gaps_ns = [100000, 31000]    # idle before each step after the boot layout (virtual ns)
    recorded_us = [0, 5312]      # when each step happened in the trace (us after its start)
    workload = "code-in-churn"   # which guest the importer chose (engine/importers/workload.py)
    [provenance]                 # strings: source, trace, command, vmm; captured = true/false
    regions = [{ ..., slot = 4 }]   # the slot id the trace used (the VMM takes it when free)
"""

from __future__ import annotations

import dataclasses
import random
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from engine.limits import (
    AS_ID,
    DURATION_NS,
    ENTRY,
    FAULT_NS,
    GPA,
    HVA,
    PERIOD_NS,
    PRIORITY,
    REGIONS,
    SIZE,
    SLOT,
    SYNC_NS,
    VCPUS,
    Bound,
    LimitError,
    check_range,
)
from engine.model.guest import AsmError, Insn, assemble
from engine.units import NotText, decode_text, parse_duration
from engine.vmm.flatview import Region

KINDS = ("ram", "rom", "mmio")
TOP_KEYS = {
    "name", "summary", "vcpus", "period", "duration", "entry", "cpl", "guest_mode", "moves",
    "sync", "sequence", "program", "layouts", "ud_handler", "gaps_ns", "recorded_us",
    "workload", "provenance", "smm_entry", "smi",
}  # fmt: skip
REGION_KEYS = {"name", "kind", "gpa", "size", "hva", "priority", "log_dirty", "as_id", "slot"}
PROVENANCE_KEYS = {"source", "trace", "command", "vmm", "captured"}


class ScenarioError(ValueError):
    """`path:line: reason`, the one line a user needs."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    regions: tuple[tuple[int, Region], ...]  # (as_id, region)

    def for_as(self, as_id: int) -> list[Region]:
        return [r for a, r in self.regions if a == as_id]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    vcpus: int
    period_ns: int
    duration_ns: int
    entry: int
    cpl: int
    guest_mode: bool
    moves: bool
    sync_ns: int
    sequence: tuple[str, ...]
    layouts: dict[str, Layout]
    program: dict[int, Insn]
    ud_handler: int | None
    source: str
    smm_entry: int | None = None
    """Where a vCPU starts in SMM (its SMBASE handler); None: where the SMI found it."""
    smi_ns: int = 0
    """A periodic SMI to each vCPU in turn this often (0: none), on 2-address-space hosts."""
    gaps_ns: tuple[int, ...] | None = None
    recorded_us: tuple[int, ...] = ()
    workload: str = ""
    provenance: dict[str, str | bool] = dataclasses.field(default_factory=dict)

    @property
    def captured(self) -> bool:
        """Imported from a trace of a real VMM (not written by hand)."""
        return self.provenance.get("captured") is True

    def steps(self, rng: random.Random) -> Iterator[tuple[int, Layout | None]]:
        """The VMM's schedule after boot: (idle ns, the layout to move to, or None to stay).
        A recorded scenario plays its steps once at their gaps, then ends; any other cycles
        through its sequence forever, one jittered period apart."""
        if self.gaps_ns is not None:
            for gap, name in zip(self.gaps_ns, self.sequence[1:], strict=True):
                yield gap, self.layouts[name]
            yield self.period_ns, None
            return
        index = 0
        while True:
            idle = int(self.period_ns * (0.5 + rng.random()))
            if len(self.sequence) < 2:
                yield idle, None
                continue
            index = (index + 1) % len(self.sequence)
            yield idle, self.layouts[self.sequence[index]]


def _line_of(text: str | list[str], key: str, after: int = 0) -> int:
    """Best line for a semantic error: where `key =` or `[...key]` first appears."""
    lines = text.splitlines() if isinstance(text, str) else text
    pattern = re.compile(rf"(^|[\s{{,\[.]){re.escape(key)}(\s*=|\]|\.)")
    for i in range(after, len(lines)):
        if pattern.search(lines[i]):
            return i + 1
    return max(after, 1)


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        # Split once: a file of 40,000 regions must not be split per region (it was).
        self.lines = text.splitlines()
        self.headers = {
            m.group(1).strip().strip('"'): text.count("\n", 0, m.start()) + 1
            for m in re.finditer(r"(?m)^[ \t]*\[layouts\.([^\]]+)\]", text)
        }

    def fail(self, key: str, reason: str, after: int = 0) -> ScenarioError:
        return ScenarioError(self.path, _line_of(self.lines, key, after), reason)

    def int_(
        self, data: dict[str, Any], key: str, default: int | None = None, bound: Bound = ENTRY
    ) -> int:
        if key not in data:
            if default is None:
                raise self.fail(key, f"missing {key!r}")
            return default
        try:
            return bound.check(data[key], key)
        except LimitError as err:
            raise self.fail(key, str(err).replace(f"{key}: {bound.name}", repr(key))) from None

    def duration(self, data: dict[str, Any], key: str, default: str, bound: Bound) -> int:
        raw = data.get(key, default)
        try:
            return bound.check(parse_duration(str(raw)))
        except ValueError as err:
            raise self.fail(key, f"{key!r}: {err}") from None


def parse_scenario(text: str, path: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"line (\d+)", str(err))
        raise ScenarioError(
            path, int(match.group(1)) if match else 1, f"not valid TOML: {err}"
        ) from None
    r = _Reader(path, text)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise r.fail(
            unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise r.fail("name", "'name' must be a lowercase word like split or bar-overlay")
    layouts_raw = data.get("layouts")
    if not isinstance(layouts_raw, dict) or not layouts_raw:
        raise r.fail("layouts", "needs at least one [layouts.NAME] table")
    layouts = {ln: _layout(r, ln, body) for ln, body in layouts_raw.items()}
    sequence = data.get("sequence", list(layouts)[:1])
    if (
        not isinstance(sequence, list)
        or not sequence
        or not all(isinstance(s, str) for s in sequence)
    ):
        raise r.fail("sequence", "'sequence' must be a non-empty list of layout names")
    for entry in sequence:
        if entry not in layouts:
            raise r.fail("sequence", f"sequence names layout {entry!r}, which is not defined")
    program_text = data.get("program")
    if not isinstance(program_text, str):
        raise r.fail("program", "missing 'program' (the guest code as text)")
    entry = r.int_(data, "entry")
    program_line = _line_of(text, "program")
    try:
        program = assemble(entry, program_text.splitlines(), first_line_no=program_line + 1)
    except AsmError as err:
        raise ScenarioError(path, err.line_no, f"guest program: {err.reason}") from None
    if entry not in program:
        raise r.fail("entry", f"entry {entry:#x} is not the address of an instruction")
    ud = data.get("ud_handler")
    if ud is not None and (not isinstance(ud, int) or ud not in program):
        raise r.fail("ud_handler", "'ud_handler' must be the address of an instruction")
    smm = data.get("smm_entry")
    if smm is not None and (not isinstance(smm, int) or smm not in program):
        raise r.fail("smm_entry", "'smm_entry' must be the address of an instruction")
    vcpus = r.int_(data, "vcpus", 1, VCPUS)
    cpl = r.int_(data, "cpl", 0)
    if cpl > 3:
        raise r.fail("cpl", "'cpl' must be 0..3")
    for flag in ("guest_mode", "moves"):
        if not isinstance(data.get(flag, False), bool):
            raise r.fail(flag, f"{flag!r} must be true or false")
    gaps = _int_list(r, data, "gaps_ns", len(sequence) - 1)
    recorded = _int_list(r, data, "recorded_us", len(sequence) - 1)
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict) or not all(
        k in PROVENANCE_KEYS and isinstance(v, str | bool) for k, v in provenance.items()
    ):
        raise r.fail(
            "provenance",
            f"[provenance] holds strings or booleans named {', '.join(sorted(PROVENANCE_KEYS))}",
        )
    if not isinstance(data.get("workload", ""), str):
        raise r.fail("workload", "'workload' must be a string")
    return Scenario(
        name=name,
        summary=str(data.get("summary", "")),
        vcpus=vcpus,
        period_ns=r.duration(data, "period", "50us", PERIOD_NS),
        duration_ns=r.duration(data, "duration", "1ms", DURATION_NS),
        entry=entry,
        cpl=cpl,
        guest_mode=bool(data.get("guest_mode", False)),
        moves=bool(data.get("moves", False)),
        sync_ns=r.duration(data, "sync", "20us", SYNC_NS),
        sequence=tuple(sequence),
        layouts=layouts,
        program=program,
        ud_handler=ud,
        source=path,
        gaps_ns=tuple(gaps) if gaps is not None else None,
        recorded_us=tuple(recorded or ()),
        workload=str(data.get("workload", "")),
        provenance=dict(provenance),
        smm_entry=smm,
        smi_ns=r.duration(data, "smi", "1ns", FAULT_NS) if "smi" in data else 0,
    )


def _int_list(r: _Reader, data: dict[str, Any], key: str, length: int) -> list[int] | None:
    """An optional list of one integer >= 0 per step after the boot layout."""
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise r.fail(key, f"{key!r} must be a list of integers >= 0")
    if len(value) != length:
        raise r.fail(
            key, f"{key!r} has {len(value)} entries; the sequence has {length} steps after boot"
        )
    return value


def _region_lines(lines: list[str], header_line: int, count: int) -> list[int]:
    """The line each of a layout's ``count`` regions is on, in one pass from the layout's
    table header: the n-th inline table (`{`) or `[[...regions]]` header, up to the next
    table. Regions it cannot place get the header's line."""
    out: list[int] = []
    seen = -1
    for no in range(header_line, len(lines) + 1):
        line = lines[no - 1].strip()
        if line.startswith("[[") and "regions" in line:
            seen += 1
        elif line.startswith("[") and no > header_line:
            break
        else:
            seen += line.split("#", 1)[0].count("{")
        while len(out) < min(seen + 1, count):
            out.append(no)
        if len(out) >= count:
            break
    return out + [header_line] * (count - len(out))


REGION_BOUNDS = {
    "gpa": GPA, "size": SIZE, "hva": HVA, "priority": PRIORITY, "as_id": AS_ID, "slot": SLOT,
}  # fmt: skip


def _layout(r: _Reader, name: str, body: object) -> Layout:
    where = r.headers.get(name) or _line_of(r.lines, name)
    if not isinstance(body, dict) or not isinstance(body.get("regions"), list):
        raise r.fail(name, f"layout {name!r} needs a 'regions' list")
    try:
        REGIONS.check(len(body["regions"]))
    except LimitError as err:
        raise ScenarioError(r.path, where, f"layout {name!r}: {err}") from None
    out: list[tuple[int, Region]] = []
    lines = _region_lines(r.lines, where, len(body["regions"]))
    for i, raw in enumerate(body["regions"]):
        here = lines[i]
        if not isinstance(raw, dict):
            raise ScenarioError(r.path, here, f"layout {name!r} region {i}: must be a table")
        unknown = sorted(set(raw) - REGION_KEYS)
        if unknown:
            raise ScenarioError(
                r.path, here, f"layout {name!r} region {i}: unknown key {unknown[0]!r}"
            )
        kind = raw.get("kind", "ram")
        if kind not in KINDS:
            raise ScenarioError(
                r.path,
                here,
                f"layout {name!r} region {i}: kind must be ram, rom or mmio, not {kind!r}",
            )
        vals = {}
        for key in ("gpa", "size", "hva", "priority", "as_id", "slot"):
            if key == "slot" and key not in raw:
                continue  # no preference: the VMM takes the lowest free id, as QEMU does
            v = raw.get(key, 0 if key in ("hva", "priority", "as_id") else None)
            if v is None:
                raise ScenarioError(r.path, here, f"layout {name!r} region {i}: missing {key!r}")
            try:
                vals[key] = REGION_BOUNDS[key].check(v)
            except LimitError as err:
                raise ScenarioError(r.path, here, f"layout {name!r} region {i}: {err}") from None
        try:
            check_range(GPA, SIZE, vals["gpa"], vals["size"])
            check_range(HVA, SIZE, vals["hva"], vals["size"])
        except LimitError as err:
            raise ScenarioError(r.path, here, f"layout {name!r} region {i}: {err}") from None
        log_dirty = raw.get("log_dirty", False)
        if not isinstance(log_dirty, bool):
            # A string "false" is truthy: it must not turn logging on.
            raise ScenarioError(
                r.path,
                here,
                f"layout {name!r} region {i}: 'log_dirty' must be true or false, not {log_dirty!r}",
            )
        if vals["size"] == 0 or vals["size"] % 4096 or vals["gpa"] % 4096 or vals["hva"] % 4096:
            raise ScenarioError(
                r.path,
                here,
                f"layout {name!r} region {i}: gpa, size and hva must be page aligned and size > 0",
            )
        if kind != "mmio" and vals["hva"] == 0:
            raise ScenarioError(
                r.path, here, f"layout {name!r} region {i}: a {kind} region needs an 'hva'"
            )
        region = Region(
            name=str(raw.get("name", f"{name}{i}")),
            kind=kind,
            gpa=vals["gpa"],
            size=vals["size"],
            hva=vals["hva"],
            priority=vals["priority"],
            log_dirty=log_dirty,
            slot=vals.get("slot"),
        )
        out.append((vals["as_id"], region))
    return Layout(name, tuple(out))


def builtin_dir() -> Path:
    return Path(str(resources.files("engine.scenarios")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a user's file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ScenarioError(str(path), 1, f"cannot read: {err.strerror}") from None
        try:
            text = decode_text(data, str(path))
        except NotText as err:
            raise ScenarioError(str(path), err.line, f"not UTF-8 text ({err.reason})") from None
        return parse_scenario(text, str(path))
    builtin = builtin_dir() / f"{name_or_path}.toml"
    if not builtin.exists():
        raise ValueError(
            f"unknown scenario {name_or_path!r} (built in: {', '.join(builtin_names())}; or give a .toml path)"
        )
    return parse_scenario(builtin.read_text(), f"{name_or_path}.toml")
