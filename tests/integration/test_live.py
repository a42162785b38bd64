"""Live from Kafka: the watermark follows system time, so an idle symbol's candle comes out."""

from __future__ import annotations

import os
import time

import msgspec
import pytest

from tests.factories import trade
from tests.kafka_helpers import produce, read_topic
from tests.processes import ROOT, flow_topics, kafka_env, start_flow_process

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_an_idle_symbols_last_candle_is_emitted_without_new_trades(broker, tmp_path):
    topics = flow_topics(broker)
    trades_topic, candles_topic = topics["trades"], topics["candles"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        "PYTHONPATH": str(ROOT),
        **kafka_env(broker.bootstrap, topics, tmp_path / "lake", tail=True),
        "CANDLEWAX_METRICS_PORT": "0",
        "CANDLEWAX_RESOLUTIONS": "1s,10s",
    }
    flow = start_flow_process(env)
    try:
        now = int(time.time() * 1000)
        second = now - now % 1000
        produce(
            broker.bootstrap,
            trades_topic,
            [
                (b"ETH-USD", trade("ETH-USD", 3000.0, 1.0, second - 500, trade_id=1)),
                (b"ETH-USD", trade("ETH-USD", 3001.0, 2.0, second + 100, trade_id=2)),
            ],
        )
        # No more trades: only system time can close the window [second, second + 1 s).
        deadline = time.monotonic() + 30
        candles: dict = {}
        while time.monotonic() < deadline and f"ETH-USD:1s:{second}" not in candles:
            time.sleep(0.5)
            records = read_topic(broker.bootstrap, candles_topic)
            candles = {r.key.decode(): msgspec.json.decode(r.value) for r in records}
        assert flow.poll() is None, "a live flow keeps running"
        assert candles[f"ETH-USD:1s:{second - 1000}"]["close"] == 3000.0
        last = candles[f"ETH-USD:1s:{second}"]
        assert (last["open"], last["volume"], last["trade_count"]) == (3001.0, 2.0, 1)
    finally:
        flow.terminate()
        flow.wait(10)
