"""The forming-candle sink is a view: what it cannot send is dropped and logged, and the
flow goes on (an output sink stops the flow instead: tests/integration/test_failures.py)."""

from __future__ import annotations

import logging

import msgspec
import numpy as np
import pytest

from candlewax.records import CANDLE_ROW, CandleBatch
from sinks.kafka import KafkaViewSink, forming_candle_messages
from tests.factories import T0
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.broker


def forming_batch(symbol: str = "BTC-USD") -> CandleBatch:
    rows = np.zeros(1, dtype=CANDLE_ROW)
    rows["res"], rows["start"] = 1_000, T0
    rows["open"] = rows["high"] = rows["low"] = rows["close"] = 100.0
    rows["count"], rows["volume"], rows["notional"] = 1, 2.0, 200.0
    return CandleBatch.of_symbol(symbol, rows, ((1_000, "1s"),))


def test_forming_candles_are_the_candle_record_with_final_false_keyed_by_bar_id(broker):
    broker.create_topics({"v.live": 1})
    sink = KafkaViewSink({"bootstrap.servers": broker.bootstrap}, "v.live", forming_candle_messages)
    partition = sink.build("forming", 0, 1)
    partition.write_batch([forming_batch()])
    partition.close()
    (record,) = read_topic(broker.bootstrap, "v.live")
    value = msgspec.json.decode(record.value)
    assert record.key == f"BTC-USD:1s:{T0}".encode() == value["bar_id"].encode()
    assert value["final"] is False and value["vwap"] == 100.0 and value["trade_count"] == 1


def test_a_message_the_broker_refuses_is_dropped_and_logged_not_raised(broker, caplog):
    broker.create_topics({"v.small": 1})
    client = {"bootstrap.servers": broker.bootstrap}
    sink = KafkaViewSink(client, "v.small", forming_candle_messages)
    partition = sink.build("forming", 0, 1)
    huge = forming_batch(symbol="X" * 2_000_000)  # over librdkafka's message.max.bytes
    with caplog.at_level(logging.WARNING):
        partition.write_batch([huge])
        partition.write_batch([forming_batch()])
        partition.close()
    assert partition.channel.dropped == 1
    assert "1 messages to 'v.small' not delivered" in caplog.text
    assert [r.key for r in read_topic(broker.bootstrap, "v.small")] == [f"BTC-USD:1s:{T0}".encode()]
