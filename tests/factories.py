"""Small factories for test data: trade messages, settings, trade frames."""

from __future__ import annotations

from typing import Any

import msgspec
import polars as pl

from candlewax.records import TRADE_SCHEMA
from config.settings import Settings

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


def settings(**overrides: Any) -> Settings:
    """Settings for an offline flow (no Kafka), independent of the environment's defaults."""
    values: dict[str, Any] = {"source": "simulator", "kafka_brokers": "", "metrics_port": 0}
    values.update(overrides)
    return Settings(**values)
