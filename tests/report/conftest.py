"""Fixed runs, one per verdict, recorded once per test session for the report and export tests.

Golden files hold what `slotlab report` says about them. When a model change moves them (a new
default host profile, a fixed race), regenerate and review the diff:

    make golden        # = SLOTLAB_REGEN_GOLDEN=1 pytest -p no:xdist tests/report/test_golden.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.runner import make_config, run_session

RUNS = {
    "crash": ("split", "legacy", 3),
    "ok": ("split", "inhibit", 1),
    "livelock": ("weeds", "mmio-len0", 1),
    "violation": ("dirty-log", "legacy", 1),
}
VERDICTS = {"crash": "crashed", "ok": "ok", "livelock": "livelock", "violation": "violation"}


@pytest.fixture(scope="session")
def verdict_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("verdict-logs")
    logs = {}
    for name, (scenario, strategy, seed) in RUNS.items():
        path = base / f"{name}.jsonl"
        summary = run_session(make_config(scenario, strategy, seed=seed), str(path))
        assert summary.verdict == VERDICTS[name], (name, summary.explanation)
        logs[name] = path
    return logs
