"""Forming candles: the open base windows as they stand, for a live chart."""

from __future__ import annotations

import random

import polars as pl

from candlewax.records import Candle, candle_frame
from operators.candles import CandleSpec, ShardCandles
from tests.factories import T0, trades_frame
from tests.reference import assert_candles_match, candles_of

SPEC = CandleSpec(resolutions=(1_000, 10_000), allowed_lateness_ms=1_000)


def rows_of(batch):
    return [] if batch is None else Candle.rows(candle_frame([batch]))


def test_a_forming_candle_is_the_candle_the_window_closes_with():
    rng = random.Random(3)
    rows = [(T0 + rng.randrange(2_000), 100 + rng.random(), 1 + rng.random()) for _ in range(400)]
    engine = ShardCandles(SPEC)
    engine.on_trades(trades_frame(rows))
    forming = {c.bar_id: c for c in rows_of(engine.forming())}
    # Both base windows are open (the watermark is the newest trade minus 1 s lateness),
    # so neither has closed yet, and both are shown.
    assert set(forming) == {f"BTC-USD:1s:{T0}", f"BTC-USD:1s:{T0 + 1_000}"}
    # Against an independent computation straight from the trades (tests/reference.py)...
    trades = pl.DataFrame(rows, schema=["ts", "price", "size"], orient="row").with_columns(
        symbol=pl.lit("BTC-USD"), arrival=pl.int_range(pl.len())
    )
    assert_candles_match(list(forming.values()), candles_of(trades, 1_000, "1s"))
    # ...and the candle each window then closes with is the forming one, to the bit.
    closed = {c.bar_id: c for c in rows_of(engine.on_end().candles)}
    for bar_id, candle in forming.items():
        assert candle == closed[bar_id], "same arithmetic, same bits, open or closed"


def test_only_windows_that_took_trades_since_the_last_look_are_shown():
    engine = ShardCandles(SPEC)
    engine.on_trades(trades_frame([(T0 + 100, 10.0, 1.0), (T0 + 1_100, 11.0, 1.0)]))
    assert len(rows_of(engine.forming())) == 2
    assert not engine.forming_changed() and engine.forming() is None, "nothing changed"

    engine.on_trades(trades_frame([(T0 + 1_200, 12.0, 2.0)]))
    assert engine.forming_changed()
    (only,) = rows_of(engine.forming())
    assert only.bar_id == f"BTC-USD:1s:{T0 + 1_000}"
    assert (only.open, only.close, only.high, only.trade_count, only.volume) == (
        11.0,
        12.0,
        12.0,
        2,
        3.0,
    )


def test_a_closed_window_is_no_longer_forming():
    engine = ShardCandles(SPEC)
    engine.on_trades(trades_frame([(T0 + 100, 10.0, 1.0)]))
    engine.forming()
    # A trade 2.5 s later moves the watermark to T0 + 1.5 s: the first window closes.
    events = engine.on_trades(trades_frame([(T0 + 2_500, 10.5, 1.0)]))
    assert [c.bar_id for c in rows_of(events.candles)] == [f"BTC-USD:1s:{T0}"]
    assert [c.bar_id for c in rows_of(engine.forming())] == [f"BTC-USD:1s:{T0 + 2_000}"]


def test_late_trades_change_no_forming_candle():
    engine = ShardCandles(SPEC)
    engine.on_trades(trades_frame([(T0 + 100, 10.0, 1.0), (T0 + 3_100, 10.0, 1.0)]))
    engine.forming()
    engine.on_trades(trades_frame([(T0 + 200, 99.0, 1.0)]))  # its window closed: late
    assert not engine.forming_changed() and engine.forming() is None
