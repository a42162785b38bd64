"""Event-time tumbling-window candles of one symbol, with lateness and drift.

`SymbolCandles` is the whole per-symbol state machine, free of Bytewax: it takes batches
of deduplicated trades in arrival order and returns closed candles (the base resolution
and the roll-ups), drift records for late trades, and the trades flagged late or not.

The rules (docs/design.md):
- The watermark of a symbol is its newest event time minus the allowed lateness; live,
  it also advances with time while the symbol is idle. That time is the input clock
  (`candlewax.input_clock`): processing time that runs only while the input is caught
  up, so a pause, an outage or a backlog never turns on-time trades into late ones. The
  `now_ms` arguments below are readings of that clock. A window [start, end) closes
  when the watermark reaches `end`.
- A trade is late when its base window had closed when it arrived. The decision is made
  per trade against the watermark of the trades before it, and windows close in a fixed
  order, so the output depends on the order of the input only, never on batch sizes.
- Coarser candles are rolled up from base candles as these close.

The hot path is columnar: on-time trades wait in arrays until their base window closes,
then every closing window of a batch becomes a candle in a few vectorised operations
(sorted by `(ts, arrival)`, cut at window boundaries, reduced per segment), and closed
candles leave as one `CandleBatch` of numpy rows per step (the sinks make one Arrow
frame of a whole sink batch: a polars frame per symbol per step costs more than the
candles in it when symbols are many). An open coarse window is the rows of its closed
base candles, reduced once when it closes. Closed windows are kept as a structured
array for late trades; a window becomes a Python object only when a late trade reaches
it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from candlewax.records import CANDLE_ROW, CandleBatch, DriftRecord, FlaggedTrades
from candlewax.rows import appended, joined
from config.durations import format_duration
from operators.bars import Bar, window_start
from operators.drift import DriftPolicy, drift_record
from operators.event_time import WindowEngine, arrivals


@dataclass(frozen=True)
class CandleSpec:
    """What to build: resolutions (ms, ascending, multiples of the first) and time rules."""

    resolutions: tuple[int, ...] = (1_000, 10_000, 60_000)
    allowed_lateness_ms: int = 1_000
    drift_retention_ms: int = 600_000
    live: bool = False
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    restatement: bool = False
    restatement_horizon_ms: int = 300_000

    @property
    def keep_closed_ms(self) -> int:
        """How long (event time) closed windows are kept: for drift, and for restating."""
        horizon = self.restatement_horizon_ms if self.restatement else 0
        return max(self.drift_retention_ms, horizon)

    @property
    def base(self) -> int:
        return self.resolutions[0]

    def name(self, resolution: int) -> str:
        return format_duration(resolution)


@dataclass(slots=True)
class ClosedBar:
    """An emitted (or empty) window kept for late trades: what went out and what came late."""

    emitted: Bar | None  # the candle as first emitted (the real-time estimate)
    revision: int = 0  # of the newest candle published for this bar
    late: Bar | None = None  # every late trade of the bar (what drift measures)
    late_trades: int = 0
    max_lateness_ms: int = 0
    current: Bar | None = None  # the newest candle published: emitted + restated trades

    def add_late(self, trade: Bar, lateness_ms: int) -> None:
        if self.late is None:
            self.late = trade.copy()
        else:
            self.late.absorb(trade)
        self.late_trades += 1
        self.max_lateness_ms = max(self.max_lateness_ms, lateness_ms)

    def copy(self) -> ClosedBar:
        # `emitted` and `current` are replaced, never changed in place; `late` grows.
        late = None if self.late is None else self.late.copy()
        return ClosedBar(
            self.emitted, self.revision, late, self.late_trades, self.max_lateness_ms, self.current
        )

    def restate(self, trade: Bar) -> Bar:
        """Fold a late trade into the published bar; the revision goes up by one (it is 0
        for a bar whose window closed empty: its first candle)."""
        if self.current is None:
            self.current, self.revision = trade.copy(), 0
        else:
            self.current, self.revision = self.current.merged(trade), self.revision + 1
        return self.current

    def corrected(self) -> Bar:
        assert self.late is not None
        return self.late.copy() if self.emitted is None else self.emitted.merged(self.late)


_NO_CLOSED = np.empty(0, dtype=CANDLE_ROW)
_NO_INTS = np.empty(0, dtype=np.int64)
_NO_FLOATS = np.empty(0, dtype=np.float64)


@dataclass
class PendingTrades:
    """On-time trades of the open base windows, in arrival order (columns)."""

    ts: np.ndarray = field(default_factory=lambda: _NO_INTS)
    seq: np.ndarray = field(default_factory=lambda: _NO_INTS)
    price: np.ndarray = field(default_factory=lambda: _NO_FLOATS)
    size: np.ndarray = field(default_factory=lambda: _NO_FLOATS)

    def __len__(self) -> int:
        return len(self.ts)

    def append(self, ts: np.ndarray, seq: np.ndarray, price: np.ndarray, size: np.ndarray) -> None:
        # Arrays are replaced, never changed in place: a snapshot may share them.
        if len(self.ts) == 0:
            self.ts, self.seq, self.price, self.size = ts, seq, price, size
            return
        self.ts = np.concatenate((self.ts, ts))
        self.seq = np.concatenate((self.seq, seq))
        self.price = np.concatenate((self.price, price))
        self.size = np.concatenate((self.size, size))

    def select(self, mask: np.ndarray) -> PendingTrades:
        """The trades where `mask` holds (a copy)."""
        return PendingTrades(self.ts[mask], self.seq[mask], self.price[mask], self.size[mask])

    def take(self, mask: np.ndarray) -> PendingTrades:
        """Remove and return the trades where `mask` holds."""
        taken = self.select(mask)
        keep = ~mask
        self.ts, self.seq = self.ts[keep], self.seq[keep]
        self.price, self.size = self.price[keep], self.size[keep]
        return taken


@dataclass
class CandleState:
    """Everything `SymbolCandles` keeps between batches (and in recovery snapshots)."""

    symbol: str | None = None
    max_ts: int | None = None
    max_ts_seen_at_ms: float = 0.0  # input-clock time when max_ts last advanced (live)
    next_seq: int = 0
    pending: PendingTrades = field(default_factory=PendingTrades)
    # Open windows of the coarse resolutions (the base ones are `pending`): the rows they
    # are made of (closed base candles, and late trades rolled up under restatement),
    # reduced when the window closes (`_coarse_bars`).
    open: dict[int, np.ndarray] = field(default_factory=dict)
    # Late trades for windows that are still open (coarse ones): drift when they close.
    open_late: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)
    # Closed windows with a candle, by resolution: ascending `start`, kept for late trades.
    closed: dict[int, np.ndarray] = field(default_factory=dict)
    # Closed windows that late trades reached (with or without a candle).
    touched: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)

    def copy(self) -> CandleState:
        """An independent copy for a recovery snapshot (cheaper than a deep copy): the
        arrays are replaced, never changed in place, so they are shared."""
        p = self.pending
        return CandleState(
            self.symbol,
            self.max_ts,
            self.max_ts_seen_at_ms,
            self.next_seq,
            PendingTrades(p.ts, p.seq, p.price, p.size),
            dict(self.open),
            {res: {s: c.copy() for s, c in bars.items()} for res, bars in self.open_late.items()},
            dict(self.closed),
            {res: {s: c.copy() for s, c in bars.items()} for res, bars in self.touched.items()},
        )


@dataclass
class CandleEvents:
    """What one step of the engine produced; candles and drift records as frames."""

    candle_parts: list[np.ndarray] = field(default_factory=list)  # CANDLE_ROW arrays
    drift_records: list[DriftRecord] = field(default_factory=list)
    trades: FlaggedTrades | None = None  # the input trades, flagged late or not
    forming: CandleBatch | None = None  # open base windows as they stand (live view)
    accepted: int = 0
    late: int = 0
    late_expired: int = 0
    candle_counts: dict[str, int] = field(default_factory=dict)  # by resolution
    restated_counts: dict[str, int] = field(default_factory=dict)  # by resolution
    lateness_ms: list[int] = field(default_factory=list)  # of each late trade

    symbol: str = ""
    names: tuple[tuple[int, str], ...] = ()

    @property
    def candles(self) -> CandleBatch | None:
        """Every candle of the step (one batch), or None."""
        parts = [part for part in self.candle_parts if len(part)]
        if not parts:
            return None
        rows = joined(parts)
        return CandleBatch(self.symbol, rows, self.names)

    @property
    def drift(self) -> pl.DataFrame | None:
        return DriftRecord.frame(self.drift_records) if self.drift_records else None

    def count(self, resolution: str, candles: int, restated: int = 0) -> None:
        counts = self.candle_counts
        counts[resolution] = counts.get(resolution, 0) + candles
        if restated:
            self.restated_counts[resolution] = self.restated_counts.get(resolution, 0) + restated


class SymbolCandles(WindowEngine[CandleEvents]):
    """The candle state machine of one symbol."""

    def __init__(self, spec: CandleSpec, state: CandleState | None = None):
        self.spec = spec
        self.state = state if state is not None else CandleState()
        self._names = tuple((res, spec.name(res)) for res in spec.resolutions)
        self._forming_mark = 0  # trades with `seq` below it are in a published forming candle
        # Closed candles of the latest steps, by resolution, not yet joined to
        # `state.closed` (which holds minutes of them: joining at every step would copy
        # them all); joined when read (`_closed_rows`) and for a snapshot.
        self._closed_new: dict[int, list[np.ndarray]] = {}
        # The end of the window `_expire` would drop first: until the watermark is
        # `keep_closed_ms` past it there is nothing to drop (-inf: to be found).
        self._expires_at = -math.inf
        for res in spec.resolutions:
            if res != spec.base:
                self.state.open[res] = _open_rows(self.state.open.get(res))
            self.state.open_late.setdefault(res, {})
            self.state.closed.setdefault(res, _NO_CLOSED)
            self.state.touched.setdefault(res, {})
            self._closed_new[res] = []

    def snapshot(self) -> CandleState:
        for res in self.spec.resolutions:
            self._closed_rows(res)
        return self.state.copy()

    def _closed_rows(self, res: int) -> np.ndarray:
        """Every closed candle of `res` still kept, in window order."""
        new = self._closed_new[res]
        if new:
            self.state.closed[res] = joined([self.state.closed[res], *new])
            new.clear()
        return self.state.closed[res]

    def _add_closed(self, res: int, rows: np.ndarray) -> None:
        """Closed candles (in window order, after those kept) for late trades to find."""
        self._closed_new[res].append(rows)
        self._expires_at = min(self._expires_at, int(rows["start"][0]) + res)

    def _add_touched(self, res: int, start: int, closed: ClosedBar) -> None:
        self.state.touched[res][start] = closed
        self._expires_at = min(self._expires_at, start + res)

    @property
    def _symbol(self) -> str:
        # Bytewax builds keyed state without its key; the symbol comes with the first trade.
        return self.state.symbol or ""

    # --- the watermark -----------------------------------------------------------------
    def _earliest_end(self) -> float:
        """The end of the earliest open window (inf when none is open)."""
        state, base = self.state, self.spec.base
        ends = [start + res for res, bars in state.open_late.items() for start in bars]
        for res, rows in state.open.items():
            if len(rows):
                first = int(rows["start"].min())
                ends.append(first - first % res + res)
        if len(state.pending):
            first = int(state.pending.ts.min())
            ends.append(first - first % base + base)
        return min(ends, default=math.inf)

    # --- input -------------------------------------------------------------------------
    def _events(self) -> CandleEvents:
        return CandleEvents(symbol=self._symbol, names=self._names)

    def on_trades(self, trades: pl.DataFrame, now_ms: float = 0.0) -> CandleEvents:
        """Fold a batch of trades (arrival order) and close the windows it completes."""
        n = trades.height
        state, spec = self.state, self.spec
        if n and state.symbol is None:
            state.symbol = str(trades.get_column("symbol")[0])
        events = self._events()
        if n == 0:
            return events
        base = spec.base

        ts = trades.get_column("ts").to_numpy()
        price = trades.get_column("price").to_numpy()
        size = trades.get_column("size").to_numpy()
        seq = np.arange(state.next_seq, state.next_seq + n, dtype=np.int64)
        state.next_seq += n

        live_wm = self.watermark(now_ms) if spec.live else None
        arrived = arrivals(ts, state.max_ts, spec.allowed_lateness_ms, base, live_wm)
        late, newest_before, wm_before = (
            arrived.late,
            arrived.newest_before,
            arrived.watermark_before,
        )

        late_index = np.flatnonzero(late)
        if len(late_index):
            on_time = ~late
            on_time_ts = ts[on_time]
            state.pending.append(on_time_ts, seq[on_time], price[on_time], size[on_time])
        else:
            state.pending.append(ts, seq, price, size)
            on_time_ts = ts
        if self._known_end is not None and len(on_time_ts):  # new trades open no earlier
            first = int(on_time_ts.min())
            self._known_end = min(self._known_end, first - first % base + base)
        events.late = len(late_index)
        events.accepted = n - events.late
        for i in late_index.tolist():
            wm = int(wm_before[i])
            self._close_until(wm, events)
            trade = Bar.of_trade(int(ts[i]), int(seq[i]), float(price[i]), float(size[i]))
            self._take_late(trade, int(newest_before[i]), wm, events)
            self._known_end = None  # it may have opened a coarse window's late rows

        self._after_batch(int(ts.max()), now_ms, events)
        events.trades = FlaggedTrades(trades, late, seq)
        return events

    # --- the forming candles (live view) -------------------------------------------------
    def forming_changed(self) -> bool:
        """Whether an open base window took trades since `forming()` last ran."""
        seq = self.state.pending.seq
        return bool(len(seq)) and int(seq[-1]) >= self._forming_mark

    def forming(self) -> CandleBatch | None:
        """The base candles of the open windows that took trades since the last call, as
        they stand: what the window's candle would be if it closed now. A view for people
        watching, not an output the flow's guarantees cover: it is not in the recovery
        snapshot (a resumed flow shows every open window again)."""
        state = self.state
        pending, base = state.pending, self.spec.base
        fresh = pending.seq >= self._forming_mark
        self._forming_mark = state.next_seq
        if not fresh.any():
            return None
        windows = pending.ts - pending.ts % base
        mask = np.isin(windows, np.unique(windows[fresh]))
        return CandleBatch(self._symbol, _base_bars(pending.select(mask), base), self._names)

    # --- closing windows ---------------------------------------------------------------
    def _close_base(self, watermark: float, events: CandleEvents) -> None:
        """The base windows that close, all at once: sorted by `(ts, arrival)`, cut at the
        window boundaries and reduced per window."""
        state, spec = self.state, self.spec
        base = spec.base
        pending = state.pending
        if len(pending) == 0:
            return
        closing = pending.ts - pending.ts % base + base <= watermark
        if not closing.any():
            return
        bars = _base_bars(pending.take(closing), base)
        events.candle_parts.append(bars)
        events.count(spec.name(base), len(bars))
        self._add_closed(base, bars)
        for coarse in spec.resolutions[1:]:
            self._roll_up_closed(coarse, bars)

    def _roll_up_closed(self, coarse: int, bars: np.ndarray) -> None:
        """Closed base candles wait as rows in their coarse windows until these close: one
        append per step, not an object per coarse window (what hundreds of symbols, each
        closing a few candles per step, would pay for)."""
        self.state.open[coarse] = appended(self.state.open[coarse], bars)

    def _close_coarse(self, res: int, watermark: float, events: CandleEvents) -> None:
        state, spec = self.state, self.spec
        rows = state.open[res]
        block = _NO_CLOSED
        if len(rows):
            starts = rows["start"] - rows["start"] % res
            closing = starts + res <= watermark
            taken = int(np.count_nonzero(closing))
            if taken:
                # Rows come in window order (but for late ones): the closing ones are
                # most often a head, which slices (a structured fancy index costs ~3 us).
                if closing[:taken].all():
                    done, state.open[res] = rows[:taken], rows[taken:]
                else:
                    done, state.open[res] = rows[closing], rows[~closing]
                block = _coarse_bars(done, starts[closing], res)
        pending = state.open_late[res]
        late_starts = sorted(s for s in pending if s + res <= watermark)
        if late_starts:
            closed_at = dict(zip(block["start"].tolist(), range(len(block)), strict=True))
            for start in late_starts:
                late = pending.pop(start)
                i = closed_at.get(start)
                late.emitted = late.current = None if i is None else _bar_of(block[int(i)])
                self._add_touched(res, start, late)
        if len(block):
            events.candle_parts.append(block)
            events.count(spec.name(res), len(block))
            self._add_closed(res, block)
        self._drift_on_close(res, late_starts, events)

    def _drift_on_close(self, res: int, starts: list[int], events: CandleEvents) -> None:
        """Late trades reached these coarse windows while they were open: they went out
        without them, and the drift shows now (a late base trade always finds its window
        closed)."""
        touched = self.state.touched[res]
        for start in starts:
            closed = touched.get(start)
            if closed is not None and closed.late is not None:
                closed_at = start + res + self.spec.allowed_lateness_ms
                events.drift_records.append(self._drift(res, start, closed, closed_at))

    # --- late trades -------------------------------------------------------------------
    def _closed_bar(self, res: int, start: int, floor: float) -> ClosedBar | None:
        """The closed window `start` as an object late trades can change (made on first
        use), or None when it is gone (beyond the drift and restatement horizon)."""
        if start + res <= floor:  # gone, whether `_expire` has dropped it yet or not
            return None
        touched = self.state.touched[res]
        closed = touched.get(start)
        if closed is not None:
            return closed
        rows = self._closed_rows(res)
        i = int(np.searchsorted(rows["start"], start))
        if i < len(rows) and int(rows["start"][i]) == start:
            bar = _bar_of(rows[i])
            closed = ClosedBar(bar, current=bar)
        else:
            closed = ClosedBar(None)  # closed with no trades
        self._add_touched(res, start, closed)
        return closed

    def _take_late(self, trade: Bar, newest: int, watermark: float, events: CandleEvents) -> None:
        """A late trade misses its base candle and every coarser candle it belongs to.

        `newest` is the symbol's newest event time when the trade arrived; the trade's
        lateness is how far behind it that trade was.
        """
        state, spec = self.state, self.spec
        ts = trade.open_key[0]
        lateness_ms = newest - ts
        events.lateness_ms.append(lateness_ms)
        floor = watermark - spec.keep_closed_ms
        base_end = window_start(ts, spec.base) + spec.base
        # One decision per trade, so every resolution is restated or none is.
        restate = spec.restatement and base_end > watermark - spec.restatement_horizon_ms
        for res in spec.resolutions:
            start = window_start(ts, res)
            if start + res > watermark:  # a coarse window still open
                if restate:  # it goes out right, no drift
                    rows = _rows_of(trade, window_start(ts, spec.base))
                    state.open[res] = appended(state.open[res], rows)
                else:
                    pending = state.open_late[res].setdefault(start, ClosedBar(None))
                    pending.add_late(trade, lateness_ms)  # the drift shows when it closes
                continue
            closed = self._closed_bar(res, start, floor)
            if closed is None:
                if res == spec.base:
                    events.late_expired += 1
                continue
            closed.add_late(trade, lateness_ms)
            if restate:
                bar = closed.restate(trade)
                block = _closed_block(res, [(start, bar)], closed.revision)
                events.candle_parts.append(block)
                events.count(spec.name(res), 1, restated=1)
            events.drift_records.append(self._drift(res, start, closed, newest))

    def _drift(self, res: int, start: int, closed: ClosedBar, detected: int) -> DriftRecord:
        """`detected` is the event time the drift became known (deterministic, not wall time)."""
        return drift_record(
            symbol=self._symbol,
            resolution=self.spec.name(res),
            window_start=start,
            window_ms=res,
            emitted=closed.emitted,
            corrected=closed.corrected(),
            revision=closed.revision,
            late_trades=closed.late_trades,
            max_lateness_ms=closed.max_lateness_ms,
            detected_event_ts=detected,
            policy=self.spec.drift,
        )

    def _expire(self, watermark: float) -> None:
        """Drop the closed windows that ended `keep_closed_ms` or more before the
        watermark. When it runs changes no output (`_closed_bar` checks the same horizon),
        only how much is kept."""
        floor = watermark - self.spec.keep_closed_ms
        if math.isinf(floor) or floor < self._expires_at:
            return
        state = self.state
        expires_at = math.inf
        for res in self.spec.resolutions:
            rows = self._closed_rows(res)
            if len(rows) and rows["start"][0] + res <= floor:
                gone = int(np.searchsorted(rows["start"] + res, floor, "right"))
                rows = state.closed[res] = rows[gone:]
            if len(rows):
                expires_at = min(expires_at, int(rows["start"][0]) + res)
            touched = state.touched[res]
            for start in [s for s in touched if s + res <= floor]:
                del touched[start]
            expires_at = min(expires_at, *(start + res for start in touched), math.inf)
        self._expires_at = expires_at


def _base_bars(trades: PendingTrades, base: int) -> np.ndarray:
    """The base candles of some trades (whole windows of them), as `CANDLE_ROW`s in window
    order: sorted by `(ts, arrival)`, cut at the window boundaries, reduced per window."""
    order = np.argsort(trades.ts, kind="stable")  # arrival order breaks ties on ts
    ts, seq = trades.ts[order], trades.seq[order]
    price, size = trades.price[order], trades.size[order]
    window = ts - ts % base
    cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
    firsts = np.concatenate(([0], cuts))
    lasts = np.concatenate((cuts, [len(ts)])) - 1
    with np.errstate(over="ignore"):  # an overflowing notional is defined: vwap null
        notional = price * size
    bars = np.zeros(len(firsts), dtype=CANDLE_ROW)
    bars["res"] = base
    bars["start"] = window[firsts]
    bars["open"], bars["open_ts"], bars["open_seq"] = price[firsts], ts[firsts], seq[firsts]
    bars["close"], bars["close_ts"], bars["close_seq"] = price[lasts], ts[lasts], seq[lasts]
    bars["high"] = np.maximum.reduceat(price, firsts)
    bars["low"] = np.minimum.reduceat(price, firsts)
    bars["count"] = lasts - firsts + 1
    bars["volume"] = _segment_fsum(size, firsts, lasts)
    bars["notional"] = _segment_fsum(notional, firsts, lasts)
    return bars


def _coarse_bars(rows: np.ndarray, starts: np.ndarray, res: int) -> np.ndarray:
    """The candles of closing coarse windows from their rows (`starts`: each row's coarse
    window), as `CANDLE_ROW`s in window order: the open and close are the rows with the
    smallest and largest trade key, the sums are exactly rounded over every row's term
    (the same bits as folding the rows one by one, `Bar.absorb`). Column by column: a
    structured array's fancy index costs ~3 us, a column's ~0.1."""
    by_open = np.lexsort((rows["open_seq"], rows["open_ts"], starts))
    by_close = np.lexsort((rows["close_seq"], rows["close_ts"], starts))
    window = starts[by_open]
    cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
    firsts = np.concatenate(([0], cuts))
    lasts = np.concatenate((cuts, [len(window)])) - 1
    heads, tails = by_open[firsts], by_close[lasts]  # both orders sort by window first
    bars = np.zeros(len(firsts), dtype=CANDLE_ROW)
    bars["res"] = res
    bars["start"] = window[firsts]
    for field_name in ("open", "open_ts", "open_seq"):
        bars[field_name] = rows[field_name][heads]
    for field_name in ("close", "close_ts", "close_seq"):
        bars[field_name] = rows[field_name][tails]
    bars["high"] = np.maximum.reduceat(rows["high"][by_open], firsts)
    bars["low"] = np.minimum.reduceat(rows["low"][by_open], firsts)
    bars["count"] = np.add.reduceat(rows["count"][by_open], firsts)
    bars["volume"] = _segment_fsum(rows["volume"][by_open], firsts, lasts)
    bars["notional"] = _segment_fsum(rows["notional"][by_open], firsts, lasts)
    return bars


def _rows_of(bar: Bar, start: int) -> np.ndarray:
    """A bar as rows of its window `start` for `_coarse_bars`: one row per term of its
    sums, so that they are summed with every other term (the first row carries the
    count; the others repeat its prices and keys, which changes no open, close, high or
    low)."""
    terms = max(len(bar.volume_terms), 1)
    rows = np.zeros(terms, dtype=CANDLE_ROW)
    rows["start"] = start
    rows["open"], rows["open_ts"], rows["open_seq"] = bar.open, *bar.open_key
    rows["close"], rows["close_ts"], rows["close_seq"] = bar.close, *bar.close_key
    rows["high"], rows["low"] = bar.high, bar.low
    rows["count"][0] = bar.trade_count
    rows["volume"][: len(bar.volume_terms)] = bar.volume_terms
    rows["notional"][: len(bar.notional_terms)] = bar.notional_terms
    return rows


def _open_rows(open_windows: np.ndarray | dict[int, Bar] | None) -> np.ndarray:
    """A coarse resolution's open windows as rows; a snapshot of an earlier version kept
    them as `Bar`s by window start (still read)."""
    if open_windows is None:
        return _NO_CLOSED
    if isinstance(open_windows, np.ndarray):
        return open_windows
    parts = [_rows_of(bar, start) for start, bar in sorted(open_windows.items())]
    return joined(parts) if parts else _NO_CLOSED


def _segment_fsum(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> list[float]:
    """The exactly rounded sum of each segment: the same bits however the trades came."""
    terms = values.tolist()
    fsum = math.fsum
    return [
        fsum(terms[a : b + 1]) if b > a else terms[a]
        for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True)
    ]


def _closed_block(res: int, items: list[tuple[int, Bar]], revision: int = 0) -> np.ndarray:
    """Closed windows made one at a time (coarse ones, restated ones) as rows."""
    block = np.empty(len(items), dtype=CANDLE_ROW)
    for i, (start, bar) in enumerate(items):
        block[i] = (
            res,
            start,
            bar.open,
            bar.open_key[0],
            bar.open_key[1],
            bar.close,
            bar.close_key[0],
            bar.close_key[1],
            bar.high,
            bar.low,
            bar.trade_count,
            bar.volume,
            bar.notional,
            revision,
        )
    return block


def _bar_of(row: np.void) -> Bar:
    return Bar(
        float(row["open"]),
        (int(row["open_ts"]), int(row["open_seq"])),
        float(row["close"]),
        (int(row["close_ts"]), int(row["close_seq"])),
        float(row["high"]),
        float(row["low"]),
        int(row["count"]),
        [float(row["volume"])],
        [float(row["notional"])],
    )
