"""Every update strategy from the 2022 debate, by name. Adding one: a module and a line here."""

from __future__ import annotations

from engine.vmm.strategies.atomic_list import AtomicList
from engine.vmm.strategies.base import Strategy
from engine.vmm.strategies.busted import Busted
from engine.vmm.strategies.convert import Convert
from engine.vmm.strategies.inhibit import Inhibit
from engine.vmm.strategies.legacy import Legacy
from engine.vmm.strategies.mmio_len0 import MmioLen0, MmioLen0Gpa
from engine.vmm.strategies.replace_all import ReplaceAll

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Legacy, Inhibit, AtomicList, ReplaceAll, MmioLen0, MmioLen0Gpa, Convert, Busted)
}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None


__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
