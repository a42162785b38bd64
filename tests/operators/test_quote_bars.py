"""Quote bars: mid OHLC, closing bid/ask, and the spread's mean and time-weighted mean."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from operators.quote_bars import base_bars, rolled_up, spread_means

Quote = tuple[int, float, float]  # ts, bid, ask (in arrival order)


def bars_of(quotes: list[Quote], res: int, before: float | None = None) -> np.ndarray:
    ts = np.array([q[0] for q in quotes], dtype=np.int64)
    return base_bars(
        ts,
        np.arange(len(quotes), dtype=np.int64),
        np.array([q[1] for q in quotes]),
        np.array([q[2] for q in quotes]),
        res,
        before,
    )


def plain_twa(quotes: list[Quote], start: int, end: int) -> float:
    """The time-weighted spread over [start, end), written out: every quote (of all
    time) is in force from its time until the next quote's."""
    ordered = sorted(enumerate(quotes), key=lambda q: (q[1][0], q[0]))
    weighted = covered = 0
    for k, (_, (ts, bid, ask)) in enumerate(ordered):
        until = ordered[k + 1][1][0] if k + 1 < len(ordered) else math.inf
        overlap = min(until, end) - max(ts, start)
        if overlap > 0:
            weighted += (ask - bid) * overlap
            covered += overlap
    return weighted / covered


def test_the_quote_in_force_at_the_window_start_counts_from_the_start():
    # spread 2 from 500 (the window before), spread 4 from 1,300
    [bar] = bars_of([(1_300, 99.0, 103.0)], 1_000, before=2.0)
    _, twa = spread_means(np.array([bar]))
    assert twa[0] == pytest.approx((2 * 300 + 4 * 700) / 1_000)
    bars = bars_of([(500, 100.0, 102.0), (1_300, 99.0, 103.0)], 1_000)
    assert spread_means(bars)[1][1] == pytest.approx(3.4)


def test_one_quote_and_nothing_before_it():
    [bar] = bars_of([(1_300, 99.0, 103.0)], 1_000)
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (101.0,) * 4
    assert (bar["bid_close"], bar["ask_close"], bar["count"]) == (99.0, 103.0, 1)
    assert (bar["spread_min"], bar["spread_max"]) == (4.0, 4.0)
    mean, twa = spread_means(np.array([bar]))
    assert (mean[0], twa[0], bar["covered_ms"]) == (4.0, 4.0, 700)


def test_many_quotes_in_event_time_order_ties_by_arrival():
    quotes = [(1_900, 10.0, 10.4), (1_100, 10.0, 10.2), (1_500, 9.9, 10.3), (1_500, 9.8, 10.0)]
    [bar] = bars_of(quotes, 1_000, before=0.1)
    # by time: 1,100 (mid 10.1), 1,500 (9.9: the later arrival of the two at 1,500 wins
    # the close of that instant), 1,900 (10.2)
    assert bar["open"] == pytest.approx(10.1) and bar["close"] == pytest.approx(10.2)
    assert bar["high"] == pytest.approx(10.2) and bar["low"] == pytest.approx(9.9)
    assert (bar["bid_close"], bar["ask_close"]) == (10.0, 10.4)
    mean, twa = spread_means(np.array([bar]))
    assert mean[0] == pytest.approx((0.4 + 0.2 + 0.4 + 0.2) / 4)
    # 0.1 for 100 ms, 0.2 for 400, 0.2 (the second quote at 1,500) for 400, 0.4 for 100
    assert twa[0] == pytest.approx((0.1 * 100 + 0.2 * 400 + 0.2 * 400 + 0.4 * 100) / 1_000)


def test_a_gap_longer_than_the_window_and_the_roll_up_over_it():
    quotes = [(500, 100.0, 102.0), (3_500, 100.0, 106.0), (12_000, 100.0, 101.0)]
    bars = bars_of(quotes, 1_000)
    assert list(bars["start"]) == [0, 3_000, 12_000]  # no quote, no bar
    # [3,000, 4,000): spread 2 in force until 3,500, then 6
    assert spread_means(bars)[1][1] == pytest.approx(4.0)
    coarse = rolled_up(bars, 10_000, None)
    assert list(coarse["start"]) == [0, 10_000]
    twa = spread_means(coarse)[1]
    assert twa[0] == pytest.approx(plain_twa(quotes, 0, 10_000))  # 2 from 500, 6 from 3,500
    assert twa[1] == pytest.approx(plain_twa(quotes, 10_000, 20_000))  # 6, then 1 from 12 s


@pytest.mark.parametrize("seed", range(4))
def test_random_quotes_bar_by_bar_against_the_rule_written_out(seed):
    rng = random.Random(seed)
    quotes, ts = [], 0
    for _ in range(600):
        ts += rng.choice((0, 1, 50, 400, 2_500))
        bid = round(rng.uniform(99, 101), 2)
        quotes.append((ts, bid, round(bid + rng.uniform(0.01, 0.5), 2)))
    base = bars_of(quotes, 1_000)
    for res, bars in ((1_000, base), (10_000, rolled_up(base, 10_000, None))):
        direct = bars_of(quotes, res) if res > 1_000 else base
        mean, twa = spread_means(bars)
        for i, start in enumerate(bars["start"].tolist()):
            inside = [q for q in quotes if start <= q[0] < start + res]
            assert bars["count"][i] == len(inside)
            assert mean[i] == pytest.approx(sum(a - b for _, b, a in inside) / len(inside))
            assert twa[i] == pytest.approx(plain_twa(quotes, start, start + res), rel=1e-12)
            mids = [b / 2 + a / 2 for _, b, a in inside]
            assert (bars["high"][i], bars["low"][i]) == (max(mids), min(mids))
        # a roll-up of base bars is the bar of the coarse windows straight from the quotes
        for name in ("open", "close", "high", "low", "bid_close", "ask_close", "count"):
            assert list(bars[name]) == list(direct[name]), name
        assert list(bars["covered_ms"]) == list(direct["covered_ms"])
        np.testing.assert_allclose(bars["spread_time"], direct["spread_time"], rtol=1e-12)
