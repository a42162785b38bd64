"""Durations as people write them (`500ms`, `1s`, `10s`, `1m`, `1h`), in whole milliseconds.

Candle resolutions are named by the same strings (`1s`, `10s`, `1m`), so parsing and
formatting live together and round-trip: `format_duration(parse_duration_ms("60s")) == "1m"`.
"""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ms(text: str | int) -> int:
    """Parse `500ms`, `1s`, `5m`, `1h`, `1d` (or a bare integer of milliseconds)."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 500ms, 1s, 5m or 1h")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return text
    stripped = str(text).strip()
    if stripped.isdigit():
        return int(stripped)
    match = _DURATION.match(stripped)
    if match is None:
        raise ValueError("expected a duration such as 500ms, 1s, 5m or 1h")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def format_duration(ms: int) -> str:
    """The shortest exact name of a duration: 1000 -> `1s`, 60000 -> `1m`, 1500 -> `1500ms`."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
