"""Live, neither a paused process nor a broker outage turns on-time trades into late ones.

The watermark of a quiet symbol advances with time only while the input is caught up
(`candlewax.input_clock`). Here a producer publishes trades in real time, in order (so
no trade is late by its own timestamps), while the flow is frozen with SIGSTOP for 6 s
and, later, cut off from the broker for 12 s by a proxy (each several times the allowed
lateness, 1 s: a clock that ran on through either would make seconds of trades late).
Afterwards: no late trade, no drift record, and every candle equal to the batch truth of
all the trades produced.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import msgspec
import pytest

from candlewax.records import Candle
from tests.factories import trade
from tests.kafka_helpers import read_topic
from tests.processes import ROOT, kafka_env, start_flow_process
from tests.reference import assert_candles_match, reference_candles
from tools.broker import create_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD")
RESOLUTIONS = {"1s": 1_000, "5s": 5_000}


class RealTimeProducer(threading.Thread):
    """Trades stamped with the wall clock, ~100 per second, every one kept for the truth."""

    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.topic = topic
        self.messages: list[bytes] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            for symbol in SYMBOLS:
                n += 1
                now = int(time.time() * 1000)
                value = trade(symbol, 100.0 + (n % 17), 1.0 + n % 3, now, trade_id=n)
                self.messages.append(value)
                self.producer.produce(self.topic, value, symbol.encode())
            self.producer.poll(0)
            time.sleep(0.04)
        assert self.producer.flush(120) == 0


def test_a_pause_and_an_outage_make_no_trade_late(broker_behind_proxy, tmp_path):
    broker, proxy = broker_behind_proxy
    prefix = f"p{os.getpid()}"
    topics = {name: f"{prefix}.{name}" for name in ("trades", "candles", "dlq", "drift")}
    create_topics(broker.bootstrap, {name: 1 for name in topics.values()})
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))},
        "PYTHONPATH": str(ROOT),
        **kafka_env(f"127.0.0.1:{proxy.port}", topics, tmp_path / "lake", tail=True),
        "CANDLEWAX_METRICS_PORT": "0",
        "CANDLEWAX_RESOLUTIONS": ",".join(RESOLUTIONS),
    }
    flow = start_flow_process(env)
    producer = RealTimeProducer(f"127.0.0.1:{proxy.port}", topics["trades"])
    try:
        time.sleep(4)  # the flow starts and catches up
        producer.start()
        time.sleep(3)
        flow.send_signal(signal.SIGSTOP)
        time.sleep(6)
        flow.send_signal(signal.SIGCONT)
        time.sleep(3)
        proxy.cut()
        time.sleep(12)
        proxy.restore()
        time.sleep(3)
        producer.stopping.set()
        producer.join(150)
        expected = reference_candles(producer.messages, 1_000, RESOLUTIONS)
        # Caught up and quiet: the input clock runs and the last windows close.
        deadline = time.monotonic() + 60
        candles: dict[str, Candle] = {}
        while time.monotonic() < deadline:
            records = read_topic(broker.bootstrap, topics["candles"])
            candles = {r.key.decode(): msgspec.json.decode(r.value, type=Candle) for r in records}
            if set(expected.get_column("bar_id")) <= set(candles):
                break
            time.sleep(1)
        assert flow.poll() is None, "the flow survived the pause and the outage"
    finally:
        producer.stopping.set()
        flow.send_signal(signal.SIGCONT)
        flow.send_signal(signal.SIGTERM)
        out, _ = flow.communicate(timeout=60)
    log = out.decode(errors="replace")
    summary = re.search(r"run stopped by SIGTERM: received=(\d+) accepted=(\d+) .* late=(\d+)", log)
    assert summary, log[-3000:]
    received, accepted, late = map(int, summary.groups())
    # The test's producer retries what the cut left unacknowledged (it is not idempotent),
    # so the topic may hold a trade twice: the flow reads each message once and keeps
    # each trade once (dedupe by trade_id).
    in_topic = len(read_topic(broker.bootstrap, topics["trades"]))
    assert (received, accepted, late) == (in_topic, len(producer.messages), 0)
    assert read_topic(broker.bootstrap, topics["drift"]) == [], "no drift without late trades"
    assert_candles_match(list(candles.values()), expected)
    assert len(producer.messages) > 2_000
    # The outage is told once, and its end once, not line after line.
    assert log.count("is unreachable for the consumer") <= 2, log[-3000:]
    # Every client said to be unreachable is said to be back (a producer only while it
    # had something to deliver: the idle dead-letter and drift ones say nothing, not
    # even when they serve the outage's stale callbacks at the end of the run).
    unreachable = re.findall(r"is unreachable for the (.+?) \(", log)
    back = re.findall(r"is reachable again for the (.+?), after", log)
    assert sorted(unreachable) == sorted(back), log[-3000:]
    assert not any(topics["dlq"] in c or topics["drift"] in c for c in unreachable), log
    assert len(log.splitlines()) < 40, log[-3000:]
