"""A realistic multi-symbol trade stream with injected faults, deterministic by seed.

Each symbol has its own price level, volatility, tick size and activity; prices follow a
geometric random walk rounded to the tick (never <= 0); sizes are heavy-tailed (a
log-normal body with a Pareto tail); symbols switch between busy and quiet spells, so
some go idle for seconds. The stream ends after a count of trades or a span of event
time, or never (endless): then every `cycle_trades` trades the price levels drift and
the activity is jittered, so no two cycles repeat.

Faults are rates (shares of trades): duplicates (re-sent with the same `trade_id`),
disorder within the allowed lateness, late beyond it, malformed messages of every kind
the contract rejects, fat fingers (prices far off the market), timestamps in the
future. Order-book noise (`type` add/cancel/modify) can make up a share of the stream.

Quotes (`kind="quote"`): the same markets and the same price path as the trades of the
same seed (the trades are drawn as ever, then dropped), with top-of-book quotes around
each trade's price from a random generator of their own, so turning quotes on changes
no trade. Quote faults: crossed books (bid above ask), locked ones (bid equal to ask),
and the trades' duplicate and late rates.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import msgspec
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from candlewax.input_clock import INPUT_CLOCK
from candlewax.records import RawBatch
from candlewax.stopping import stop_requested


class SimMessage(NamedTuple):
    key: bytes  # the symbol, as Kafka producers key trades
    value: bytes
    ts: int  # the stream's event time when the message is sent (for pacing)


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
NOISE_TYPES = ("add", "cancel", "modify")


@dataclass(frozen=True)
class SimulatorConfig:
    symbols: int = 8
    trades: int = 100_000  # trades to generate; 0 = no count limit
    duration_ms: int = 0  # event time to cover; 0 = no time limit (both 0: endless)
    rate: float = 2_000.0  # trades per second of event time, all symbols together
    speed: float = 0.0  # 0 = as fast as possible, 1 = real time, N = N x real time
    seed: int = 7
    start_ms: int | None = None  # event time of the first trade; None = now
    cycle_trades: int = 100_000  # endless runs: trades per cycle between level drifts
    allowed_lateness_ms: int = 1_000
    base_window_ms: int = 1_000
    duplicate_rate: float = 0.0
    disorder_rate: float = 0.0
    late_rate: float = 0.0
    malformed_rate: float = 0.0
    fat_finger_rate: float = 0.0
    future_rate: float = 0.0
    future_offset_ms: int = 7_200_000  # beyond the contract's default 1 h bound: rejected
    noise_share: float = 0.0  # share of all messages that are order-book noise (< 1)
    kind: str = "trade"  # "trade" or "quote": which stream of the markets to emit
    quotes_per_trade: float = 3.0
    crossed_rate: float = 0.0  # shares of quotes
    locked_rate: float = 0.0

    @property
    def endless(self) -> bool:
        return self.trades == 0 and self.duration_ms == 0


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
    last_quote_ts: int = 0


class TradeSimulator:
    """Generates `SimMessage`s; `messages()` is a pure function of the config (and seed)."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.start_ms = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.symbols = [self._new_symbol(i) for i in range(config.symbols)]
        self.clock_ms = float(self.start_ms)
        self.emitted_trades = 0
        self.rate = config.rate
        self._held: list[tuple[int, int, SimMessage]] = []  # (release time, seq, message)
        self._held_seq = 0
        self._order_id = 0
        # Quotes draw from a generator of their own: the trades are the same either way.
        self.quote_rng = random.Random(config.seed * 1_000_003 + 17)
        self._quote_id = 0
        self._held_quotes: list[tuple[int, int, SimMessage]] = []

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

    def _more(self, trade_id: int) -> bool:
        cfg = self.config
        if cfg.trades and trade_id >= cfg.trades:
            return False
        return not (cfg.duration_ms and self.clock_ms - self.start_ms >= cfg.duration_ms)

    def messages(self) -> Iterator[SimMessage]:
        """The trade stream, or (`kind="quote"`) the quote stream of the same markets."""
        want_quotes = self.config.kind == "quote"
        for is_quote, message in self._stream(want_quotes):
            if is_quote == want_quotes:
                yield message

    def _stream(self, quotes: bool) -> Iterator[tuple[bool, SimMessage]]:
        cfg, rng = self.config, self.rng
        encode = msgspec.json.encode
        noise_per_trade = cfg.noise_share / (1.0 - cfg.noise_share) if cfg.noise_share else 0.0
        trade_id = 0
        while self._more(trade_id):
            if cfg.endless and trade_id and trade_id % cfg.cycle_trades == 0:
                self._drift_cycle()
            self.clock_ms += rng.expovariate(self.rate) * 1000.0
            now = int(self.clock_ms)
            symbol = self._pick(now)
            for held in self._release(now):
                yield False, held
            if quotes:
                for held in _released(self._held_quotes, now):
                    yield True, held
            if noise_per_trade:
                for noise in self._noise(symbol, now, noise_per_trade):
                    yield False, noise
            trade_id += 1
            self._step_price(symbol, now)
            if quotes:
                for top_of_book in self._quotes_at(symbol, now):
                    yield True, top_of_book
            message: dict[str, Any] = {
                "symbol": symbol.name,
                "price": symbol.price,
                "size": self._size(),
                "ts": now,
                "trade_id": trade_id,
                "side": "buy" if rng.random() < 0.5 else "sell",
                "venue": "SIM",
                "type": "trade",
            }
            symbol.last_ts = max(symbol.last_ts, now)
            self.emitted_trades += 1
            for sent in self._with_faults(symbol, message, now, encode):
                yield False, sent
        while self._held:  # the end: whatever is still held goes out, in release order
            yield False, heapq.heappop(self._held)[2]
        while self._held_quotes:
            yield True, heapq.heappop(self._held_quotes)[2]

    def _quotes_at(self, symbol: _Symbol, now: int) -> Iterator[SimMessage]:
        """Top-of-book quotes of `symbol` just before a trade at `now`, around its price."""
        cfg, rng = self.config, self.quote_rng
        mean = cfg.quotes_per_trade
        count = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
        key = symbol.name.encode()
        for _ in range(count):
            ts = max(symbol.last_quote_ts, now - rng.randint(0, 20))
            symbol.last_quote_ts = ts
            tick = symbol.tick
            half = max(tick, symbol.price * rng.choice((0.00002, 0.00005, 0.0001, 0.0003)))
            mid = symbol.price + tick * rng.randint(-2, 2)
            bid = _on_tick(max(tick, mid - half), tick)
            ask = _on_tick(max(bid + tick, mid + half), tick)
            roll = rng.random()
            if roll < cfg.crossed_rate:
                bid, ask = ask, bid
            elif roll < cfg.crossed_rate + cfg.locked_rate:
                ask = bid
            self._quote_id += 1
            value = msgspec.json.encode(
                {
                    "type": "quote",
                    "symbol": symbol.name,
                    "bid": bid,
                    "ask": ask,
                    "bid_size": self._quote_size(),
                    "ask_size": self._quote_size(),
                    "ts": ts,
                    "quote_id": self._quote_id,
                    "venue": "SIM",
                }
            )
            message = SimMessage(key, value, ts)
            fault = rng.random()
            if fault < cfg.late_rate:
                delay = cfg.allowed_lateness_ms + cfg.base_window_ms + rng.randint(0, 3_000)
                self._held_seq += 1
                heapq.heappush(self._held_quotes, (ts + delay, self._held_seq, message))
                continue
            yield message
            if rng.random() < cfg.duplicate_rate:
                self._held_seq += 1
                heapq.heappush(
                    self._held_quotes, (ts + rng.randint(0, 500), self._held_seq, message)
                )

    def _quote_size(self) -> float:
        return round(max(1e-4, self.quote_rng.lognormvariate(0.0, 1.0)), 4)

    def _with_faults(
        self, symbol: _Symbol, message: dict[str, Any], now: int, encode: Any
    ) -> Iterator[SimMessage]:
        cfg, rng = self.config, self.rng
        key = symbol.name.encode()
        fault = self._draw_fault()
        if fault == "malformed":
            yield SimMessage(key, self._malformed(message), now)
            return
        if fault == "fat_finger":
            factor = rng.choice((0.1, 0.5, 2.0, 10.0))
            message = {**message, "price": _on_tick(message["price"] * factor, symbol.tick)}
        elif fault == "future":
            message = {**message, "ts": now + cfg.future_offset_ms}
        value = encode(message)
        if fault == "late":
            delay = cfg.allowed_lateness_ms + cfg.base_window_ms + rng.randint(0, 3_000)
            self._hold(now + delay, SimMessage(key, value, now))
            return
        if fault == "disorder":
            delay = rng.randint(1, max(1, cfg.allowed_lateness_ms // 2))
            self._hold(now + delay, SimMessage(key, value, now))
            return
        yield SimMessage(key, value, now)
        if rng.random() < cfg.duplicate_rate:
            self._hold(now + rng.randint(0, 500), SimMessage(key, value, now))

    def _draw_fault(self) -> str | None:
        """At most one fault per trade, each with its configured probability."""
        cfg = self.config
        roll = self.rng.random()
        for rate, fault in (
            (cfg.malformed_rate, "malformed"),
            (cfg.fat_finger_rate, "fat_finger"),
            (cfg.future_rate, "future"),
            (cfg.late_rate, "late"),
            (cfg.disorder_rate, "disorder"),
        ):
            if roll < rate:
                return fault
            roll -= rate
        return None

    def _size(self) -> float:
        rng = self.rng
        if rng.random() < 0.05:  # the tail: occasional block trades
            return round(min(1e6, 0.5 * rng.paretovariate(1.3)), 4)
        return round(max(1e-4, rng.lognormvariate(-1.0, 1.2)), 4)

    def _noise(self, symbol: _Symbol, now: int, mean: float) -> Iterator[SimMessage]:
        rng, encode = self.rng, msgspec.json.encode
        count = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
        key = symbol.name.encode()
        for _ in range(count):
            self._order_id += 1
            kind = rng.choice(NOISE_TYPES)
            event: dict[str, Any] = {
                "type": kind,
                "symbol": symbol.name,
                "order_id": self._order_id,
                "ts": now,
            }
            if kind != "cancel":
                offset = symbol.tick * rng.randint(1, 50) * (1 if rng.random() < 0.5 else -1)
                event["price"] = _on_tick(max(symbol.tick, symbol.price + offset), symbol.tick)
                event["size"] = self._size()
            yield SimMessage(key, encode(event), now)

    def _drift_cycle(self) -> None:
        """Endless runs: a new cycle moves every price level and jitters the activity."""
        rng = self.rng
        for symbol in self.symbols:
            symbol.price = _on_tick(symbol.price * math.exp(rng.gauss(0.0, 0.02)), symbol.tick)
            symbol.weight *= rng.uniform(0.8, 1.25)
        self.rate = self.config.rate * rng.uniform(0.8, 1.2)

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
        symbol.price = max(symbol.tick, _on_tick(symbol.price * math.exp(shock), symbol.tick))

    def _hold(self, release_ms: int, message: SimMessage) -> None:
        self._held_seq += 1
        heapq.heappush(self._held, (release_ms, self._held_seq, message))

    def _release(self, now: int) -> Iterator[SimMessage]:
        """Held messages whose time has come (by the stream's clock)."""
        return _released(self._held, now)

    def _malformed(self, trade: dict[str, Any]) -> bytes:
        kind = self.rng.choice(MALFORMED_KINDS)
        bad = dict(trade)
        encode = msgspec.json.encode
        ts_text = b'"ts":%d' % bad["ts"]
        if kind == "invalid_json":
            return encode(bad)[:-7]
        if kind == "not_an_object":
            return encode([bad["symbol"], bad["price"]])
        if kind == "fractional_ts":
            return encode(bad).replace(ts_text, ts_text + b".5")
        if kind == "exponent_ts":
            return encode(bad).replace(ts_text, ts_text + b"e0")
        if kind == "nan_price":
            return encode(bad).replace(b'"price":', b'"price":NaN,"_p":')
        if kind == "infinite_size":
            return encode(bad).replace(b'"size":', b'"size":Infinity,"_s":')
        if kind == "overflow_price":
            return encode(bad).replace(b'"price":', b'"price":1e999,"_p":')
        if kind == "empty":
            return b""
        if kind == "missing_field":
            del bad[self.rng.choice(["symbol", "price", "size", "ts"])]
        elif kind == "string_price":
            bad["price"] = str(bad["price"])
        elif kind == "bool_size":
            bad["size"] = True
        elif kind == "null_price":
            bad["price"] = None
        elif kind == "negative_price":
            bad["price"] = -bad["price"]
        elif kind == "zero_size":
            bad["size"] = 0
        elif kind == "bad_symbol":
            bad["symbol"] = bad["symbol"] + " !"
        elif kind == "ts_in_seconds":
            bad["ts"] = bad["ts"] // 1000
        return encode(bad)


def _released(held: list[tuple[int, int, SimMessage]], now: int) -> Iterator[SimMessage]:
    while held and held[0][0] <= now:
        release, _, message = heapq.heappop(held)
        yield message._replace(ts=release)


def _on_tick(price: float, tick: float) -> float:
    """`price` rounded to a multiple of `tick`, printed without binary noise."""
    decimals = max(0, -math.floor(math.log10(tick)))
    return round(round(price / tick) * tick, decimals)


class _SimulatorPartition(StatefulSourcePartition[RawBatch, int]):
    """As fast as possible (speed 0), or paced: live, a message goes out when the
    simulated clock says it is due, and the input clock hears that the simulator is
    caught up whenever nothing more is due."""

    def __init__(self, config: SimulatorConfig, batch_size: int, resume: int | None):
        self._PART = _part_name(config)
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
        self._held: Any = None  # a message read ahead that is not due yet
        if self._speed > 0:
            INPUT_CLOCK.behind(self._PART)

    def _due_in_s(self) -> float:
        due_s = (self._sim.clock_ms - self._sim.start_ms) / 1000.0 / self._speed
        return due_s - (time.monotonic() - self._wall_start)

    def next_batch(self) -> list[RawBatch]:
        if stop_requested():
            raise StopIteration
        values: list[bytes | None] = []
        keys: list[bytes | None] = []
        wait_s = 0.0
        while len(values) < self._batch_size:
            message = self._held if self._held is not None else next(self._messages, None)
            self._held = None
            if message is None:
                break
            if self._speed > 0:
                wait_s = self._due_in_s()
                if wait_s > 0:
                    self._held = message  # not due yet
                    break
            keys.append(message.key)
            values.append(message.value)
        if not values and self._held is None:
            raise StopIteration
        if self._speed > 0:
            if self._held is not None:  # everything due is out
                INPUT_CLOCK.caught_up(self._PART)
            else:  # a full batch, and more may be due already
                INPUT_CLOCK.behind(self._PART)
            awake_s = min(wait_s, 0.1) if self._held is not None else 0.0
            self._awake = datetime.now(timezone.utc) + timedelta(seconds=max(0.0, awake_s))
        if not values:
            return []
        positions = list(range(self._sent + 1, self._sent + 1 + len(values)))
        self._sent += len(values)
        return [RawBatch(self._PART, values, positions, keys)]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._sent

    def close(self) -> None:
        INPUT_CLOCK.forget(self._PART)


def _part_name(config: SimulatorConfig) -> str:
    """The simulator's one partition: `simulator` for trades, `simulator.quotes` for quotes."""
    return "simulator" if config.kind == "trade" else "simulator.quotes"


class SimulatorSource(FixedPartitionedSource[RawBatch, int]):
    def __init__(self, config: SimulatorConfig, batch_size: int = 20_000):
        self.config = config
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [_part_name(self.config)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _SimulatorPartition:
        batch = self.batch_size if self.config.speed == 0 else max(1, min(self.batch_size, 1_000))
        return _SimulatorPartition(self.config, batch, resume_state)
