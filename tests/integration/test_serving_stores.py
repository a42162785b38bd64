"""`python -m bytewax.run flows.ohlcv` with its serving stores on, as an operator runs it:
PostgreSQL is killed and started again mid-run and no row is lost; the tables and Redis
equal the lake; the passwords never appear in the output."""

from __future__ import annotations

import time

import polars as pl
import psycopg
import redis

from tests.processes import flow_env, lake_table, postgres_table, start_flow_process


def rows_in(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as connection:
            found = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(found[0]) if found else 0
    except psycopg.Error:
        return 0


def current_lake_candles(lake) -> pl.DataFrame:
    candles = lake_table(lake, "candles").drop("date")
    newest = candles.sort("revision").unique("bar_id", keep="last")
    return newest.with_columns(pl.col(pl.Datetime).dt.epoch("ms")).sort("bar_id")


def test_a_postgres_crash_mid_run_loses_no_row_and_the_stores_equal_the_lake(
    postgres_server, postgres_dsn, redis_server, redis_url, tmp_path
):
    lake = tmp_path / "lake"
    env = flow_env(
        CANDLEWAX_SOURCE="simulator",
        CANDLEWAX_SIM_TRADES="100000",
        CANDLEWAX_SIM_RATE="2000",
        CANDLEWAX_SIM_SPEED="6",  # 50 s of event time in ~8 s: long enough to crash into
        CANDLEWAX_SIM_SYMBOLS="12",
        CANDLEWAX_SIM_START="2024-08-09T00:00:00",
        CANDLEWAX_SIM_LATE_RATE="0.01",
        CANDLEWAX_RESTATEMENT="true",
        CANDLEWAX_LAKE_DIR=str(lake),
        CANDLEWAX_POSTGRES_DSN=postgres_dsn,
        CANDLEWAX_REDIS_URL=redis_url,
        CANDLEWAX_BATCH_SIZE="500",
    )
    flow = start_flow_process(env)
    deadline = time.monotonic() + 60
    while rows_in(postgres_dsn, "candles") < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert flow.poll() is None, "the flow ended before the crash"
    postgres_server.kill()  # SIGKILL: a crash, not a shutdown
    time.sleep(1.5)
    postgres_server.start()  # crash recovery; the flow's writers retry into it
    output, _ = flow.communicate(timeout=180)
    text = output.decode(errors="replace")
    assert flow.returncode == 0, text[-3000:]
    assert "retrying the batch" in text and "written again after" in text

    expected = current_lake_candles(lake)
    table = postgres_table(postgres_dsn, "candles")
    assert table.height == expected.height > 600
    assert table.select(expected.columns).equals(expected)
    assert table.filter(pl.col("revision") > 0).height > 0

    drift = lake_table(lake, "drift")
    assert (
        postgres_table(postgres_dsn, "drift").height
        == drift.unique(["bar_id", "late_trades", "detected_event_ts"]).height
        > 0
    )

    latest = expected.sort("window_start").unique(["symbol", "resolution"], keep="last")
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        for row in latest.iter_rows(named=True):
            stored = client.hgetall(f"candlewax:candle:{row['symbol']}:{row['resolution']}")
            assert (stored["bar_id"], int(stored["revision"])) == (row["bar_id"], row["revision"])
            assert float(stored["close"]) == row["close"]

    for secret in (postgres_server.password, redis_server.password):
        assert secret not in text
