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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from candlewax.records import Candle, DriftRecord, FlaggedTrades
from config.durations import format_duration
from operators.bars import Bar, window_start
from operators.drift import DriftPolicy, drift_record


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


@dataclass
class CandleState:
    """Everything `SymbolCandles` keeps between batches (and in recovery snapshots)."""

    symbol: str | None = None
    max_ts: int | None = None
    max_ts_seen_at_ms: float = 0.0  # input-clock time when max_ts last advanced (live)
    next_seq: int = 0
    open: dict[int, dict[int, Bar]] = field(default_factory=dict)
    # Late trades for windows that are still open (coarse ones): drift when they close.
    open_late: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)
    closed: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)

    def copy(self) -> CandleState:
        """An independent copy for a recovery snapshot (cheaper than a deep copy)."""
        return CandleState(
            self.symbol,
            self.max_ts,
            self.max_ts_seen_at_ms,
            self.next_seq,
            {res: {s: bar.copy() for s, bar in bars.items()} for res, bars in self.open.items()},
            {res: {s: c.copy() for s, c in bars.items()} for res, bars in self.open_late.items()},
            {res: {s: c.copy() for s, c in bars.items()} for res, bars in self.closed.items()},
        )


@dataclass
class CandleEvents:
    """What one step of the engine produced."""

    candles: list[Candle] = field(default_factory=list)
    drift: list[DriftRecord] = field(default_factory=list)
    trades: FlaggedTrades | None = None  # the input trades, flagged late or not
    accepted: int = 0
    late: int = 0
    late_expired: int = 0
    restated_bars: set[str] = field(default_factory=set)  # bar ids restated here
    lateness_ms: list[int] = field(default_factory=list)  # of each late trade


