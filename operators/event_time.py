"""The event-time rules every window engine shares (trade candles, quote bars).

The watermark of a symbol is its newest event time minus the allowed lateness; live, it
also advances with the input clock (`candlewax.input_clock`) from the symbol's *anchor*,
the clock time its newest event time was seen (`anchors`), so a quiet symbol's windows
close. A message is late when its base window had closed when it arrived: the decision
is made per message against the watermark of the messages before it, so it depends on
the order of the input only, never on how it was batched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

EventsT = TypeVar("EventsT")  # what one step of a window engine produces


NO_TS = np.iinfo(np.int64).min
"""The newest event time of a symbol with no message yet."""


def watermarks(
    max_ts: np.ndarray, seen_at_ms: np.ndarray, lateness_ms: int, live: bool, now_ms: float
) -> np.ndarray:
    """The watermark of each symbol whose newest event time is `max_ts` (NO_TS: none
    yet, watermark -inf), live running from `seen_at_ms` (input clock, `anchors`)."""
    has = max_ts != NO_TS
    wm = np.full(len(max_ts), -math.inf)
    event_wm = max_ts[has] - lateness_ms
    if live:
        wm[has] = event_wm + np.maximum(0.0, now_ms - seen_at_ms[has])
    else:
        wm[has] = event_wm
    return wm


def anchors(
    anchor_ms: np.ndarray,
    max_ts: np.ndarray,
    new_max_ts: np.ndarray,
    now_ms: float,
    jitter_ms: float,
) -> np.ndarray:
    """The input-clock time each symbol's live watermark runs from once its newest event
    time moves from `max_ts` (NO_TS: none yet) to `new_max_ts` at `now_ms`, given the
    anchor it ran from (`anchor_ms`).

    Restarting from every newest message's arrival (`now_ms`) would tie each window's
    close to the feed's latency for that one message: a message that came slower than
    the ones before it (the broker's batching, a fetch wait, a poll) pulls the running
    watermark back, and a symbol's candle waits on whichever message happened to be its
    newest. The anchor moves on by the event time gained instead, as if the message had
    come at the pace of the ones before it, so the watermark keeps running; but never to
    before `now_ms - jitter_ms`: a message slower than that pace by up to `jitter_ms`
    does not hold the watermark back, a slower one holds it back by the excess. So the
    watermark is never more than `jitter_ms` ahead of where the message's arrival alone
    puts it (`jitter_ms = 0`: exactly there), and a feed whose latency grows for good (a
    replay slower than real time) is followed that closely. A message faster than the
    pace anchors it at its arrival."""
    moved = np.clip(anchor_ms + (new_max_ts - max_ts), now_ms - jitter_ms, now_ms)
    return np.where(max_ts == NO_TS, now_ms, moved)


def next_close_at_ms(
    max_ts: np.ndarray, seen_at_ms: np.ndarray, lateness_ms: int, live: bool, ends: np.ndarray
) -> float | None:
    """Input-clock time at which the first of the symbols' live watermarks reaches its
    `ends` (None: none does by itself)."""
    if not live:
        return None
    due = np.isfinite(ends) & (max_ts != NO_TS)
    if not due.any():
        return None
    event_wm = max_ts[due] - lateness_ms
    return float((seen_at_ms[due] + np.maximum(0.0, ends[due] - event_wm)).min())


@dataclass(frozen=True)
class Arrivals:
    """Per message of a batch: late or not, and what was known of its symbol when it came."""

    late: np.ndarray  # bool
    newest_before: np.ndarray  # the symbol's newest event time before it (int64)
    watermark_before: np.ndarray  # the watermark it was judged against (int64)
    rank: np.ndarray  # how many messages of its symbol came before it in the batch


def arrivals(
    sym: np.ndarray,
    ts: np.ndarray,
    max_ts: np.ndarray,
    lateness_ms: int,
    base_ms: int,
    live_wm: np.ndarray | None,
) -> Arrivals:
    """Which messages of a batch (arrival order; `sym`: each one's symbol, an index into
    the per-symbol arrays) are late: each against its symbol's newest event time before
    it (`max_ts` before the batch, NO_TS for a symbol's first batch, whose first message
    is never late) and, live, the symbol's live watermark now (`live_wm`; None when not
    live)."""
    n = len(ts)
    order = None
    s_sorted, ts_sorted = sym, ts
    firsts = _run_starts(sym)
    if len(set(sym[firsts].tolist())) < len(firsts):
        # A symbol in two runs: each symbol's messages brought together, in order. (A
        # shard's batch is one run per symbol already, a quote engine's one run.)
        order = np.argsort(sym, kind="stable")
        s_sorted, ts_sorted = sym[order], ts[order]
        firsts = _run_starts(s_sorted)
    segment = np.repeat(np.arange(len(firsts)), np.diff(np.append(firsts, n)))
    before = max_ts[s_sorted[firsts]]
    new_symbol = before == NO_TS
    # The newest event time before each message: the running maximum within its symbol,
    # shifted by one, started from the symbol's newest before the batch (a new symbol's
    # first message: its own time).
    start = np.where(new_symbol, ts_sorted[firsts], before)
    running = _segment_running_max(ts_sorted, firsts, segment)
    newest = np.empty(n, dtype=np.int64)
    newest[1:] = running[:-1]
    newest[firsts] = start
    np.maximum(newest, start[segment], out=newest)
    wm_before = newest - lateness_ms
    if live_wm is not None:  # it only moves a known symbol's watermark up
        known = ~new_symbol[segment]
        live = live_wm[s_sorted[known]].astype(np.int64)
        wm_before[known] = np.maximum(wm_before[known], live)
    late_sorted = ts_sorted - ts_sorted % base_ms + base_ms <= wm_before
    late_sorted[firsts[new_symbol]] = False  # a symbol's first message is never late
    columns = (late_sorted, newest, wm_before, np.arange(n) - firsts[segment])
    if order is None:
        return Arrivals(*columns)
    unsorted = []
    for column in columns:
        values = np.empty_like(column)
        values[order] = column
        unsorted.append(values)
    return Arrivals(*unsorted)


def _run_starts(sym: np.ndarray) -> np.ndarray:
    """Where each run of equal values of `sym` starts."""
    return np.concatenate(([0], np.flatnonzero(sym[1:] != sym[:-1]) + 1))


def _segment_running_max(values: np.ndarray, firsts: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """The running maximum of `values` restarted at every segment (`firsts`: where each
    starts; `segment`: each value's)."""
    if len(firsts) == 1:
        return np.maximum.accumulate(values)
    # Lift each segment above all before it, so one running maximum never carries over.
    low = int(values.min())
    span = int(values.max()) - low + 1
    if span * len(firsts) < 2**62:
        lifted = (values - low) + segment * span
        return np.maximum.accumulate(lifted) - segment * span + low
    parts = np.split(values, firsts[1:])
    return np.concatenate([np.maximum.accumulate(part) for part in parts])


class WindowEngine(Generic[EventsT]):
    """The shell of a one-symbol window engine (`SymbolQuoteBars`; candles are kept a
    shard of symbols at a time, `ShardCandles`, on the same rules above): the watermark,
    when the next window closes, closing every window up to a watermark (base first, so
    roll-ups are complete), and the clock, end-of-input and snapshot steps.

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
        spec = self.spec
        wm = watermarks(*self._known(), spec.allowed_lateness_ms, spec.live, now_ms)
        return float(wm[0])

    def next_close_at_ms(self) -> float | None:
        """Input-clock time (ms) at which the live watermark closes the next window."""
        spec = self.spec
        ends = np.array([self._next_end()])
        return next_close_at_ms(*self._known(), spec.allowed_lateness_ms, spec.live, ends)

    def _known(self) -> tuple[np.ndarray, np.ndarray]:
        """The symbol's newest event time and when it was seen, as one-symbol arrays."""
        state = self.state
        max_ts = NO_TS if state.max_ts is None else state.max_ts
        return np.array([max_ts], dtype=np.int64), np.array([state.max_ts_seen_at_ms])

    def _after_batch(self, batch_max: int, now_ms: float, events: EventsT) -> None:
        """A batch's newest event time moves the watermark: close and expire up to it."""
        state = self.state
        if state.max_ts is None or batch_max > state.max_ts:
            max_ts, anchor = self._known()
            moved = anchors(anchor, max_ts, np.array([batch_max]), now_ms, self.spec.jitter_ms)
            state.max_ts = batch_max
            state.max_ts_seen_at_ms = float(moved[0])
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
