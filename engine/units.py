"""Durations as people type them: 10ms, 250us, 1.5s, 800ns."""

from __future__ import annotations

import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)\s*$")


def parse_duration(text: str) -> int:
    """Integer nanoseconds; a unit is required so 10 never silently means 10 ns."""
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(
            f"bad duration {text!r}: use a number and a unit (ns, us, ms, s), e.g. 10ms"
        )
    value = round(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return value


def format_ns(ns: int | float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"
