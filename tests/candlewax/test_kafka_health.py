"""What a Kafka client says about the brokers' reachability, and when."""

from __future__ import annotations

from confluent_kafka import KafkaError

from candlewax.kafka_health import KafkaHealth

CUT = KafkaError(KafkaError._TRANSPORT, "Connection refused")


def test_a_producer_with_nothing_to_deliver_does_not_call_an_outage():
    pending = [0]
    health = KafkaHealth("producer of 'trades.dlq'", "127.0.0.1:9092")
    on_error = health.producer_config(lambda: pending[0])["error_cb"]
    on_error(CUT)
    assert health.down_since is None  # idle: nothing would ever show it back
    pending[0] = 3
    on_error(CUT)
    assert health.down_since is not None  # messages wait on it: an outage
    health.reachable()
    assert health.down_since is None


def test_a_fatal_error_is_kept_even_when_idle():
    health = KafkaHealth("producer of 'candles'", "127.0.0.1:9092")
    on_error = health.producer_config(lambda: 0)["error_cb"]
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    on_error(fatal)
    assert health.fatal is fatal
