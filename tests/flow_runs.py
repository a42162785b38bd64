"""Run the candle flow in this process around TestingSource/TestingSink, 1 or N workers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from candlewax.metrics import FlowMetrics
from candlewax.records import (
    Candle,
    DriftRecord,
    QuoteBar,
    QuoteDriftRecord,
    RawBatch,
    Rejection,
    candle_frame,
    quote_bar_frame,
)
from config.settings import Settings
from flows.ohlcv import FlowSinks, build_flow
from sinks.lake import quotes_frame, trades_frame
from sources.testing import raw_batches
from tests import factories


@dataclass
class FlowResult:
    candles: list[Candle]
    drift: list[DriftRecord]
    trades: pl.DataFrame
    dlq: list[Rejection]
    metrics: FlowMetrics
    quote_bars: list[QuoteBar]
    quote_drift: list[QuoteDriftRecord]
    quotes: pl.DataFrame
    quote_dlq: list[Rejection]

    def quote_bar_fields(self) -> dict[str, dict]:
        """The newest revision of every quote bar, by bar_id, as field dicts."""
        newest: dict[str, QuoteBar] = {}
        for bar in self.quote_bars:
            if bar.bar_id not in newest or bar.revision > newest[bar.bar_id].revision:
                newest[bar.bar_id] = bar
        skip = ("symbol", "resolution", "window_start", "window_end", "bar_id", "revision")
        return {
            b: {k: v for k, v in bar.as_dict().items() if k not in skip}
            for b, bar in newest.items()
        }

    def candle_rows(self) -> list[tuple]:
        """Candles as sorted plain tuples: equal runs compare equal."""
        return sorted(
            (c.bar_id, c.open, c.high, c.low, c.close, c.volume, c.vwap, c.trade_count, c.revision)
            for c in self.candles
        )


def run_flow(
    messages: Sequence[bytes | None] | None,
    settings: Settings | None = None,
    *,
    workers: int = 1,
    batch_size: int = 1_000,
    quotes: Sequence[bytes | None] | None = None,
    more_sinks: dict[str, list[Any]] | None = None,
) -> FlowResult:
    """Run `flows.ohlcv` over in-memory messages with 1 or more workers in this process;
    `messages` None: the trade source the settings name; `quotes`: with the quotes
    branch, over these quote messages; `more_sinks`: sinks by output name (`FlowSinks`)
    beside the testing ones, such as the serving stores."""
    settings = settings or factories.settings()
    names = ["candles", "trades", "drift", "dlq", "quote_bars", "quotes", "quote_drift"]
    out: dict[str, list[Any]] = {name: [] for name in [*names, "quote_dlq"]}
    sinks = FlowSinks(**{name: [TestingSink(items)] for name, items in out.items()})
    for name, extra in (more_sinks or {}).items():
        getattr(sinks, name).extend(extra)
    metrics = FlowMetrics()
    source = None if messages is None else TestingSource(list(raw_batches(messages, batch_size)))
    quote_source = None
    if quotes is not None:
        quote_source = TestingSource(list(raw_batches(quotes, batch_size, source="quotes")))
    flow = build_flow(
        settings, source=source, sinks=sinks, metrics=metrics, quote_source=quote_source
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    trades = trades_frame(out["trades"]) if out["trades"] else pl.DataFrame()
    return FlowResult(
        Candle.rows(candle_frame(out["candles"])),
        [d for frame in out["drift"] for d in DriftRecord.rows(frame)],
        trades,
        [r for frame in out["dlq"] for r in Rejection.rows(frame)],
        metrics,
        QuoteBar.rows(quote_bar_frame(out["quote_bars"])),
        [d for frame in out["quote_drift"] for d in QuoteDriftRecord.rows(frame)],
        quotes_frame(out["quotes"]) if out["quotes"] else pl.DataFrame(),
        [r for frame in out["quote_dlq"] for r in Rejection.rows(frame)],
    )


class CrashingSource(FixedPartitionedSource[RawBatch, int]):
    """Raw batches from a list, resumable by index, crashing once when it reaches each
    index of `crash_at`: a run that fails mid-way (no snapshot of its last epoch), for
    recovery tests on several workers, where Bytewax's `TestingSource.ABORT()` cannot go."""

    def __init__(self, batches: Sequence[RawBatch], crash_at: Sequence[int]):
        self.batches = list(batches)
        self.crash_at = set(crash_at)

    def list_parts(self) -> list[str]:
        return ["batches"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        return _CrashingPartition(self, resume_state or 0)


class _CrashingPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, source: CrashingSource, start: int):
        self.source = source
        self.next = start

    def next_batch(self) -> list[RawBatch]:
        if self.next in self.source.crash_at:
            self.source.crash_at.discard(self.next)
            raise RuntimeError(f"planned crash before batch {self.next}")
        if self.next >= len(self.source.batches):
            raise StopIteration
        self.next += 1
        return [self.source.batches[self.next - 1]]

    def snapshot(self) -> int:
        return self.next
