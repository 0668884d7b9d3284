"""`slotlab sweep` on a real LocalCluster: its Parquet rows are compare's matrix, it resumes,
and the logs it keeps replay."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

from engine.cli import main
from engine.compare import compare_matrix
from engine.runner import verify_log
from engine.sweep.cluster import MAX_CHUNK, MIN_CHUNK, chunked, open_client, run_chunk
from engine.sweep.store import read_rows
from engine.sweep.sweep_cmd import matrices
from engine.sweep.unit import RunSpec, execute

STRATEGIES = ["legacy", "inhibit", "atomic-list"]
SEEDS = 3
DURATION_NS = 150_000


def _sweep(out: Path, *extra: str) -> int:
    argv = ["sweep", "--scenario", "split", "--seeds", str(SEEDS), "--duration", "150us"]
    for st in STRATEGIES:
        argv += ["--strategy", st]
    return main([*argv, "--workers", "2", "--chunk", "2", "--out", str(out), *extra])


@pytest.mark.heavy
def test_sweep_on_local_cluster_matches_compare(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    assert _sweep(out, "--keep", "failing") == 0
    rows = read_rows(out)
    assert len(rows) == len(STRATEGIES) * SEEDS
    assert len({r["run_id"] for r in rows}) == len(rows)
    want = compare_matrix("split", STRATEGIES, SEEDS, 1, [], duration_ns=DURATION_NS)
    got = matrices(rows)
    assert list(got) == [("split", "", "default", None, DURATION_NS, "")]
    assert next(iter(got.values())) == want

    # Exactly the failing runs kept their logs, and each replays byte for byte.
    failing = [r for r in rows if r["verdict"] != "ok"]
    assert failing, "legacy crashes split: the sweep must have kept its logs"
    for r in rows:
        assert bool(r["log"]) == (r["verdict"] != "ok")
    for r in failing:
        assert verify_log(r["log"]).ok

    # A re-run finds every row present, runs nothing and leaves the file as it was.
    before = out.read_bytes()
    assert _sweep(out) == 0
    assert out.read_bytes() == before


def test_resume_adds_only_missing_rows(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    assert main(["sweep", "--strategy", "inhibit", "--seeds", "2", "--duration", "100us",
                 "--workers", "1", "--out", str(out), "--keep", "none"]) == 0  # fmt: skip
    first = {r["run_id"]: r for r in read_rows(out)}
    assert main(["sweep", "--strategy", "inhibit", "--seeds", "3", "--duration", "100us",
                 "--workers", "1", "--out", str(out), "--keep", "none"]) == 0  # fmt: skip
    rows = read_rows(out)
    assert sorted(r["seed"] for r in rows) == [1, 2, 3]
    for r in rows:
        if r["run_id"] in first:
            assert r == first[r["run_id"]]


def test_unit_is_pure(tmp_path: Path) -> None:
    spec = RunSpec(scenario="split", strategy="legacy", seed=4, duration_ns=DURATION_NS)
    a, b = execute(spec, keep_log=True), execute(spec)
    # The in-memory log is the log `slotlab run` writes for the same run.
    log = tmp_path / "run.jsonl"
    argv = ["run", "--seed", "4", "--duration", "150us", "--log", str(log), "--json"]
    assert main(argv) == 3  # crashed, run's exit status
    assert a.log == log.read_bytes()
    assert a.digest == b.digest
    assert a.summary == b.summary
    assert a.log is not None
    assert b.log is None
    other = execute(RunSpec(scenario="split", strategy="legacy", seed=5, duration_ns=DURATION_NS))
    assert other.digest != a.digest
    assert (
        spec.run_id() == RunSpec(**{f: getattr(spec, f) for f in spec.__struct_fields__}).run_id()
    )


def test_a_run_that_raises_is_a_row_not_the_end() -> None:
    bad = RunSpec(scenario="split", strategy="legacy", seed=1, host={"maxphyaddr": 99})
    good = RunSpec(scenario="split", strategy="inhibit", seed=1, duration_ns=DURATION_NS)
    (_, o1, err), (_, o2, _) = run_chunk([bad, good], "failing")
    assert o1 is None
    assert "maxphyaddr" in err
    assert o2 is not None
    assert o2.summary.verdict == "ok"
    assert o2.log is None


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seeds", "0", "--seeds '0': the range is empty"),
        ("--faults", "nope", "--faults 'nope': unknown fault 'nope'"),
        ("--host-profile", "x:maxphyaddr=99", "--host-profile 'x:maxphyaddr=99': maxphyaddr"),
        ("--strategy", "nope", "unknown strategy 'nope'"),
        ("--scenario", "nope", "unknown scenario 'nope'"),
    ],
)
def test_bad_grid_is_one_line(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", option, value, "--out", "/nonexistent/never-written.parquet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"slotlab: {message}")
    assert err.count("\n") == 1


def test_summary_of_a_file_that_is_not_parquet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.parquet"
    bad.write_text("hello")
    assert main(["sweep", "--summary", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"slotlab: {bad}: not a readable Parquet file")
    assert "\n" not in err


def test_guided_chunks_cover_every_spec_once_and_shrink_at_the_end() -> None:
    specs = [RunSpec(scenario="split", strategy="legacy", seed=s) for s in range(1, 10_001)]
    chunks = list(chunked(specs, 2, None))
    assert [s for c in chunks for s in c] == specs
    sizes = [len(c) for c in chunks]
    assert sizes[0] == MAX_CHUNK
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) == MIN_CHUNK  # the last takes what is left
    assert len(chunks) < 10_000 // 40  # Dask's cost per task is paid a few hundred times
    assert [len(c) for c in chunked(specs[:7], 2, 3)] == [3, 3, 1]  # --chunk 3


def _profiling() -> bool:
    return bool(dask.config.get("distributed.worker.profile.enabled"))


@pytest.mark.heavy
def test_local_cluster_workers_run_without_the_profiler() -> None:
    with open_client(None, 1) as client:
        assert set(client.run(_profiling).values()) == {False}
