"""The event-time rules every window engine shares (trade candles, quote bars).

The watermark of a symbol is its newest event time minus the allowed lateness; live, it
also advances with the input clock while the symbol is idle (`candlewax.input_clock`).
A message is late when its base window had closed when it arrived: the decision is made
per message against the watermark of the messages before it, so it depends on the order
of the input only, never on how it was batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

EventsT = TypeVar("EventsT")  # what one step of a window engine produces


def watermark(
    max_ts: int | None, seen_at_ms: float, lateness_ms: int, live: bool, now_ms: float
) -> float:
    """The watermark of a symbol whose newest event time is `max_ts`, first seen (input
    clock) at `seen_at_ms`."""
    if max_ts is None:
        return -math.inf
    event_wm = max_ts - lateness_ms
    if not live:
        return event_wm
    return event_wm + max(0.0, now_ms - seen_at_ms)


def close_at_ms(
    max_ts: int | None, seen_at_ms: float, lateness_ms: int, live: bool, end: float
) -> float | None:
    """Input-clock time at which the live watermark reaches `end` (None: never by itself)."""
    if not live or max_ts is None or math.isinf(end):
        return None
    return seen_at_ms + max(0, end - (max_ts - lateness_ms))


@dataclass(frozen=True)
class Arrivals:
    """Per message of a batch: late or not, and what was known when it arrived."""

    late: np.ndarray  # bool
    newest_before: np.ndarray  # the symbol's newest event time before it (int64)
    watermark_before: np.ndarray  # the watermark it was judged against (int64)


def arrivals(
    ts: np.ndarray, max_ts: int | None, lateness_ms: int, base_ms: int, live_wm: float | None
) -> Arrivals:
    """Which messages of a batch (event times `ts`, arrival order) are late. `max_ts` is
    the symbol's newest event time before the batch (None: its first batch); `live_wm`
    the live watermark now (None when not live)."""
    n = len(ts)
    newest_before = np.empty(n, dtype=np.int64)
    newest_before[1:] = np.maximum.accumulate(ts)[:-1]
    newest_before[0] = ts[0] if max_ts is None else max_ts
    if max_ts is not None:
        np.maximum(newest_before, max_ts, out=newest_before)
    wm_before = newest_before - lateness_ms
    if live_wm is not None and max_ts is not None:
        np.maximum(wm_before, int(live_wm), out=wm_before)
    window = ts - ts % base_ms
    late = window + base_ms <= wm_before
    if max_ts is None:
        late[0] = False  # the first message of a symbol is never late
    return Arrivals(late, newest_before, wm_before)


class WindowEngine(Generic[EventsT]):
    """The shell both per-symbol window engines share (`ShardCandles`, `SymbolQuoteBars`):
    the watermark, when the next window closes, closing every window up to a watermark
    (base first, so roll-ups are complete), and the clock, end-of-input and snapshot steps.

    A subclass keeps `spec` (a `CandleSpec`) and `state` (with `max_ts`,
    `max_ts_seen_at_ms` and `copy()`), and does the window work: `_events`,
    `_earliest_end`, `_close_base`, `_close_coarse` and `_expire`. When it changes its
    open windows it keeps `_known_end` right (lowers it, or sets it to None).
    """

    spec: Any
    state: Any
    # The end of the earliest open window, known since the last change (None: to be
    # found): asked for after every step (`next_close_at_ms`) and before every close.
    _known_end: float | None = None

    def _events(self) -> EventsT:
        raise NotImplementedError

    def _earliest_end(self) -> float:
        """The end of the earliest window still to close (inf when none)."""
        raise NotImplementedError

    def _next_end(self) -> float:
        if self._known_end is None:
            self._known_end = self._earliest_end()
        return self._known_end

    def _close_base(self, wm: float, events: EventsT) -> None:
        raise NotImplementedError

    def _close_coarse(self, res: int, wm: float, events: EventsT) -> None:
        raise NotImplementedError

    def _expire(self, wm: float) -> None:
        raise NotImplementedError

    def watermark(self, now_ms: float) -> float:
        state, spec = self.state, self.spec
        return watermark(
            state.max_ts, state.max_ts_seen_at_ms, spec.allowed_lateness_ms, spec.live, now_ms
        )

    def next_close_at_ms(self) -> float | None:
        """Input-clock time (ms) at which the live watermark closes the next window."""
        state, spec = self.state, self.spec
        return close_at_ms(
            state.max_ts,
            state.max_ts_seen_at_ms,
            spec.allowed_lateness_ms,
            spec.live,
            self._next_end(),
        )

    def _after_batch(self, batch_max: int, now_ms: float, events: EventsT) -> None:
        """A batch's newest event time moves the watermark: close and expire up to it."""
        state = self.state
        if state.max_ts is None or batch_max > state.max_ts:
            state.max_ts = batch_max
            state.max_ts_seen_at_ms = now_ms
        wm = self.watermark(now_ms)
        self._close_until(wm, events)
        self._expire(wm)

    def on_clock(self, now_ms: float) -> EventsT:
        """Live only: close the windows that the clock has carried the watermark past."""
        events = self._events()
        wm = self.watermark(now_ms)
        self._close_until(wm, events)
        self._expire(wm)
        return events

    def on_end(self) -> EventsT:
        """The input ended: every open window closes."""
        events = self._events()
        self._close_until(math.inf, events)
        return events

    def snapshot(self) -> Any:
        return self.state.copy()

    def _close_until(self, wm: float, events: EventsT) -> None:
        """Close every window with `end <= wm`, base first so roll-ups are complete."""
        if self._next_end() > wm:
            return
        self._close_base(wm, events)
        for res in self.spec.resolutions[1:]:
            self._close_coarse(res, wm, events)
        self._known_end = None
