"""The import contracts hold the layers apart, and the TUI's contract does catch a breach."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import engine

ROOT = Path(__file__).resolve().parent.parent
TUI_CONTRACT = "The TUI reaches the engine only through"
ALLOWED = {"engine.api", "engine.events", "engine.faults", "engine.snapshot", "engine.vmm"}


def _tui_contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(TUI_CONTRACT))


def test_every_engine_module_is_allowed_to_the_tui_or_forbidden() -> None:
    """A new engine module must be classified, or the TUI could reach it unnoticed."""
    forbidden = set(_tui_contract()["forbidden_modules"])
    package = Path(engine.__file__).parent
    top = {
        f"engine.{p.stem if p.suffix == '.py' else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    unclassified = sorted(top - forbidden - ALLOWED)
    assert unclassified == []
    vmm = {f"engine.vmm.{p.stem}" for p in (package / "vmm").glob("*.py") if p.stem != "__init__"}
    assert vmm - {"engine.vmm.strategies"} <= forbidden


def _lint(tree: Path, tui_module: str) -> subprocess.CompletedProcess[str]:
    """lint-imports with the TUI contract on a tree of empty engine modules and one TUI
    module with the given source."""
    contract = _tui_contract()
    for name in [*contract["forbidden_modules"], *ALLOWED, "tui"]:
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            path = tree.joinpath(*parts[:depth])
            path.mkdir(exist_ok=True)
            (path / "__init__.py").touch()
    (tree / "tui" / "screen.py").write_text(tui_module)
    forbidden = ", ".join(f'"{m}"' for m in contract["forbidden_modules"])
    (tree / "contracts.toml").write_text(
        '[tool.importlinter]\nroot_packages = ["engine", "tui"]\n\n'
        "[[tool.importlinter.contracts]]\n"
        f'name = "{contract["name"]}"\ntype = "forbidden"\nsource_modules = ["tui"]\n'
        f"forbidden_modules = [{forbidden}]\nallow_indirect_imports = true\n"
    )
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "contracts.toml", "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_tui_contract_catches_a_session_import(tmp_path: Path) -> None:
    result = _lint(tmp_path, "from engine.session import Session\n")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tui.screen -> engine.session" in result.stdout


def test_the_tui_contract_keeps_the_api(tmp_path: Path) -> None:
    result = _lint(tmp_path, "from engine import api\nfrom engine.snapshot import views\n")
    assert result.returncode == 0, result.stdout + result.stderr
