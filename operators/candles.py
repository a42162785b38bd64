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
candles in it when symbols are many). Closed windows are kept as a structured array for
late trades; a window becomes a Python object only when a late trade reaches it, and
coarse windows (a tenth or less of the candles) are `Bar`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from candlewax.records import CANDLE_ROW, CandleBatch, DriftRecord, FlaggedTrades
from config.durations import format_duration
from operators.bars import Bar, window_start
from operators.drift import DriftPolicy, drift_record
from operators.event_time import WindowEngine, arrivals
from operators.rows import appended, joined


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
    # Open windows of the coarse resolutions (the base ones are `pending`).
    open: dict[int, dict[int, Bar]] = field(default_factory=dict)
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
            {res: {s: bar.copy() for s, bar in bars.items()} for res, bars in self.open.items()},
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
        for res in spec.resolutions:
            if res != spec.base:
                self.state.open.setdefault(res, {})
            self.state.open_late.setdefault(res, {})
            self.state.closed.setdefault(res, _NO_CLOSED)
            self.state.touched.setdefault(res, {})

    @property
    def _symbol(self) -> str:
        # Bytewax builds keyed state without its key; the symbol comes with the first trade.
        return self.state.symbol or ""

    # --- the watermark -----------------------------------------------------------------
    def _next_end(self) -> float:
        """The end of the earliest open window (inf when none is open)."""
        state, base = self.state, self.spec.base
        ends = [start + res for res, bars in state.open.items() for start in bars]
        ends += [start + res for res, bars in state.open_late.items() for start in bars]
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
            state.pending.append(ts[on_time], seq[on_time], price[on_time], size[on_time])
        else:
            state.pending.append(ts, seq, price, size)
        events.late = len(late_index)
        events.accepted = n - events.late
        for i in late_index.tolist():
            wm = int(wm_before[i])
            self._close_until(wm, events)
            trade = Bar.of_trade(int(ts[i]), int(seq[i]), float(price[i]), float(size[i]))
            self._take_late(trade, int(newest_before[i]), wm, events)

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
        state.closed[base] = appended(state.closed[base], bars)
        for coarse in spec.resolutions[1:]:
            self._roll_up_closed(coarse, bars)
        self._drift_on_close(base, bars["start"].tolist(), events)

    def _roll_up_closed(self, coarse: int, bars: np.ndarray) -> None:
        """Fold closed base candles (ascending start) into their coarse windows."""
        starts = bars["start"]
        coarse_start = starts - starts % coarse
        cuts = np.flatnonzero(coarse_start[1:] != coarse_start[:-1]) + 1
        firsts = np.concatenate(([0], cuts)).tolist()
        lasts = (np.concatenate((cuts, [len(starts)])) - 1).tolist()
        highs = np.maximum.reduceat(bars["high"], firsts).tolist()
        lows = np.minimum.reduceat(bars["low"], firsts).tolist()
        counts = np.add.reduceat(bars["count"], firsts).tolist()
        volumes = bars["volume"].tolist()
        notionals = bars["notional"].tolist()
        # The first and last bar of each coarse window, as Python numbers column by
        # column (a row's fields one by one cost ~1 us each).
        heads = bars[firsts]
        opens, open_ts, open_seq = (heads[f].tolist() for f in ("open", "open_ts", "open_seq"))
        tails = bars[lasts]
        closes, close_ts, close_seq = (
            tails[f].tolist() for f in ("close", "close_ts", "close_seq")
        )
        window_starts = coarse_start[firsts].tolist()
        open_bars = self.state.open[coarse]
        for k, (first, last) in enumerate(zip(firsts, lasts, strict=True)):
            part = Bar(
                opens[k],
                (open_ts[k], open_seq[k]),
                closes[k],
                (close_ts[k], close_seq[k]),
                highs[k],
                lows[k],
                counts[k],
                volumes[first : last + 1],
                notionals[first : last + 1],
            )
            start = window_starts[k]
            current = open_bars.get(start)
            if current is None:
                open_bars[start] = part
            else:
                current.absorb(part)

    def _close_coarse(self, res: int, watermark: float, events: CandleEvents) -> None:
        state, spec = self.state, self.spec
        bars = state.open[res]
        pending = state.open_late[res]
        ends = sorted(
            {s for s in bars if s + res <= watermark} | {s for s in pending if s + res <= watermark}
        )
        if not ends:
            return
        closed_rows: list[tuple[int, Bar]] = []
        touched = state.touched[res]
        for start in ends:
            bar = bars.pop(start, None)
            late = pending.pop(start, None)
            if bar is not None:
                bar = bar.compact()
                closed_rows.append((start, bar))
            if late is not None:
                late.emitted = late.current = bar
                touched[start] = late
        if closed_rows:
            block = _closed_block(res, closed_rows)
            events.candle_parts.append(block)
            events.count(spec.name(res), len(block))
            state.closed[res] = appended(state.closed[res], block)
        self._drift_on_close(res, ends, events)

    def _drift_on_close(self, res: int, starts: list[int], events: CandleEvents) -> None:
        """Late trades reached these windows while they were open: they went out without
        them, and the drift shows now (coarse windows only; a late base trade always finds
        its window closed)."""
        if res == self.spec.base:
            return
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
        touched = self.state.touched[res]
        closed = touched.get(start)
        if closed is not None:
            return closed
        rows = self.state.closed[res]
        i = int(np.searchsorted(rows["start"], start))
        if i < len(rows) and int(rows["start"][i]) == start:
            bar = _bar_of(rows[i])
            closed = ClosedBar(bar, current=bar)
        elif start + res <= floor:
            return None
        else:
            closed = ClosedBar(None)  # closed with no trades
        touched[start] = closed
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
                if restate:
                    self._roll_up(res, start, trade)  # it goes out right, no drift
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

    def _roll_up(self, coarse: int, start: int, bar: Bar) -> None:
        bars = self.state.open[coarse]
        current = bars.get(start)
        if current is None:
            bars[start] = bar.copy()
        else:
            current.absorb(bar)

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
        floor = watermark - self.spec.keep_closed_ms
        if math.isinf(floor):
            return
        state = self.state
        for res, rows in state.closed.items():
            if len(rows) and rows["start"][0] + res <= floor:
                gone = int(np.searchsorted(rows["start"] + res, floor, "right"))
                state.closed[res] = rows[gone:]
        for res, touched in state.touched.items():
            for start in [s for s in touched if s + res <= floor]:
                del touched[start]


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
