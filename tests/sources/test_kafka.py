"""Where a Kafka partition starts reading, and when a live one counts as caught up (it
lets the input clock run)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from candlewax.input_clock import INPUT_CLOCK
from candlewax.records import FIRST_BATCH_PART
from sources.kafka import (
    NO_OUTAGE_SEEN,
    READ_AHEAD_MESSAGES,
    KafkaBatchPartition,
    KafkaBatchSource,
    at_head,
    next_tick,
    outage_over,
)
from tests.kafka_helpers import produce
from tools.broker import create_topics

NOW = 1_800_000_000_000.0


def test_nothing_left_to_read_is_the_head_whatever_the_age_of_the_last_message():
    assert at_head(0, 0, int(NOW) - 3_600_000, NOW)  # a topic quiet for an hour
    assert at_head(0, 500, 0, NOW)  # no timestamps at all


def test_a_live_stream_is_at_its_head_with_a_poll_s_worth_of_fresh_messages_left():
    # 20 k trades/s: by the time a poll's messages are counted, more have arrived.
    assert at_head(40, 12, int(NOW) - 15, NOW)
    assert at_head(800, 0, int(NOW) - 15, NOW)  # an empty poll between two fetches
    assert at_head(5_000, 20_000, int(NOW) - 15, NOW)  # a fast stream: one poll's worth


def test_a_backlog_keeps_the_partition_behind():
    # More left than a poll brings, though fresh: a burst not yet read.
    assert not at_head(50_000, 2_000, int(NOW) - 15, NOW)
    # Few left but produced long ago: reading what a pause or an outage left behind.
    assert not at_head(300, 300, int(NOW) - 10_000, NOW)
    # No timestamp to tell by, something left: not known to be caught up.
    assert not at_head(10, 10, 0, NOW)
    assert not at_head(10, 10, -1, NOW)


def test_a_batch_kept_back_for_its_read_ahead_keeps_the_partition_behind():
    # Read but not handed over: its trades are still to come, whatever is left after it
    # (the watermark would otherwise run ahead of them).
    assert at_head(3_000, 3_000, int(NOW) - 15, NOW)
    assert not at_head(3_000, 3_000, int(NOW) - 15, NOW, kept=True)
    assert not at_head(0, 3_000, int(NOW) - 15, NOW, kept=True)


def test_messages_handed_out_in_an_outage_do_not_end_it_until_a_fetch_is_answered():
    # librdkafka hands out what it fetched before the outage; the partition's end it
    # caches moves only with a fetch answered since.
    seen, over = outage_over(NO_OUTAGE_SEEN, 5.0, 1_000)
    assert not over  # the outage first seen, with messages from the queue
    seen, over = outage_over(seen, 5.0, 1_000)
    assert not over  # more from the queue
    seen, over = outage_over(seen, 5.0, None)
    assert not over  # no end cached: cannot tell
    seen, over = outage_over(seen, 5.0, 1_250)
    assert over  # the end moved: the broker answered
    seen, over = outage_over(seen, 9.0, 1_250)
    assert not over  # a new outage starts from its own end
    _, over = outage_over(seen, 9.0, 1_300)
    assert over
    # First seen before librdkafka cached an end: the first end it caches is the mark.
    seen, over = outage_over(seen, 12.0, None)
    assert not over
    seen, over = outage_over(seen, 12.0, 1_300)
    assert not over  # maybe fetched before the outage
    _, over = outage_over(seen, 12.0, 1_301)
    assert over


# --- where a partition starts --------------------------------------------------------
def _partition(broker: Any, topic: str, resume_offset: int | None) -> KafkaBatchPartition:
    source = KafkaBatchSource({"bootstrap.servers": broker.bootstrap}, topic, tail=False)
    (part,) = source.list_parts()
    return source.build_part("trades_in", part, resume_offset)


def _read_all(partition: KafkaBatchPartition) -> list[tuple[int, bytes]]:
    read: list[tuple[int, bytes]] = []
    try:
        while True:
            for batch in partition.next_batch():
                read += zip(batch.positions, batch.values, strict=True)
            time.sleep(0.01)
    except StopIteration:
        return read
    finally:
        partition.close()


@pytest.mark.broker
def test_a_fresh_start_snapshots_the_oldest_offset_and_reads_every_message(broker):
    broker.create_topics({"start.fresh": 1})
    produce(broker.bootstrap, "start.fresh", [(b"k", b"m%d" % i) for i in range(5)])
    partition = _partition(broker, "start.fresh", None)
    # The start is a real offset (asked of the broker), so a snapshot taken before the
    # first message resumes where this run began.
    assert partition.snapshot() == 0
    assert _read_all(partition) == [(i, b"m%d" % i) for i in range(5)]


@pytest.mark.broker
@pytest.mark.parametrize("batch_size", [3_000, 500])
def test_a_backlog_is_read_ahead_and_a_resume_reads_what_was_kept_back(broker, batch_size):
    # Batches of READ_AHEAD_MESSAGES or more are worked on (`read_ahead`) on a thread of
    # their own while kept back a poll; every message still goes once, in order, and a
    # snapshot counts only the batches handed over. A live poll's handful goes at once.
    topic = f"ahead.{batch_size}"
    broker.create_topics({topic: 1})
    count = 10_000
    produce(broker.bootstrap, topic, [(b"k", b"m%d" % i) for i in range(count)])

    def read_ahead(values):
        return len(values), threading.current_thread().name

    source = KafkaBatchSource(
        {"bootstrap.servers": broker.bootstrap},
        topic,
        tail=False,
        batch_size=batch_size,
        read_ahead=read_ahead,
    )
    (part,) = source.list_parts()
    partition = source.build_part("trades_in", part, None)
    read: list[tuple[int, bytes]] = []
    sizes: list[int] = []
    resumed = None
    try:
        while True:
            for batch in partition.next_batch():
                read += zip(batch.positions, batch.values, strict=True)
                sizes.append(len(batch))
                if len(batch) >= READ_AHEAD_MESSAGES:
                    assert batch.ahead is not None
                    assert batch.ahead.result() == (len(batch), "kafka-read-ahead_0")
                else:
                    assert batch.ahead is None
                if resumed is None and len(read) >= count // 2:
                    assert partition.snapshot() == read[-1][0] + 1
                    resumed = _read_all(_partition(broker, topic, partition.snapshot()))
            time.sleep(0.01)
    except StopIteration:
        partition.close()
    expected = [(i, b"m%d" % i) for i in range(count)]
    assert read == expected
    # The first batch is a small one (the flow starts on it sooner); then whole batches.
    assert sizes[0] <= batch_size // FIRST_BATCH_PART and max(sizes) == batch_size
    assert resumed is not None and read[: count - len(resumed)] + resumed == expected


# --- a live partition and the broker's answers ------------------------------------------
def _read_until(
    partition: KafkaBatchPartition, done: Any, seconds: float, read: list[bytes] | None = None
) -> list[bytes]:
    """Poll as the worker does (every 10 ms) until `done(read)` or `seconds` have passed;
    the values read, appended to `read`."""
    read = [] if read is None else read
    deadline = time.monotonic() + seconds
    while not done(read) and time.monotonic() < deadline:
        read += [v for batch in partition.next_batch() for v in batch.values]
        time.sleep(0.01)
    return read


def _clock_runs(partition: KafkaBatchPartition, seconds: float) -> float:
    """How far the input clock moved while the partition was polled for `seconds` (as the
    worker does: every 10 ms), in seconds."""
    before, until = INPUT_CLOCK.now_ms(), time.monotonic() + seconds
    while time.monotonic() < until:
        partition.next_batch()
        time.sleep(0.01)
    return (INPUT_CLOCK.now_ms() - before) / 1000.0


@pytest.mark.broker
def test_an_idle_live_partition_never_waits_on_an_unanswering_broker(broker_behind_proxy):
    broker, proxy = broker_behind_proxy
    create_topics(broker.bootstrap, {"idle.live": 1})
    client = {"bootstrap.servers": f"127.0.0.1:{proxy.port}"}
    produce(client["bootstrap.servers"], "idle.live", [(b"k", b"m%d" % i) for i in range(3)])
    source = KafkaBatchSource(client, "idle.live", tail=True, poll_timeout_ms=10)
    (part,) = source.list_parts()
    partition = source.build_part("trades_in", part, None)
    try:
        read = _read_until(partition, lambda read: len(read) == 3, 30)
        assert read == [b"m0", b"m1", b"m2"]
        # Everything read and the broker says so: the clock runs with wall time.
        _clock_runs(partition, 0.5)
        assert _clock_runs(partition, 1.0) > 0.8

        proxy.hold()  # the broker stops answering; its connections stay open
        longest = 0.0
        until = time.monotonic() + 2.5
        while time.monotonic() < until:
            started = time.monotonic()
            partition.next_batch()
            longest = max(longest, time.monotonic() - started)
            time.sleep(0.01)
        # A question to the broker times out after 0.5 s: on the worker's thread, the
        # worker (every symbol's candles) stood still that long, every 2 s.
        assert longest < 0.25
        # Unanswered, the partition cannot tell that it is caught up: the clock stops, so
        # trades waiting at the broker are not overtaken by the watermark.
        assert _clock_runs(partition, 1.0) < 0.1

        proxy.release()
        produce(client["bootstrap.servers"], "idle.live", [(b"k", b"m3")])
        _read_until(partition, lambda read: b"m3" in read, 30, read)
        assert read[-1] == b"m3"
        # Answered again (the next question, after the 2 s backoff): the clock runs.
        deadline = time.monotonic() + 10
        while _clock_runs(partition, 0.5) < 0.45 and time.monotonic() < deadline:
            pass
        assert _clock_runs(partition, 1.0) > 0.8
    finally:
        partition.close()


@pytest.mark.broker
def test_a_bounded_partition_says_when_the_broker_is_back_with_nothing_new_to_read(
    broker_behind_proxy, caplog
):
    broker, proxy = broker_behind_proxy
    create_topics(broker.bootstrap, {"backfill.outage": 1})
    client = {"bootstrap.servers": f"127.0.0.1:{proxy.port}"}
    produce(client["bootstrap.servers"], "backfill.outage", [(b"k", b"m0"), (b"k", b"m1")])
    # A long end confirmation keeps the partition reading through the outage.
    source = KafkaBatchSource(client, "backfill.outage", tail=False, end_confirm_ms=60_000)
    (part,) = source.list_parts()
    partition = source.build_part("trades_in", part, None)

    def lines(text: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if text in r.getMessage()]

    try:
        assert _read_until(partition, lambda read: len(read) == 2, 30) == [b"m0", b"m1"]
        proxy.cut()
        _read_until(partition, lambda _: lines("unreachable for the consumer"), 15)
        assert len(lines("unreachable for the consumer")) == 1
        proxy.restore()
        # Nothing new is produced: no fetch moves the partition's end to show the
        # broker back; the partition's question does.
        _read_until(partition, lambda _: lines("reachable again for the consumer"), 15)
        assert len(lines("reachable again for the consumer")) == 1
    finally:
        partition.close()


def test_idle_partitions_wake_together_on_the_next_multiple_of_the_idle_wait():
    ticks = {
        next_tick(now, 0.01) for now in (1_700_000_000.0012, 1_700_000_000.0049, 1_700_000_000.0099)
    }
    assert len(ticks) == 1  # three partitions, one moment
    assert ticks.pop() == pytest.approx(1_700_000_000.01)
    assert next_tick(1_700_000_000.01, 0.01) > 1_700_000_000.01  # always ahead
