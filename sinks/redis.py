"""The Redis projection: the latest candle, forming candle and quote bar of every symbol and
resolution as hashes, and a pub/sub channel per symbol that carries each update.

    candlewax:candle:{symbol}:{resolution}      the latest closed candle (its record's fields)
    candlewax:forming:{symbol}:{resolution}     the forming candle (base resolution, live)
    candlewax:quote_bar:{symbol}:{resolution}   the latest quote bar
    candlewax:candles:{symbol}                  channel: each new candle as its JSON record
                                                (forming ones with "final": false)
    candlewax:quote_bars:{symbol}               channel: each new quote bar

A hash is never moved backwards: a version replaces the stored one only if its window
starts later, or it is the same window with a higher `revision` (for a forming candle,
more trades). The comparison and the write happen in one Lua script per call, so two
writers (workers, a replay beside the live flow) cannot interleave between them, and a
replay of old candles changes nothing. Field values are the JSON record's values as text
(floats in their shortest exact form); a null is an empty string.

Only the newest version of each hash in a sink batch is sent: a backfill of a day of
candles makes one update per symbol and resolution per batch, not one per candle. So
the channels carry the latest values, not every candle: the `candles` topic is the
complete stream.

Closed candles and quote bars are outputs: while Redis is unreachable the batch is
retried (with backoff, up to `CANDLEWAX_SERVING_RETRY_TIMEOUT`) and the flow waits; then
it stops with one line. Forming candles are a view: when Redis is down they are dropped,
never waited for. The script touches several keys in one call, so it needs a standalone
Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from candlewax.failures import OutputError, fail, failure, redact
from candlewax.metrics import SERVING_RETRIES, SERVING_ROWS
from candlewax.records import Candle, QuoteBar, candle_frame, finite, quote_bar_frame
from sinks.retrying import Retrying

log = logging.getLogger(__name__)

# KEYS: the hashes. ARGV, per hash: window_start, rank, the rank's field, channel,
# message, n, then n field/value pairs. Returns how many hashes it moved forward.
_NEWER_WINS = """
local a = 1
local changed = 0
for i = 1, #KEYS do
  local window_start = tonumber(ARGV[a])
  local rank = tonumber(ARGV[a + 1])
  local n = tonumber(ARGV[a + 5])
  local stored = redis.call('HMGET', KEYS[i], 'window_start', ARGV[a + 2])
  local stored_start = tonumber(stored[1])
  local stored_rank = tonumber(stored[2]) or -1
  if stored_start == nil or window_start > stored_start
      or (window_start == stored_start and rank > stored_rank) then
    redis.call('HSET', KEYS[i], unpack(ARGV, a + 6, a + 5 + 2 * n))
    redis.call('PUBLISH', ARGV[a + 3], ARGV[a + 4])
    changed = changed + 1
  end
  a = a + 6 + 2 * n
