"""The main job end to end on an embedded broker: simulate -> Kafka -> flows.ohlcv -> outputs.

Starts the Tansu broker on a free loopback port, creates the topics, streams simulated
trades (with duplicates, disorder, late and malformed messages mixed in) into `trades`
and the top-of-book quotes of the same markets (with crossed and locked books) into
`quotes`, runs `python -m bytewax.run flows.ohlcv -w 2` with its quotes branch until the
topics are consumed, then prints what came out (counts, candles and quote bars by
resolution, drift alerts, DuckDB queries over the lake: quote bars next to candles) and
where the outputs are. Everything stops by itself.

`--live`: the pipeline running endlessly in real time, with the dashboard. The flow's
simulators make `--rate` trades/s and the quotes of the same markets as they happen
(with duplicates, disorder, late and malformed messages, crossed and locked books), the
flow publishes candles, forming candles and quote bars to Kafka and the lake, and
`candlewax dashboard` serves the chart at the printed URL until Ctrl-C, which stops the
flow (its lake flushed), the server and the broker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import msgspec
import uvicorn

from config.durations import format_duration
from config.settings import Settings
from sinks.lake import scan, scan_parameters
from sources.simulator import SimulatorConfig, TradeSimulator
from tools.broker import FLOW_TOPICS, QUOTE_TOPICS, EmbeddedBroker, free_port
from tools.children import stop_with_parent
from tools.dashboard import dashboard_topics
from tools.dashboard.app import Dashboard, DashboardConfig
from tools.stores import LocalPostgres, LocalRedis, postgres_available, redis_available
from tools.topics import produce, read_topic

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--trades", type=int, default=300_000, help="simulated trades (default 300000)"
    )
    parser.add_argument("--symbols", type=int, default=12, help="simulated symbols (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="Bytewax workers (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="directory for the lake and logs, emptied first (default ./demo-output)",
    )
    parser.add_argument(
        "--no-stores",
        action="store_true",
        help="without the serving stores (by default a throwaway PostgreSQL and Redis run "
        "when installed, or yours from CANDLEWAX_POSTGRES_DSN / CANDLEWAX_REDIS_URL)",
    )
    parser.set_defaults(
        postgres_dsn=settings.postgres_dsn.get_secret_value(),
        redis_url=settings.redis_url.get_secret_value(),
    )
    live = parser.add_argument_group("the live demo")
    live.add_argument(
        "--live",
        action="store_true",
        help="run endlessly in real time with the dashboard, until Ctrl-C",
    )
    live.add_argument(
        "--rate", type=float, default=1_000.0, help="trades per second (default 1000)"
    )
    live.add_argument("--host", default="127.0.0.1", help="dashboard address (127.0.0.1)")
    live.add_argument("--port", type=int, default=8050, help="dashboard port (8050)")


def say(text: str) -> None:
    print(f"[candlewax demo] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    output: Path = args.output.resolve()
    if output.exists():
        shutil.rmtree(output)
    lake = output / "lake"
    output.mkdir(parents=True)
    if args.live:
        return run_live(args, output, lake)

    with EmbeddedBroker(log_path=output / "tansu.log") as broker, DemoStores(args) as stores:
        say(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
        topics = {**FLOW_TOPICS, **QUOTE_TOPICS}
        broker.create_topics(topics)
        say("topics: " + ", ".join(f"{t} ({n} partitions)" for t, n in topics.items()))

        produced = produce_trades(broker.bootstrap, args)
        flow_seconds = run_flow(broker.bootstrap, lake, output, args.workers, stores.settings())
        say(
            f"flow consumed {produced:,} messages in {flow_seconds:.1f} s "
            f"({produced / flow_seconds:,.0f} messages/s, including start-up)"
        )
        report(broker.bootstrap, lake, output)
        stores.report()
    return 0


# The serving stores' view of the run: the newest 1-minute candles.
NEWEST_CANDLES_SQL = (
    "select symbol, to_char(window_start at time zone 'UTC', 'HH24:MI') as minute, open, high, "
    "low, close, round(volume::numeric, 4) as volume, trade_count as trades, revision "
    "from candles where resolution = '1m' and window_start = "
    "(select max(window_start) from candles where resolution = '1m') order by symbol limit 8"
)
TABLE_COUNTS_SQL = (
    "select 'candles' as tbl, resolution, count(*) as rows, max(revision) as max_revision "
    "from candles group by resolution union all "
    "select 'quote_bars', resolution, count(*), max(revision) from quote_bars group by resolution "
    "union all select 'drift', resolution, count(*), null from drift group by resolution "
    "order by 1, 2"
)


class DemoStores:
    """The serving stores of the demo: yours (CANDLEWAX_POSTGRES_DSN, CANDLEWAX_REDIS_URL),
    else a throwaway PostgreSQL and Redis when installed (stopped with the demo), else
    none, with a word on how to switch them on."""

    def __init__(self, args: argparse.Namespace):
        self.off = bool(args.no_stores)
        self.dsn: str = "" if self.off else args.postgres_dsn
        self.redis_url: str = "" if self.off else args.redis_url
        self.postgres: LocalPostgres | None = None
        self.redis: LocalRedis | None = None

    def __enter__(self) -> DemoStores:
        if self.off:
            return self
        # Started from the main thread before any other: they live as long as the demo.
        if not self.dsn:
            missing = postgres_available()
            if missing:
                say(f"no PostgreSQL tables: {missing}; or set CANDLEWAX_POSTGRES_DSN")
            else:
                self.postgres = LocalPostgres().start()
                self.dsn = self.postgres.dsn
                say(f"throwaway PostgreSQL on {self.postgres.dsn_without_password}")
        if not self.redis_url:
            missing = redis_available()
            if missing:
                say(f"no Redis projection: {missing}; or set CANDLEWAX_REDIS_URL")
            else:
                self.redis = LocalRedis().start()
                self.redis_url = self.redis.url
                say(f"throwaway Redis on 127.0.0.1:{self.redis.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self.postgres, self.redis):
            if server is not None:
                server.stop()

    def settings(self) -> dict[str, str]:
        """The flow's settings for the stores that are on."""
        chosen = {"postgres_dsn": self.dsn, "redis_url": self.redis_url}
        return {name: value for name, value in chosen.items() if value}

    def write_env(self, path: Path) -> None:
        """The stores' addresses, passwords included, in a file only you can read (a
        password is never printed): `source` it, then `psql "$CANDLEWAX_POSTGRES_DSN"`."""
        chosen = {"CANDLEWAX_POSTGRES_DSN": self.dsn, "CANDLEWAX_REDIS_URL": self.redis_url}
        lines = [f"export {name}='{value}'" for name, value in chosen.items() if value]
        if not lines:
            return
        path.touch(mode=0o600)
        path.write_text("\n".join(lines) + "\n")
        say(
            f'serving stores: source {path}; then psql "$CANDLEWAX_POSTGRES_DSN" or '
            'redis-cli -u "$CANDLEWAX_REDIS_URL" hgetall candlewax:candle:BTC-USD:1m'
        )

    def report(self) -> None:
        if self.dsn:
            self._report_postgres()
        if self.redis_url:
            self._report_redis()
        if self.postgres is not None or self.redis is not None:
            say("(the demo's PostgreSQL and Redis are throwaway: they stop with it)")

    def _report_postgres(self) -> None:
        psql = shutil.which("psql")
        env = tool_env()
        target = self.dsn
        if self.postgres is not None:  # the password in the environment, not on display
            target = self.postgres.dsn_without_password
            env["PGPASSWORD"] = self.postgres.password
        say("PostgreSQL: rows per table, and the newest 1-minute candles")
        if psql is None:
            import psycopg

            with psycopg.connect(self.dsn) as connection:
                for query in (TABLE_COUNTS_SQL, NEWEST_CANDLES_SQL):
                    cursor = connection.execute(query.encode())
                    print(" | ".join(c.name for c in cursor.description or []))
                    for row in cursor.fetchall():
                        print(" | ".join(str(v) for v in row))
            return
        shown = target if self.postgres is not None else "$CANDLEWAX_POSTGRES_DSN"
        say(f'  psql {shown} -c "{NEWEST_CANDLES_SQL}"')
        subprocess.run(
            [psql, target, "-X", "-c", TABLE_COUNTS_SQL, "-c", NEWEST_CANDLES_SQL],
            env=env,
            check=False,
        )

    def _report_redis(self) -> None:
        import redis

        with redis.Redis.from_url(self.redis_url, decode_responses=True) as client:
            keys = sorted(client.scan_iter("candlewax:candle:*:1m", count=1_000))[:8]
            say(
                f"Redis: {sum(1 for _ in client.scan_iter('candlewax:*', count=1_000)):,} hashes; "
                "the newest 1-minute candle of each symbol (candlewax:candle:{symbol}:1m):"
            )
            for key in keys:
                candle = client.hgetall(key)
                minute = time.strftime("%H:%M", time.gmtime(int(candle["window_start"]) / 1000))
                print(
                    f"  {key:<32} {minute}  close={candle['close']:<12} "
                    f"trades={candle['trade_count']:<5} revision={candle['revision']}"
                )


