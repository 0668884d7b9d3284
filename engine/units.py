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
    try:
        value = round(float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:  # 400 digits of seconds: float says inf
        raise ValueError(f"bad duration {text[:40]!r}: far too long") from None
    if value <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return value


def format_ns(ns: int | float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"


class NotText(ValueError):
    """A file that is not UTF-8; ``line`` is where the first bad byte is."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: not UTF-8 text ({reason})")
        self.line, self.reason = line, reason


def decode_text(data: bytes, path: str) -> str:
    """UTF-8 text, or NotText naming the line of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise NotText(path, line, f"byte {data[err.start]:#04x} {err.reason}") from None
