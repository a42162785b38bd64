"""Processing time that runs only while the input is caught up: the live watermark's clock.

Live, a quiet symbol's watermark also advances with time so its last candle comes out.
Plain wall time is the wrong clock for that: while the flow is behind (paused by
SIGSTOP, a broker outage, a backlog after a restart) wall time runs on, the watermark
overtakes trades that are merely waiting to be read, and on-time trades are counted
late. As in Flink's idle-source detection, idleness must mean "this input has nothing
more to read", so this clock advances with wall time only while every input partition
of the process has confirmed, recently, that it is caught up:

- a source partition calls `caught_up(part)` when it knows it has read everything there
  is (Kafka: its position has reached the partition's end as the broker reports it), and
  `behind(part)` when it has more to read or cannot tell (broker unreachable);
- time passes on the clock only between confirmations that are at most `max_gap_ms`
  apart, so a paused process (no confirmations) gains nothing from the pause.

A process with no live input partitions (bounded inputs, or a cluster process that was
given none) keeps plain wall time. The clock is per process: in a multi-process cluster
each process judges by the partitions it reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


def _wall_ms() -> float:
    return time.time() * 1000.0


class InputClock:
    def __init__(self, max_gap_ms: float = 250.0, wall_ms: Callable[[], float] = _wall_ms):
        self.max_gap_ms = max_gap_ms
        self._wall_ms = wall_ms
        self._confirmed: dict[str, float] = {}  # part -> wall ms of its last confirmation
        self._value = wall_ms()
        self._last: float | None = self._value
        self._lock = threading.Lock()

    def caught_up(self, part: str) -> None:
        """`part` has nothing more to read, as of now."""
        with self._lock:
            now = self._wall_ms()
            self._advance(now)
            self._confirmed[part] = now
            if self._last is None and self._fresh(now):
                self._last = now  # runs again from this confirmation on

    def behind(self, part: str) -> None:
        """`part` has more to read, or cannot tell (its broker is unreachable)."""
        with self._lock:
            now = self._wall_ms()
            self._advance(now)
            self._confirmed[part] = -math.inf

    def forget(self, part: str) -> None:
        """`part` is closed: it no longer holds the clock back."""
        with self._lock:
            self._confirmed.pop(part, None)

    def now_ms(self) -> float:
        """The clock's reading: wall time minus every stretch the input was not caught up."""
        return self._reading()[1]

    def wall_at(
        self, clock_ms: float, min_wait_ms: float = 1.0, stalled_wait_ms: float = 20.0
    ) -> float:
        """The wall time (ms) at which the clock reaches `clock_ms` if it runs from now on:
        at least `min_wait_ms` ahead while it runs (a live window's close waits on this),
        `stalled_wait_ms` while it stands still, so a stalled clock is polled, not spun
        on."""
        now, reading, running = self._reading()
        return now + max(min_wait_ms if running else stalled_wait_ms, clock_ms - reading)

    def _reading(self) -> tuple[float, float, bool]:
        """Wall time now, the clock's reading then, and whether the clock is running."""
        with self._lock:
            now = self._wall_ms()
            self._advance(now)
            return now, self._value, self._last is not None

    def _fresh(self, now: float) -> bool:
        return all(now - at <= self.max_gap_ms for at in self._confirmed.values())

    def _advance(self, now: float) -> None:
        fresh = self._fresh(now)
        if fresh and self._last is not None and 0 <= now - self._last <= self.max_gap_ms:
            self._value += now - self._last
        elif fresh and not self._confirmed and self._last is not None:
            self._value += max(0.0, now - self._last)  # no live input here: wall time
        self._last = now if fresh else None


INPUT_CLOCK = InputClock()
"""The clock of this process's inputs (sources report to it, the candle step reads it)."""
