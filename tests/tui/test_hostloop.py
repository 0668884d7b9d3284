"""The TUI's asyncio loop: uvloop's when installed (the engine, trio's guest, makes one loop
iteration per task switch), asyncio's otherwise."""

from __future__ import annotations

import asyncio

import pytest

from tui import hostloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_tui_runs_on_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert hostloop.run(_loop_module()).startswith("uvloop")


def test_without_uvloop_the_standard_loop_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostloop, "loop_factory", lambda: None)
    assert hostloop.run(_loop_module()).startswith("asyncio")
