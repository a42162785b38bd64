"""The quotes branch of the flow around TestingSource: quote bars equal to an independent
batch computation on 1 and 2 workers, every quote accounted for, trades untouched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from candlewax.metrics import FlowMetrics
from candlewax.records import QUOTE_DRIFT_FIELDS, QuoteBar, quote_bar_frame
from flows.ohlcv import FlowSinks, build_flow
from sources.testing import raw_batches
from tests import factories
from tests.factories import RESOLUTIONS, T0, quote
from tests.flow_runs import run_flow
from tests.operators.test_quote_windows import quote_stream
from tests.reference import assert_quote_bars_match, reference_quote_bars

BAD_QUOTES = [
    (quote("S0", 101.0, 100.0, T0 + 5_000), "crossed_book"),
    (quote("S0", 100.0, 100.0, T0 + 5_000), "locked_book"),
    (quote("S1", -1.0, 100.0, T0 + 5_000), "non_positive"),
    (quote("S1", 99.0, 100.0, T0 + 5_000, bid_size=-2), "negative"),
    (b'{"type":"quote","symbol":"S1","bid":99,"ts":%d}' % (T0 + 5_000), "missing_field"),
    (b"{oops", "invalid_json"),
]


@pytest.fixture(scope="module")
def quotes() -> list[bytes]:
    stream = quote_stream(4_000, seed=11, symbols=5)
    for k, (message, _) in enumerate(BAD_QUOTES):
        stream.insert(300 + 500 * k, message)
    return stream


@pytest.fixture(scope="module")
def trades() -> list[bytes]:
    return [m for _, m in factories.simulated(2_000, symbols=3)]


def test_quote_bars_equal_an_independent_batch_computation_bar_by_bar(quotes, trades, workers):
    result = run_flow(trades, workers=workers, batch_size=333, quotes=quotes)
    expected = reference_quote_bars(quotes, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)
    assert len(expected) > 1_000
    assert_quote_bars_match(result.quote_bar_fields(), expected)
    # Late quotes: every bar they change has a drift record correcting it to the full view.
    full = reference_quote_bars(quotes, 1_000, RESOLUTIONS, full=True, ts_max=T0 + 10**9)
    current = {b: {f: v[f] for f in QUOTE_DRIFT_FIELDS} for b, v in expected.items()}
    for record in result.quote_drift:  # in order: the newest record of a bar wins
        current[record.bar_id] = {f: getattr(record, f"corrected_{f}") for f in QUOTE_DRIFT_FIELDS}
    assert result.quote_drift
    assert_quote_bars_match(
        current, {b: {f: v[f] for f in QUOTE_DRIFT_FIELDS} for b, v in full.items()}
    )


def test_every_quote_has_one_outcome_and_rejections_keep_reason_and_bytes(quotes, trades):
    result = run_flow(trades, batch_size=500, quotes=quotes)
    counts = result.metrics.quotes.summary()
    outcomes = ("accepted", "duplicate", "filtered", "rejected", "late")
    assert counts["received"] == len(quotes)
    assert sum(counts[o] for o in outcomes) == len(quotes)
    assert counts["duplicate"] > 0 and counts["late"] > 0
    assert counts["accepted"] + counts["late"] == result.quotes.height
    assert result.quotes.filter("late").height == counts["late"]
    by_bytes = {r.raw: r for r in result.quote_dlq}
    for message, reason in BAD_QUOTES:
        assert by_bytes[message].reason == reason
        assert by_bytes[message].source.startswith("quotes@")
    crossed = sum(r.reason == "crossed_book" for r in result.quote_dlq)
    assert counts["rejected"] == len(result.quote_dlq) and crossed > len(BAD_QUOTES) // 6
    assert all(r.source.startswith("test@") for r in result.dlq), "trade DLQ gets no quotes"


def test_the_quotes_branch_leaves_the_trade_candles_as_they_are(quotes, trades):
    alone = run_flow(trades, batch_size=400)
    beside = run_flow(trades, batch_size=400, quotes=quotes)
    assert alone.candle_rows() == beside.candle_rows()
    assert alone.metrics.summary() == beside.metrics.summary()
    assert alone.quote_bars == [] and beside.quote_bars


@pytest.mark.parametrize("accept_locked", [False, True])
def test_simulated_quotes_follow_the_trades_and_their_faults_are_caught(accept_locked):
    settings = factories.settings(
        sim_trades=3_000,
        sim_start=T0,
        sim_seed=5,
        sim_symbols=4,
        sim_locked_rate=0.02,
        sim_crossed_rate=0.01,
        quotes_source="simulator",
        quotes_accept_locked=accept_locked,
    )
    result = run_flow(None, settings)
    reasons = {r.reason for r in result.quote_dlq}
    assert reasons == ({"crossed_book"} if accept_locked else {"crossed_book", "locked_book"})
    counts = result.metrics.quotes.summary()
    assert counts["received"] > 2 * 3_000  # about 3 quotes a trade
    # Quotes straddle the trades' prices: each 1 m quote bar's mid stays within 0.1 % of
    # the candle of the same symbol and minute.
    candles = {c.bar_id: c for c in result.candles if c.resolution == "1m"}
    bars = [b for b in result.quote_bars if b.resolution == "1m"]
    beside = [b for b in bars if b.bar_id in candles]
    assert len(beside) >= len(bars) - 4  # quotes run a few ms ahead of the first trade
    for bar in beside:
        candle = candles[bar.bar_id]
        assert candle.low * 0.999 <= bar.low and bar.high <= candle.high * 1.001, bar.bar_id
        assert bar.spread_min <= bar.spread_twa <= bar.spread_max
        assert bar.spread_min > 0 or (accept_locked and bar.spread_min == 0)


def test_an_interrupted_quotes_branch_resumes_to_the_bars_of_an_uninterrupted_run(
    quotes, trades, tmp_path
):
    init_db_dir(tmp_path, 1)
    batches: list = list(raw_batches(quotes, 500, source="quotes"))
    for at in (6, 3):  # Bytewax's own interruption, twice
        batches.insert(at, TestingSource.ABORT())
    source = TestingSource(batches)
    bars: list = []
    received = []
    for _ in range(3):
        metrics = FlowMetrics()
        sinks = FlowSinks(quote_bars=[TestingSink(bars)])
        flow = build_flow(
            factories.settings(),
            source=TestingSource(list(raw_batches(trades, 500))),
            sinks=sinks,
            metrics=metrics,
            quote_source=source,
        )
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(tmp_path)))
        received.append(metrics.quotes.summary()["received"])
    assert len(received) == 3 and all(0 < r < len(quotes) for r in received), received
    resumed = {}
    for bar in QuoteBar.rows(quote_bar_frame(bars)):
        assert resumed.setdefault((bar.bar_id, bar.revision), bar) == bar  # re-sent the same
    whole = run_flow(trades, batch_size=500, quotes=quotes)
    assert resumed == {(b.bar_id, b.revision): b for b in whole.quote_bars}
