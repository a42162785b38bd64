"""The whole flow around TestingSource: same output on 1 and 2 workers, equal to a batch truth."""

from __future__ import annotations

import itertools
import math

import polars as pl
import pytest

from sources.formats.reading import contract_messages
from tests import factories
from tests.factories import FAULTS, RESOLUTIONS, T0, faulty_stream, simulated, trade
from tests.flow_runs import run_flow
from tests.processes import ROOT
from tests.reference import (
    assert_candles_match,
    candles_of,
    reference_candles,
    reference_trades,
    screened_trades,
)


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    return faulty_stream()


def test_candles_equal_an_independent_batch_computation_bar_by_bar(stream, workers):
    result = run_flow(stream, workers=workers, batch_size=777)
    expected = reference_candles(stream, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)
    assert len(expected) > 500
    assert_candles_match(result.candles, expected)


def test_one_and_two_workers_give_identical_output(stream):
    one = run_flow(stream, workers=1, batch_size=500)
    two = run_flow(stream, workers=2, batch_size=2_000)
    assert one.candle_rows() == two.candle_rows()
    assert sorted(tuple(d.as_dict().values()) for d in one.drift) == sorted(
        tuple(d.as_dict().values()) for d in two.drift
    )
    key = ["symbol", "ts", "trade_id"]
    assert one.trades.sort(key).equals(two.trades.sort(key))


def test_every_message_has_one_outcome_and_the_counts_add_up(stream, workers):
    result = run_flow(stream, workers=workers, batch_size=1_000)
    counts = result.metrics.summary()
    assert counts["received"] == len(stream)
    outcomes = ("accepted", "duplicate", "filtered", "rejected", "late")
    assert sum(counts[o] for o in outcomes) == len(stream)
    truth = reference_trades(stream, 1_000, 1_000, ts_max=T0 + 10**9)
    assert counts["accepted"] == truth.filter(~pl.col("late")).height
    assert counts["late"] == truth.filter(pl.col("late")).height
    assert counts["filtered"] == sum(
        b'"type":"add"' in m or b'"type":"cancel"' in m or b'"type":"modify"' in m for m in stream
    )
    assert counts["rejected"] == len(result.dlq) > 0
    assert sum(counts["rejected_by_reason"].values()) == counts["rejected"]
    assert counts["candles_by_resolution"] == {
        r: sum(c.resolution == r for c in result.candles) for r in RESOLUTIONS
    }
    # the lake's trades are the accepted and the late ones, flagged
    assert result.trades.height == counts["accepted"] + counts["late"]
    assert result.trades.get_column("late").sum() == counts["late"]


def test_late_trades_are_recorded_as_drift_against_the_truth(stream, workers):
    result = run_flow(stream, workers=workers, batch_size=1_000)
    truth = reference_trades(stream, 1_000, 1_000, ts_max=T0 + 10**9)
    late = truth.filter(pl.col("late"))
    assert late.height > 50
    # the newest drift record of each bar counts all its late trades ...
    newest = {}
    for record in result.drift:
        if record.late_trades >= newest.get(record.bar_id, (0, None))[0]:
            newest[record.bar_id] = (record.late_trades, record)
    base = {k: v[1] for k, v in newest.items() if v[1].resolution == "1s"}
    late_per_bar = late.group_by(
        pl.concat_str("symbol", pl.lit(":1s:"), pl.col("ts") - pl.col("ts") % 1_000).alias("bar_id")
    ).len()
    assert {row[0]: row[1] for row in late_per_bar.iter_rows()} == {
        k: r.late_trades for k, r in base.items()
    }
    # ... and its corrected candle is the candle of all the bar's trades, late ones included
    corrected = {row["bar_id"]: row for row in candles_of(truth, 1_000, "1s").iter_rows(named=True)}
    for bar, record in base.items():
        want = corrected[bar]
        assert (
            record.corrected_open,
            record.corrected_high,
            record.corrected_low,
            record.corrected_close,
            record.corrected_trade_count,
        ) == (want["open"], want["high"], want["low"], want["close"], want["trade_count"])
        assert math.isclose(record.corrected_volume, want["volume"], rel_tol=1e-9)
    alerts = [r for r in result.drift if r.alert]
    assert alerts and all(r.max_drift > 0.005 for r in alerts)
    assert result.metrics.summary()["drift_alerts"] == len(alerts)


def test_dlq_keeps_original_bytes_reason_and_position(workers):
    messages = [trade(ts=T0), b'{"symbol":"A","price":"1","size":1,"ts":%d}' % T0, b"garbage"]
    result = run_flow(messages, workers=workers, batch_size=2)
    assert [(r.raw, r.reason, r.field, r.source) for r in result.dlq] == [
        (messages[1], "wrong_type", "price", "test@2"),
        (b"garbage", "invalid_json", None, "test@3"),
    ]


def test_dedupe_and_lateness_follow_the_settings(workers):
    messages = [
        trade(ts=T0, trade_id=1, price=1.0),
        trade(ts=T0 + 3_000, trade_id=2, price=2.0),
        trade(ts=T0 + 500, trade_id=1, price=3.0),  # duplicate id; also late under 1 s
        trade(ts=T0 + 600, trade_id=3, price=4.0),  # late under 1 s, on time under 5 s
    ]
    strict = run_flow(messages, factories.settings(allowed_lateness="1s"), workers=workers)
    lenient = run_flow(messages, factories.settings(allowed_lateness="5s"), workers=workers)
    assert strict.metrics.summary()["duplicate"] == 1 and strict.metrics.summary()["late"] == 1
    assert lenient.metrics.summary()["late"] == 0
    first = f"BTC-USD:1s:{T0}"
    assert {c.bar_id: c.trade_count for c in lenient.candles}[first] == 2
    assert {c.bar_id: c.trade_count for c in strict.candles}[first] == 1


