"""The Bytewax operators of the candle flow: thin wrappers around the pure modules.

Each is an `@operator` taking `step_id` first, so the flow reads as a list of named
steps; results that fork come back as small frozen dataclasses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol, TypeVar, cast

import bytewax.operators as op
import numpy as np
import polars as pl
from bytewax.dataflow import Stream, operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

from candlewax.failures import EXIT_USAGE, PipelineError, fail
from candlewax.input_clock import INPUT_CLOCK
from candlewax.metrics import FlowMetrics, QuoteMetrics
from candlewax.records import (
    TRADE,
    CandleBatch,
    FlaggedQuotes,
    FlaggedTrades,
    MessageKind,
    QuoteBarBatch,
    RawBatch,
    Rejection,
    RejectReason,
    without_origin,
)
from candlewax.shards import split_by_shard, split_by_symbol, symbol_runs
from candlewax.stopping import stop_requested
from operators.candles import CandleEvents, CandleSpec, CandleState, ShardCandles
from operators.decode import DecodedBatch, ValidationRules, decode_batch
from operators.dedupe import DedupeState, ShardDeduplicator, with_dedupe_keys
from operators.price_guard import GuardState, OutlierRule, ShardGuard, outlier_rejections
from operators.quote_windows import QuoteBarState, QuoteEvents, SymbolQuoteBars

# The counters a decode or dedupe step counts in: the trades' or the quotes'.
Counters = FlowMetrics | QuoteMetrics
_T = TypeVar("_T")
_E = TypeVar("_E")  # what a window engine's step produces
_S = TypeVar("_S")  # what it keeps in a snapshot
_E_co = TypeVar("_E_co", covariant=True)
_S_co = TypeVar("_S_co", covariant=True)


# --- decode ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeOut:
    valid: KeyedStream[pl.DataFrame]
    """Valid messages, one frame per shard of symbols (or per symbol) per batch, keyed by
    the shard's key (or the symbol); each symbol's rows one run, in arrival order."""
    rejections: Stream[pl.DataFrame]
    """Messages that broke the contract, for the dead-letter queue: a `Rejection` frame
    per raw batch that had any."""


@operator
def decode(
    step_id: str,
    up: Stream[RawBatch],
    rules: ValidationRules,
    fingerprint: bool,
    metrics: Counters,
    origin: bool = True,
    kind: MessageKind = TRADE,
    shards: int | None = None,
) -> DecodeOut:
    """Decode and validate each raw batch of messages of `kind`; key them for dedupe;
    split them by shard of symbols (`candlewax.shards`), or by symbol when `shards` is
    None. `origin`: keep each message's original bytes and position
    (`ORIGIN_SCHEMA`), which the fat-finger guard needs for its dead-letter records."""

    def decode_counted(batch: RawBatch) -> DecodedBatch:
        decoded = decode_batch(batch, rules, origin, kind)
        metrics.received.inc(decoded.received)
        metrics.count("filtered", decoded.filtered)
        metrics.count("rejected", len(decoded.rejections))
        for rejection in decoded.rejections:
            metrics.rejected.labels(rejection.reason).inc()
        return decoded

    def decode_joined(batches: list[RawBatch]) -> list[DecodedBatch]:
        return [decode_counted(RawBatch.joined(group)) for group in joined_groups(batches)]

    decoded = op.flat_map_batch("validate", up, decode_joined)
    rejections = op.filter_map("rejections", decoded, _rejection_frame)
    name = "by_symbol" if shards is None else "by_shard"
    valid = op.flat_map(name, decoded, lambda d: _split(d, fingerprint, kind, shards))
    return DecodeOut(valid, rejections)


# Batches that come to the decode together (a worker's partitions polled at once) are
# decoded as one while they add up to at most this many messages: a decode costs ~1 ms
# whatever its size, and a live worker polls each partition every ~10 ms.
JOIN_MESSAGES = 5_000


def joined_groups(batches: list[RawBatch]) -> list[list[RawBatch]]:
    """The batches in order, in groups of at most `JOIN_MESSAGES` messages (a larger
    batch alone): each group is decoded as one (`RawBatch.joined`)."""
    groups: list[list[RawBatch]] = []
    size = 0
    for batch in batches:
        if groups and size + len(batch) <= JOIN_MESSAGES:
            groups[-1].append(batch)
            size += len(batch)
        else:
            groups.append([batch])
            size = len(batch)
    return groups


def _rejection_frame(decoded: DecodedBatch) -> pl.DataFrame | None:
    return Rejection.frame(decoded.rejections) if decoded.rejections else None


def _split(
    decoded: DecodedBatch, fingerprint: bool, kind: MessageKind, shards: int | None
) -> list[tuple[str, pl.DataFrame]]:
    """The valid messages with their dedupe keys, by shard of symbols (`shards`) or, with
    None, by symbol."""
    valid = decoded.valid
    if valid.height == 0:
        return []
    keyed = with_dedupe_keys(valid, fingerprint, kind, decoded.id_numbers)
    return split_by_symbol(keyed) if shards is None else split_by_shard(keyed, shards)


# --- dedupe ------------------------------------------------------------------------------
class _DedupeLogic(StatefulBatchLogic[pl.DataFrame, pl.DataFrame, dict[str, DedupeState]]):
    def __init__(self, dedupe: ShardDeduplicator, metrics: Counters):
        self.dedupe = dedupe
        self.metrics = metrics

    def on_batch(self, values: list[pl.DataFrame]) -> tuple[list[pl.DataFrame], bool]:
        frames = values[0] if len(values) == 1 else pl.concat(values, rechunk=False)
        kept, duplicates = self.dedupe.filter(frames)
        self.metrics.count("duplicate", duplicates)
        return ([kept] if kept.height else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, DedupeState]:
        # Taken in constant time per symbol; pickled as the DedupeStates resumed from.
        return cast(dict[str, DedupeState], self.dedupe.snapshot())


@operator
def dedupe(
    step_id: str, up: KeyedStream[pl.DataFrame], horizon_ms: int, metrics: Counters
) -> KeyedStream[pl.DataFrame]:
    """Drop messages whose (symbol, key) was seen within the horizon (per symbol); the
    keys come from the decode step. Keyed by shard of symbols or by symbol, as `up`."""

    def build(resume: dict[str, DedupeState] | None) -> _DedupeLogic:
        dedupe = _resumed(resume, lambda: ShardDeduplicator(horizon_ms, resume))
        return _DedupeLogic(dedupe, metrics)

    return op.stateful_batch("dedupe_state", up, build)


def _resumed(resume: object, build: Callable[[], _T]) -> _T:
    """A step's state built from its recovery snapshot `resume` (or afresh, None), or the
    flow stopped with one line when the snapshot is one this version cannot resume: the
    state says why (ValueError)."""
    if resume is None:
        return build()
    try:
        return build()
    except ValueError as error:
        fail(PipelineError("the recovery store", str(error), EXIT_USAGE))


# --- the fat-finger guard ----------------------------------------------------------------
@dataclass(frozen=True)
class GuardOut:
    trades: KeyedStream[pl.DataFrame]
    """The trades that passed, one frame per key (shard or symbol) per batch."""
    outliers: Stream[pl.DataFrame]
    """The price outliers, for the dead-letter queue: a `Rejection` frame per key per
    batch that had any."""


@dataclass(frozen=True)
class _Guarded:
    trades: pl.DataFrame | None
    outliers: pl.DataFrame | None


class _GuardLogic(StatefulBatchLogic[pl.DataFrame, _Guarded, dict[str, GuardState]]):
    def __init__(self, guard: ShardGuard, metrics: FlowMetrics):
        self.guard = guard
        self.metrics = metrics

    def on_batch(self, values: list[pl.DataFrame]) -> tuple[list[_Guarded], bool]:
        runs = symbol_runs(values[0] if len(values) == 1 else pl.concat(values, rechunk=False))
        trades = runs.frame
        outliers = self.guard.check(runs)
        # Past the guard nothing needs a trade's original bytes: they are dropped here.
        if not len(outliers):
            return [_Guarded(without_origin(trades), None)], StatefulBatchLogic.RETAIN
        rule = self.guard.rule
        rejections = outlier_rejections(trades, outliers, rule, int(time.time() * 1000))
        self.metrics.count("rejected", len(outliers))
        self.metrics.rejected.labels(RejectReason.PRICE_OUTLIER.value).inc(len(outliers))
        passed = without_origin(trades.filter(pl.Series(~outliers.mask)))
        return [_Guarded(passed if passed.height else None, rejections)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, GuardState]:
        return self.guard.snapshot()


@operator
def price_guard(
    step_id: str, up: KeyedStream[pl.DataFrame], rule: OutlierRule, metrics: FlowMetrics
) -> GuardOut:
    """Take out trades whose price strays from the median of the symbol's previous trades
    by more than the rule's threshold (`operators.price_guard`)."""

    def build(resume: dict[str, GuardState] | None) -> _GuardLogic:
        return _GuardLogic(_resumed(resume, lambda: ShardGuard(rule, resume)), metrics)

    guarded = op.stateful_batch("guard_state", up, build)
    return GuardOut(
        trades=op.filter_map_value("passed", guarded, lambda g: g.trades),
        outliers=op.filter_map("outliers", guarded, lambda kv: kv[1].outliers),
    )


