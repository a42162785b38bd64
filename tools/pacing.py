"""Pace a stream of timestamped items: as fast as possible, real time, or N x real time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def paced(
    items: Iterable[T],
    event_ms: Callable[[T], int],
    speed: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[T]:
    """Yield items no sooner than their event-time offset from the first, divided by
    `speed` (0 = no waiting). A slow consumer is never made to catch up by bursting more
    than it lags: the schedule stays anchored to the first item."""
    if speed <= 0:
        yield from items
        return
    first_ms: int | None = None
    started = 0.0
    for item in items:
        at = event_ms(item)
        if first_ms is None:
            first_ms, started = at, clock()
        delay = started + (at - first_ms) / 1000.0 / speed - clock()
        if delay > 0.0005:
            sleep(delay)
        yield item
