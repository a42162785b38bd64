"""The fat-finger guard: the rolling-median reference, the rule, and batching independence."""

from __future__ import annotations

import itertools
import pickle
import random
import statistics
from collections import deque

import numpy as np
import polars as pl
import pytest

from candlewax.records import RawBatch, Rejection
from candlewax.shards import symbol_runs
from operators.decode import ValidationRules, decode_batch
from operators.price_guard import (
    MIN_REFERENCE_TRADES,
    OutlierRule,
    PriceGuard,
    ShardGuard,
    find_outliers,
    outlier_rejections,
    reference_prices,
)
from tests.factories import T0, trade

RULE = OutlierRule(threshold=0.1, trades=50)


def plain_outliers(prices: list[float], rule: OutlierRule) -> list[tuple[int, float]]:
    """The rule written out: (index, reference) of every outlier."""
    window: deque[float] = deque(maxlen=rule.trades)
    found = []
    for i, price in enumerate(prices):
        if len(window) >= MIN_REFERENCE_TRADES:
            reference = statistics.median(window)
            if abs(price / reference - 1) > rule.threshold:
                found.append((i, reference))
        window.append(price)  # outliers too: a level shift is accepted
    return found


def market(n: int, seed: int, fat_fingers: float = 0.02) -> list[float]:
    """A random walk with fat fingers (x0.1 ... x10) and a genuine 30 % jump."""
    rng = random.Random(seed)
    price, prices = 100.0, []
    for i in range(n):
        price *= 1 + rng.gauss(0, 0.002)
        if i == n // 2:
            price *= 1.3
        if rng.random() < fat_fingers:
            prices.append(round(price * rng.choice((0.1, 0.5, 2.0, 10.0)), 2))
        else:
            prices.append(round(price, 2))
    return prices


def guarded(prices: list[float], cuts: list[int], rule: OutlierRule = RULE) -> list[int]:
    """The outliers a guard finds when fed `prices` in batches cut at `cuts`."""
    guard, found = PriceGuard(rule), []
    bounds = [0, *cuts, len(prices)]
    for start, end in itertools.pairwise(bounds):
        outliers = guard.check(np.array(prices[start:end]))
        found += [start + int(i) for i in np.flatnonzero(outliers.mask)]
    return found


def test_the_reference_is_the_median_of_the_previous_trades_from_the_tenth_on():
    prices = market(400, seed=1)
    reference = reference_prices(np.array(prices), 0, 50)
    for i, value in enumerate(reference):
        previous = prices[max(0, i - 50) : i]
        if len(previous) < MIN_REFERENCE_TRADES:
            assert np.isnan(value), i
        else:
            assert value == statistics.median(previous), i


@pytest.mark.parametrize("seed", range(5))
def test_the_guard_finds_the_rules_outliers_however_the_trades_are_batched(seed):
    prices = market(3_000, seed)
    expected = [i for i, _ in plain_outliers(prices, RULE)]
    assert len(expected) > 30, "the stream has fat fingers"
    rng = random.Random(seed)
    assert guarded(prices, []) == expected
    assert guarded(prices, list(range(1, len(prices)))) == expected  # one trade at a time
    cuts = sorted(rng.sample(range(1, len(prices)), 40))
    assert guarded(prices, cuts) == expected


def test_nothing_is_an_outlier_before_ten_trades():
    prices = [100.0] * 9 + [1_000.0, 100.0, 1_000.0]
    # the tenth price has 9 before it; the twelfth has 10 (one of them 1,000)
    assert guarded(prices, []) == [11]


def test_a_genuine_level_shift_is_accepted_once_half_the_window_has_moved():
    prices = [100.0] * 50 + [200.0] * 40
    found = guarded(prices, [55, 70])
    # the 26th price at 200 still has 25 at 100 in its window (median 150): the 27th not
    assert found == list(range(50, 76))


def test_a_deviation_equal_to_the_threshold_is_not_an_outlier():
    prices = [100.0] * 20 + [125.0, 75.0, 125.5]
    assert guarded(prices, [], OutlierRule(threshold=0.25, trades=50)) == [22]


def test_the_shortcut_never_hides_an_outlier_near_the_threshold():
    # Prices whose spread is just around the threshold: the bound must not vouch wrongly.
    rng = random.Random(3)
    for _ in range(200):
        threshold = rng.choice((0.01, 0.05, 0.1))
        base = rng.uniform(1, 1e6)
        spread = rng.uniform(0.3, 1.2) * threshold  # the bound vouches for some, not all
        prices = [base * (1 + rng.uniform(-spread, spread)) for _ in range(80)]
        rule = OutlierRule(threshold=threshold, trades=rng.choice((10, 20, 50)))
        expected = [i for i, _ in plain_outliers(prices, rule)]
        assert guarded(prices, [30], rule) == expected
        assert guarded(prices, list(range(1, len(prices))), rule) == expected  # a live poll


def test_a_threshold_of_zero_switches_the_guard_off():
    rule = OutlierRule(threshold=0.0)
    assert not rule.enabled
    assert not find_outliers(np.array([1.0] * 20 + [1e6]), 0, rule).mask.any()


def test_the_rule_refuses_a_reference_shorter_than_ten_trades():
    with pytest.raises(ValueError, match="at least 10"):
        OutlierRule(trades=5)


def test_a_resumed_guard_decides_as_one_that_never_stopped():
    prices = market(1_000, seed=9)
    expected = guarded(prices, [])
    guard = PriceGuard(RULE)
    first = guard.check(np.array(prices[:400]))
    state = pickle.loads(pickle.dumps(guard.snapshot()))
    second = PriceGuard(RULE, state).check(np.array(prices[400:]))
    found = list(np.flatnonzero(first.mask)) + [400 + i for i in np.flatnonzero(second.mask)]
    assert found == expected