# --- the window steps (candles, quote bars) ------------------------------------------------
class _Engine(Protocol[_E_co, _S_co]):
    """What a window engine offers its step (`ShardCandles`, `SymbolQuoteBars`)."""

    def on_clock(self, now_ms: float) -> _E_co: ...
    def on_end(self) -> _E_co: ...
    def next_close_at_ms(self) -> float | None: ...
    def snapshot(self) -> _S_co: ...


class _WindowLogic(StatefulBatchLogic[pl.DataFrame, _E, _S]):
    """The Bytewax side of a window engine: batches in, the clock's notifications, the
    end of input, and snapshots. Subclasses fold a batch and count the events."""

    engine: _Engine[_E, _S]

    def _fold(self, frames: pl.DataFrame, now_ms: float) -> _E:
        raise NotImplementedError

    def _counted(self, events: _E) -> tuple[list[_E], bool]:
        raise NotImplementedError

    def on_batch(self, values: list[pl.DataFrame]) -> tuple[list[_E], bool]:
        frames = values[0] if len(values) == 1 else pl.concat(values, rechunk=False)
        return self._counted(self._fold(frames, INPUT_CLOCK.now_ms()))

    def on_notify(self) -> tuple[list[_E], bool]:
        return self._counted(self.engine.on_clock(INPUT_CLOCK.now_ms()))

    def on_eof(self) -> tuple[list[_E], bool]:
        if stop_requested():  # stopped, not ended: open windows stay open for a resume
            return [], StatefulBatchLogic.RETAIN
        return self._counted(self.engine.on_end())

    def notify_at(self) -> datetime | None:
        # The engine thinks in input-clock time (see `candlewax.input_clock`).
        at_ms = self.engine.next_close_at_ms()
        if at_ms is None:
            return None
        wall_ms = INPUT_CLOCK.wall_at(at_ms)
        return datetime.fromtimestamp(wall_ms / 1000.0, tz=timezone.utc)

    def snapshot(self) -> _S:
        return self.engine.snapshot()


