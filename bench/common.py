"""Shared bench helpers: a cached NDJSON file of simulated trades, timing, flow runs."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bytewax.testing import cluster_main, run_main

from candlewax.heap import freeze_startup
from candlewax.metrics import FlowMetrics
from config.settings import Settings
from flows.ohlcv import build_flow
from sources.simulator import SimulatorConfig, TradeSimulator
from tools.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
START_MS = 1_723_161_600_000  # 2024-08-09T00:00:00Z


# The data shapes every bench runs (`--shape`): trades per 1 s candle decide the cost.
SHAPES: dict[str, dict[str, float]] = {
    # 12 symbols at 5,000 trades/s: ~400 trades per 1 s candle (crypto majors' busy hours)
    "sparse": {"symbols": 12, "rate": 5_000},
    # 4 symbols at 24 trades/s: one 1 s candle per ~6 trades (equity tape, like the real
    # captures in ../shared/data)
    "dense": {"symbols": 4, "rate": 24},
    # 500 symbols at 10,000 trades/s: many small keys (a whole exchange)
    "wide": {"symbols": 500, "rate": 10_000},
}


def shape_file(shape: str, count: int) -> Path:
    preset = SHAPES[shape]
    return trades_file(count, symbols=int(preset["symbols"]), rate=preset["rate"])


def peak_rss_mb() -> float:
    """The peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quotes_file(count: int, symbols: int, rate: float) -> Path:
    """An NDJSON file of about `count` clean simulated quotes (one per trade of a stream
    at `rate` trades/s), made once, then reused."""
    path = DATA / f"quotes-{count}-{symbols}-r{rate:g}.ndjson"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"generating ~{count:,} quotes into {path} ...", flush=True)
    config = SimulatorConfig(
        symbols=symbols, trades=count, rate=rate, seed=1, start_ms=START_MS, kind="quote",
        quotes_per_trade=1.0,
    )  # fmt: skip
    _write_lines(path, (m.value for m in TradeSimulator(config).messages()))
    return path


def _write_lines(path: Path, values: Iterable[bytes]) -> None:
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        chunk: list[bytes] = []
        for value in values:
            chunk.append(value)
            if len(chunk) == 100_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    temporary.rename(path)


def trades_file(
    count: int, symbols: int = 12, seed: int = 1, rate: float = 5_000, **faults: Any
) -> Path:
    """An NDJSON file of `count` simulated trades at `rate` trades/s in all, clean unless
    fault rates are given (made once, then reused). The default is sparse (12 symbols,
    about 100 trades per 1 s candle); `symbols=4, rate=40` is dense, like equity tape
    (about 10 trades per 1 s candle)."""
    name = f"trades-{count}-{symbols}" if not faults else f"faulty-{count}-{symbols}-{seed}"
    if rate != 5_000:
        name += f"-r{rate:g}"
    path = DATA / f"{name}.ndjson"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"generating {count:,} trades into {path} ...", flush=True)
    simulator = TradeSimulator(
        SimulatorConfig(
            symbols=symbols, trades=count, rate=rate, seed=seed, start_ms=START_MS, **faults
        )
    )
    _write_lines(path, (m.value for m in simulator.messages()))
    return path


def timed(label: str, action) -> float:
    began = time.perf_counter()
    action()
    seconds = time.perf_counter() - began
    print(f"  {label}: {seconds:.2f} s", flush=True)
    return seconds


class FirstToLast:
    """When a run's first and last trade were received (the flow's `received` counter,
    looked at every 10 ms from a thread): the span Quix Streams is timed over too, without
    the start, the bounded run's end confirmation or the final flushes."""

    def __init__(self, metrics: FlowMetrics, total: int):
        self._metrics, self._total = metrics, total
        self.first: float | None = None
        self.last: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FirstToLast:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            received = self._metrics.summary()["received"]
            if received and self.first is None:
                self.first = time.perf_counter()
            if received >= self._total:
                self.last = time.perf_counter()
                return

    @property
    def seconds(self) -> float:
        assert self.first is not None and self.last is not None, "not every trade was seen"
        return self.last - self.first


def run_flow_processes(env: dict[str, str], processes: int, workers: int) -> None:
    """Run `python -m bytewax.run flows.ohlcv` as a cluster of local processes."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    command = [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-w", str(workers)]
    full_env = {**os.environ, "CANDLEWAX_METRICS_PORT": "0", "PYTHONPATH": str(ROOT), **env}
    running = [
        subprocess.Popen([*command, "-i", str(i), "-a", addresses], env=full_env, cwd=ROOT)
        for i in range(processes)
    ]
    codes = [p.wait() for p in running]
    if any(codes):
        raise RuntimeError(f"flow processes exited with {codes}")


def run_flow(
    settings: Settings, workers: int = 1, metrics: FlowMetrics | None = None
) -> FlowMetrics:
    metrics = metrics if metrics is not None else FlowMetrics()
    flow = build_flow(settings, metrics=metrics)
    freeze_startup()  # as `python -m bytewax.run flows.ohlcv` does
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return metrics
