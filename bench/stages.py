"""What each stage of the flow costs per trade, each timed on its own over a whole file.

    python -m bench.stages [--shape dense] [--trades 2000000] [--batch-size 100000]

Runs the flow's own functions, stage after stage, on batches of the file (in one thread,
without Bytewax in between) and prints microseconds per trade for each: reading the file,
decoding (the strict read: polars' or Arrow's), splitting by shard of symbols with dedupe keys, then
per shard, as in the flow, dedupe, the fat-finger guard and the candle engine; the
lake's frames and Parquet encoding, and the Kafka sink's JSON. The sum is close to what
the whole flow costs; the difference is Bytewax moving items. Each stage's wall time and
its CPU (every thread of the process: polars' reads and encoders use both cores, which
wall time on an idle machine hides, and a flow that keeps both cores busy runs out of).
"""

from __future__ import annotations

import argparse
import io
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.common import SHAPES, shape_file
from candlewax.metrics import FlowMetrics
from candlewax.records import TRADE
from config.settings import Settings
from operators.candles import CandleSpec, ShardCandles
from operators.decode import ValidationRules, decode_batch
from operators.dedupe import ShardDeduplicator
from operators.price_guard import OutlierRule, ShardGuard
from operators.steps import _DedupeLogic, _GuardLogic, _split
from sinks.kafka import candle_messages
from sinks.lake import CANDLES, TRADES, encode_parquet
from sources.file import NdjsonFileSource


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=list(SHAPES), default="dense")
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--batch-size", type=int, default=100_000)
    args = parser.parse_args()
    path = shape_file(args.shape, args.trades)
    seconds: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)

    def timed(stage: str, action: Callable[..., Any], *arguments: Any) -> Any:
        began, began_cpu = time.perf_counter(), time.process_time()
        result = action(*arguments)
        seconds[stage] += time.perf_counter() - began
        cpu[stage] += time.process_time() - began_cpu
        return result

    rules = ValidationRules(now_ms=lambda: 2**62)
    spec = CandleSpec()
    # The flow's steps, one per shard of symbols, as in the flow.
    metrics = FlowMetrics()
    dedupers: dict[str, _DedupeLogic] = {}
    guards: dict[str, _GuardLogic] = {}
    engines: dict[str, ShardCandles] = {}
    shards = Settings.model_fields["shards"].default
    source = NdjsonFileSource(path, args.batch_size)
    reader = source.build_part("bench", source.list_parts()[0], None)
    while True:
        try:
            batches = timed("read (file source)", reader.next_batch)
        except StopIteration:
            break
        for batch in batches:
            decoded = timed("decode (strict read + value rules)", decode_batch, batch, rules)
            parts = timed("split by shard + dedupe keys", _split, decoded, False, TRADE, shards)
            candles, flagged = [], []
            for key, frame in parts:
                dedupe = dedupers.get(key) or _DedupeLogic(ShardDeduplicator(300_000), metrics)
                guard = guards.get(key) or _GuardLogic(ShardGuard(OutlierRule()), metrics)
                engine = engines.get(key) or ShardCandles(spec, shards=shards)
                dedupers[key], guards[key], engines[key] = dedupe, guard, engine
                kept, _ = timed("dedupe", dedupe.on_batch, [frame])
                if not kept:
                    continue
                (guarded,), _ = timed("fat-finger guard", guard.on_batch, kept)
                if guarded.trades is None:
                    continue
                events = timed("candle engine", engine.on_trades, guarded.trades)
                flagged.append(events.trades)
                if events.candles is not None:
                    candles.append(events.candles)
            timed("lake: trades to Parquet", _parquet, TRADES.to_frame, flagged)
            if candles:
                timed("lake: candles to Parquet", _parquet, CANDLES.to_frame, candles)
                timed("Kafka: candle JSON + keys", _messages, candles)
    total, total_cpu = sum(seconds.values()), sum(cpu.values())
    print(f"[{args.shape}] {args.trades:,} trades, batches of {args.batch_size:,}")
    print(f"  {'':<36} {'wall':>6}  {'CPU':>6}  us/trade (CPU: every thread of the process)")
    per = 1e6 / args.trades
    for stage, spent in seconds.items():
        print(f"  {stage:<36} {spent * per:6.2f}  {cpu[stage] * per:6.2f}  ({spent:5.2f} s)")
    print(f"  {'all stages':<36} {total * per:6.2f}  {total_cpu * per:6.2f}  ({total:5.2f} s)")


def _parquet(to_frame: Callable[[Any], Any], items: Any) -> None:
    encode_parquet(to_frame(items), io.BytesIO())


def _messages(candles: Any) -> int:
    return len(list(candle_messages(candles)))


if __name__ == "__main__":
    main()