end
return changed
"""
_KEYS_PER_CALL = 500


@dataclass(frozen=True)
class Projection:
    """One kind of hash: where it lives, what orders its versions, its records."""

    name: str  # "candle", "forming", "quote_bar"
    channel: str  # channel prefix; the symbol is appended
    rank: str  # orders the versions of one window
    to_frame: Callable[[Sequence[Any]], pl.DataFrame]  # batches -> record frame
    record: Any  # the record class: JSON form
    view: bool = False  # best effort: dropped while Redis is down, never waited for

    def key(self, symbol: str, resolution: str) -> str:
        return f"candlewax:{self.name}:{symbol}:{resolution}"


def _forming_frame(batches: Sequence[Any]) -> pl.DataFrame:
    return candle_frame(batches).with_columns(final=pl.lit(False))


CANDLES = Projection("candle", "candlewax:candles", "revision", candle_frame, Candle)
FORMING = Projection(
    "forming", "candlewax:candles", "trade_count", _forming_frame, Candle, view=True
)
QUOTE_BARS = Projection("quote_bar", "candlewax:quote_bars", "revision", quote_bar_frame, QuoteBar)


def newest(frame: pl.DataFrame, rank: str) -> pl.DataFrame:
    """The newest version of each symbol and resolution in `frame` (latest window, then
    highest rank), in the order they came."""
    return frame.sort(["window_start", rank], maintain_order=True).unique(
        ["symbol", "resolution"], keep="last", maintain_order=True
    )


def script_calls(projection: Projection, frame: pl.DataFrame) -> list[tuple[list[str], list[Any]]]:
    """The Lua script's KEYS and ARGV for the newest versions in `frame`, in chunks."""
    latest = finite(newest(frame, projection.rank))
    messages = projection.record.json_lines(latest)
    texts = latest.select(pl.all().cast(pl.String).fill_null(""))
    names = texts.columns
    calls: list[tuple[list[str], list[Any]]] = []
    keys: list[str] = []
    args: list[Any] = []
    for row, message in zip(texts.iter_rows(named=True), messages, strict=True):
        keys.append(projection.key(row["symbol"], row["resolution"]))
        args += [row["window_start"], row[projection.rank], projection.rank]
        args += [f"{projection.channel}:{row['symbol']}", message, len(names)]
        for name in names:
            args += [name, row[name]]
        if len(keys) == _KEYS_PER_CALL:
            calls.append((keys, args))
            keys, args = [], []
    if keys:
        calls.append((keys, args))
    return calls


@dataclass(frozen=True)
class RedisTarget:
    url: str
    retry_timeout_ms: int = 300_000

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30
        )


def _retryable(error: BaseException) -> bool:
    return isinstance(error, (redis.ConnectionError, redis.TimeoutError)) and not isinstance(
        error, redis.AuthenticationError
    )


class RedisProjector:
    """Writes one projection's batches to Redis, in the flow's thread (a few script calls
    per batch); an output retries through outages, a view drops what it cannot send."""

    def __init__(
        self,
        target: RedisTarget,
        projection: Projection,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.target = target
        self.projection = projection
        self.client = target.client()
        self.script = self.client.register_script(_NEWER_WINS)
        self._what = f"Redis projection {projection.name!r} at {redact(target.url)}"
        self._retrying = Retrying(
            self._what,
            _retryable,
            target.retry_timeout_ms / 1000,
            on_retry=SERVING_RETRIES.labels("redis", projection.name).inc,
            sleep=sleep,
        )
        self.changed = 0  # hashes moved forward
        self.dropped = 0  # view updates not sent

    def write(self, batches: Sequence[Any]) -> None:
        if not batches:
            return
        calls = script_calls(self.projection, self.projection.to_frame(batches))
        sent = sum((len(keys) for keys, _ in calls), 0)
        if self.projection.view:
            try:
                self._send(calls)
            except redis.RedisError as error:
                self.dropped += sent
                if self.dropped == sent or self.dropped % 10_000 < sent:
                    log.warning("%s: %s updates not sent (%s)", self._what, self.dropped, error)
            return
        self._retrying.run(lambda: self._send(calls), f"{sent} updates")
        SERVING_ROWS.labels("redis", self.projection.name).inc(sent)

    def _send(self, calls: list[tuple[list[str], list[Any]]]) -> None:
        pipeline = self.client.pipeline(transaction=False)
        for keys, args in calls:
            self.script(keys=keys, args=args, client=pipeline)
        self.changed += sum(int(n) for n in pipeline.execute())

    def close(self) -> None:
        self.client.close()


class _RedisPartition(StatelessSinkPartition[Any]):
    def __init__(self, projector: RedisProjector):
        self.projector = projector

    def write_batch(self, items: list[Any]) -> None:
        if failure() is not None:
            return
        try:
            self.projector.write(items)
        except OutputError as error:
            fail(error)

    def close(self) -> None:
        self.projector.close()


class RedisSink(DynamicSink[Any]):
    """A Redis client per worker, projecting batches of one record kind."""

    def __init__(self, target: RedisTarget, projection: Projection):
        self.target = target
        self.projection = projection

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        return _RedisPartition(RedisProjector(self.target, self.projection))
