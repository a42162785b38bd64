"""Shared fixtures: run the candle flow around TestingSource/TestingSink, the embedded broker."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from candlewax.metrics import FlowMetrics
from candlewax.records import Candle, DriftRecord, Rejection
from config.settings import Settings
from flows.ohlcv import FlowSinks, build_flow
from sinks.lake import trades_frame
from sources.testing import raw_batches
from tests import factories

# Tests never pick up a developer's CANDLEWAX_* variables or .env file.
for _name in [n for n in os.environ if n.startswith("CANDLEWAX_")]:
    del os.environ[_name]


@dataclass
class FlowResult:
    candles: list[Candle]
    drift: list[DriftRecord]
    trades: pl.DataFrame
    dlq: list[Rejection]
    metrics: FlowMetrics

    def candle_rows(self) -> list[tuple]:
        """Candles as sorted plain tuples: equal runs compare equal."""
        return sorted(
            (c.bar_id, c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trade_count, c.revision)
            for c in self.candles
        )


def run_flow(
    messages: Sequence[bytes | None],
    settings: Settings | None = None,
    *,
    workers: int = 1,
    batch_size: int = 1_000,
) -> FlowResult:
    """Run `flows.ohlcv` over in-memory messages with 1 or more workers in this process."""
    settings = settings or factories.settings()
    out: dict[str, list[Any]] = {"candles": [], "trades": [], "drift": [], "dlq": []}
    sinks = FlowSinks(**{name: [TestingSink(items)] for name, items in out.items()})
    metrics = FlowMetrics()
    source = TestingSource(list(raw_batches(messages, batch_size)))
    flow = build_flow(settings, source=source, sinks=sinks, metrics=metrics)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    trades = trades_frame(out["trades"]) if out["trades"] else pl.DataFrame()
    return FlowResult(out["candles"], out["drift"], trades, out["dlq"], metrics)


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture(scope="session")
def broker() -> Iterator[Any]:
    """A real Kafka-protocol broker (Tansu) on a free loopback port, for the whole session."""
    from candlewax.broker import EmbeddedBroker

    with EmbeddedBroker() as running:
        yield running
