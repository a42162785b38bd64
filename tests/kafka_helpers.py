"""Produce to and read back whole topics of the test broker (by bootstrap address)."""

from __future__ import annotations

from collections.abc import Iterable

from tools import topics
from tools.topics import Record


def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]
) -> int:
    return topics.produce({"bootstrap.servers": bootstrap}, topic, messages)


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record of the topic. Tansu sometimes signals the end of a partition written
    by several producers before its last records are readable, so read until two reads
    half a second apart agree."""
    import time

    records = topics.read_topic({"bootstrap.servers": bootstrap}, topic)
    while True:
        time.sleep(0.5)
        again = topics.read_topic({"bootstrap.servers": bootstrap}, topic)
        if len(again) == len(records):
            return again
        records = again
