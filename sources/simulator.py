"""A realistic multi-symbol trade stream with injected faults (a first version).

Each symbol has its own price level, volatility, tick size and activity; prices follow a
geometric random walk rounded to the tick (never <= 0), sizes are heavy-tailed
(log-normal), and symbols switch between busy and quiet spells, so some go idle for
seconds. Faults are rates: duplicates (re-sent with the same `trade_id`), disorder
within the allowed lateness, trades held back beyond it (late), and malformed messages
of every kind the contract rejects. The stream is a pure function of the seed.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from candlewax.records import RawBatch

SimMessage = tuple[bytes, bytes]  # (key = symbol, value)

# Reference price levels (USD) and relative activity of the simulated markets.
_MARKETS = [
    ("BTC", 60_000.0, 10.0),
    ("ETH", 3_000.0, 7.0),
    ("SOL", 150.0, 4.0),
    ("XRP", 0.6, 3.0),
    ("BNB", 550.0, 2.0),
    ("DOGE", 0.12, 2.0),
    ("ADA", 0.45, 1.5),
    ("AVAX", 30.0, 1.0),
    ("LINK", 14.0, 1.0),
    ("DOT", 6.0, 0.8),
    ("LTC", 70.0, 0.8),
    ("ATOM", 7.0, 0.5),
]


@dataclass(frozen=True)
class SimulatorConfig:
    symbols: int = 8
    trades: int = 100_000  # 0 = endless
    rate: float = 2_000.0  # trades per second of event time, all symbols together
    speed: float = 0.0  # 0 = as fast as possible, 1 = real time, N = N x real time
    seed: int = 7
    start_ms: int | None = None  # event time of the first trade; None = now
    allowed_lateness_ms: int = 1_000
    base_window_ms: int = 1_000
    duplicate_rate: float = 0.0
    disorder_rate: float = 0.0
    late_rate: float = 0.0
    malformed_rate: float = 0.0


@dataclass
class _Symbol:
    name: str
    price: float
    tick: float
    volatility: float  # per sqrt(second)
    weight: float
    busy: bool = True
    next_switch_ms: int = 0
    last_ts: int = 0


MALFORMED_KINDS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "string_price",
    "bool_size",
    "null_price",
    "fractional_ts",
    "exponent_ts",
    "nan_price",
    "infinite_size",
    "overflow_price",
    "negative_price",
    "zero_size",
    "bad_symbol",
    "ts_in_seconds",
    "empty",
)


class TradeSimulator:
    """Generates `(key, value)` messages; `messages()` is deterministic for a seed."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.start_ms = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.symbols = [self._new_symbol(i) for i in range(config.symbols)]
        self.clock_ms = float(self.start_ms)
        self.emitted_trades = 0
        # Messages held back (disorder / late), released once their symbol's time passes.
        self._held: list[tuple[int, int, SimMessage]] = []
        self._held_seq = 0

    def _new_symbol(self, index: int) -> _Symbol:
        rng = self.rng
        base, level, activity = _MARKETS[index % len(_MARKETS)]
        if index >= len(_MARKETS):  # more symbols than reference markets: invented ones
            base = f"{base}{index // len(_MARKETS)}"
            level = math.exp(rng.uniform(math.log(0.05), math.log(5_000)))
            activity = rng.paretovariate(1.5) * 0.3
        price = level * rng.uniform(0.8, 1.2)
        tick = 10.0 ** (math.floor(math.log10(price)) - 6)
        return _Symbol(
            name=f"{base}-USD",
            price=_on_tick(price, tick),
            tick=tick,
            volatility=rng.uniform(0.0002, 0.002),
            weight=activity,
        )

    def messages(self) -> Iterator[SimMessage]:
        cfg, rng = self.config, self.rng
        encode = msgspec.json.encode
        trade_id = 0
        while cfg.trades == 0 or trade_id < cfg.trades:
            self.clock_ms += rng.expovariate(cfg.rate) * 1000.0
            now = int(self.clock_ms)
            symbol = self._pick(now)
            yield from self._release(now)
            trade_id += 1
            self._step_price(symbol, now)
            message = {
                "symbol": symbol.name,
                "price": symbol.price,
                "size": round(max(1e-4, rng.lognormvariate(-1.0, 1.4)), 4),
                "ts": now,
                "trade_id": trade_id,
                "side": "buy" if rng.random() < 0.5 else "sell",
                "venue": "SIM",
                "type": "trade",
            }
            symbol.last_ts = max(symbol.last_ts, now)
            key = symbol.name.encode()
            value = encode(message)
            self.emitted_trades += 1
            roll = rng.random()
            if roll < cfg.malformed_rate:
                yield key, self._malformed(message)
                continue
            roll -= cfg.malformed_rate
            if roll < cfg.late_rate:
                delay = cfg.allowed_lateness_ms + cfg.base_window_ms + rng.randint(0, 3_000)
                self._hold(now + delay, (key, value))
                continue
            roll -= cfg.late_rate
            if roll < cfg.disorder_rate:
                self._hold(now + rng.randint(1, max(1, cfg.allowed_lateness_ms // 2)), (key, value))
                continue
            yield key, value
            if rng.random() < cfg.duplicate_rate:
                self._hold(now + rng.randint(0, 500), (key, value))
        # The end: whatever is still held goes out now, in release order.
        while self._held:
            yield heapq.heappop(self._held)[2]

    def _pick(self, now: int) -> _Symbol:
        rng = self.rng
        for symbol in self.symbols:
            if now >= symbol.next_switch_ms:
                symbol.busy = not symbol.busy if symbol.next_switch_ms else True
                mean_spell = 20_000 if symbol.busy else 4_000
                symbol.next_switch_ms = now + int(rng.expovariate(1 / mean_spell))
        weights = [s.weight * (1.0 if s.busy else 0.02) for s in self.symbols]
        return rng.choices(self.symbols, weights)[0]

    def _step_price(self, symbol: _Symbol, now: int) -> None:
        elapsed_s = max(0.001, (now - symbol.last_ts) / 1000.0) if symbol.last_ts else 0.001
        shock = self.rng.gauss(0.0, symbol.volatility * math.sqrt(elapsed_s))
        price = symbol.price * math.exp(shock)
        symbol.price = max(symbol.tick, _on_tick(price, symbol.tick))

    def _hold(self, release_ms: int, message: SimMessage) -> None:
        self._held_seq += 1
        heapq.heappush(self._held, (release_ms, self._held_seq, message))

    def _release(self, now: int) -> Iterator[SimMessage]:
        """Held messages whose time has come (by the stream's clock)."""
        while self._held and self._held[0][0] <= now:
            yield heapq.heappop(self._held)[2]

    def _malformed(self, trade: dict) -> bytes:
        kind = self.rng.choice(MALFORMED_KINDS)
        bad = dict(trade)
        encode = msgspec.json.encode
        if kind == "invalid_json":
            return encode(bad)[:-7]
        if kind == "not_an_object":
            return encode([bad["symbol"], bad["price"]])
        if kind == "missing_field":
            del bad[self.rng.choice(["symbol", "price", "size", "ts"])]
        elif kind == "string_price":
            bad["price"] = str(bad["price"])
        elif kind == "bool_size":
            bad["size"] = True
        elif kind == "null_price":
            bad["price"] = None
        elif kind == "fractional_ts":
            return encode(bad).replace(b'"ts":%d' % bad["ts"], b'"ts":%d.5' % bad["ts"])
        elif kind == "exponent_ts":
            return encode(bad).replace(b'"ts":%d' % bad["ts"], b'"ts":%de0' % bad["ts"])
        elif kind == "nan_price":
            return encode(bad).replace(b'"price":', b'"price":NaN,"_p":')
        elif kind == "infinite_size":
            return encode(bad).replace(b'"size":', b'"size":Infinity,"_s":')
        elif kind == "overflow_price":
            return encode(bad).replace(b'"price":', b'"price":1e999,"_p":')
        elif kind == "negative_price":
            bad["price"] = -bad["price"]
        elif kind == "zero_size":
            bad["size"] = 0
        elif kind == "bad_symbol":
            bad["symbol"] = bad["symbol"] + " !"
        elif kind == "ts_in_seconds":
            bad["ts"] = bad["ts"] // 1000
        elif kind == "empty":
            return b""
        return encode(bad)


def _on_tick(price: float, tick: float) -> float:
    """`price` rounded to a multiple of `tick`, printed without binary noise."""
    decimals = max(0, -math.floor(math.log10(tick)))
    return round(round(price / tick) * tick, decimals)


class _SimulatorPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, config: SimulatorConfig, batch_size: int, resume: int | None):
        self._sim = TradeSimulator(config)
        self._messages = self._sim.messages()
        self._batch_size = batch_size
        self._sent = 0
        self._speed = config.speed
        self._wall_start = time.monotonic()
        for _ in range(resume or 0):  # the stream is deterministic: skip what was sent
            next(self._messages, None)
            self._sent += 1
        self._awake: datetime | None = None

    def next_batch(self) -> list[RawBatch]:
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        for key, value in self._messages:
            keys.append(key)
            values.append(value)
            if len(values) >= self._batch_size:
                break
        if not values:
            raise StopIteration
        positions = list(range(self._sent + 1, self._sent + 1 + len(values)))
        self._sent += len(values)
        if self._speed > 0:
            due_s = (self._sim.clock_ms - self._sim.start_ms) / 1000.0 / self._speed
            ahead = due_s - (time.monotonic() - self._wall_start)
            self._awake = datetime.now(timezone.utc) + timedelta(seconds=max(0.0, ahead))
        return [RawBatch("simulator", values, positions, keys)]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._sent


class SimulatorSource(FixedPartitionedSource[RawBatch, int]):
    def __init__(self, config: SimulatorConfig, batch_size: int = 20_000):
        self.config = config
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return ["simulator"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _SimulatorPartition:
        batch = self.batch_size if self.config.speed == 0 else max(1, min(self.batch_size, 1_000))
        return _SimulatorPartition(self.config, batch, resume_state)
