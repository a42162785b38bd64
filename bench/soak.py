"""A live soak: the flow at 20 k trades/s in real time for 10 minutes, memory watched.

    python -m bench.soak [--minutes 10] [--rate 20000] [--symbols 8] [--warmup 3]
                         [--dedupe-horizon 60s] [--drift-retention 60s] [--window 2]
                         [--tolerance-mb 64]

Runs `python -m bytewax.run flows.ohlcv` with the simulator inside it, live (real time),
candles to the embedded broker and everything to a lake, and prints the flow's resident
memory (RSS) and the trades it has received every 30 s. Fails (exit 1) when memory grows
after the warm-up: the median RSS of the last `--window` minutes more than
`--tolerance-mb` above the median of the first `--window` minutes after the warm-up.

RSS is sampled every 5 s and each verdict takes the median of minutes of samples, not
of three: RSS moves by tens of MB within a minute, with what the flow holds (the dedupe
keys of the horizon being filled: glibc's in-use memory cycles 70-135 MB with it at
20 k trades/s; the lake's buffered rows) and what its allocators keep (polars' gives
pages back after 5 s). A climb of 40-80 MB from ~8 minutes in (stop 34, every run) was
glibc's heap filling with free holes (its own counters, `mallinfo2`, sampled in the
flow process: in use cycling with no trend, the heap growing), which the package's
fixed mmap threshold now prevents (`candlewax/heap.py`).

State that is meant to grow with time does so until its horizon: dedupe keeps the keys
of up to two horizons of trades (`CANDLEWAX_DEDUPE_HORIZON`, 5 minutes by default: some
12 M keys at 20 k trades/s) and closed windows are kept for late trades for the drift
retention (`CANDLEWAX_DRIFT_RETENTION`, 10 minutes: the whole soak), so the soak runs
with both at 60 s and a warm-up longer than two horizons; anything that grows after
that is a leak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request

from bench.freshness import start, stderr_tail, stop
from tools.broker import EmbeddedBroker, free_port

SAMPLE_S = 5.0  # how often RSS is sampled
PRINT_EVERY = 6  # samples: a line every 30 s


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def received(port: int) -> int:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("candlewax_messages_received_total "):
            return int(float(line.split()[1]))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=3, help="minutes before memory counts")
    parser.add_argument("--dedupe-horizon", default="60s")
    parser.add_argument("--drift-retention", default="60s")
    parser.add_argument(
        "--window", type=float, default=2, help="minutes of samples each verdict's median takes"
    )
    parser.add_argument("--tolerance-mb", type=float, default=64)
    args = parser.parse_args()
    if args.minutes < args.warmup + 2 * args.window:  # said now, not after the run
        parser.error("--minutes must hold the warm-up and two --window's: run longer")

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as lake:
        broker.create_topics({"candles": 1, "candles.drift": 1, "trades.dlq": 1})
        port = free_port()
        flow = start(
            [sys.executable, "-m", "bytewax.run", "flows.ohlcv"],
            {
                "CANDLEWAX_SOURCE": "simulator",
                "CANDLEWAX_SIM_TRADES": "0",
                "CANDLEWAX_SIM_SPEED": "1",
                "CANDLEWAX_SIM_RATE": str(args.rate),
                "CANDLEWAX_SIM_SYMBOLS": str(args.symbols),
                "CANDLEWAX_DEDUPE_HORIZON": args.dedupe_horizon,
                "CANDLEWAX_DRIFT_RETENTION": args.drift_retention,
                "CANDLEWAX_KAFKA_BROKERS": broker.bootstrap,
                "CANDLEWAX_LAKE_DIR": lake,
                "CANDLEWAX_METRICS_PORT": str(port),
            },
        )
        print(
            f"soak: {args.rate:,.0f} trades/s live, {args.symbols} symbols, "
            f"{args.minutes:g} min (warm-up {args.warmup:g} min), dedupe horizon "
            f"{args.dedupe_horizon}, drift retention {args.drift_retention}",
            flush=True,
        )
        samples: list[tuple[float, float]] = []  # (minutes, RSS MB)
        began = time.monotonic()
        try:
            while (elapsed := time.monotonic() - began) < args.minutes * 60:
                time.sleep(SAMPLE_S - (elapsed % SAMPLE_S))
                if flow.poll() is not None:
                    raise SystemExit(f"the flow stopped:\n{stderr_tail(flow)}")
                minutes = (time.monotonic() - began) / 60
                samples.append((minutes, rss_mb(flow.pid)))
                if len(samples) % PRINT_EVERY:
                    continue
                recent = [mb for _, mb in samples[-PRINT_EVERY:]]
                count = received(port)
                print(
                    f"  {minutes:5.1f} min  RSS {recent[-1]:7.1f} MB  (30 s: "
                    f"{min(recent):.0f}-{max(recent):.0f})  received {count:>12,}"
                    f"  ({count / (minutes * 60):,.0f}/s)",
                    flush=True,
                )
        finally:
            stop(flow)
    first = [mb for at, mb in samples if args.warmup <= at < args.warmup + args.window]
    last = [mb for at, mb in samples if at >= args.minutes - args.window]
    if not first or not last:  # the flow's samples came too late (a stalled machine)
        raise SystemExit("no RSS samples in a window: run longer")
    baseline, final = statistics.median(first), statistics.median(last)
    growth = final - baseline
    print(
        f"memory after the warm-up (median of each {args.window:g} min, {len(first)} and "
        f"{len(last)} samples): {baseline:.0f} MB -> {final:.0f} MB ({growth:+.0f} MB; "
        f"tolerance {args.tolerance_mb:.0f} MB)"
    )
    if growth > args.tolerance_mb:
        print("FAIL: memory grows after the warm-up", file=sys.stderr)
        raise SystemExit(1)
    print("ok: memory flat after the warm-up")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
