"""How fresh live candles are, measured from outside: the delay of every 1 s candle on the
`candles` topic after its window could close.

    python -m bench.freshness [--rate 20000] [--symbols 8] [--seconds 60] [--warmup 15]
                              [--source kafka|simulator|broker] [--live-interval 200ms]
                              [--partitions 1] [--timeline]

Starts the embedded broker, `candlewax simulate` publishing `--rate` trades/s in real time
(event time = wall time), and the flow (`python -m bytewax.run flows.ohlcv`, one worker,
tailing the topic). A consumer reads the `candles` topic; each first revision of a 1 s
candle has the delay `Kafka timestamp - window_end - allowed lateness`, the time from the
moment its window could close to the candle being on the topic. The run prints p50, p99
and max over the measured seconds (after the warm-up), and the flow's own
`candlewax_candle_delay_seconds` (handed to the sinks). Target: p99 <= 100 ms.
`--source simulator` runs the simulator inside the flow instead (no trades topic), which
tells the flow's own share of the delay from the feed's. `--source broker` runs no flow:
the consumer reads the `trades` topic itself and prints how long a trade takes from the
simulator's `produce` (its Kafka timestamp) to a consumer, the broker's share of the delay
on this machine.

The flow publishes forming candles to `candles.live` every `--live-interval` (default
200 ms, the flow's default; `0` = off). The run counts them and prints the flow's CPU
time over the measured seconds, so two runs (`--live-interval 0` and the default) show
what the forming candles cost. `--timeline` prints each second's candles' delays.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

import msgspec
import numpy as np
from confluent_kafka import Consumer, KafkaError

from bench.common import ROOT
from tools.broker import EmbeddedBroker, free_port

LATENESS_MS = 1_000


# Each started process's stderr, by pid (`stderr_tail`).
_STDERR: dict[int, IO[bytes]] = {}


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own, its stderr into a temporary file
    (`stderr_tail`, until `stop`). Not a pipe: one that nobody reads until the end fills
    (64 KiB) and then blocks the process at its next log line, which a bench would take
    for a slow flow."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (kept open while the process runs)
    process = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    _STDERR[process.pid] = log
    return process


def stderr_tail(process: subprocess.Popen[bytes], chars: int | None = 3000) -> str:
    """The last `chars` characters (None: all) a process `start` started wrote to its
    stderr, until it is stopped (`stop`)."""
    log = _STDERR.get(process.pid)
    if log is None:
        return ""
    log.seek(0)
    text = log.read().decode(errors="replace")
    return text if chars is None else text[-chars:]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    log = _STDERR.pop(process.pid, None)
    if log is not None:
        log.close()


def flow_delay_quantiles(port: int) -> str:
    """The flow's own histogram for 1 s candles, as text."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = [
        line
        for line in body.splitlines()
        if line.startswith("candlewax_candle_delay_seconds_bucket") and 'resolution="1s"' in line
    ]
    buckets = []
    for line in lines:
        le = line.split('le="', 1)[1].split('"', 1)[0]
        buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0
    if not total:
        return "no candles observed"
    parts = []
    for q in (0.5, 0.99):
        bound = next(le for le, count in buckets if count >= q * total)
        parts.append(f"p{int(q * 100)} <= {bound * 1000:.0f} ms")
    return f"{int(total):,} candles, " + ", ".join(parts)


