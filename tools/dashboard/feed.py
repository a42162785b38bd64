"""The dashboard's live inputs, each in a thread of its own: the flow's output topics
(closed candles, forming candles, quote bars) and its `/metrics` endpoints.

The topics are read without a consumer group (partitions assigned, nothing committed:
any number of dashboards read side by side and none moves another's offsets). Closed
bars are read from `lookback` ago, so the minutes the lake has not flushed yet are there
too (on a broker that ignores timestamp lookups, such as Tansu, from the start of the
topic); forming candles only from now on: the past ones are of no use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from tools.dashboard.bars import FORMING
from tools.dashboard.health import Health, Scrape, health, scrape

log = logging.getLogger("candlewax.dashboard")

OnRecord = Callable[[str, dict[str, Any]], None]
OnHealth = Callable[[Health], None]


class TopicFeed(threading.Thread):
    """Reads `topics` (kind -> topic name) and hands each record to `on_record`."""

    def __init__(
        self,
        client_config: dict[str, Any],
        topics: dict[str, str],
        on_record: OnRecord,
        lookback_ms: int = 15 * 60_000,
    ):
        super().__init__(name="dashboard-topics", daemon=True)
        self.client_config = client_config
        self.topics = topics
        self.on_record = on_record
        self.lookback_ms = lookback_ms
        self.stopping = threading.Event()
        self.error: str | None = None
        self.records = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.client_config,
                "group.id": "candlewax-dashboard",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,  # a forming candle is worth seeing at once
            }
        )
        kinds = {topic: kind for kind, topic in self.topics.items()}
        try:
            while not self.stopping.is_set():  # the topics may not exist yet
                assignment = self._assignment(consumer)
                if assignment:
                    consumer.assign(assignment)
                    break
                self.stopping.wait(1.0)
            decode = msgspec.json.Decoder().decode
            while not self.stopping.is_set():
                for message in consumer.consume(1_000, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.error = str(error.str())
                        continue
                    try:
                        record = decode(message.value() or b"")
                    except msgspec.DecodeError:
                        continue  # not a record of ours: never fatal for a viewer
                    self.records += 1
                    self.on_record(kinds[str(message.topic())], record)
        except KafkaException as exc:
            self.error = str(exc)
            log.error("dashboard: reading the topics failed: %s", exc)
        finally:
            consumer.close()

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        """Every partition of the topics that exist, each from where its kind starts."""
        since = int(time.time() * 1000) - self.lookback_ms
        metadata = consumer.list_topics(timeout=5.0)
        starts: list[TopicPartition] = []
        for kind, topic in self.topics.items():
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                at = OFFSET_END if kind == FORMING else since
                starts.append(TopicPartition(topic, partition, at))
        if not starts:
            return []
        by_time = [tp for tp in starts if tp.offset != OFFSET_END]
        if by_time:
            found_offsets = consumer.offsets_for_times(by_time, timeout=10.0)
            offsets = {(tp.topic, tp.partition): tp.offset for tp in found_offsets}
            for tp in starts:
                if tp.offset != OFFSET_END:
                    # -1: no record that recent: start at the end
                    offset = offsets.get((tp.topic, tp.partition), OFFSET_END)
                    tp.offset = OFFSET_END if offset < 0 else offset
        return starts


class HealthPoller(threading.Thread):
    """Scrapes the `/metrics` endpoints every `interval_s` and hands on the health."""

    def __init__(self, urls: Sequence[str], on_health: OnHealth, interval_s: float = 1.0):
        super().__init__(name="dashboard-health", daemon=True)
        self.urls = list(urls)
        self.on_health = on_health
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.latest: Health | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        previous: Scrape | None = None
        while not self.stopping.is_set():
            current = scrape(self.urls, timeout_s=min(1.0, self.interval_s))
            self.latest = health(previous, current)
            self.on_health(self.latest)
            previous = current
            self.stopping.wait(self.interval_s)
