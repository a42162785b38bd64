"""Run `python -m bytewax.run flows.ohlcv` as real processes, the way users run it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import polars as pl

from tools.broker import free_port

ROOT = Path(__file__).resolve().parents[1]


def run_flow_processes(
    env: dict[str, str], *, processes: int = 1, workers: int = 1, timeout_s: float = 300
) -> list[str]:
    """Run the flow as `processes` cooperating processes of `workers` workers; return logs."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    base_env.update({"CANDLEWAX_METRICS_PORT": "0", "PYTHONPATH": str(ROOT), **env})
    command = [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-w", str(workers)]
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        commands = [[*command, "-i", str(i), "-a", addresses] for i in range(processes)]
    else:
        commands = [command]
    running = [
        subprocess.Popen(
            c, env=base_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for c in commands
    ]
    logs = []
    for process in running:
        out, _ = process.communicate(timeout=timeout_s)
        text = out.decode(errors="replace")
        logs.append(text)
        assert process.returncode == 0, (
            f"flow process failed ({process.returncode}):\n{text[-4000:]}"
        )
    return logs


def flow_topics(broker, trades_partitions: int = 1, quotes: bool = False) -> dict[str, str]:
    """Fresh topic names for one test (trades, candles, dlq, drift, live; `quotes`: also quotes,
    quote_bars, quotes_dlq, quote_drift), created on `broker`."""
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    roles = ["trades", "candles", "dlq", "drift", "live"]
    if quotes:
        roles += ["quotes", "quote_bars", "quotes_dlq", "quote_drift"]
    topics = {name: f"{prefix}.{name}" for name in roles}
    inputs = ("trades", "quotes")
    broker.create_topics(
        {name: trades_partitions if role in inputs else 1 for role, name in topics.items()}
    )
    return topics


def kafka_env(
    bootstrap: str, topics: dict[str, str], lake_dir: Path, tail: bool = False
) -> dict[str, str]:
    """The settings of a flow reading and writing `topics` (see `flow_topics`)."""
    return {
        "CANDLEWAX_SOURCE": "kafka",
        "CANDLEWAX_KAFKA_BROKERS": bootstrap,
        "CANDLEWAX_KAFKA_TAIL": str(tail).lower(),
        "CANDLEWAX_KAFKA_TRADES_TOPIC": topics["trades"],
        "CANDLEWAX_KAFKA_CANDLES_TOPIC": topics["candles"],
        "CANDLEWAX_KAFKA_DLQ_TOPIC": topics["dlq"],
        "CANDLEWAX_KAFKA_DRIFT_TOPIC": topics["drift"],
        **({"CANDLEWAX_KAFKA_LIVE_TOPIC": topics["live"]} if "live" in topics else {}),
        "CANDLEWAX_LAKE_DIR": str(lake_dir),
        **(
            {
                "CANDLEWAX_QUOTES_SOURCE": "kafka",
                "CANDLEWAX_KAFKA_QUOTES_TOPIC": topics["quotes"],
                "CANDLEWAX_KAFKA_QUOTE_BARS_TOPIC": topics["quote_bars"],
                "CANDLEWAX_KAFKA_QUOTES_DLQ_TOPIC": topics["quotes_dlq"],
                "CANDLEWAX_KAFKA_QUOTE_DRIFT_TOPIC": topics["quote_drift"],
            }
            if "quotes" in topics
            else {}
        ),
    }


def lake_table(lake_dir: Path, dataset: str) -> pl.DataFrame:
    """A lake dataset as DuckDB reads it (hive partitioning on)."""
    glob = f"{lake_dir}/{dataset}/**/*.parquet"
    with duckdb.connect() as con:
        return con.sql(f"select * from read_parquet('{glob}', hive_partitioning = true)").pl()


def postgres_table(dsn: str, table: str, order: str = "bar_id") -> pl.DataFrame:
    """A serving table as the flow's frames have it (timestamps back in epoch ms)."""
    import psycopg

    with psycopg.connect(dsn) as connection:
        cursor = connection.execute(f"SELECT * FROM {table} ORDER BY {order}")
        names = [c.name for c in cursor.description or []]
        rows = cursor.fetchall()
    frame = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return frame.with_columns(pl.col(pl.Datetime).dt.epoch("ms"))


def lake_candles(lake_dir: Path) -> list[tuple]:
    frame = lake_table(lake_dir, "candles")
    return sorted(
        frame.select(
            "bar_id", "open", "high", "low", "close", "volume", "vwap", "trade_count", "revision"
        ).rows()
    )


def flow_env(**settings: str) -> dict[str, str]:
    """The environment of a flow process: this one's, without CANDLEWAX_/BYTEWAX_
    variables, plus `settings` (metrics off unless given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    env.update({"PYTHONPATH": str(ROOT), "CANDLEWAX_METRICS_PORT": "0", **settings})
    return env


def run_flow_command(
    env: dict[str, str], *args: str, timeout_s: float = 180, prefix: tuple[str, ...] = ()
) -> tuple[int, str]:
    """`python -m bytewax.run flows.ohlcv ARGS` to its end: exit code and output."""
    command = [*prefix, sys.executable, "-m", "bytewax.run", "flows.ohlcv", *args]
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, timeout=timeout_s, check=False
    )
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def init_recovery(directory: Path, partitions: int = 1) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(directory), str(partitions)], check=True
    )
    return str(directory)


def start_flow_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """`python -m bytewax.run flows.ohlcv ARGS` in the background (a live flow), output
    captured (stdout and stderr together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.ohlcv", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def file_env(path: Path, lake: Path) -> dict[str, str]:
    """The settings of a flow reading an NDJSON file into a lake."""
    return {
        "CANDLEWAX_SOURCE": "file",
        "CANDLEWAX_SOURCE_PATH": str(path),
        "CANDLEWAX_LAKE_DIR": str(lake),
        "CANDLEWAX_BATCH_SIZE": "3000",
    }


def candlewax(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The `candlewax` command, as a user runs it (with `env` added to a clean environment)."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        env=None if env is None else flow_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
