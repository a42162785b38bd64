"""When a live Kafka partition counts as caught up (it lets the input clock run)."""

from __future__ import annotations

from sources.kafka import at_head

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
