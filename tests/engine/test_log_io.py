"""Session logs compressed, piped and moved: the same run gives the same bytes wherever it is
written, every reader takes plain, gzip, zstd and stdin, and verification covers the verdict."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import zstandard

from engine.log import EVENT_TYPES, Header, LogWriter, VerdictLine, read_log
from engine.runner import make_config, run_session, verify_log
from tests.engine.helpers import ROOT, run_cli


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One crashing run (split under legacy, seed 3) written plain, gzip and zstd to
    different directories."""
    base = tmp_path_factory.mktemp("logs")
    out = {
        "plain": base / "a" / "run.jsonl",
        "gz": base / "b" / "elsewhere" / "other-name.jsonl.gz",
        "gz2": base / "c" / "x.jsonl.gz",
        "zst": base / "d" / "run.jsonl.zst",
    }
    for path in out.values():
        run_session(make_config("split", "legacy", seed=3), str(path))
    return out


def test_same_run_same_bytes_wherever_and_however_written(logs: dict[str, Path]) -> None:
    plain = logs["plain"].read_bytes()
    assert plain.endswith(b"\n")
    for name in ("gz", "gz2", "zst"):
        assert _decompress(logs[name]) == plain, name
    # The gzip header names no file and no time either (its flush points follow the wall
    # clock, so the compressed bytes after it may differ).
    for name in ("gz", "gz2"):
        header = logs[name].read_bytes()[:10]
        assert header[3] & 0x08 == 0  # FNAME: no file name stored
        assert header[4:8] == b"\0\0\0\0"  # MTIME 0
    assert str(logs["plain"]).encode() not in plain
    assert b'"log":' not in plain.splitlines()[-1]


@pytest.mark.parametrize("name", ["plain", "gz", "zst"])
def test_check_and_verify_read_every_compression(logs: dict[str, Path], name: str) -> None:
    verdict = read_log(logs[name]).verdict
    assert verdict is not None
    assert verdict.verdict == "crashed"
    assert verify_log(str(logs[name])).ok


@pytest.mark.parametrize("name", ["plain", "gz", "zst"])
def test_cli_reads_a_log_from_stdin(logs: dict[str, Path], name: str) -> None:
    env = {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    for args in (["check", "-"], ["replay", "-", "--verify"]):
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            input=logs[name].read_bytes(),
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.stderr == b""
        assert done.stdout.startswith((b"crashed: ", b"verified: ")), done.stdout


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_killed_compressed_run_leaves_a_readable_prefix(
    logs: dict[str, Path], suffix: str, tmp_path: Path
) -> None:
    """What a flush has written decodes on its own, before the stream is closed."""
    full = read_log(logs["plain"])
    writer = LogWriter(tmp_path / f"live{suffix}")
    writer.write_header(full.header)
    for event in full.events[:30]:
        writer.write_event(event)
    writer.flush()
    # A copy of the bytes as they stand: what a kill -9 at this instant would leave.
    cut = tmp_path / f"killed{suffix}"
    cut.write_bytes((tmp_path / f"live{suffix}").read_bytes())
    prefix = read_log(cut)
    assert prefix.verdict is None
    assert prefix.event_lines == full.event_lines[:30]
    writer.close()


def test_an_edited_verdict_line_fails_verify(logs: dict[str, Path], tmp_path: Path) -> None:
    lines = logs["plain"].read_bytes().splitlines(keepends=True)
    assert b'"verdict":"crashed"' in lines[-1]
    lines[-1] = lines[-1].replace(b'"verdict":"crashed"', b'"verdict":"ok"', 1)
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(lines))
    done = run_cli("replay", str(edited), "--verify")
    assert done.returncode == 1
    assert done.stdout.startswith("MISMATCH: the verdict line differs")


COMMON = ("t", "seq", "actor_t")
"""The fields every event line has, documented once above the kinds."""


def test_the_format_doc_names_every_kind_and_field() -> None:
    """docs/log-format.md documents every line kind the reader accepts, with all its fields."""
    doc = (ROOT / "docs" / "log-format.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in doc.splitlines()
        if line.startswith("| `")
    }
    sections = {"header": doc.split("### `header`")[1].split("###")[0]}
    sections["verdict"] = doc.split("### `verdict`")[1].split("###")[0]
    for cls in (Header, VerdictLine, *EVENT_TYPES):
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        tag = str(info.tag)
        where = sections.get(tag) or rows.get(tag)
        assert where, f"event kind {tag!r} is not in docs/log-format.md"
        for field in info.fields:
            if field.name not in COMMON:
                assert f"`{field.name}`" in where, f"{tag}.{field.name} is not documented"
    common = doc.split("Every event line has:")[1].split("###")[0]
    for name in COMMON:
        assert f"| `{name}` |" in common, f"{name} is not documented"
