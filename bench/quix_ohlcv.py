"""1 s OHLCV candles with Quix Streams, for `bench.quix_compare` (run in its own venv).

    python bench/quix_ohlcv.py BOOTSTRAP TOPIC COUNT STATE_DIR

Reads COUNT trades from TOPIC (keyed by symbol, JSON per the trade contract, from the
beginning), folds them into 1 s event-time tumbling windows per symbol (open, high, low,
close, volume, trade count) and prints the trades/s from the first trade to the last.
This is the shape of the Quix Streams candle examples; it does no validation, dedupe,
lateness bookkeeping or output, so it is the cheaper job.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from quixstreams import Application


def main() -> None:
    bootstrap, topic_name, count, state_dir = sys.argv[1:5]
    expected = int(count)
    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-bench-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": 6000},
    )
    topic = app.topic(
        topic_name,
        value_deserializer="json",
        timestamp_extractor=lambda value, headers, ts, kind: value["ts"],
    )
    seen = {"n": 0, "first": 0.0, "candles": 0}

    def count_trade(value: dict) -> None:
        if seen["n"] == 0:
            seen["first"] = time.perf_counter()
        seen["n"] += 1
        if seen["n"] >= expected:
            app.stop()

    def initializer(trade: dict) -> dict:
        price = trade["price"]
        return {
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": trade["size"],
            "trades": 1,
        }

    def reducer(bar: dict, trade: dict) -> dict:
        price = trade["price"]
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += trade["size"]
        bar["trades"] += 1
        return bar

    def count_candle(value: dict) -> None:
        seen["candles"] += 1

    sdf = app.dataframe(topic)
    sdf = sdf.update(count_trade)
    sdf = sdf.tumbling_window(timedelta(seconds=1)).reduce(reducer, initializer).final()
    sdf = sdf.update(count_candle)
    app.run()
    seconds = time.perf_counter() - seen["first"]
    print(f"QUIX trades={seen['n']} seconds={seconds:.3f} candles={seen['candles']}", flush=True)


if __name__ == "__main__":
    main()
