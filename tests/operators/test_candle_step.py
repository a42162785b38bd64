"""The candle step's live bookkeeping: how late after its window could close a candle left."""

from __future__ import annotations

import time

from candlewax.metrics import FlowMetrics
from operators.candles import CandleSpec, ShardCandles
from operators.steps import _CandleLogic
from tests.factories import trades_frame


def delay_samples(metrics: FlowMetrics, resolution: str) -> tuple[float, float]:
    registry = metrics.registry
    labels = {"resolution": resolution}
    count = registry.get_sample_value("candlewax_candle_delay_seconds_count", labels)
    total = registry.get_sample_value("candlewax_candle_delay_seconds_sum", labels)
    return count or 0.0, total or 0.0


def test_live_candles_record_their_delay_after_the_window_could_close():
    now_ms = int(time.time() * 1000)
    first = now_ms - now_ms % 1_000 - 4_000  # a window that closed (with lateness) 2-3 s ago
    spec = CandleSpec(resolutions=(1_000, 10_000), allowed_lateness_ms=1_000, live=True)
    metrics = FlowMetrics()
    logic = _CandleLogic(ShardCandles(spec), metrics, 0.0)
    logic.on_batch([trades_frame([(first + 100, 1.0, 1.0), (first + 2_500, 1.0, 1.0)])])
    count, total = delay_samples(metrics, "1s")
    assert count == 1  # [first, first + 1 s) closed when the watermark reached first + 1.5 s
    # handed over now; it could close at first + 1 s + 1 s of lateness: 2-3 s before now
    assert 1.9 < total < 3.5


def test_replayed_candles_record_no_delay():
    spec = CandleSpec(resolutions=(1_000,), allowed_lateness_ms=1_000, live=False)
    metrics = FlowMetrics()
    logic = _CandleLogic(ShardCandles(spec), metrics, 0.0)
    logic.on_batch([trades_frame([(1_000, 1.0, 1.0), (5_000, 1.0, 1.0)])])
    emitted = metrics.registry.get_sample_value(
        "candlewax_candles_emitted_total", {"resolution": "1s"}
    )
    assert emitted == 1
    assert delay_samples(metrics, "1s") == (0.0, 0.0)
