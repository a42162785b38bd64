"""The simulator: deterministic by seed, realistic prices, faults at their rates."""

from __future__ import annotations

import msgspec

from operators.decode import ValidationRules, decode_batch
from sources.simulator import SimulatorConfig, TradeSimulator
from sources.testing import raw_batches
from tests.factories import T0


def stream(**overrides):
    config = SimulatorConfig(**{"trades": 20_000, "start_ms": T0, **overrides})
    return [(m.key, m.value) for m in TradeSimulator(config).messages()]


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
    assert stream(seed=3) == stream(seed=3)
    assert stream(seed=3) != stream(seed=4)


def test_prices_stay_positive_on_tick_and_each_symbol_has_its_own_level():
    messages = [msgspec.json.decode(v) for _, v in stream(symbols=6)]
    by_symbol: dict[str, list[float]] = {}
    for m in messages:
        assert m["price"] > 0 and m["size"] > 0
        by_symbol.setdefault(m["symbol"], []).append(m["price"])
    assert len(by_symbol) == 6
    levels = sorted(min(p) for p in by_symbol.values())
    assert levels[-1] / levels[0] > 100, "levels differ by orders of magnitude"
    ts = [m["ts"] for m in messages]
    assert ts == sorted(ts), "without faults the stream is in event-time order"


def test_faults_arrive_at_their_rates():
    clean = stream(trades=40_000)
    faulty = stream(trades=40_000, duplicate_rate=0.02, malformed_rate=0.03)
    assert len(clean) == 40_000
    duplicates = len(faulty) - 40_000
    assert 0.015 * 40_000 < duplicates < 0.025 * 40_000
    decoded = [
        decode_batch(b, ValidationRules(now_ms=lambda: T0))
        for b in raw_batches([v for _, v in faulty], 5_000)
    ]
    rejected = sum(len(d.rejections) for d in decoded)
    assert 0.025 * 40_000 < rejected < 0.035 * 40_000
    reasons = {r.reason for d in decoded for r in d.rejections}
    assert len(reasons) >= 9, reasons
