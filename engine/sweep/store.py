"""A sweep's results: one Parquet row per run, streamed as row groups, resumable.

Parquet cannot be appended to once its footer is written, so a sweep writes a new file next to
the old one (`FILE.partial`): the old rows first, then each batch of new rows as a row group, and
on close (normal end, Ctrl-C or an error) it renames the new file over the old one. A killed
process loses only that session's new rows; the previous file is untouched. A re-run reads the
run ids already present and hands out only the rest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from engine.matrix import row_from_summary
from engine.sweep.unit import Outcome, RunSpec

SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("scenario", pa.string()),
        ("strategy", pa.string()),
        ("seed", pa.int64()),
        ("faults", pa.string()),
        ("host_profile", pa.string()),
        ("vcpus", pa.int64()),
        ("duration_ns", pa.int64()),
        ("perturb", pa.string()),
        ("verdict", pa.string()),
        ("explanation", pa.string()),
        ("crashed", pa.bool_()),
        ("internal_errors", pa.int64()),
        ("retries", pa.int64()),
        ("stall_ns", pa.int64()),
        ("committed", pa.bool_()),
        ("p50", pa.int64()),
        ("p99", pa.int64()),
        ("violations", pa.list_(pa.string())),
        ("exits", pa.map_(pa.string(), pa.int64())),
        ("window_mmio_exits", pa.int64()),
        ("transactions", pa.int64()),
        ("events", pa.int64()),
        ("virtual_ns", pa.int64()),
        ("digest", pa.string()),
        ("log", pa.string()),
    ]
)


class StoreError(ValueError):
    pass


def row_of(
    spec: RunSpec, outcome: Outcome | None, error: str = "", log: str = ""
) -> dict[str, Any]:
    """One Parquet row; a run that raised is recorded with verdict `error` and the exception."""
    base: dict[str, Any] = {
        "run_id": spec.run_id(),
        "scenario": spec.scenario,
        "strategy": spec.strategy,
        "seed": spec.seed,
        "faults": " ".join(spec.faults),
        "host_profile": spec.host_profile,
        "vcpus": spec.vcpus,
        "duration_ns": spec.duration_ns,
        "perturb": spec.perturb.text() if spec.perturb else "",
        "log": log,
    }
    if outcome is None:
        zeros = dict.fromkeys(
            (
                "internal_errors",
                "retries",
                "stall_ns",
                "p50",
                "p99",
                "window_mmio_exits",
                "transactions",
                "events",
            ),
            0,
        )
        return {
            **base,
            **zeros,
            "verdict": "error",
            "explanation": error,
            "crashed": False,
            "committed": False,
            "violations": [],
            "exits": {},
            "virtual_ns": 0,
            "digest": "",
        }
    s = outcome.summary
    return {
        **base,
        # The per-run fields compare's matrix aggregates, exactly as compare derives them.
        **msgspec.structs.asdict(row_from_summary(spec.seed, s)),
        "explanation": s.explanation,
        "transactions": s.transactions,
        "events": s.events,
        "virtual_ns": s.virtual_ns,
        "digest": outcome.digest,
    }


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        table = pq.read_table(p)
    except FileNotFoundError:
        raise StoreError(f"{p}: no such file") from None
    except (OSError, pa.ArrowInvalid) as err:
        raise StoreError(f"{p}: not a readable Parquet file: {err}") from None
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise StoreError(f"{p}: not a slotlab sweep (no column {missing[0]!r})")
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        # Arrow hands a map column back as (key, value) pairs; the matrix wants a dict.
        row["exits"] = dict(row["exits"] or ())
    return rows


class ResultStore:
    """Opened on a path that may hold an earlier sweep's rows; add() streams new ones."""

    # Rows per row group: fewer, larger groups cost the client less per row (7 us against 12 us
    # at 512 rows), and Parquet readers prefer them.
    def __init__(self, path: str | Path, flush_rows: int = 4096) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.flush_rows = flush_rows
        self.old = read_rows(self.path) if self.path.exists() else []
        self.done: set[str] = {r["run_id"] for r in self.old}
        self._pending: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self.added = 0

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        self.done.add(row["run_id"])
        self.added += 1
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if self._writer is None:
            if not self._pending:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.partial, SCHEMA)
            if self.old:
                self._writer.write_table(pa.Table.from_pylist(self.old, schema=SCHEMA))
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=SCHEMA))
            self._pending.clear()

    def close(self) -> None:
        """Write the footer and put the file in place; nothing is rewritten if no run was added."""
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            os.replace(self.partial, self.path)
