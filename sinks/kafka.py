"""Records to Kafka topics: candles and drift records as JSON keyed by `bar_id`, rejected
messages to the dead-letter topic with their original bytes.

Delivery failures are not dropped: the first one stops the flow at the next write (or
at close), naming the topic and the error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from candlewax.records import Candle, DriftRecord, Rejection

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]
KafkaMessage = tuple[bytes | None, bytes | None, Headers | None]

PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "acks": "all",
}


def candle_message(candle: Candle) -> KafkaMessage:
    return candle.bar_id.encode(), candle.to_json(), None


def drift_message(record: DriftRecord) -> KafkaMessage:
    return record.bar_id.encode(), record.to_json(), None


def dlq_message(rejection: Rejection) -> KafkaMessage:
    """The original bytes (and key) untouched; why and where in headers, the convention of
    Kafka Connect's dead-letter queues."""
    headers: Headers = [
        ("candlewax.reason", rejection.reason.encode()),
        ("candlewax.detail", rejection.detail.encode()),
        ("candlewax.source", rejection.source.encode()),
        ("candlewax.received_at", str(rejection.received_at).encode()),
    ]
    if rejection.field:
        headers.append(("candlewax.field", rejection.field.encode()))
    return rejection.key, rejection.raw, headers


class _ProducerPartition(StatelessSinkPartition[Any]):
    def __init__(self, producer: Producer, topic: str, to_message: Callable[[Any], KafkaMessage]):
        self.producer = producer
        self.topic = topic
        self.to_message = to_message
        self.failure: str | None = None

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self.failure is None:
            self.failure = f"delivery to Kafka topic {self.topic!r} failed: {error}"

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise RuntimeError(self.failure)

    def write_batch(self, items: list[Any]) -> None:
        self._raise_failure()
        produce, topic = self.producer.produce, self.topic
        for item in items:
            key, value, headers = self.to_message(item)
            while True:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    # The local queue is full: let librdkafka send, then retry.
                    self.producer.poll(0.05)
        # Delivered before the batch counts as written: a recovery snapshot taken after
        # it never covers a message still in a local queue (at least once, keyed).
        self.producer.flush(60)
        self._raise_failure()

    def close(self) -> None:
        remaining = self.producer.flush(60)
        self._raise_failure()
        if remaining:
            raise RuntimeError(
                f"{remaining} messages to Kafka topic {self.topic!r} were not delivered in 60 s"
            )


class KafkaRecordSink(DynamicSink[Any]):
    """A producer per worker, writing records converted by `to_message`."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topic: str,
        to_message: Callable[[Any], KafkaMessage],
        producer_config: dict[str, Any] | None = None,
    ):
        self.config = {**PRODUCER_DEFAULTS, **client_config, **(producer_config or {})}
        self.topic = topic
        self.to_message = to_message

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(Producer(self.config), self.topic, self.to_message)
