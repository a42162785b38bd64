"""Real captures replayed into the broker and through the flow: candles equal the batch truth."""

from __future__ import annotations

import msgspec
import pytest

from candlewax.records import Candle
from tests.factories import RESOLUTIONS
from tests.kafka_helpers import read_topic
from tests.processes import ROOT, candlewax, flow_topics, kafka_env, run_flow_processes
from tests.reference import assert_candles_match, reference_candles

pytestmark = [pytest.mark.broker, pytest.mark.slow]
FIXTURES = ROOT / "tests" / "fixtures" / "binance-ws"


def test_replayed_binance_captures_become_the_right_candles(broker, tmp_path):
    topics = flow_topics(broker, trades_partitions=2)
    result = candlewax(
        "replay",
        str(FIXTURES / "spot_btcusdt_20240808_excerpt.txt"),
        str(FIXTURES / "usdm_ethusdt_20240808_excerpt.txt.gz"),
        "--brokers",
        broker.bootstrap,
        "--topic",
        topics["trades"],
    )
    assert "sent 66 trades" in result.stderr

    records = read_topic(broker.bootstrap, topics["trades"])
    assert len(records) == 66
    assert {r.key for r in records} == {b"BTCUSDT", b"ETHUSDT"}
    run_flow_processes(kafka_env(broker.bootstrap, topics, tmp_path / "lake"))
    candles = [
        msgspec.json.decode(r.value, type=Candle)
        for r in read_topic(broker.bootstrap, topics["candles"])
    ]
    # Each symbol sits in one partition, so the topic's order per symbol is the input order.
    messages = [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    assert_candles_match(candles, reference_candles(messages, 1_000, RESOLUTIONS))
    assert read_topic(broker.bootstrap, topics["dlq"]) == []
