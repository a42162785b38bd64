"""The Redis projection against a real `redis-server`: hashes of the newest bar that never
go backwards, an update on the symbol's channel for each move forward, forming candles as
a view, and outages."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import redis

from candlewax.failures import OutputError
from candlewax.records import CANDLE_ROW, CandleBatch
from sinks.redis import CANDLES, FORMING, RedisProjector, RedisTarget
from tests.factories import T0


def batch(symbol: str, start: int, revision: int = 0, count: int = 3, close: float = 100.5):
    rows = np.zeros(1, dtype=CANDLE_ROW)
    rows["res"], rows["start"], rows["revision"], rows["count"] = 1_000, start, revision, count
    rows["open"] = rows["high"] = rows["low"] = 100.0
    rows["close"] = close
    rows["volume"], rows["notional"] = 2.0, 200.0
    return CandleBatch.of_symbol(symbol, rows, ((1_000, "1s"),))


class Channel:
    """A subscriber to one channel, collecting what it receives."""

    def __init__(self, url: str, channel: str):
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(channel)
        assert self.pubsub.get_message(timeout=5)["type"] == "subscribe"

    def received(self) -> list[str]:
        messages = []
        while (message := self.pubsub.get_message(timeout=0.5)) is not None:
            messages.append(message["data"])
        return messages


def closes(url: str, key: str) -> tuple[str, str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        stored = client.hgetall(key)
    return stored["window_start"], stored["revision"], stored["close"]


def test_the_hash_moves_forward_only_and_each_move_is_published(redis_url):
    channel = Channel(redis_url, "candlewax:candles:BTC-USD")
    projector = RedisProjector(RedisTarget(redis_url), CANDLES)
    key = "candlewax:candle:BTC-USD:1s"
    projector.write([batch("BTC-USD", T0 + 1_000, close=1.0)])
    projector.write([batch("BTC-USD", T0, close=2.0)])  # an older window
    assert closes(redis_url, key) == (str(T0 + 1_000), "0", "1.0")
    projector.write([batch("BTC-USD", T0 + 1_000, revision=1, close=3.0)])  # restated
    projector.write([batch("BTC-USD", T0 + 1_000, revision=0, close=4.0)])  # a replay
    projector.write([batch("BTC-USD", T0 + 1_000, revision=1, close=5.0)])  # the same again
    assert closes(redis_url, key) == (str(T0 + 1_000), "1", "3.0")
    published = [json.loads(m) for m in channel.received()]
    assert [(m["window_start"], m["revision"], m["close"]) for m in published] == [
        (T0 + 1_000, 0, 1.0),
        (T0 + 1_000, 1, 3.0),
    ]
    assert projector.changed == 2


def test_a_batch_sends_only_the_newest_version_of_each_series(redis_url):
    channel = Channel(redis_url, "candlewax:candles:ETH-USD")
    projector = RedisProjector(RedisTarget(redis_url), CANDLES)
    projector.write([batch("ETH-USD", T0 + k * 1_000, close=float(k)) for k in range(100)])
    assert closes(redis_url, "candlewax:candle:ETH-USD:1s") == (str(T0 + 99_000), "0", "99.0")
    assert len(channel.received()) == 1


def test_forming_candles_grow_in_their_own_hash_with_final_false(redis_url):
    channel = Channel(redis_url, "candlewax:candles:BTC-USD")
    projector = RedisProjector(RedisTarget(redis_url), FORMING)
    projector.write([batch("BTC-USD", T0, count=2, close=1.0)])
    projector.write([batch("BTC-USD", T0, count=5, close=2.0)])
    projector.write([batch("BTC-USD", T0, count=4, close=9.0)])  # fewer trades: older
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        forming = client.hgetall("candlewax:forming:BTC-USD:1s")
        assert not client.exists("candlewax:candle:BTC-USD:1s")
    assert (forming["trade_count"], forming["close"], forming["final"]) == ("5", "2.0", "false")
    assert [('"final":false' in m) for m in channel.received()] == [True, True]


def test_forming_candles_are_dropped_not_waited_for_while_redis_is_down(caplog):
    from tools.broker import free_port

    projector = RedisProjector(RedisTarget(f"redis://127.0.0.1:{free_port()}/0"), FORMING)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        projector.write([batch("BTC-USD", T0)])
        projector.write([batch("BTC-USD", T0, count=4)])
    assert time.monotonic() - started < 5
    assert projector.dropped == 2 and "updates not sent" in caplog.text


def test_candles_wait_through_a_redis_restart_and_arrive(redis_server, redis_url):
    projector = RedisProjector(RedisTarget(redis_url, retry_timeout_ms=60_000), CANDLES)
    projector.write([batch("BTC-USD", T0)])
    redis_server.kill()
    # Started from this thread: a server started by a thread that ends would end with it.
    writing = threading.Thread(
        target=projector.write, args=([batch("BTC-USD", T0 + 1_000, close=7.0)],)
    )
    writing.start()
    time.sleep(1.0)
    assert writing.is_alive()  # retrying, not failed
    redis_server.start()  # back, empty
    writing.join(30)
    assert not writing.is_alive()
    assert closes(redis_url, "candlewax:candle:BTC-USD:1s") == (str(T0 + 1_000), "0", "7.0")


def test_redis_away_past_the_retry_timeout_stops_with_one_error():
    from tools.broker import free_port

    projector = RedisProjector(
        RedisTarget(f"redis://:pa55word@127.0.0.1:{free_port()}/0", retry_timeout_ms=1_000),
        CANDLES,
    )
    with pytest.raises(OutputError, match="still failing after") as raised:
        projector.write([batch("BTC-USD", T0)])
    assert "pa55word" not in str(raised.value)
