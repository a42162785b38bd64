"""The flow against a real Kafka-protocol broker (Tansu): trades in, candles/DLQ/drift out."""

from __future__ import annotations

import msgspec
import polars as pl
import pytest

from candlewax.records import Candle
from tests.factories import RESOLUTIONS, T0, simulated
from tests.kafka_helpers import produce, read_topic
from tests.processes import flow_topics, kafka_env, lake_table, run_flow_processes
from tests.reference import assert_candles_match, reference_candles, reference_trades

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_trades_topic_to_candles_dlq_and_drift_topics(broker, tmp_path):
    topics = flow_topics(broker, trades_partitions=3)
    messages = simulated(20_000, symbols=5, rate=400, seed=9)
    produce(broker.bootstrap, topics["trades"], messages)

    logs = run_flow_processes(kafka_env(broker.bootstrap, topics, tmp_path / "lake"), workers=2)
    assert "they add up" in logs[0]

    # Candles: keyed by bar_id, JSON per the contract, equal to the batch truth bar by bar.
    # Each symbol sits in one partition (keyed by symbol), so the produce order is its order.
    values = [m for _, m in messages]
    records = read_topic(broker.bootstrap, topics["candles"])
    candles = [msgspec.json.decode(r.value, type=Candle) for r in records]
    assert all(r.key == c.bar_id.encode() for r, c in zip(records, candles, strict=True))
    assert_candles_match(candles, reference_candles(values, 1_000, RESOLUTIONS, ts_max=T0 + 10**9))
    first = msgspec.json.decode(records[0].value)
    assert set(first) == {
        "symbol",
        "resolution",
        "window_start",
        "window_end",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "bar_id",
        "revision",
    }
    assert isinstance(first["window_start"], int)

    # DLQ: every rejected message, original bytes as the value, reason and position in headers.
    truth = reference_trades(values, 1_000, 1_000, ts_max=T0 + 10**9)
    dlq = read_topic(broker.bootstrap, topics["dlq"])
    lake_dlq = lake_table(tmp_path / "lake", "dlq")
    assert len(dlq) == lake_dlq.height > 0
    assert {r.value for r in dlq} <= set(values)
    for record in dlq:
        assert record.headers["candlewax.reason"]
        assert record.headers["candlewax.source"].startswith(f"kafka:{topics['trades']}/".encode())
    duplicates = len(values) - len(dlq) - truth.height  # no order-book noise in this stream
    assert duplicates > 0

    # Drift: one record per late trade and bar, in the topic and in the lake alike.
    drift = [msgspec.json.decode(r.value) for r in read_topic(broker.bootstrap, topics["drift"])]
    lake_drift = lake_table(tmp_path / "lake", "drift")
    assert len(drift) == lake_drift.height > 0
    late_base = truth.filter(pl.col("late")).height
    assert sum(1 for d in drift if d["resolution"] == "1s") == late_base
    assert {d["bar_id"] for d in drift} == set(lake_drift.get_column("bar_id"))