@pytest.mark.parametrize("horizon", ["10m", "3s"])
def test_with_restatement_the_current_candles_equal_the_truth(stream, horizon, workers):
    """Current candles (highest revision) = candles of the on-time trades and of every late
    trade inside the horizon; later ones only show as drift."""
    settings = factories.settings(restatement=True, restatement_horizon=horizon)
    result = run_flow(stream, settings, workers=workers, batch_size=1_000)
    current: dict[str, object] = {}
    for candle in result.candles:
        if candle.revision >= getattr(current.get(candle.bar_id), "revision", -1):
            current[candle.bar_id] = candle
    horizon_ms = {"10m": 600_000, "3s": 3_000}[horizon]
    truth = reference_trades(
        stream, 1_000, 1_000, ts_max=T0 + 10**9, restatement_horizon_ms=horizon_ms
    )
    assert truth.filter(pl.col("restated")).height > 50
    if horizon == "3s":
        assert truth.filter(pl.col("late") & ~pl.col("restated")).height > 50
    kept = truth.filter(~pl.col("late") | pl.col("restated"))
    expected = pl.concat([candles_of(kept, ms, name) for name, ms in RESOLUTIONS.items()])
    assert_candles_match(list(current.values()), expected.sort("bar_id"))
    summary = result.metrics.summary()
    assert sum(summary["candles_by_resolution"].values()) == len(result.candles)
    revised = sum(c.revision > 0 for c in result.candles)
    assert sum(summary["restated_by_resolution"].values()) >= revised > 0


# --- the fat-finger guard ----------------------------------------------------------------
@pytest.fixture(scope="module")
def fat_fingered() -> list[bytes]:
    """The simulator's fat fingers (prices x0.1 ... x10) among the usual faults."""
    return [value for _, value in simulated(20_000, seed=4, fat_finger_rate=0.004, **FAULTS)]


def test_price_outliers_go_to_the_dlq_and_never_into_a_candle(fat_fingered, workers):
    result = run_flow(fat_fingered, workers=workers, batch_size=700)
    _, outliers = screened_trades(fat_fingered, ts_max=T0 + 10**9)
    assert len(outliers) > 50
    caught = [r for r in result.dlq if r.reason == "price_outlier"]
    assert sorted(r.raw for r in caught) == sorted(fat_fingered[a] for a, *_ in outliers)
    assert all(r.field == "price" and "reference price" in r.detail for r in caught)
    expected = reference_candles(fat_fingered, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)
    assert_candles_match(result.candles, expected)
    counts = result.metrics.summary()
    outcomes = ("accepted", "duplicate", "filtered", "rejected", "late")
    assert sum(counts[o] for o in outcomes) == counts["received"] == len(fat_fingered)
    assert counts["rejected_by_reason"]["price_outlier"] == len(outliers)
    assert not set(result.trades.get_column("price")) & {price for _, _, price, _ in outliers}


def test_large_batches_give_what_small_ones_give():
    # Batches past the small-batch split (4,096 rows), as files and Kafka backlogs give
    # (the default batch is 100,000): a shard's frame of many symbols, steps that take
    # several frames at once. (With outliers among them, `pl.format` panicked here.)
    stream = [v for _, v in simulated(40_000, symbols=20, seed=4, fat_finger_rate=0.005, **FAULTS)]
    small = run_flow(stream, workers=1, batch_size=700)
    large = run_flow(stream, workers=2, batch_size=10_000)
    assert small.candle_rows() == large.candle_rows()
    dead_letters = [
        sorted((r.raw, r.reason, r.detail, r.source) for r in run.dlq) for run in (small, large)
    ]
    assert dead_letters[0] == dead_letters[1]
    assert sum(r.reason == "price_outlier" for r in large.dlq) > 50
    assert sorted(map(str, small.drift)) == sorted(map(str, large.drift))
    assert small.metrics.summary() == large.metrics.summary()


def _largest_jump(candles) -> float:
    """The largest distance of a candle's high or low from the previous candle's close."""
    ordered = sorted(candles, key=lambda c: (c.symbol, c.resolution, c.window_start))
    jumps = [
        max(c.high / p.close - 1, 1 - c.low / p.close)
        for p, c in itertools.pairwise(ordered)
        if (p.symbol, p.resolution) == (c.symbol, c.resolution)
    ]
    return max(jumps)


def test_no_candle_strays_from_its_neighbours_by_more_than_the_threshold(fat_fingered):
    guarded = run_flow(fat_fingered, batch_size=1_000)
    assert _largest_jump(guarded.candles) <= 0.1
    # With the guard switched off the fat fingers are in the candles (what it prevents).
    unguarded = run_flow(fat_fingered, factories.settings(outlier_threshold=0), batch_size=1_000)
    assert _largest_jump(unguarded.candles) > 1
    assert "price_outlier" not in unguarded.metrics.summary()["rejected_by_reason"]


CAPTURES = sorted((ROOT.parent / "shared" / "data" / "binance-ws").glob("*.gz"))


@pytest.mark.skipif(not CAPTURES, reason="the real captures are in ../shared/data (CI has them)")
def test_the_guard_catches_nothing_genuine_in_the_real_binance_captures():
    for path in CAPTURES:
        messages, _ = contract_messages(path, "binance-ws")
        result = run_flow(messages, batch_size=5_000)
        counts = result.metrics.summary()
        assert counts["rejected_by_reason"].get("price_outlier", 0) == 0, path.name
        assert counts["accepted"] + counts["late"] == len(messages), path.name
