"""Fixtures for the engine tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.log import read_log
from engine.runner import verify_log


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for session logs. At teardown every finished log in it (one that ends with
    a verdict line) must replay into identical bytes: no test leaves a log behind that does
    not. Logs a test damages on purpose live elsewhere."""
    path = tmp_path / "logs"
    path.mkdir()
    yield path
    for log in sorted(path.glob("*.jsonl")):
        if read_log(log).verdict is None:
            continue
        result = verify_log(str(log))
        assert result.ok, f"{log.name}: {result.message}"