def produce_trades(bootstrap: str, args: argparse.Namespace) -> int:
    """Simulated trades into `trades`, then the quotes of the same markets into `quotes`."""
    rate = 2_000.0
    start = int(time.time() * 1000) - int(args.trades / rate * 1000)
    config = SimulatorConfig(
        symbols=args.symbols,
        trades=args.trades,
        rate=rate,
        seed=args.seed,
        start_ms=start,
        duplicate_rate=0.01,
        disorder_rate=0.03,
        late_rate=0.005,
        malformed_rate=0.01,
    )
    simulator = TradeSimulator(config)
    began = time.monotonic()

    def progress(count: int) -> None:
        say(f"produced {count:,} messages ({count / (time.monotonic() - began):,.0f}/s)")

    client = {"bootstrap.servers": bootstrap}
    count = produce(client, "trades", simulator.messages(), progress)
    say(
        f"produced {count:,} messages to 'trades' ({simulator.emitted_trades:,} trades; "
        "~1% duplicates, 3% out of order, 0.5% late, 1% malformed)"
    )
    quoting = dataclasses.replace(
        config, kind="quote", quotes_per_trade=1.0, crossed_rate=0.002, locked_rate=0.002
    )
    quotes = produce(client, "quotes", TradeSimulator(quoting).messages(), progress)
    say(
        f"produced {quotes:,} messages to 'quotes' (top of book around the same prices; "
        "~1% duplicates, 0.5% late, 0.2% crossed and 0.2% locked books)"
    )
    return count + quotes


