"""Small factories for test data: trade messages, settings, trade frames."""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import numpy as np
import polars as pl

from candlewax.records import CANDLE_ROW, TRADE_SCHEMA, Candle, CandleBatch
from config.durations import parse_duration_ms
from config.settings import Settings
from sources.simulator import SimulatorConfig, TradeSimulator

T0 = 1_699_999_980_000  # 2023-11-14T22:13:00Z, a whole minute


def trade(
    symbol: str = "BTC-USD",
    price: float = 100.0,
    size: float = 1.0,
    ts: int = T0,
    trade_id: int | str | None = None,
    **extra: Any,
) -> bytes:
    message: dict[str, Any] = {"symbol": symbol, "price": price, "size": size, "ts": ts}
    if trade_id is not None:
        message["trade_id"] = trade_id
    message.update(extra)
    return msgspec.json.encode(message)


def quote(
    symbol: str = "BTC-USD",
    bid: float = 99.5,
    ask: float = 100.5,
    ts: int = T0,
    quote_id: int | str | None = None,
    **extra: Any,
) -> bytes:
    message: dict[str, Any] = {"type": "quote", "symbol": symbol, "bid": bid, "ask": ask, "ts": ts}
    if quote_id is not None:
        message["quote_id"] = quote_id
    message.update(extra)
    return msgspec.json.encode(message)


def trades_frame(
    rows: list[tuple[int, float, float]], symbol: str = "BTC-USD", ids: list | None = None
) -> pl.DataFrame:
    """A decoded trade batch of one symbol from (ts, price, size) rows."""
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(rows),
            "ts": [r[0] for r in rows],
            "price": [float(r[1]) for r in rows],
            "size": [float(r[2]) for r in rows],
            "trade_id": [
                None if ids is None else (None if ids[i] is None else str(ids[i]))
                for i in range(len(rows))
            ],
            "side": [None] * len(rows),
            "venue": [None] * len(rows),
        },
        schema=TRADE_SCHEMA,
    )


# The faults the flow tests mix into simulated streams (shares of trades).
FAULTS = {"duplicate_rate": 0.02, "disorder_rate": 0.05, "late_rate": 0.01, "malformed_rate": 0.02}


def simulated(
    trades: int, *, symbols: int = 6, rate: float = 300, seed: int = 1, **faults: float
) -> list[tuple[bytes, bytes]]:
    """`(key, value)` messages of a simulated stream starting at T0, with `FAULTS` unless
    other rates are given."""
    config = SimulatorConfig(
        symbols=symbols, trades=trades, rate=rate, seed=seed, start_ms=T0, **(faults or FAULTS)
    )
    return [(m.key, m.value) for m in TradeSimulator(config).messages()]


def settings(**overrides: Any) -> Settings:
    """Settings for an offline flow (no Kafka), independent of the environment's defaults."""
    values: dict[str, Any] = {"source": "simulator", "kafka_brokers": "", "metrics_port": 0}
    values.update(overrides)
    return Settings(**values)


# The resolutions the flow tests use (the defaults), by name.
RESOLUTIONS = {"1s": 1_000, "10s": 10_000, "1m": 60_000}


def faulty_stream(n: int = 30_000, seed: int = 1) -> list[bytes]:
    """Simulated trades with duplicates, disorder, late and malformed messages mixed in."""
    messages = [value for _, value in simulated(n, seed=seed)]
    # and some order-book noise
    rng = random.Random(seed)
    for i in range(0, len(messages), 97):
        messages.insert(i, trade(type=rng.choice(["add", "cancel", "modify"]), ts=T0 + i))
    return messages


def candle_batches(candles: list[Candle]) -> list[CandleBatch]:
    """Candle rows as the batches the candle step hands to the sinks (one per symbol)."""
    by_symbol: dict[str, list[Candle]] = {}
    for candle in candles:
        by_symbol.setdefault(candle.symbol, []).append(candle)
    batches = []
    for symbol, rows in by_symbol.items():
        array = np.zeros(len(rows), dtype=CANDLE_ROW)
        names = {}
        for i, c in enumerate(rows):
            res = parse_duration_ms(c.resolution)
            names[res] = c.resolution
            notional = math.nan if c.vwap is None else c.vwap * c.volume
            row = dict.fromkeys(CANDLE_ROW.names, 0)
            row.update(res=res, start=c.window_start, open=c.open, close=c.close, high=c.high)
            row.update(low=c.low, count=c.trade_count, volume=c.volume, notional=notional)
            row.update(revision=c.revision)
            array[i] = tuple(row.values())
        batches.append(CandleBatch.of_symbol(symbol, array, tuple(names.items())))
    return batches