class SymbolCandles:
    """The candle state machine of one symbol."""

    def __init__(self, spec: CandleSpec, state: CandleState | None = None):
        self.spec = spec
        self.state = state if state is not None else CandleState()
        for res in spec.resolutions:
            self.state.open.setdefault(res, {})
            self.state.open_late.setdefault(res, {})
            self.state.closed.setdefault(res, {})

    @property
    def _symbol(self) -> str:
        # Bytewax builds keyed state without its key; the symbol comes with the first trade.
        return self.state.symbol or ""

    # --- the watermark -----------------------------------------------------------------
    def watermark(self, now_ms: float) -> float:
        state = self.state
        if state.max_ts is None:
            return -math.inf
        event_wm = state.max_ts - self.spec.allowed_lateness_ms
        if not self.spec.live:
            return event_wm
        return event_wm + max(0.0, now_ms - state.max_ts_seen_at_ms)

    def next_close_at_ms(self) -> float | None:
        """Clock time (ms) at which the live watermark closes the next open window."""
        if not self.spec.live or self.state.max_ts is None:
            return None
        ends = [start + res for res, bars in self.state.open.items() for start in bars]
        ends += [start + res for res, bars in self.state.open_late.items() for start in bars]
        if not ends:
            return None
        event_wm = self.state.max_ts - self.spec.allowed_lateness_ms
        return self.state.max_ts_seen_at_ms + max(0, min(ends) - event_wm)

    # --- input -------------------------------------------------------------------------
    def on_trades(self, trades: pl.DataFrame, now_ms: float = 0.0) -> CandleEvents:
        """Fold a batch of trades (arrival order) and close the windows it completes."""
        events = CandleEvents()
        n = trades.height
        if n == 0:
            return events
        state, spec = self.state, self.spec
        base = spec.base
        if state.symbol is None:
            state.symbol = str(trades.get_column("symbol")[0])

        ts = trades.get_column("ts").to_numpy()
        price = trades.get_column("price").to_numpy()
        size = trades.get_column("size").to_numpy()
        seq = np.arange(state.next_seq, state.next_seq + n, dtype=np.int64)
        state.next_seq += n

        # The symbol's newest event time before each trade arrived, and so its watermark.
        newest_before = np.empty(n, dtype=np.int64)
        newest_before[1:] = np.maximum.accumulate(ts)[:-1]
        newest_before[0] = ts[0] if state.max_ts is None else state.max_ts
        if state.max_ts is not None:
            np.maximum(newest_before, state.max_ts, out=newest_before)
        wm_before = newest_before - spec.allowed_lateness_ms
        if spec.live and state.max_ts is not None:
            np.maximum(wm_before, int(self.watermark(now_ms)), out=wm_before)
        window = ts - ts % base
        late = window + base <= wm_before
        if state.max_ts is None:
            late[0] = False  # the first trade of a symbol is never late

        on_time = ~late
        self._fold_on_time(ts[on_time], seq[on_time], price[on_time], size[on_time], base)
        late_index = np.flatnonzero(late)
        events.late = len(late_index)
        events.accepted = n - events.late
        for i in late_index.tolist():
            wm = int(wm_before[i])
            self._close_until(wm, events)
            trade = Bar.of_trade(int(ts[i]), int(seq[i]), float(price[i]), float(size[i]))
            self._take_late(trade, int(newest_before[i]), wm, events)

        batch_max = int(ts.max())
        if state.max_ts is None or batch_max > state.max_ts:
            state.max_ts = batch_max
            state.max_ts_seen_at_ms = now_ms
        self._close_until(self.watermark(now_ms), events)
        self._expire(self.watermark(now_ms))
        events.trades = FlaggedTrades(trades, late, seq)
        return events

    def on_clock(self, now_ms: float) -> CandleEvents:
        """Live only: close the windows that the clock has carried the watermark past."""
        events = CandleEvents()
        self._close_until(self.watermark(now_ms), events)
        self._expire(self.watermark(now_ms))
        return events

    def on_end(self) -> CandleEvents:
        """The input ended: every open window closes."""
        events = CandleEvents()
        self._close_until(math.inf, events)
        return events

    def snapshot(self) -> CandleState:
        return self.state.copy()

    # --- internals ---------------------------------------------------------------------
    def _fold_on_time(
        self, ts: np.ndarray, seq: np.ndarray, price: np.ndarray, size: np.ndarray, base: int
    ) -> None:
        """Fold on-time trades into their open base windows, one partial bar per window."""
        if len(ts) == 0:
            return
        order = np.argsort(ts, kind="stable")  # by event time, ties in arrival order
        ts, seq, price, size = ts[order], seq[order], price[order], size[order]
        window = ts - ts % base
        cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
        firsts = np.concatenate(([0], cuts))
        lasts = np.concatenate((cuts, [len(ts)])) - 1
        highs = np.maximum.reduceat(price, firsts).tolist()
        lows = np.minimum.reduceat(price, firsts).tolist()
        sizes = np.split(size, cuts)
        with np.errstate(over="ignore"):  # an overflowing notional is defined: vwap null
            notionals = np.split(price * size, cuts)
        open_bars = self.state.open[base]
        for k, (first, last) in enumerate(zip(firsts.tolist(), lasts.tolist(), strict=True)):
            bar = Bar(
                float(price[first]),
                (int(ts[first]), int(seq[first])),
                float(price[last]),
                (int(ts[last]), int(seq[last])),
                highs[k],
                lows[k],
                last - first + 1,
                sizes[k].tolist(),
                notionals[k].tolist(),
            )
            start = int(window[first])
            current = open_bars.get(start)
            if current is None:
                open_bars[start] = bar
            else:
                current.absorb(bar)

    def _close_until(self, watermark: float, events: CandleEvents) -> None:
        """Close every window with `end <= watermark`, base first so roll-ups are complete."""
        state, spec = self.state, self.spec
        base = spec.base
        closing: list[tuple[int, int, Candle | None, ClosedBar]] = []
        for res in spec.resolutions:
            bars = state.open[res]
            pending = state.open_late[res]
            ends = sorted(
                {s for s in bars if s + res <= watermark}
                | {s for s in pending if s + res <= watermark}
            )
            for start in ends:
                bar = bars.pop(start, None)
                closed = pending.pop(start, None) or ClosedBar(None)
                candle = None
                if bar is not None:
                    bar = bar.compact()
                    closed.emitted = closed.current = bar
                    candle = bar.to_candle(self._symbol, spec.name(res), start, res)
                    if res == base:
                        for coarse in spec.resolutions[1:]:
                            self._roll_up(coarse, window_start(start, coarse), bar)
                state.closed[res][start] = closed
                closing.append((start + res, res, candle, closed))
        closing.sort(key=lambda item: (item[0], item[1]))
        for end, res, candle, closed in closing:
            if candle is not None:
                events.candles.append(candle)
            if closed.late is not None:
                # Late trades reached this window while it was open: it went out without them.
                closed_at = end + self.spec.allowed_lateness_ms
                events.drift.append(self._drift(res, end - res, closed, closed_at))

    def _roll_up(self, coarse: int, start: int, base_bar: Bar) -> None:
        bars = self.state.open[coarse]
        current = bars.get(start)
        if current is None:
            bars[start] = base_bar.copy()
        else:
            current.absorb(base_bar)

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
            closed = state.closed[res].get(start)
            if closed is None:
                if start + res <= floor:
                    if res == spec.base:
                        events.late_expired += 1
                    continue
                closed = state.closed[res][start] = ClosedBar(None)  # closed with no trades
            closed.add_late(trade, lateness_ms)
            if restate:
                bar = closed.restate(trade)
                candle = bar.to_candle(self._symbol, spec.name(res), start, res, closed.revision)
                events.candles.append(candle)
                events.restated_bars.add(candle.bar_id)
            events.drift.append(self._drift(res, start, closed, newest))

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
        for res, closed in self.state.closed.items():
            for start in [s for s in closed if s + res <= floor]:
                del closed[start]
