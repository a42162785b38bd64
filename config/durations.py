"""Durations as people write them (`500ms`, `1s`, `10s`, `1m`, `1h`), in whole milliseconds.

Candle resolutions are named by the same strings (`1s`, `10s`, `1m`), so parsing and
formatting live together and round-trip: `format_duration(parse_duration_ms("60s")) == "1m"`.
"""

from __future__ import annotations

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
# No duration setting needs more than a year; beyond, sums of timestamps overflow.
MAX_DURATION_MS = 366 * 86_400_000


def parse_duration_ms(text: str | int) -> int:
    """Parse `500ms`, `1s`, `5m`, `1h`, `1d` (or a bare integer of milliseconds), up to
    `MAX_DURATION_MS`."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 500ms, 1s, 5m or 1h")
    if isinstance(text, int):
        ms = text
    else:
        stripped = str(text).strip()
        match = _DURATION.match(stripped)
        if stripped.isdigit():
            ms = int(stripped)
        elif match is not None:
            ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
        else:
            raise ValueError("expected a duration such as 500ms, 1s, 5m or 1h")
    if ms < 0:
        raise ValueError("a duration cannot be negative")
    if ms > MAX_DURATION_MS:
        raise ValueError("a duration can be at most 366d")
    return ms


def format_duration(ms: int) -> str:
    """The shortest exact name of a duration: 1000 -> `1s`, 60000 -> `1m`, 1500 -> `1500ms`."""
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
