"""Event-time quote bars of one symbol, with lateness, restatement and drift.

`SymbolQuoteBars` is the per-symbol state machine of the quotes branch, free of Bytewax,
with the event-time rules of trade candles (`operators.event_time`): the same watermark,
the same late rule, the same restatement and drift horizons. What a bar is comes from
`operators.quote_bars`.

Two views of a window:
- The published view: the bar of the quotes that came on time (and, with restatement on,
  the late ones folded in since). The quote in force at a window's start is the last
  quote before it in that view.
- The full view: the bar of every valid quote, late ones included; what a batch
  computation over the lake's `quotes/` gives. Drift records compare the two.

A late quote changes the full view of its own window and, when it is the last quote of
that window, the start of the next window that has quotes (the quote in force there).
So that a late quote can be folded in exactly, the on-time quotes of closed base windows
are kept for the drift horizon (32 bytes a quote): the full-view bar of a touched window
is computed again from its quotes, by the same `base_bars` as every other bar. Base bars
(and their quotes) also stay while a coarse window that holds them is open or within the
horizon, however short the horizon: coarse bars are rolled up from them.

Coarse bars are rolled up at close from the published base bars, so all resolutions
agree, and their sums do not depend on how the quotes were batched.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from candlewax.records import QUOTE_BAR_ROW, FlaggedQuotes, QuoteBarBatch, QuoteDriftRecord
from candlewax.rows import appended, joined
from operators.candles import CandleSpec
from operators.drift import quote_drift_record
from operators.event_time import WindowEngine, arrivals
from operators.quote_bars import base_bars, rolled_up

# One quote as the engine keeps it: event time, arrival sequence, bid and ask.
QUOTE_IN = np.dtype([("ts", np.int64), ("seq", np.int64), ("bid", np.float64), ("ask", np.float64)])
_NO_QUOTES = np.empty(0, dtype=QUOTE_IN)
_NO_BARS = np.empty(0, dtype=QUOTE_BAR_ROW)
Carry = tuple[int, int, float]  # (ts, seq, spread) of the last quote before a window


@dataclass(slots=True)
class TouchedQuoteBar:
    """A closed window whose full view differs from what was first published."""

    emitted: np.ndarray | None  # the bar as first published (one row), or None
    corrected: np.ndarray  # the full-view bar (one row)
    revision: int = 0  # of the newest bar published for this window
    restated: bool = False  # whether the newest published bar is `corrected`
    late: np.ndarray = field(default_factory=lambda: _NO_QUOTES)  # its late quotes (base)
    late_quotes: int = 0
    max_lateness_ms: int = 0

    def copy(self) -> TouchedQuoteBar:
        return TouchedQuoteBar(
            self.emitted,
            self.corrected,
            self.revision,
            self.restated,
            self.late,
            self.late_quotes,
            self.max_lateness_ms,
        )


@dataclass
class QuoteBarState:
    """Everything `SymbolQuoteBars` keeps between batches (and in recovery snapshots).
    Arrays are replaced, never changed in place, so a snapshot may share them."""

    symbol: str | None = None
    max_ts: int | None = None
    max_ts_seen_at_ms: float = 0.0
    next_seq: int = 0
    pending: np.ndarray = field(default_factory=lambda: _NO_QUOTES)  # open base windows
    carry: Carry | None = None  # the last quote of the closed windows, published view
    carry_full: Carry | None = None  # the same in the full view
    # On-time quotes of closed base windows, in chunks sorted by (ts, seq); `raw_starts`
    # holds each chunk's first event time.
    raw: list[np.ndarray] = field(default_factory=list)
    raw_starts: list[int] = field(default_factory=list)
    # Published bars by resolution, ascending start, kept for late quotes.
    closed: dict[int, np.ndarray] = field(default_factory=dict)
    # Coarse resolutions: every coarse window ending at or before this has closed.
    rolled: dict[int, float] = field(default_factory=dict)
    touched: dict[int, dict[int, TouchedQuoteBar]] = field(default_factory=dict)

    def copy(self) -> QuoteBarState:
        return QuoteBarState(
            self.symbol,
            self.max_ts,
            self.max_ts_seen_at_ms,
            self.next_seq,
            self.pending,
            self.carry,
            self.carry_full,
            list(self.raw),
            list(self.raw_starts),
            dict(self.closed),
            dict(self.rolled),
            {res: {s: t.copy() for s, t in bars.items()} for res, bars in self.touched.items()},
        )


@dataclass
class QuoteEvents:
    """What one step of the quote engine produced."""

    bar_parts: list[np.ndarray] = field(default_factory=list)  # QUOTE_BAR_ROW arrays
    drift_records: list[QuoteDriftRecord] = field(default_factory=list)
    quotes: FlaggedQuotes | None = None
    accepted: int = 0
    late: int = 0
    late_expired: int = 0
    bar_counts: dict[str, int] = field(default_factory=dict)
    restated_counts: dict[str, int] = field(default_factory=dict)
    lateness_ms: list[int] = field(default_factory=list)

    symbol: str = ""
    names: tuple[tuple[int, str], ...] = ()

    @property
    def bars(self) -> QuoteBarBatch | None:
        parts = [part for part in self.bar_parts if len(part)]
        if not parts:
            return None
        rows = joined(parts)
        return QuoteBarBatch.of_symbol(self.symbol, rows, self.names)

    @property
    def drift(self) -> pl.DataFrame | None:
        return QuoteDriftRecord.frame(self.drift_records) if self.drift_records else None

    def emit(self, res_name: str, rows: np.ndarray, restated: int = 0) -> None:
        self.bar_parts.append(rows)
        self.bar_counts[res_name] = self.bar_counts.get(res_name, 0) + len(rows)
        if restated:
            self.restated_counts[res_name] = self.restated_counts.get(res_name, 0) + restated


class SymbolQuoteBars(WindowEngine[QuoteEvents]):
    """The quote bar state machine of one symbol."""

    def __init__(self, spec: CandleSpec, state: QuoteBarState | None = None):
        self.spec = spec
        self.state = state if state is not None else QuoteBarState()
        self._names = tuple((res, spec.name(res)) for res in spec.resolutions)
        for res in spec.resolutions:
            self.state.closed.setdefault(res, _NO_BARS)
            self.state.touched.setdefault(res, {})
            if res != spec.base:
                self.state.rolled.setdefault(res, -math.inf)

    # --- the watermark -----------------------------------------------------------------
    def _earliest_end(self) -> float:
        state, base = self.state, self.spec.base
        ends = []
        if len(state.pending):
            first = int(state.pending["ts"].min())
            ends.append(first - first % base + base)
        for res in self.spec.resolutions[1:]:
            first_open = self._first_unrolled(res)
            if first_open is not None:
                ends.append(first_open - first_open % res + res)
        return min(ends, default=math.inf)

    # --- input -------------------------------------------------------------------------
    def _events(self) -> QuoteEvents:
        return QuoteEvents(symbol=self.state.symbol or "", names=self._names)

    def on_quotes(self, quotes: pl.DataFrame, now_ms: float = 0.0) -> QuoteEvents:
        """Fold a batch of quotes (arrival order) and close the windows it completes."""
        n = quotes.height
        state, spec = self.state, self.spec
        if n and state.symbol is None:
            state.symbol = str(quotes.get_column("symbol")[0])
        events = self._events()
        if n == 0:
            return events
        self._known_end = None  # new quotes: open windows change
        rows = np.empty(n, dtype=QUOTE_IN)
        rows["ts"] = quotes.get_column("ts").to_numpy()
        rows["seq"] = np.arange(state.next_seq, state.next_seq + n, dtype=np.int64)
        rows["bid"] = quotes.get_column("bid").to_numpy()
        rows["ask"] = quotes.get_column("ask").to_numpy()
        state.next_seq += n

        live_wm = np.array([self.watermark(now_ms)]) if spec.live else None
        max_ts = self._known()[0]
        sym = np.zeros(len(rows), dtype=np.int64)
        arrived = arrivals(sym, rows["ts"], max_ts, spec.allowed_lateness_ms, spec.base, live_wm)
        late = arrived.late
        late_index = np.flatnonzero(late)
        on_time = rows[~late] if len(late_index) else rows
        state.pending = (
            on_time if not len(state.pending) else np.concatenate((state.pending, on_time))
        )
        events.late = len(late_index)
        events.accepted = n - events.late
        for i in late_index.tolist():
            wm = int(arrived.watermark_before[i])
            self._close_until(wm, events)
            self._take_late(rows[i : i + 1], int(arrived.newest_before[i]), wm, events)
            self._known_end = None

        self._after_batch(int(rows["ts"].max()), now_ms, events)
        events.quotes = FlaggedQuotes(quotes, late, rows["seq"])
        return events

    # --- closing windows ---------------------------------------------------------------
    def _close_base(self, wm: float, events: QuoteEvents) -> None:
        state, spec = self.state, self.spec
        base = spec.base
        pending = state.pending
        if not len(pending):
            return
        closing = pending["ts"] - pending["ts"] % base + base <= wm
        if not closing.any():
            return
        done = pending[closing]
        state.pending = pending[~closing]
        done = done[np.lexsort((done["seq"], done["ts"]))]
        spread_before = None if state.carry is None else state.carry[2]
        bars = base_bars(done["ts"], done["seq"], done["bid"], done["ask"], base, spread_before)
        events.emit(spec.name(base), bars)
        state.closed[base] = appended(state.closed[base], bars)
        state.raw.append(done)
        state.raw_starts.append(int(done["ts"][0]))
        if state.carry_full != state.carry:
            # A late quote became the quote in force at the start of the first of these
            # windows, in the full view only (restatement off): that bar drifted.
            self._carry_drift(bars[:1], done, events)
        last = done[-1]
        state.carry = state.carry_full = (int(last["ts"]), int(last["seq"]), _spread(last))

    def _carry_drift(self, first: np.ndarray, done: np.ndarray, events: QuoteEvents) -> None:
        base, state = self.spec.base, self.state
        start = int(first["start"][0])
        quotes = done[done["ts"] < start + base]
        assert state.carry_full is not None
        corrected = _bar_of(quotes, base, state.carry_full[2])
        touched = TouchedQuoteBar(first.copy(), corrected)
        state.touched[base][start] = touched
        closed_at = start + base + self.spec.allowed_lateness_ms  # known as it closes
        events.drift_records.append(self._drift(base, start, touched, closed_at))

    def _first_unrolled(self, res: int) -> int | None:
        """The start of the earliest base window with a bar (either view) in a coarse
        window of `res` that has not closed."""
        state, base = self.state, self.spec.base
        rolled = state.rolled[res]
        rows = state.closed[base]
        if math.isinf(rolled):
            i = 0 if rolled < 0 else len(rows)
        else:
            i = int(np.searchsorted(rows["start"], rolled))
        first = int(rows["start"][i]) if i < len(rows) else None
        touched = [s for s in state.touched[base] if s >= rolled]
        if touched:
            first = min(touched) if first is None else min(first, min(touched))
        return first

    def _close_coarse(self, res: int, wm: float, events: QuoteEvents) -> None:
        state, spec = self.state, self.spec
        base = spec.base
        rolled = state.rolled[res]
        upto = math.inf if math.isinf(wm) else wm - wm % res  # coarse ends <= wm close
        if upto <= rolled:
            return
        rows = state.closed[base]
        lo = 0 if rolled == -math.inf else int(np.searchsorted(rows["start"], rolled))
        hi = len(rows) if upto == math.inf else int(np.searchsorted(rows["start"], upto))
        published = rows[lo:hi]
        if len(published):
            before = self._carry_before(int(published["start"][0]), full=False)
            coarse = rolled_up(published, res, before)
            events.emit(spec.name(res), coarse)
            state.closed[res] = appended(state.closed[res], coarse)
        # Coarse windows where a base window's full view is not what was published.
        drifting = sorted(
            {
                s - s % res
                for s, t in state.touched[base].items()
                if rolled <= s < upto and not t.restated
            }
        )
        state.rolled[res] = upto
        for start in drifting:
            touched = self._full_coarse(res, start, emitted=self._published(res, start))
            if touched is not None:
                closed_at = start + res + spec.allowed_lateness_ms  # known as it closes
                events.drift_records.append(self._drift(res, start, touched, closed_at))

    # --- the two views -----------------------------------------------------------------
    def _published(self, res: int, start: int) -> np.ndarray | None:
        rows = self.state.closed[res]
        i = int(np.searchsorted(rows["start"], start))
        if i < len(rows) and int(rows["start"][i]) == start:
            return rows[i : i + 1].copy()
        return None

    def _full_rows(self, lo: int, hi: int) -> np.ndarray:
        """Base bars of [lo, hi) in the full view, ascending."""
        state, base = self.state, self.spec.base
        rows = state.closed[base]
        a, b = np.searchsorted(rows["start"], [lo, hi])
        by_start = {
            int(r["start"]): rows[k : k + 1] for k, r in zip(range(a, b), rows[a:b], strict=True)
        }
        for start, touched in state.touched[base].items():
            if lo <= start < hi:
                by_start[start] = touched.corrected
        if not by_start:
            return _NO_BARS
        return np.concatenate([by_start[s] for s in sorted(by_start)])

    def _carry_before(self, start: int, *, full: bool) -> float | None:
        """The spread in force at `start`: the closing spread of the last base bar before
        it, in the published or the full view."""
        state, base = self.state, self.spec.base
        rows = state.closed[base]
        i = int(np.searchsorted(rows["start"], start))
        best = int(rows["start"][i - 1]) if i > 0 else None
        row = rows[i - 1 : i] if i > 0 else None
        if full:
            earlier = [s for s in state.touched[base] if s < start]
            if earlier and (best is None or max(earlier) >= best):
                best = max(earlier)
                row = state.touched[base][best].corrected
        if row is None:
            return None
        return float(row["ask_close"][0] - row["bid_close"][0])

    def _window_quotes(self, start: int) -> np.ndarray:
        """The on-time quotes of the closed base window `start`, sorted."""
        state, end = self.state, start + self.spec.base
        k = bisect.bisect_right(state.raw_starts, start) - 1
        parts = []
        for chunk in state.raw[max(k, 0) :]:
            ts = chunk["ts"]
            if int(ts[0]) >= end:
                break
            a, b = np.searchsorted(ts, [start, end])
            if b > a:
                parts.append(chunk[a:b])
        if not parts:
            return _NO_QUOTES
        return joined(parts)

    def _full_coarse(
        self, res: int, start: int, emitted: np.ndarray | None
    ) -> TouchedQuoteBar | None:
        """Record the full view of the closed coarse window `start` as touched."""
        state = self.state
        full = self._full_rows(start, start + res)
        if not len(full):
            return None
        corrected = rolled_up(full, res, self._carry_before(start, full=True))
        touched = state.touched[res].get(start)
        if touched is None:
            touched = TouchedQuoteBar(emitted, corrected)
            state.touched[res][start] = touched
        touched.corrected = corrected
        inside = [t for s, t in state.touched[self.spec.base].items() if start <= s < start + res]
        touched.late_quotes = sum(t.late_quotes for t in inside)
        touched.max_lateness_ms = max((t.max_lateness_ms for t in inside), default=0)
        return touched

    # --- late quotes -------------------------------------------------------------------
    def _take_late(self, quote: np.ndarray, newest: int, wm: float, events: QuoteEvents) -> None:
        """A late quote misses the bars it belongs to; the full view of its window (and of
        the next window with quotes, when it is its window's last) changes."""
        state, spec = self.state, self.spec
        base = spec.base
        ts = int(quote["ts"][0])
        lateness_ms = newest - ts
        events.lateness_ms.append(lateness_ms)
        start = ts - ts % base
        if start + base <= wm - spec.keep_closed_ms:
            events.late_expired += 1
            return
        restate = spec.restatement and start + base > wm - spec.restatement_horizon_ms
        touched = state.touched[base].get(start)
        if touched is None:
            emitted = self._published(base, start)
            touched = TouchedQuoteBar(emitted, _NO_BARS)
            state.touched[base][start] = touched
        touched.late = np.concatenate((touched.late, quote))
        touched.late_quotes += 1
        touched.max_lateness_ms = max(touched.max_lateness_ms, lateness_ms)
        quotes = np.concatenate((self._window_quotes(start), touched.late))
        quotes = quotes[np.lexsort((quotes["seq"], quotes["ts"]))]
        touched.corrected = _bar_of(quotes, base, self._carry_before(start, full=True))
        changed = [start]

        if int(quotes["seq"][-1]) == int(quote["seq"][0]):  # the window's last quote now
            following = self._next_closed_start(start)
            carry = (ts, int(quote["seq"][0]), _spread(quote[0]))
            if following is not None:
                self._refresh_full(following)
                changed.append(following)
            elif state.carry_full is None or carry[:2] > state.carry_full[:2]:
                state.carry_full = carry
                if restate:
                    state.carry = carry

        for window in changed:
            self._publish_or_drift(base, window, restate, newest, events)
        for res in spec.resolutions[1:]:
            for coarse in sorted({w - w % res for w in changed}):
                if coarse + res > wm:
                    continue  # still open: it closes with the full view or drifts then
                if self._full_coarse(res, coarse, self._published(res, coarse)) is not None:
                    self._publish_or_drift(res, coarse, restate, newest, events)

    def _next_closed_start(self, start: int) -> int | None:
        """The first closed base window after `start` with a bar (either view)."""
        state, base = self.state, self.spec.base
        rows = state.closed[base]
        i = int(np.searchsorted(rows["start"], start, "right"))
        first = int(rows["start"][i]) if i < len(rows) else None
        later = [s for s in state.touched[base] if s > start]
        if later:
            first = min(later) if first is None else min(first, min(later))
        return first

    def _refresh_full(self, start: int) -> None:
        """The full view of closed base window `start` again (the quote before it changed)."""
        state, base = self.state, self.spec.base
        touched = state.touched[base].get(start)
        if touched is None:
            touched = TouchedQuoteBar(self._published(base, start), _NO_BARS)
            state.touched[base][start] = touched
        quotes = np.concatenate((self._window_quotes(start), touched.late))
        quotes = quotes[np.lexsort((quotes["seq"], quotes["ts"]))]
        touched.corrected = _bar_of(quotes, base, self._carry_before(start, full=True))

    def _publish_or_drift(
        self, res: int, start: int, restate: bool, detected: int, events: QuoteEvents
    ) -> None:
        state = self.state
        touched = state.touched[res][start]
        if restate:
            if touched.emitted is None and not touched.restated:
                touched.revision = 0
            else:
                touched.revision += 1
            touched.restated = True
            row = touched.corrected.copy()
            row["revision"] = touched.revision
            state.closed[res] = _replaced(state.closed[res], row)
            events.emit(self.spec.name(res), row, restated=1)
        else:
            touched.restated = False
        events.drift_records.append(self._drift(res, start, touched, detected))

    def _drift(
        self, res: int, start: int, touched: TouchedQuoteBar, detected: int
    ) -> QuoteDriftRecord:
        return quote_drift_record(
            symbol=self.state.symbol or "",
            resolution=self.spec.name(res),
            window_start=start,
            window_ms=res,
            emitted=touched.emitted,
            corrected=touched.corrected,
            revision=touched.revision,
            late_quotes=touched.late_quotes,
            max_lateness_ms=touched.max_lateness_ms,
            detected_event_ts=detected,
            threshold=self.spec.drift.threshold,
        )

    def _expire(self, wm: float) -> None:
        floor = wm - self.spec.keep_closed_ms
        if math.isinf(floor):
            return
        state, base = self.state, self.spec.base
        floors = {res: floor for res in state.closed}
        # A coarse window rolls up its base bars when it closes, and recomputes its full
        # view from them when a late quote reaches it: the base bars of every coarse
        # window still open or kept stay, however short the horizon. So what goes is
        # before every open coarse window, and `_known_end` stays right.
        for res in self.spec.resolutions[1:]:
            floors[base] = min(floors[base], state.rolled[res], floor - floor % res)
        keep_from = floors[base]
        for res, rows in state.closed.items():
            if len(rows) and rows["start"][0] + res <= floors[res]:
                gone = int(np.searchsorted(rows["start"] + res, floors[res], "right"))
                if res == base:  # the last bar before the horizon: the spread in force after it
                    gone = max(gone - 1, 0)
                    keep_from = min(keep_from, float(rows["start"][gone]))
                if gone:
                    state.closed[res] = rows[gone:]
        while len(state.raw) > 1 and state.raw_starts[1] <= keep_from - keep_from % base:
            del state.raw[0], state.raw_starts[0]
        for res, touched in state.touched.items():
            for start in [s for s in touched if s + res <= floors[res] and s < keep_from]:
                del touched[start]


def _spread(quote: np.void) -> float:
    return float(quote["ask"] - quote["bid"])


def _bar_of(quotes: np.ndarray, res: int, before: float | None) -> np.ndarray:
    """The bar of one window's quotes (sorted), one row."""
    return base_bars(quotes["ts"], quotes["seq"], quotes["bid"], quotes["ask"], res, before)


def _replaced(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """`rows` (ascending start) with `row` in place of the one of its start, or inserted."""
    start = int(row["start"][0])
    i = int(np.searchsorted(rows["start"], start))
    if i < len(rows) and int(rows["start"][i]) == start:
        rows = rows.copy()
        rows[i] = row[0]
        return rows
    return joined((rows[:i], row, rows[i:]))
