"""The simulator: deterministic by seed, realistic prices, every fault at its rate."""

from __future__ import annotations

import itertools
from collections import Counter

import msgspec
import pytest

from operators.decode import ValidationRules, decode_batch
from sources.simulator import SimulatorConfig, TradeSimulator
from sources.testing import raw_batches
from tests.factories import T0

N = 40_000


def stream(**overrides):
    config = SimulatorConfig(**{"trades": 20_000, "start_ms": T0, **overrides})
    return list(TradeSimulator(config).messages())


def decoded(messages):
    rules = ValidationRules(now_ms=lambda: T0)
    return [decode_batch(b, rules) for b in raw_batches([m.value for m in messages], 5_000)]


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
    assert stream(seed=3) == stream(seed=3)
    assert stream(seed=3) != stream(seed=4)


def test_prices_stay_positive_on_tick_and_each_symbol_has_its_own_level():
    messages = [msgspec.json.decode(m.value) for m in stream(symbols=6)]
    by_symbol: dict[str, list[float]] = {}
    for m in messages:
        assert m["price"] > 0 and m["size"] > 0
        by_symbol.setdefault(m["symbol"], []).append(m["price"])
    assert len(by_symbol) == 6
    levels = sorted(min(p) for p in by_symbol.values())
    assert levels[-1] / levels[0] > 100, "levels differ by orders of magnitude"
    ts = [m["ts"] for m in messages]
    assert ts == sorted(ts), "without faults the stream is in event-time order"
    sizes = sorted(m["size"] for m in messages)
    assert sizes[-1] > 50 * sizes[len(sizes) // 2], "sizes are heavy-tailed"


def test_symbols_have_bursts_and_quiet_spells():
    messages = [msgspec.json.decode(m.value) for m in stream(symbols=8, trades=60_000, rate=500)]
    last: dict[str, int] = {}
    longest: Counter[str] = Counter()
    for m in messages:
        if m["symbol"] in last:
            longest[m["symbol"]] = max(longest[m["symbol"]], m["ts"] - last[m["symbol"]])
        last[m["symbol"]] = m["ts"]
    assert sum(1 for gap in longest.values() if gap > 2_000) >= 4, longest


@pytest.mark.parametrize(
    ("fault", "rate"),
    [("malformed_rate", 0.03), ("future_rate", 0.02)],
)
def test_rejected_faults_arrive_at_their_rate(fault, rate):
    messages = stream(trades=N, **{fault: rate})
    rejected = sum(len(d.rejections) for d in decoded(messages))
    assert rate * 0.85 * N < rejected < rate * 1.15 * N
    if fault == "future_rate":
        assert {r.reason for d in decoded(messages) for r in d.rejections} == {"ts_out_of_range"}


def test_every_malformed_kind_the_contract_rejects_appears():
    reasons = {
        r.reason for d in decoded(stream(trades=N, malformed_rate=0.05)) for r in d.rejections
    }
    assert reasons == {
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "not_an_integer",
        "not_finite",
        "non_positive",
        "bad_symbol",
        "ts_out_of_range",
        "empty_message",
    }


def test_duplicates_disorder_and_late_trades_arrive_at_their_rates():
    lateness = 1_000
    messages = stream(trades=N, duplicate_rate=0.02, disorder_rate=0.05, late_rate=0.01)
    trades = [msgspec.json.decode(m.value) for m in messages]
    ids = Counter(t["trade_id"] for t in trades)
    assert 0.017 * N < sum(c - 1 for c in ids.values()) < 0.023 * N
    newest: dict[str, int] = {}
    behind = []
    for t in trades:
        top = newest.get(t["symbol"], t["ts"])
        if t["ts"] < top and ids[t["trade_id"]] == 1:
            behind.append(top - t["ts"])
        newest[t["symbol"]] = max(top, t["ts"])
    within = sum(1 for d in behind if d <= lateness)
    beyond = sum(1 for d in behind if d > lateness)
    # disorder stays within the lateness; late trades go beyond it (when their symbol moved on)
    assert 0.03 * N < within < 0.06 * N
    assert 0.004 * N < beyond < 0.012 * N


def test_fat_fingers_are_far_off_the_market():
    trades = [msgspec.json.decode(m.value) for m in stream(trades=N, fat_finger_rate=0.01)]
    prices: dict[str, list[float]] = {}
    for t in trades:
        prices.setdefault(t["symbol"], []).append(t["price"])
    market = {s: sorted(p)[len(p) // 2] for s, p in prices.items()}  # the median level
    far = sum(1 for t in trades if not 0.7 < t["price"] / market[t["symbol"]] < 1.4)
    assert 0.008 * N < far < 0.012 * N


def test_order_book_noise_makes_up_its_share_and_is_filtered():
    messages = stream(trades=5_000, noise_share=0.9)
    share = 1 - 5_000 / len(messages)
    assert 0.88 < share < 0.92
    outcome = decoded(messages)
    assert sum(d.filtered for d in outcome) == len(messages) - 5_000
    assert sum(d.valid.height for d in outcome) == 5_000


def test_a_duration_bounds_the_event_time_span():
    trades = [
        msgspec.json.decode(m.value) for m in stream(trades=0, duration_ms=30_000, rate=1_000)
    ]
    span = trades[-1]["ts"] - trades[0]["ts"]
    assert 29_000 < span <= 30_000 and 25_000 < len(trades) < 35_000


def test_endless_runs_drift_between_cycles_so_no_two_repeat():
    sim = TradeSimulator(SimulatorConfig(trades=0, cycle_trades=2_000, start_ms=T0, symbols=2))
    messages = sim.messages()
    cycles = [[msgspec.json.decode(next(messages).value) for _ in range(2_000)] for _ in range(3)]
    prices = [[t["price"] for t in cycle] for cycle in cycles]
    assert prices[0] != prices[1] != prices[2]
    gaps = [[b["ts"] - a["ts"] for a, b in itertools.pairwise(c)] for c in cycles]
    assert gaps[0] != gaps[1], "arrival times are jittered too"
    assert sim.config.endless
