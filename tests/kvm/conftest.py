"""Every test here needs a VM on the real /dev/kvm; without one they are skipped, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.kvm import kvm_usable

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    usable, reason = kvm_usable()
    # The hook sees every collected item, not only this directory's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.kvm)
            if not usable:
                item.add_marker(pytest.mark.skip(reason=reason))