def test_an_outlier_goes_to_the_dlq_as_it_came_with_its_reference_and_deviation():
    messages = [trade("BTC-USD", 100.0 + i % 3, 1, T0 + i, trade_id=i) for i in range(30)]
    messages.append(trade("BTC-USD", 1010.0, 1, T0 + 40, trade_id=99, extra={"desk": "7"}))
    batch = RawBatch("kafka:trades/3", messages, range(500, 500 + len(messages)))
    decoded = decode_batch(batch, ValidationRules(now_ms=lambda: T0 + 10**9))
    prices = decoded.valid.get_column("price").to_numpy()
    outliers = PriceGuard(RULE).check(prices)
    frame = outlier_rejections(decoded.valid, outliers, RULE, now_ms=T0 + 99)
    [rejection] = Rejection.rows(frame)
    assert rejection.raw == messages[-1]
    assert (rejection.reason, rejection.field) == ("price_outlier", "price")
    assert rejection.source == "kafka:trades/3@530"
    assert rejection.key == b"BTC-USD" and rejection.received_at == T0 + 99
    assert "reference price 101.0" in rejection.detail and "deviates 9.0" in rejection.detail


def test_outliers_of_a_step_that_took_several_batches_go_to_the_dlq():
    # Two batches put together (several chunks), the outliers in the first and last:
    # filtered, the middle chunk is empty (`pl.format` panicked on that; see
    # `candlewax.text`).
    batches = []
    for part in range(3):
        messages = [
            trade("BTC-USD", 100.0 + i % 3, 1, T0 + 100 * part + i, trade_id=100 * part + i)
            for i in range(30)
        ]
        if part != 1:
            messages[-1] = trade("BTC-USD", 1010.0, 1, T0 + 100 * part + 29, trade_id=999 + part)
        batch = RawBatch("kafka:trades/0", messages, range(100 * part, 100 * part + 30))
        batches.append(decode_batch(batch, ValidationRules(now_ms=lambda: T0 + 10**9)).valid)
    trades = pl.concat(batches, rechunk=False)
    assert trades.get_column("_raw").n_chunks() == 3
    prices = trades.get_column("price").to_numpy()
    outliers = PriceGuard(RULE).check(prices)
    frame = outlier_rejections(trades, outliers, RULE, now_ms=T0 + 99)
    assert [r.source for r in Rejection.rows(frame)] == ["kafka:trades/0@29", "kafka:trades/0@229"]


def shard_batches(streams: dict[str, list[float]], seed: int) -> list[pl.DataFrame]:
    """The symbols' prices interleaved at random, cut at random into batches; a batch is
    sometimes two frames put together, as a step gets them (a symbol in two runs)."""
    rng = random.Random(seed)
    order = [s for s, prices in streams.items() for _ in prices]
    rng.shuffle(order)
    taken = dict.fromkeys(streams, 0)
    rows = []
    for symbol in order:
        rows.append((symbol, streams[symbol][taken[symbol]], taken[symbol]))
        taken[symbol] += 1
    cuts = sorted(rng.sample(range(1, len(rows)), 60))
    batches = []
    for start, end in itertools.pairwise([0, *cuts, len(rows)]):
        frame = pl.DataFrame(rows[start:end], schema=["symbol", "price", "index"], orient="row")
        frame = frame.sort("symbol", maintain_order=True)  # runs, as the split makes them
        if rng.random() < 0.3 and frame.height > 1:  # two splits' frames, concatenated
            half = frame.height // 2
            frame = pl.concat([frame[half:], frame[:half]]).sort("index", maintain_order=True)
        batches.append(frame)
    return batches


@pytest.mark.parametrize("rule", [RULE, OutlierRule(threshold=0.0), OutlierRule(1e-12, 10)])
def test_a_shard_finds_the_outliers_each_symbols_own_guard_finds(rule):
    streams = {f"S{i}": market(600, seed=i, fat_fingers=0.03) for i in range(6)}
    streams["NEW"] = market(15, seed=99)  # a symbol short of a reference for a while
    expected = {  # a threshold of 0 switches the guard off
        symbol: plain_outliers(prices, rule) if rule.enabled else []
        for symbol, prices in streams.items()
    }
    guard, found = ShardGuard(rule), {symbol: [] for symbol in streams}
    for n, batch in enumerate(shard_batches(streams, seed=7)):
        if n == 30:  # resumed from a snapshot halfway
            guard = ShardGuard(rule, pickle.loads(pickle.dumps(guard.snapshot())))
        runs = symbol_runs(batch)
        outliers = guard.check(runs)
        caught = runs.frame.filter(pl.Series(outliers.mask))
        for (symbol, index), reference in zip(
            caught.select("symbol", "index").iter_rows(), outliers.reference.tolist(), strict=True
        ):
            found[symbol].append((index, reference))
    assert found == expected
    if rule == RULE:
        assert sum(map(len, expected.values())) > 60, "the streams have fat fingers"


def test_a_snapshot_of_one_symbol_from_an_earlier_version_is_refused_with_a_clear_error():
    """Earlier versions kept a `GuardState` per symbol; a shard's step keeps a dict."""
    earlier = pickle.loads(pickle.dumps(PriceGuard(RULE).snapshot()))
    with pytest.raises(ValueError, match=r"price history of one symbol.*new recovery store"):
        ShardGuard(RULE, earlier)
    assert ShardGuard(RULE, {"BTC-USD": earlier}).snapshot() == {"BTC-USD": earlier}