def _resumed_now(state: QuoteBarState | None) -> None:
    """Idle time is not carried over a restart: the time the flow was down is not time
    the input was known to be caught up."""
    if state is not None:
        state.max_ts_seen_at_ms = INPUT_CLOCK.now_ms()


# --- candles -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CandlesOut:
    candles: Stream[CandleBatch]
    """Closed candles of every resolution: a batch per shard per step."""
    drift: Stream[pl.DataFrame]
    """Drift records of late trades: a `DriftRecord` frame per shard per step."""
    trades: Stream[FlaggedTrades]
    """The deduplicated trades, flagged late or not (the lake's truth)."""
    forming: Stream[CandleBatch]
    """Live, with a forming interval: the open base windows that took trades, as they
    stand, at most once per interval per shard (`ShardCandles.forming`)."""


class _CandleLogic(_WindowLogic[CandleEvents, CandleState]):
    engine: ShardCandles

    def __init__(self, engine: ShardCandles, metrics: FlowMetrics, forming_interval_s: float):
        self.engine = engine
        self.metrics = metrics
        # Wall-clock pacing of the forming candles: a view for people, live runs only.
        # Every symbol (on every worker) publishes on the same grid of the wall clock, so
        # the forming candles of a tick leave together: one sink write per tick, not one
        # per symbol.
        self.forming_interval_s = forming_interval_s if engine.spec.live else 0.0
        self._formed_tick = -1  # the grid tick of the last forming candles
        # Labelled children looked up once (`labels()` costs ~0.75 us a call).
        spec = engine.spec
        self._delay = {res: metrics.candle_delay.labels(spec.name(res)) for res in spec.resolutions}

    def _add_forming(self, events: CandleEvents) -> None:
        if not self.forming_interval_s or not self.engine.forming_changed():
            return
        tick = int(time.time() // self.forming_interval_s)
        if tick > self._formed_tick:
            events.forming = self.engine.forming()
            self._formed_tick = tick

    def notify_at(self) -> datetime | None:
        close_at = super().notify_at()
        if not self.forming_interval_s or not self.engine.forming_changed():
            return close_at
        tick = max(self._formed_tick + 1, int(time.time() // self.forming_interval_s))
        due = datetime.fromtimestamp(tick * self.forming_interval_s, tz=timezone.utc)
        return due if close_at is None else min(close_at, due)

    def _observe_delay(self, candles: CandleBatch) -> None:
        """How long after its window could close each new candle leaves (live only)."""
        rows = candles.rows[candles.rows["revision"] == 0]
        if len(rows) == 0:
            return
        closed_at = rows["start"] + rows["res"] + self.engine.spec.allowed_lateness_ms
        delays = np.maximum(time.time() * 1000.0 - closed_at, 0.0) / 1000.0
        for res, delay in zip(rows["res"].tolist(), delays.tolist(), strict=True):
            self._delay[res].observe(delay)

    def _counted(self, events: CandleEvents) -> tuple[list[CandleEvents], bool]:
        m = self.metrics
        m.count("accepted", events.accepted)
        m.count("late", events.late)
        if events.late_expired:
            m.late_expired.inc(events.late_expired)
        for resolution, count in events.candle_counts.items():
            m.count_bars(resolution, count)
        for resolution, count in events.restated_counts.items():
            m.restated.labels(resolution).inc(count)
        for record in events.drift_records:
            m.drift_records.labels(record.resolution).inc()
            m.drift_ratio.labels(record.resolution).observe(record.max_drift)
            if record.alert:
                m.drift_alerts.labels(record.symbol, record.resolution).inc()
        for lateness_ms in events.lateness_ms:
            m.lateness.observe(lateness_ms / 1000.0)
        candles = events.candles
        if candles is not None and self.engine.spec.live:
            self._observe_delay(candles)
        self._add_forming(events)
        return [events], StatefulBatchLogic.RETAIN

    def _fold(self, frames: pl.DataFrame, now_ms: float) -> CandleEvents:
        return self.engine.on_trades(frames, now_ms)


@operator
def candles(
    step_id: str,
    up: KeyedStream[pl.DataFrame],
    spec: CandleSpec,
    metrics: FlowMetrics,
    forming_interval_s: float = 0.0,
    shards: int = 1,
) -> CandlesOut:
    """Fold trades (keyed by shard of symbols, `shards` of them: `candlewax.shards`) into
    event-time candles per symbol; late trades become drift records. Live, with
    `forming_interval_s` > 0, also the forming candles of the open windows."""

    def build(resume: CandleState | None) -> _CandleLogic:
        engine = _resumed(resume, lambda: ShardCandles(spec, resume, shards))
        if resume is not None:  # checked above: a state of this version
            engine.state.resumed_at(INPUT_CLOCK.now_ms())
        return _CandleLogic(engine, metrics, forming_interval_s)

    events = op.stateful_batch("windows", up, build)
    values = op.map("events", events, lambda kv: kv[1])
    return CandlesOut(
        candles=op.filter_map("closed_candles", values, lambda e: e.candles),
        drift=op.filter_map("drift_records", values, lambda e: e.drift),
        trades=op.filter_map("flagged_trades", values, lambda e: e.trades),
        forming=op.filter_map("forming_candles", values, lambda e: e.forming),
    )


# --- quote bars --------------------------------------------------------------------------
@dataclass(frozen=True)
class QuoteBarsOut:
    bars: Stream[QuoteBarBatch]
    """Closed quote bars of every resolution: a batch per symbol per step."""
    drift: Stream[pl.DataFrame]
    """Drift records of late quotes: a `QuoteDriftRecord` frame per symbol per step."""
    quotes: Stream[FlaggedQuotes]
    """The deduplicated quotes, flagged late or not (the lake's truth)."""


class _QuoteBarLogic(_WindowLogic[QuoteEvents, QuoteBarState]):
    engine: SymbolQuoteBars

    def __init__(self, engine: SymbolQuoteBars, metrics: QuoteMetrics):
        self.engine = engine
        self.metrics = metrics

    def _counted(self, events: QuoteEvents) -> tuple[list[QuoteEvents], bool]:
        m = self.metrics
        m.count("accepted", events.accepted)
        m.count("late", events.late)
        if events.late_expired:
            m.late_expired.inc(events.late_expired)
        for resolution, count in events.bar_counts.items():
            m.count_bars(resolution, count)
        for resolution, count in events.restated_counts.items():
            m.restated.labels(resolution).inc(count)
        for record in events.drift_records:
            m.drift_records.labels(record.resolution).inc()
            if record.alert:
                m.drift_alerts.labels(record.symbol, record.resolution).inc()
        return [events], StatefulBatchLogic.RETAIN

    def _fold(self, frames: pl.DataFrame, now_ms: float) -> QuoteEvents:
        return self.engine.on_quotes(frames, now_ms)


@operator
def quote_bars(
    step_id: str, up: KeyedStream[pl.DataFrame], spec: CandleSpec, metrics: QuoteMetrics
) -> QuoteBarsOut:
    """Fold quotes into event-time quote bars per symbol; late quotes become drift records."""

    def build(resume: QuoteBarState | None) -> _QuoteBarLogic:
        _resumed_now(resume)
        return _QuoteBarLogic(SymbolQuoteBars(spec, resume), metrics)

    events = op.stateful_batch("windows", up, build)
    values = op.map("events", events, lambda kv: kv[1])
    return QuoteBarsOut(
        bars=op.filter_map("closed_bars", values, lambda e: e.bars),
        drift=op.filter_map("drift_records", values, lambda e: e.drift),
        quotes=op.filter_map("flagged_quotes", values, lambda e: e.quotes),
    )
