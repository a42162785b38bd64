"""Event-time tumbling-window candles of one symbol, with lateness and drift.

`SymbolCandles` is the whole per-symbol state machine, free of Bytewax: it takes batches
of deduplicated trades in arrival order and returns closed candles (the base resolution
and the roll-ups), drift records for late trades, and the trades flagged late or not.

The rules (../shared/DESIGN.md):
- The watermark of a symbol is its newest event time minus the allowed lateness; live,
  it also advances with system time while the symbol is idle. A window [start, end)
  closes when the watermark reaches `end`.
- A trade is late when its base window had closed when it arrived. The decision is made
  per trade against the watermark of the trades before it, and windows close in a fixed
  order, so the output depends on the order of the input only, never on batch sizes.
- Coarser candles are rolled up from base candles as these close.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import polars as pl

from candlewax.records import Candle, DriftRecord
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

    @property
    def base(self) -> int:
        return self.resolutions[0]

    def name(self, resolution: int) -> str:
        return format_duration(resolution)


@dataclass(slots=True)
class ClosedBar:
    """An emitted (or empty) window kept for late trades: what went out and what came late."""

    emitted: Bar | None
    revision: int = 0
    late: Bar | None = None
    late_trades: int = 0
    max_lateness_ms: int = 0

    def add_late(self, trade: Bar, lateness_ms: int) -> None:
        if self.late is None:
            self.late = trade.copy()
        else:
            self.late.absorb(trade)
        self.late_trades += 1
        self.max_lateness_ms = max(self.max_lateness_ms, lateness_ms)

    def corrected(self) -> Bar:
        assert self.late is not None
        return self.late.copy() if self.emitted is None else self.emitted.merged(self.late)


@dataclass
class CandleState:
    """Everything `SymbolCandles` keeps between batches (and in recovery snapshots)."""

    symbol: str | None = None
    max_ts: int | None = None
    max_ts_seen_at_ms: float = 0.0  # system time when max_ts last advanced (live clock)
    next_seq: int = 0
    open: dict[int, dict[int, Bar]] = field(default_factory=dict)
    # Late trades for windows that are still open (coarse ones): drift when they close.
    open_late: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)
    closed: dict[int, dict[int, ClosedBar]] = field(default_factory=dict)


@dataclass
class CandleEvents:
    """What one step of the engine produced."""

    candles: list[Candle] = field(default_factory=list)
    drift: list[DriftRecord] = field(default_factory=list)
    trades: pl.DataFrame | None = None  # the input trades with a `late` column
    accepted: int = 0
    late: int = 0
    late_expired: int = 0


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
        """System time (ms) at which the live watermark closes the next open window."""
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
            events.trades = trades.with_columns(pl.lit(False).alias("late"))
            return events
        state, spec = self.state, self.spec
        base = spec.base
        if state.symbol is None:
            state.symbol = str(trades.get_column("symbol")[0])

        seq = pl.int_range(state.next_seq, state.next_seq + n, dtype=pl.Int64)
        state.next_seq += n
        newest_before = pl.col("ts").cum_max().shift(1)
        if state.max_ts is not None:
            newest_before = newest_before.fill_null(state.max_ts).clip(lower_bound=state.max_ts)
        wm_before = newest_before - spec.allowed_lateness_ms
        if spec.live and state.max_ts is not None:
            wm_before = pl.max_horizontal(wm_before, pl.lit(int(self.watermark(now_ms))))
        flagged = trades.with_columns(
            seq.alias("_seq"),
            (pl.col("ts") - pl.col("ts") % base).alias("_window"),
            wm_before.alias("_wm"),
            newest_before.alias("_newest"),
        ).with_columns(((pl.col("_window") + base) <= pl.col("_wm")).fill_null(False).alias("late"))

        on_time = flagged.filter(~pl.col("late"))
        events.accepted = on_time.height
        self._fold_on_time(on_time)

        late_rows = flagged.filter(pl.col("late"))
        events.late = late_rows.height
        for ts, seq_no, price, size, wm, newest in late_rows.select(
            "ts", "_seq", "price", "size", "_wm", "_newest"
        ).iter_rows():
            self._close_until(wm, events)
            self._take_late(Bar.of_trade(ts, seq_no, price, size), newest, wm, events)

        batch_max = int(trades.get_column("ts").max())  # type: ignore[arg-type]
        if state.max_ts is None or batch_max > state.max_ts:
            state.max_ts = batch_max
            state.max_ts_seen_at_ms = now_ms
        self._close_until(self.watermark(now_ms), events)
        self._expire(self.watermark(now_ms))
        events.trades = flagged.drop("_seq", "_window", "_wm", "_newest")
        return events

    def on_clock(self, now_ms: float) -> CandleEvents:
        """Live only: close the windows that system time has carried the watermark past."""
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
        return copy.deepcopy(self.state)

    # --- internals ---------------------------------------------------------------------
    def _fold_on_time(self, on_time: pl.DataFrame) -> None:
        if on_time.height == 0:
            return
        partials = (
            on_time.sort("ts", maintain_order=True)
            .group_by("_window", maintain_order=True)
            .agg(
                pl.col("price").first().alias("open"),
                pl.col("ts").first().alias("open_ts"),
                pl.col("_seq").first().alias("open_seq"),
                pl.col("price").last().alias("close"),
                pl.col("ts").last().alias("close_ts"),
                pl.col("_seq").last().alias("close_seq"),
                pl.col("price").max().alias("high"),
                pl.col("price").min().alias("low"),
                pl.len().alias("count"),
                pl.col("size").alias("sizes"),
                (pl.col("price") * pl.col("size")).alias("notionals"),
            )
        )
        open_bars = self.state.open[self.spec.base]
        for row in partials.iter_rows():
            start, o, o_ts, o_seq, c, c_ts, c_seq, high, low, count, sizes, notionals = row
            bar = Bar(o, (o_ts, o_seq), c, (c_ts, c_seq), high, low, count, sizes, notionals)
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
                {s for s in bars if s + res <= watermark} | {s for s in pending if s + res <= watermark}
            )
            for start in ends:
                bar = bars.pop(start, None)
                closed = pending.pop(start, None) or ClosedBar(None)
                candle = None
                if bar is not None:
                    bar = bar.compact()
                    closed.emitted = bar
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
        floor = watermark - spec.drift_retention_ms
        for res in spec.resolutions:
            start = window_start(ts, res)
            if start + res > watermark:  # still open: the drift shows when it closes
                pending = state.open_late[res].setdefault(start, ClosedBar(None))
                pending.add_late(trade, lateness_ms)
                continue
            closed = state.closed[res].get(start)
            if closed is None:
                if start + res <= floor:
                    if res == spec.base:
                        events.late_expired += 1
                    continue
                closed = state.closed[res][start] = ClosedBar(None)  # closed with no trades
            closed.add_late(trade, lateness_ms)
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
        floor = watermark - self.spec.drift_retention_ms
        if math.isinf(floor):
            return
        for res, closed in self.state.closed.items():
            for start in [s for s in closed if s + res <= floor]:
                del closed[start]
