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


def test_the_forming_candle_is_published_as_it_grows_then_closes_as_the_candle(broker, tmp_path):
    topics = flow_topics(broker)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        "PYTHONPATH": str(ROOT),
        **kafka_env(broker.bootstrap, topics, tmp_path / "lake", tail=True),
        "CANDLEWAX_METRICS_PORT": "0",
        "CANDLEWAX_RESOLUTIONS": "10s",
        "CANDLEWAX_LIVE_INTERVAL": "200ms",
    }

    def forming() -> list[dict]:
        return [msgspec.json.decode(r.value) for r in read_topic(broker.bootstrap, topics["live"])]

    flow = start_flow_process(env)
    try:
        # Ready when a first trade shows as a forming candle (the consumer has joined).
        produce(broker.bootstrap, topics["trades"], [(b"SOL-USD", trade("SOL-USD", 20.0))])
        deadline = time.monotonic() + 60
        while not any(f["symbol"] == "SOL-USD" for f in forming()):
            assert time.monotonic() < deadline and flow.poll() is None, "no forming candle"
            time.sleep(0.3)

        now = int(time.time() * 1000)
        if now % 10_000 > 5_000:  # three bursts 0.6 s apart must fit in one window
            time.sleep((10_000 - now % 10_000) / 1000 + 0.05)
            now = int(time.time() * 1000)
        start = now - now % 10_000
        bar_id = f"ETH-USD:10s:{start}"
        for burst in range(3):
            trades = [
                (b"ETH-USD", trade("ETH-USD", 3000.0 + burst * 10 + i, 1.0, now + burst, i + 1))
                for i in range(burst * 5, burst * 5 + 5)
            ]
            produce(broker.bootstrap, topics["trades"], trades)
            time.sleep(0.6)

        deadline = time.monotonic() + 30
        candles: dict = {}
        while bar_id not in candles:  # closes 10 s after it started + 1 s lateness
            assert time.monotonic() < deadline and flow.poll() is None, "no closed candle"
            time.sleep(0.5)
            records = read_topic(broker.bootstrap, topics["candles"])
            candles = {r.key.decode(): msgspec.json.decode(r.value) for r in records}
        versions = [f for f in forming() if f["bar_id"] == bar_id]
    finally:
        flow.terminate()
        flow.wait(10)

    assert all(v["final"] is False for v in versions)
    counts = [v["trade_count"] for v in versions]
    assert counts == sorted(counts) and len(set(counts)) >= 3, f"grew burst by burst: {counts}"
    final = candles[bar_id]
    assert final["trade_count"] == 15 and "final" not in final
    assert {k: v for k, v in versions[-1].items() if k != "final"} == final