def print_timeline(window_ends: np.ndarray, delays: np.ndarray, what: str = "candles") -> None:
    """Per window second: how many 1 s candles (`--source broker`: trades produced in
    that second), and their least, median and worst delay. Tells a stall (every candle of
    a second late) from a spread (some late every second), and a trend from either."""
    print(f"window (s)  {what:>7}  min ms  p50 ms  max ms")
    for end in np.unique(window_ends):
        of = delays[window_ends == end]
        second = (end - window_ends.min()) / 1000
        print(
            f"{second:10.0f}  {len(of):7,}  {of.min():6.0f}  {np.median(of):6.0f}  {of.max():6.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20_000)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--source", choices=["kafka", "simulator", "broker"], default="kafka")
    parser.add_argument("--live-interval", default="200ms", help="CANDLEWAX_LIVE_INTERVAL")
    parser.add_argument(
        "--partitions",
        type=int,
        default=1,
        help="of the trades and candles topics (the demo's topics have 4)",
    )
    parser.add_argument(
        "--timeline", action="store_true", help="also the delays of each second's candles"
    )
    args = parser.parse_args()

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as lake:
        partitions = args.partitions
        broker.create_topics({"trades": partitions, "candles": partitions, "candles.live": 1})
        metrics_port = free_port()
        in_flow = {
            "CANDLEWAX_SOURCE": "simulator",
            "CANDLEWAX_SIM_TRADES": "0",
            "CANDLEWAX_SIM_SPEED": "1",
            "CANDLEWAX_SIM_RATE": str(args.rate),
            "CANDLEWAX_SIM_SYMBOLS": str(args.symbols),
        }
        running: dict[str, subprocess.Popen[bytes]] = {}
        if args.source != "broker":
            running["flow"] = start(
                [sys.executable, "-m", "bytewax.run", "flows.ohlcv"],
                {
                    "CANDLEWAX_KAFKA_BROKERS": broker.bootstrap,
                    "CANDLEWAX_LAKE_DIR": lake,
                    "CANDLEWAX_METRICS_PORT": str(metrics_port),
                    "CANDLEWAX_ALLOWED_LATENESS": f"{LATENESS_MS}ms",
                    "CANDLEWAX_LIVE_INTERVAL": args.live_interval,
                    **(in_flow if args.source == "simulator" else {}),
                },
            )
        feed = [
            sys.executable,
            "-m",
            "tools.cli",
            "simulate",
            "--endless",
            "--speed",
            "1",
            "--rate",
            str(args.rate),
            "--symbols",
            str(args.symbols),
            "--brokers",
            broker.bootstrap,
            "--topic",
            "trades",
        ]
        if args.source != "simulator":
            running["simulator"] = start(feed, {})
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "freshness",
                "auto.offset.reset": "latest",
                "session.timeout.ms": 6000,
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # as the flow's consumer (CONSUMER_DEFAULTS)
            }
        )
        consumer.subscribe(["trades"] if args.source == "broker" else ["candles", "candles.live"])
        decode = msgspec.json.Decoder()
        delays: list[float] = []
        window_ends: list[int] = []
        forming = 0
        cpu_at_start: float | None = None
        began = time.monotonic()
        measured_from = began + args.warmup
        print(
            f"simulator at {args.rate:,.0f} trades/s, {args.symbols} symbols, "
            f"{partitions} partition(s); warm-up "
            f"{args.warmup:.0f} s, then {args.seconds:.0f} s measured",
            flush=True,
        )
        try:
            while time.monotonic() < measured_from + args.seconds:
                for name, process in running.items():
                    if process.poll() is not None:
                        raise SystemExit(f"the {name} stopped:\n{stderr_tail(process)}")
                # consume(n, timeout) returns at n messages or at the timeout: short, so
                # the broker mode's receive time is not the wait for a full batch.
                for message in consumer.consume(10_000, 0.005 if args.source == "broker" else 0.2):
                    failed = message.error()
                    if failed is not None:
                        if failed.code() != KafkaError._PARTITION_EOF:
                            print(f"consumer: {failed}", file=sys.stderr)
                        continue
                    if time.monotonic() < measured_from:
                        continue
                    if cpu_at_start is None and "flow" in running:
                        cpu_at_start = cpu_seconds(running["flow"].pid)
                    if message.topic() == "candles.live":
                        forming += 1
                        continue
                    if args.source == "broker":
                        produced = message.timestamp()[1]
                        delays.append(time.time() * 1000 - produced)
                        window_ends.append(produced - produced % 1000)
                        continue
                    candle = decode.decode(message.value() or b"{}")
                    if candle["resolution"] != "1s" or candle["revision"] != 0:
                        continue
                    _, timestamp_ms = message.timestamp()
                    delays.append(timestamp_ms - candle["window_end"] - LATENESS_MS)
                    window_ends.append(candle["window_end"])
            own = "" if args.source == "broker" else flow_delay_quantiles(metrics_port)
            cpu = None
            if cpu_at_start is not None:
                cpu = cpu_seconds(running["flow"].pid) - cpu_at_start
            logged = {name: stderr_tail(process, None) for name, process in running.items()}
        finally:
            consumer.close()
            for process in reversed(running.values()):
                stop(process)
    if not delays:
        raise SystemExit("nothing reached the topic")
    values = np.array(delays)
    p50, p99 = np.percentile(values, [50, 99])
    if args.source == "broker":
        print(f"trades read from the topic: {len(values):,}")
        print(
            f"from produce to a consumer: p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
            f"max {values.max():.0f} ms"
        )
        if args.timeline:
            print_timeline(np.array(window_ends), values, "trades")
        return
    if args.timeline:
        print_timeline(np.array(window_ends), values)
    print(f"1 s candles on the topic: {len(values):,}")
    print(
        f"delay after the window could close: p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {values.max():.0f} ms (target p99 <= 100 ms)"
    )
    print(f"the flow's candlewax_candle_delay_seconds (handed to the sinks): {own}")
    print(
        f"forming candles on candles.live: {forming:,} ({forming / args.seconds:,.0f}/s, "
        f"--live-interval {args.live_interval})"
    )
    for name, text in logged.items():
        lines = text.splitlines()
        if lines:
            print(f"the {name} logged {len(lines):,} lines; the last: {lines[-1][:200]}")
    if cpu is not None:
        trades = args.rate * args.seconds
        print(
            f"the flow's CPU over the measured {args.seconds:.0f} s: {cpu:.1f} s "
            f"({cpu / args.seconds:.0%} of a core, {cpu / trades * 1e6:.2f} us per trade)"
        )


if __name__ == "__main__":
    main()
