"""The candle engine: arithmetic, windows, watermark, lateness, roll-up, live clock."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import polars as pl
import pytest

from candlewax.records import Candle, candle_frame
from operators.candles import CandleSpec, CandleState, ShardCandles, _by_symbol_then_time
from tests.factories import T0, trade, trades_frame
from tests.reference import assert_candles_match, reference_candles

SPEC = CandleSpec(resolutions=(1_000, 10_000, 60_000), allowed_lateness_ms=1_000)
RESOLUTIONS = {"1s": 1_000, "10s": 10_000, "1m": 60_000}


def candles_of(events):
    return [] if events.candles is None else Candle.rows(candle_frame([events.candles]))


def drift_of(events):
    return list(events.drift_records)


def run(rows, spec=SPEC, splits=None):
    """Feed rows (ts, price, size) in batches; return (candles, drift, late flags)."""
    engine = ShardCandles(spec)
    candles, drift, late = [], [], []
    bounds = splits or [len(rows)]
    start = 0
    for end in bounds:
        if end > start:
            events = engine.on_trades(trades_frame(rows[start:end]))
            candles += candles_of(events)
            drift += drift_of(events)
            late += events.trades.late.tolist()
        start = end
    events = engine.on_end()
    return candles + candles_of(events), drift + drift_of(events), late


def by_id(candles):
    return {c.bar_id: c for c in candles}


def test_ohlcv_arithmetic_with_ties_broken_by_arrival():
    rows = [
        (T0 + 500, 10.0, 1.0),
        (T0 + 100, 11.0, 2.0),
        (T0 + 900, 9.0, 1.0),
        (T0 + 900, 12.0, 4.0),
        (T0 + 100, 13.0, 1.0),
    ]
    candles, drift, late = run(rows)
    bar = by_id(candles)[f"BTC-USD:1s:{T0}"]
    # open: earliest ts (T0+100), the first to arrive of the two; close: latest, last to arrive
    assert (bar.open, bar.high, bar.low, bar.close) == (11.0, 13.0, 9.0, 12.0)
    assert bar.volume == 9.0 and bar.trade_count == 5
    assert bar.vwap == pytest.approx((10 + 22 + 9 + 48 + 13) / 9.0)
    assert (bar.window_start, bar.window_end) == (T0, T0 + 1_000)
    assert drift == [] and late == [False] * 5


@pytest.mark.parametrize("symbols", [3, 40_000])  # a radix sort of int16, and int64
def test_trades_are_ordered_by_symbol_then_time_then_arrival(symbols):
    rng = np.random.default_rng(7)
    sym = rng.integers(0, symbols, 50_000)
    ts = T0 + np.sort(rng.integers(0, 5_000, 50_000)) + rng.integers(-300, 300, 50_000)
    order = _by_symbol_then_time(sym, ts)
    assert (order == np.lexsort((ts, sym))).all()
    assert len(np.unique(ts)) < len(ts)  # ties on time, broken by arrival


def test_a_volume_past_the_largest_float_is_infinite_and_the_other_candles_go_on():
    """Valid sizes (finite, > 0) whose sum overflows float64, in one batch: the candle's
    volume is an infinity (the lake and the topics carry it as null), at every
    resolution, and no error stops the engine."""
    rows = [(T0 + 100, 2.0, 1e308), (T0 + 200, 2.0, 1e308), (T0 + 1_500, 3.0, 1.0)]
    # A notional that overflowed (1e308 x 10) next to two that add up past the largest
    # float: IEEE's infinity, whatever the order.
    rows += [(T0 + 2_100, 1e308, 10.0), (T0 + 2_200, 1e300, 1e8), (T0 + 2_300, 1e300, 1e8)]
    rows.append((T0 + 5_000, 3.0, 1.0))  # closes it
    candles, _, _ = run(rows)
    bars = by_id(candles)
    assert [bars[f"BTC-USD:{r}:{T0}"].volume for r in ("1s", "10s", "1m")] == [math.inf] * 3
    after = bars[f"BTC-USD:1s:{T0 + 1_000}"]
    assert (after.volume, after.vwap, after.trade_count) == (1.0, 3.0, 1)
    notional = bars[f"BTC-USD:1s:{T0 + 2_000}"]
    assert (notional.volume, notional.vwap) == (10.0 + 2e8, math.inf)


def test_windows_are_epoch_aligned_and_empty_windows_make_no_candle():
    candles, _, _ = run([(T0 + 1_999, 1.0, 1.0), (T0 + 5_001, 2.0, 1.0)])
    assert sorted(c.bar_id for c in candles if c.resolution == "1s") == [
        f"BTC-USD:1s:{T0 + 1_000}",
        f"BTC-USD:1s:{T0 + 5_000}",
    ]


def test_a_window_closes_when_the_watermark_reaches_its_end():
    engine = ShardCandles(SPEC)
    assert candles_of(engine.on_trades(trades_frame([(T0 + 100, 1.0, 1.0)]))) == []
    # newest event time T0+1999: watermark T0+999 < end T0+1000
    assert candles_of(engine.on_trades(trades_frame([(T0 + 1_999, 1.0, 1.0)]))) == []
    closed = candles_of(engine.on_trades(trades_frame([(T0 + 2_000, 1.0, 1.0)])))
    assert [c.bar_id for c in closed] == [f"BTC-USD:1s:{T0}"]


def test_a_trade_within_the_allowed_lateness_is_folded_in():
    candles, drift, late = run([(T0 + 900, 1.0, 1.0), (T0 + 1_800, 2.0, 1.0), (T0 + 950, 3.0, 1.0)])
    assert by_id(candles)[f"BTC-USD:1s:{T0}"].trade_count == 2
    assert late == [False, False, False] and drift == []


def test_a_late_trade_is_not_folded_and_goes_to_drift_for_every_resolution():
    rows = [(T0 + 100, 100.0, 1.0), (T0 + 2_500, 100.0, 1.0), (T0 + 200, 200.0, 1.0)]
    candles, drift, late = run(rows)
    assert late == [False, False, True]
    assert by_id(candles)[f"BTC-USD:1s:{T0}"].high == 100.0
    records = {d.bar_id: d for d in drift}
    assert set(records) == {f"BTC-USD:1s:{T0}", f"BTC-USD:10s:{T0}", f"BTC-USD:1m:{T0}"}
    base = records[f"BTC-USD:1s:{T0}"]
    assert (base.emitted_high, base.corrected_high, base.late_trades) == (100.0, 200.0, 1)
    assert base.drift_high == pytest.approx(1.0) and base.alert
    assert base.max_lateness_ms == 2_300
    # the 10 s bar was still open: it went out without the trade, and says so when it closed
    coarse = records[f"BTC-USD:10s:{T0}"]
    assert (coarse.emitted_high, coarse.corrected_high, coarse.corrected_trade_count) == (
        100.0,
        200.0,
        3,
    )


def test_a_late_trade_that_takes_a_volume_past_the_largest_float_drifts_to_infinity():
    rows = [(T0 + 100, 100.0, 1e308), (T0 + 2_500, 100.0, 1.0), (T0 + 200, 100.0, 1e308)]
    candles, drift, late = run(rows)
    assert late == [False, False, True]
    assert by_id(candles)[f"BTC-USD:1s:{T0}"].volume == 1e308
    base = {d.bar_id: d for d in drift}[f"BTC-USD:1s:{T0}"]
    assert (base.emitted_volume, base.corrected_volume, base.late_trades) == (1e308, math.inf, 1)


def test_a_late_trade_for_an_empty_window_reports_a_missing_bar():
    _, drift, late = run([(T0 + 100, 1.0, 1.0), (T0 + 5_000, 1.0, 1.0), (T0 + 3_500, 7.0, 1.0)])
    base = next(d for d in drift if d.resolution == "1s")
    assert (
        late[-1] and base.emitted_missing and base.corrected_close == 7.0 and base.max_drift == 1.0
    )


def test_coarser_candles_are_the_roll_up_and_match_trades_grouped_directly():
    rng = random.Random(11)
    messages, rows, ts = [], [], T0
    for _ in range(3_000):
        ts += rng.randint(0, 120)
        price, size = round(rng.uniform(90, 110), 2), round(rng.uniform(0.01, 3), 3)
        rows.append((ts, price, size))
        messages.append(trade(price=price, size=size, ts=ts))
    candles, _, _ = run(rows)
    assert_candles_match(
        candles, reference_candles(messages, 1_000, RESOLUTIONS, outlier_threshold=0)
    )
    bars = by_id(candles)
    for coarse in (c for c in candles if c.resolution == "10s"):
        parts = [
            bars[f"BTC-USD:1s:{coarse.window_start + i * 1000}"]
            for i in range(10)
            if f"BTC-USD:1s:{coarse.window_start + i * 1000}" in bars
        ]
        assert coarse.volume == pytest.approx(sum(p.volume for p in parts))
        assert coarse.high == max(p.high for p in parts) and coarse.open == parts[0].open


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        # Closed windows kept for less time than trades are late: some late trades find
        # their window gone, whether the batch they came in has dropped it yet or not.
        CandleSpec(resolutions=(1_000, 10_000, 60_000), drift_retention_ms=2_000),
        CandleSpec(
            resolutions=(1_000, 10_000, 60_000),
            drift_retention_ms=2_000,
            restatement=True,
            restatement_horizon_ms=3_000,
        ),
    ],
    ids=["default", "short-retention", "short-restatement-horizon"],
)
def test_output_does_not_depend_on_how_the_input_was_batched(spec):
    rng = random.Random(5)
    rows, ts = [], T0
    for _ in range(4_000):
        ts += rng.randint(0, 60)
        jitter = rng.choice([0, 0, 0, -rng.randint(0, 900), -rng.randint(1_000, 6_000)])
        rows.append((ts + jitter, round(rng.uniform(1, 2), 4), round(rng.uniform(0.1, 1), 3)))
    expected = run(rows, spec)
    assert sum(expected[2]) > 50, "the input has late trades"
    one_by_one = run(rows, spec, splits=list(range(1, len(rows) + 1)))
    assert one_by_one == expected  # every candle and drift record, bit for bit
    for _ in range(4):
        cuts = [*sorted(rng.sample(range(1, len(rows)), rng.randint(1, 60))), len(rows)]
        assert run(rows, spec, splits=cuts) == expected


def _multi_symbol_frame(rows):
    frame = trades_frame([(ts, price, size) for _, ts, price, size in rows])
    return frame.with_columns(symbol=pl.Series([symbol for symbol, *_ in rows]))


def _per_symbol(rows, spec, splits):
    """Candles and drift records of every symbol, by bar, each bar's in their order, and
    (late, seq) of every trade of every symbol in arrival order."""
    engine = ShardCandles(spec)
    candles, drift, flags = {}, {}, {}

    def keep(events):
        for candle in candles_of(events):
            candles.setdefault(candle.symbol, []).append(candle)
        for record in drift_of(events):
            drift.setdefault(record.symbol, []).append(record)
        if events.trades is not None:
            symbols = events.trades.trades.get_column("symbol").to_list()
            pairs = zip(events.trades.late.tolist(), events.trades.seq.tolist(), strict=True)
            for symbol, pair in zip(symbols, pairs, strict=True):
                flags.setdefault(symbol, []).append(pair)

    start = 0
    for end in splits:
        if end > start:
            keep(engine.on_trades(_multi_symbol_frame(rows[start:end])))
        start = end
    keep(engine.on_end())
    # Bars of different windows close in an order that depends on the batching (a batch
    # that moves the watermark far closes base windows first); those of one bar, its
    # revisions and drift records, keep their order.
    by_bar = {s: sorted(bars, key=lambda b: b.bar_id) for s, bars in candles.items()}
    drift_by_bar = {s: sorted(records, key=lambda r: r.bar_id) for s, records in drift.items()}
    return by_bar, drift_by_bar, flags


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        CandleSpec(resolutions=(1_000, 5_000, 20_000), drift_retention_ms=4_000),
        RESTATING_SHORT := CandleSpec(
            resolutions=(1_000, 10_000, 60_000), restatement=True, restatement_horizon_ms=3_000
        ),
    ],
    ids=["default", "short-retention", "restating"],
)
def test_each_symbol_of_a_shard_gets_what_an_engine_of_its_own_gives(spec):
    """Symbols that share an engine never touch each other: whatever the batching, each
    gets the candles, drift records, late flags and arrival numbers, in the same order,
    that it gets alone."""
    rng = random.Random(11)
    symbols = ["AAA", "BBB", "CCC", "DDD", "EEE"]
    rows, ts = [], T0
    for i in range(3_000):
        ts += rng.randint(0, 25)
        symbol = "NEW" if i > 2_000 and rng.random() < 0.1 else rng.choice(symbols)
        jitter = rng.choice([0, 0, 0, -rng.randint(0, 900), -rng.randint(1_000, 6_000)])
        price, size = round(rng.uniform(1, 2), 4), round(rng.uniform(0.1, 1), 3)
        rows.append((symbol, ts + jitter + (400 if symbol == "BBB" else 0), price, size))
    alone = {}
    for symbol in [*symbols, "NEW"]:
        own = [row for row in rows if row[0] == symbol]
        candles, drift, flags = _per_symbol(own, spec, [len(own)])
        alone[symbol] = (candles[symbol], drift.get(symbol, []), flags[symbol])
    assert sum(late for *_, flags in alone.values() for late, _ in flags) > 100, "late trades"
    assert sum(len(drift) for _, drift, _ in alone.values()) > 100, "drift records"
    for splits in (
        [len(rows)],
        list(range(1, len(rows) + 1)),
        [*sorted(rng.sample(range(1, len(rows)), 40)), len(rows)],
    ):
        candles, drift, flags = _per_symbol(rows, spec, splits)
        together = {s: (candles[s], drift.get(s, []), flags[s]) for s in alone}
        assert together == alone


def test_live_watermark_advances_with_system_time_so_an_idle_symbol_closes():
    engine = ShardCandles(
        CandleSpec(resolutions=(1_000, 10_000), allowed_lateness_ms=1_000, live=True)
    )
    assert candles_of(engine.on_trades(trades_frame([(T0 + 200, 1.0, 1.0)]), now_ms=50_000.0)) == []
    # next window end T0+1000; watermark now T0-800: it needs 1.8 s of system time
    assert engine.next_close_at_ms() == pytest.approx(51_800.0)
    assert candles_of(engine.on_clock(51_000.0)) == []
    closed = candles_of(engine.on_clock(51_800.0))
    assert [c.resolution for c in closed] == ["1s"]
    assert [c.resolution for c in candles_of(engine.on_clock(60_800.0))] == ["10s"]


def _live(jitter_ms: int) -> ShardCandles:
    return ShardCandles(
        CandleSpec(
            resolutions=(1_000, 10_000),
            allowed_lateness_ms=1_000,
            live=True,
            watermark_jitter_ms=jitter_ms,
        )
    )


@pytest.mark.parametrize(
    ("second_seen_at", "jitter_ms", "close_at"),
    [
        # 60 ms slower than the first trade's pace (within the jitter): not held back
        (50_160.0, 100, 51_800.0),
        # 250 ms slower: held back by what is beyond the jitter (150 ms), so the watermark
        # runs 100 ms ahead of where this trade's arrival alone puts it (52,050)
        (50_350.0, 100, 51_950.0),
        # 50 ms faster: the watermark runs from its arrival (newest event time - lateness)
        (50_050.0, 100, 51_750.0),
        # jitter 0: every newest trade restarts the watermark from its arrival
        (50_160.0, 0, 51_860.0),
    ],
)
def test_a_slower_newest_trade_holds_the_live_watermark_back_only_beyond_the_jitter(
    second_seen_at, jitter_ms, close_at
):
    engine = _live(jitter_ms)
    engine.on_trades(trades_frame([(T0 + 200, 1.0, 1.0)]), now_ms=50_000.0)
    assert engine.next_close_at_ms() == pytest.approx(51_800.0)
    # 100 ms of event time later; the trade came at `second_seen_at` of the input clock
    engine.on_trades(trades_frame([(T0 + 300, 2.0, 1.0)]), now_ms=second_seen_at)
    assert engine.next_close_at_ms() == pytest.approx(close_at)
    assert candles_of(engine.on_clock(close_at - 1.0)) == []
    closed = candles_of(engine.on_clock(close_at))
    assert [(c.resolution, c.close, c.trade_count) for c in closed] == [("1s", 2.0, 2)]


def test_a_feed_slower_than_real_time_is_followed_and_no_trade_turns_late():
    """Event time gaining 50 ms per 100 ms of the clock (a replay at half speed): a
    watermark that kept running with the clock would overtake the trades after 2 s."""
    engine = _live(100)
    late, closed = [], 0
    for i in range(200):  # 20 s of the clock, 10 s of event time
        now = 50_000.0 + 100.0 * i
        closed += len(candles_of(engine.on_clock(now)))
        events = engine.on_trades(trades_frame([(T0 + 50 * i, 1.0, 1.0)]), now_ms=now)
        late += events.trades.late.tolist()
        closed += len(candles_of(events))
    assert not any(late)
    # The watermark follows the feed, at most the jitter ahead of the newest trade's
    # event time minus the lateness (T0 + 9,950 - 1,000 + 100): the 1 s windows that end
    # by T0 + 9 s have closed, the newest trade's has not.
    assert closed == 9


def test_bounded_input_ignores_system_time_and_closes_everything_at_the_end():
    engine = ShardCandles(SPEC)
    engine.on_trades(trades_frame([(T0 + 200, 1.0, 1.0)]), now_ms=0.0)
    assert candles_of(engine.on_clock(10**12)) == []
    assert sorted(c.resolution for c in candles_of(engine.on_end())) == ["10s", "1m", "1s"]


RESTATING = CandleSpec(
    resolutions=(1_000, 10_000, 60_000),
    allowed_lateness_ms=1_000,
    restatement=True,
    restatement_horizon_ms=5_000,
)


def test_a_late_trade_inside_the_horizon_restates_its_bars():
    rows = [
        (T0 + 100, 100.0, 1.0),
        (T0 + 12_500, 100.0, 1.0),
        (T0 + 11_900, 100.0, 1.0),
        (T0 + 10_200, 300.0, 2.0),
    ]  # late for [T0+10 s, +11 s), 2.3 s behind
    candles, drift, late = run(rows, RESTATING)
    assert late == [False, False, False, True]
    versions = sorted(
        (c.bar_id, c.revision, c.high, c.trade_count)
        for c in candles
        if c.window_start == T0 + 10_000
    )
    assert versions == [
        (f"BTC-USD:10s:{T0 + 10_000}", 0, 300.0, 3),  # still open: it went out right
        (f"BTC-USD:1s:{T0 + 10_000}", 0, 300.0, 1),  # closed empty: its first candle
    ]
    base = next(d for d in drift if d.resolution == "1s")
    assert base.emitted_missing and base.revision == 0


def test_restated_revisions_count_up_and_coarse_bars_follow():
    rows = [
        (T0 + 100, 10.0, 1.0),
        (T0 + 10_500, 10.0, 1.0),
        (T0 + 11_500, 10.0, 1.0),
        (T0 + 200, 50.0, 1.0),
        (T0 + 300, 5.0, 1.0),
    ]  # late, 10.3 s behind: too late?
    spec = CandleSpec(
        resolutions=(1_000, 10_000),
        allowed_lateness_ms=1_000,
        restatement=True,
        restatement_horizon_ms=20_000,
    )
    candles, drift, _ = run(rows, spec)
    base = sorted(
        (c.revision, c.high, c.low, c.trade_count)
        for c in candles
        if c.bar_id == f"BTC-USD:1s:{T0}"
    )
    assert base == [(0, 10.0, 10.0, 1), (1, 50.0, 10.0, 2), (2, 50.0, 5.0, 3)]
    coarse = sorted((c.revision, c.trade_count) for c in candles if c.bar_id == f"BTC-USD:10s:{T0}")
    assert coarse == [(0, 1), (1, 2), (2, 3)]
    assert [d.revision for d in drift if d.bar_id == f"BTC-USD:1s:{T0}"] == [1, 2]
    assert drift[-1].emitted_high == 10.0, "drift still compares with the real-time estimate"


def test_beyond_the_horizon_a_late_trade_is_only_drift():
    rows = [(T0 + 100, 10.0, 1.0), (T0 + 20_500, 10.0, 1.0), (T0 + 200, 50.0, 1.0)]
    candles, drift, _ = run(rows, RESTATING)
    assert all(c.revision == 0 for c in candles)
    assert {c.bar_id: c.high for c in candles}[f"BTC-USD:1s:{T0}"] == 10.0
    assert {d.resolution for d in drift} == {"1s", "10s", "1m"}


def test_a_snapshot_does_not_change_when_the_engine_goes_on():
    """Bytewax may write a snapshot after the step has moved on: it must be a copy."""
    spec = CandleSpec(resolutions=(1_000, 10_000), allowed_lateness_ms=1_000, restatement=True)
    engine = ShardCandles(spec)
    engine.on_trades(trades_frame([(T0 + 100, 10.0, 1.0), (T0 + 1_500, 11.0, 2.0)]))
    engine.on_trades(trades_frame([(T0 + 3_000, 12.0, 1.0)]))  # closes the first window
    snapshot = engine.snapshot()
    frozen = pickle.dumps(snapshot)
    # Open windows grow, closed ones take late trades and restate, windows close.
    engine.on_trades(trades_frame([(T0 + 1_700, 9.0, 5.0), (T0 + 3_200, 13.0, 1.0)]))
    engine.on_trades(trades_frame([(T0 + 200, 8.0, 1.0), (T0 + 12_000, 14.0, 1.0)]))
    engine.on_end()
    assert pickle.dumps(snapshot) == frozen
    resumed = ShardCandles(spec, pickle.loads(frozen))
    assert resumed.state.max_ts == T0 + 3_000


def test_a_snapshot_of_one_symbol_from_an_earlier_version_is_refused_with_a_clear_error():
    """Earlier versions kept one symbol per snapshot; such a state, unpickled, has a
    scalar `max_ts`. Resuming it would mix its open windows with the shard's."""
    old = CandleState.__new__(CandleState)
    old.__dict__.update(symbol="BTC-USD", max_ts=T0, max_ts_seen_at_ms=0.0, next_seq=3)
    with pytest.raises(ValueError, match=r"one symbol.*new recovery store"):
        ShardCandles(SPEC, old)


def test_a_snapshot_resumes_only_with_the_number_of_shards_it_was_written_with():
    """Its symbols are one shard's of that many: with another number they belong to
    other shards, whose states know nothing of them."""
    engine = ShardCandles(SPEC, shards=4)
    engine.on_trades(trades_frame([(T0 + 100, 10.0, 1.0)]))
    snapshot = pickle.loads(pickle.dumps(engine.snapshot()))
    assert ShardCandles(SPEC, snapshot, shards=4).state.symbols == ["BTC-USD"]
    with pytest.raises(ValueError, match=r"over 4 shards.*CANDLEWAX_SHARDS=4"):
        ShardCandles(SPEC, snapshot, shards=8)
