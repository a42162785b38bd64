"""The output channel every Kafka output goes through: a whole sink batch is sent in one
loop, a full local queue makes it wait (never drop), and a message the client refuses
stops it with the topic and the cause (views drop instead: test_kafka_views.py)."""

from __future__ import annotations

import pytest

from candlewax.failures import OutputError
from sinks.kafka import ProducerChannel
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.broker


def test_a_batch_larger_than_the_local_queue_waits_and_arrives_whole_in_order(broker):
    broker.create_topics({"o.queue": 1})
    client = {"bootstrap.servers": broker.bootstrap}
    # A queue of 50 messages: most sends find it full and must wait for librdkafka.
    channel = ProducerChannel(client, "o.queue", {"queue.buffering.max.messages": 50})
    messages = [(f"k{i}".encode(), f"v{i}".encode(), None) for i in range(2_000)]
    messages[7] = (b"k7", b"v7", [("h", b"x")])  # headers ride along
    channel.send_all(messages)
    channel.deliver()
    assert channel.sent == 2_000
    records = read_topic(broker.bootstrap, "o.queue")
    assert [(r.key, r.value) for r in records] == [(k, v) for k, v, _ in messages]
    assert records[7].headers == {"h": b"x"} and records[8].headers == {}


def test_a_message_the_client_refuses_stops_the_batch_naming_topic_and_cause(broker):
    broker.create_topics({"o.refused": 1})
    client = {"bootstrap.servers": broker.bootstrap}
    channel = ProducerChannel(client, "o.refused")
    huge = b"x" * 2_000_000  # over librdkafka's message.max.bytes
    with pytest.raises(OutputError) as raised:
        channel.send_all([(b"a", b"small", None), (b"b", huge, None), (b"c", b"never", None)])
    assert "'o.refused'" in str(raised.value) and "too large" in str(raised.value).lower()


def test_single_sends_are_counted_and_delivered_like_a_batch(broker):
    broker.create_topics({"o.single": 1})
    channel = ProducerChannel({"bootstrap.servers": broker.bootstrap}, "o.single")
    for i in range(3):
        channel.send(None, f"v{i}".encode())
    channel.deliver()
    assert channel.sent == 3
    assert [r.value for r in read_topic(broker.bootstrap, "o.single")] == [b"v0", b"v1", b"v2"]