def tool_env() -> dict[str, str]:
    """This environment without CANDLEWAX_* settings: the demo sets its own."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def flow_env(bootstrap: str, lake: Path, **settings: str) -> dict[str, str]:
    """The demo flow's environment: `tool_env()` plus the flow's settings."""
    return {
        **tool_env(),
        "CANDLEWAX_SOURCE": "kafka",
        "CANDLEWAX_KAFKA_BROKERS": bootstrap,
        "CANDLEWAX_QUOTES_SOURCE": "kafka",
        "CANDLEWAX_LAKE_DIR": str(lake),
        **{f"CANDLEWAX_{name.upper()}": value for name, value in settings.items()},
    }


def flow_command(workers: int) -> list[str]:
    return [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-w", str(workers)]


def run_flow(
    bootstrap: str, lake: Path, output: Path, workers: int, stores: dict[str, str]
) -> float:
    env = flow_env(bootstrap, lake, kafka_tail="false", metrics_port="0", **stores)
    command = flow_command(workers)
    say(
        "running: CANDLEWAX_SOURCE=kafka CANDLEWAX_QUOTES_SOURCE=kafka CANDLEWAX_KAFKA_TAIL=false "
        + " ".join(command[1:])
    )
    began = time.monotonic()
    log_path = output / "flow.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.run(
            command, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    seconds = time.monotonic() - began
    summary = [line for line in log_path.read_text().splitlines() if "run summary" in line]
    summary = [line.replace("run summary, quotes", "run summary (quotes)") for line in summary]
    for line in summary:
        say("flow " + line.split("candlewax: ", 1)[-1])
    if process.returncode != 0:
        raise RuntimeError(f"the flow failed (exit {process.returncode}); see {log_path}")
    return seconds


def report(bootstrap: str, lake: Path, output: Path) -> None:
    client = {"bootstrap.servers": bootstrap}
    candles = read_topic(client, "candles")
    by_resolution = Counter(msgspec.json.decode(r.value or b"")["resolution"] for r in candles)
    dlq = read_topic(client, "trades.dlq")
    drift = [msgspec.json.decode(r.value or b"") for r in read_topic(client, "candles.drift")]
    alerts = sum(1 for d in drift if d["alert"])
    say(
        f"topic 'candles': {len(candles):,} candles "
        + ", ".join(f"{r}: {n:,}" for r, n in sorted(by_resolution.items(), key=lambda kv: kv[0]))
    )
    say(f"topic 'trades.dlq': {len(dlq):,} rejected messages (original bytes, reason in headers)")
    say(f"topic 'candles.drift': {len(drift):,} drift records, {alerts:,} alerts above 0.5 %")
    bars = read_topic(client, "quote_bars")
    bars_by = Counter(msgspec.json.decode(r.value or b"")["resolution"] for r in bars)
    say(
        f"topic 'quote_bars': {len(bars):,} quote bars "
        + ", ".join(f"{r}: {n:,}" for r, n in sorted(bars_by.items(), key=lambda kv: kv[0]))
    )
    quote_dlq = read_topic(client, "quotes.dlq")
    say(f"topic 'quotes.dlq': {len(quote_dlq):,} rejected quotes (crossed/locked books...)")

    con = duckdb.connect()
    glob = f"{lake}/candles/**/*.parquet"
    say("DuckDB over the lake: the five most traded symbols in 1-minute candles")
    con.sql(
        f"""
        select symbol, count(*) as candles, sum(trade_count) as trades,
               round(sum(volume), 2) as volume, min(low) as low, max(high) as high
        from {scan("candles")}
        where resolution = '1m'
        group by symbol order by trades desc limit 5""",
        params=scan_parameters(lake, "candles"),
    ).show()
    say("DuckDB over the lake: the last 1-minute quote bars next to the candles")
    con.sql(
        f"""
        with c as (select * from {scan("candles")} where resolution = '1m'),
             q as (select * from {scan("quote_bars")} where resolution = '1m')
        select c.symbol, strftime(c.window_start, '%H:%M') as minute, c.close,
               q.bid_close as bid, q.ask_close as ask, round(q.close, 6) as mid,
               round(q.spread_twa / q.close * 1e4, 2) as spread_bps, q.quote_count as quotes,
               c.trade_count as trades
        from c join q using (bar_id)
        order by c.window_start desc, c.trade_count desc limit 8""",
        params=scan_parameters(lake, "candles", "quote_bars"),
    ).show()
    say("DuckDB over the lake: rejected messages by reason")
    con.sql(
        f"select reason, count(*) as messages from {scan('dlq')} "
        "group by reason order by messages desc",
        params=scan_parameters(lake, "dlq"),
    ).show()
    say("outputs:")
    for dataset in ("candles", "trades", "drift", "dlq", "quote_bars", "quotes", "quote_drift"):
        files = list((lake / dataset).rglob("*.parquet"))
        say(f"  {lake / dataset}  ({len(files)} Parquet files)")
    say(f"  flow log: {output / 'flow.log'}; broker log: {output / 'tansu.log'}")
    say(
        'query it: python -c "import duckdb; duckdb.sql(\\"select * from read_parquet('
        f"'{glob}', hive_partitioning = true) limit 5\\\").show()\""
    )
    say(
        "watch it live, with the dashboard: .venv/bin/candlewax demo --live "
        "(then open http://127.0.0.1:8050/; Ctrl-C stops it)"
    )


# --- the live demo -----------------------------------------------------------------------
def run_live(args: argparse.Namespace, output: Path, lake: Path) -> int:
    """Broker, the live flow with its endless real-time simulators, and the dashboard,
    until Ctrl-C (or SIGTERM)."""
    signal.signal(signal.SIGTERM, _interrupt)  # a `kill` stops it as cleanly as Ctrl-C
    with EmbeddedBroker(log_path=output / "tansu.log") as broker, DemoStores(args) as stores:
        say(f"embedded Kafka broker (Tansu) on {broker.bootstrap}")
        broker.create_topics({**FLOW_TOPICS, **QUOTE_TOPICS})
        stores.write_env(output / "stores.env")
        metrics_port = free_port()
        children = LiveProcesses(output)
        try:
            # The simulators run inside the flow: Tansu keeps topics in memory and slows
            # with every batch stored, so a paced feed through it falls behind within
            # minutes; the flow's outputs (a few batches a second) it keeps up with.
            env = flow_env(
                broker.bootstrap,
                lake,
                source="simulator",
                quotes_source="simulator",
                sim_trades="0",
                sim_speed="1",
                sim_rate=str(args.rate),
                sim_symbols=str(args.symbols),
                sim_seed=str(args.seed),
                sim_duplicate_rate="0.01",
                sim_disorder_rate="0.03",
                sim_late_rate="0.002",
                sim_malformed_rate="0.005",
                sim_quotes_per_trade="1",
                sim_crossed_rate="0.002",
                sim_locked_rate="0.002",
                metrics_port=str(metrics_port),
                lake_flush_interval="5s",
                live_interval="200ms",
                **stores.settings(),
            )
            children.start("flow", flow_command(args.workers), env)
            say(
                f"the flow simulates {args.rate:,.0f} trades/s and their quotes over "
                f"{args.symbols} symbols in real time ({args.workers} workers, metrics on "
                f":{metrics_port}); candles, forming candles and quote bars go to Kafka and "
                f"the lake; logs in {output}"
            )
            serve_dashboard(args, broker.bootstrap, lake, metrics_port, children)
        except KeyboardInterrupt:
            pass
        finally:
            children.stop()
    say("stopped: flow (lake flushed), dashboard, broker and the throwaway stores")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class LiveProcesses:
    """The live demo's child processes, each in a session of its own so that Ctrl-C in the
    terminal reaches only the demo, which then stops them in order."""

    def __init__(self, output: Path):
        self.output = output
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.output / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                command,
                env=env or tool_env(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # Started before the dashboard's threads: a pre-exec hook is safe then.
                preexec_fn=stop_with_parent,
            )

    def failed(self) -> str | None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                log = self.output / f"{name}.log"
                return f"the {name} process ended (exit {process.returncode}); see {log}"
        return None

    def stop(self, timeout_s: float = 60.0) -> None:
        """Each with Ctrl-C's signal (the flow flushes the lake), killed if it hangs."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_dashboard(
    args: argparse.Namespace, bootstrap: str, lake: Path, metrics_port: int, children: LiveProcesses
) -> None:
    """`candlewax dashboard` in this process, until Ctrl-C or until a child process ends."""
    defaults = Settings.model_construct()  # the topic names the demo's flow uses
    config = DashboardConfig(
        lake=lake,
        resolutions=tuple(format_duration(ms) for ms in defaults.resolutions),
        client_config={"bootstrap.servers": bootstrap},
        topics=dashboard_topics(defaults),
        metrics_urls=(f"http://127.0.0.1:{metrics_port}/metrics",),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            Dashboard(config).app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
        )
    )

    def watch() -> None:
        announced = False
        while not server.should_exit:
            if server.started and not announced:
                announced = True
                say(f"dashboard: http://{args.host}:{args.port}/  (Ctrl-C stops everything)")
            failure = children.failed()
            if failure is not None:
                say(failure)
                server.should_exit = True
            time.sleep(0.5)

    threading.Thread(target=watch, name="demo-watch", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises it again
        pass
    except SystemExit:  # uvicorn could not listen (the port is taken, say)
        say(f"the dashboard could not listen on {args.host}:{args.port}; try --port")
        raise
