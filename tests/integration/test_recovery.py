"""Crash and resume: SIGKILL the flow at random points while it reads the real broker,
restart it with Bytewax recovery each time, and check that nothing is lost or doubled."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import msgspec
import polars as pl
import pytest

from candlewax.records import Candle
from tests.factories import RESOLUTIONS, T0, simulated
from tests.kafka_helpers import produce, read_topic
from tests.processes import ROOT, flow_topics, kafka_env, lake_table, postgres_table
from tests.reference import assert_candles_match, reference_candles, reference_trades, valid_trade

pytestmark = [pytest.mark.broker, pytest.mark.slow]
KILLS = 3


def start_flow(env: dict[str, str], recovery: str) -> subprocess.Popen[bytes]:
    # A snapshot every second (the epoch); keep no older snapshots.
    command = [sys.executable, "-m", "bytewax.run", "flows.ohlcv", "-w", "2"]
    command += ["-r", recovery, "-s", "1", "-b", "0"]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_sigkill_and_resume_loses_and_doubles_nothing(broker, tmp_path, postgres_dsn):
    topics = flow_topics(broker, trades_partitions=3)
    messages = simulated(
        400_000,
        rate=2_000,
        seed=21,
        duplicate_rate=0.01,
        disorder_rate=0.03,
        late_rate=0.005,
        malformed_rate=0.01,
    )
    produce(broker.bootstrap, topics["trades"], messages)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"], check=True)
    lake = tmp_path / "lake"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))},
        "PYTHONPATH": str(ROOT),
        "CANDLEWAX_METRICS_PORT": "0",
        "CANDLEWAX_BATCH_SIZE": "500",  # small batches: a run of ~10 s, long enough to kill
        "CANDLEWAX_POSTGRES_DSN": postgres_dsn,
        **kafka_env(broker.bootstrap, topics, lake),
    }
    rng = random.Random(5)
    kills = 0
    while kills < KILLS:
        flow = start_flow(env, str(recovery))
        # After start-up (~1.3 s) and at least one snapshot, at a random point.
        time.sleep(rng.uniform(2.5, 4.0))
        if flow.poll() is not None:
            break  # finished before the kill: the input was too small to kill it often
        flow.send_signal(signal.SIGKILL)
        flow.wait()
        kills += 1
    assert kills == KILLS, f"the flow ended after {kills} kills; give it more input"
    flow = start_flow(env, str(recovery))
    output, _ = flow.communicate(timeout=300)
    assert flow.returncode == 0, output.decode()[-3000:]
    # The last run resumed from the snapshots: it read only what was left of the topic
    # (how much that is depends on how fast the runs before it were: not a timing test).
    received = int(re.search(r"received=(\d+)", output.decode()).group(1))  # type: ignore[union-attr]
    assert 0 < received < len(messages), received

    values = [value for _, value in messages]
    expected = reference_candles(values, 1_000, RESOLUTIONS, ts_max=T0 + 10**9)

    # The lake: every bar, equal to the batch truth; a bar written twice has one value.
    candles = lake_table(lake, "candles")
    fields = ["open", "high", "low", "close", "volume", "vwap", "trade_count"]
    conflicts = (
        candles.group_by("bar_id", "revision")
        .agg(pl.struct(fields).n_unique().alias("versions"))
        .filter(pl.col("versions") > 1)
    )
    assert conflicts.height == 0, conflicts
    unique = candles.unique(["bar_id", "revision", *fields])
    assert unique.height == unique.select("bar_id", "revision").n_unique()
    lake_candles = [
        Candle(
            **{
                **row,
                "window_start": int(row["window_start"].timestamp() * 1000),
                "window_end": int(row["window_end"].timestamp() * 1000),
            }
        )
        for row in unique.drop("date").iter_rows(named=True)
    ]
    assert_candles_match(lake_candles, expected)

    # The candles topic: the same, duplicates (replayed after a resume) equal.
    records = read_topic(broker.bootstrap, topics["candles"])
    on_topic = [msgspec.json.decode(r.value, type=Candle) for r in records]
    by_bar: dict[str, set] = {}
    for candle in on_topic:
        by_bar.setdefault(candle.bar_id, set()).add(msgspec.json.encode(candle))
    assert all(len(v) == 1 for v in by_bar.values()), "a bar_id with two different values"
    assert_candles_match(list({c.bar_id: c for c in on_topic}.values()), expected)

    # The PostgreSQL table: one row per bar, each equal to the batch truth.
    table = postgres_table(postgres_dsn, "candles")
    assert table.height == expected.height
    assert_candles_match(Candle.rows(table.select(list(Candle.frame_schema()))), expected)

    # The DLQ: every rejected message, by its position, in the lake and on the topic.
    invalid = {
        f"kafka:{topics['trades']}/{r.partition}@{r.offset}".encode()
        for r in read_topic(broker.bootstrap, topics["trades"])
        if valid_trade(r.value, 946_684_800_000, T0 + 10**9) is None
    }
    topic_dlq = {r.headers["candlewax.source"] for r in read_topic(broker.bootstrap, topics["dlq"])}
    lake_dlq = {s.encode() for s in lake_table(lake, "dlq").get_column("source")}
    assert topic_dlq == lake_dlq == invalid and len(invalid) > 1_000

    # Drift: the newest record of every base bar counts all its late trades.
    drift = lake_table(lake, "drift").filter(pl.col("resolution") == "1s")
    newest = drift.group_by("bar_id").agg(pl.col("late_trades").max())
    truth = reference_trades(values, 1_000, 1_000, ts_max=T0 + 10**9)
    late = (
        truth.filter(pl.col("late"))
        .group_by(
            pl.concat_str("symbol", pl.lit(":1s:"), pl.col("ts") - pl.col("ts") % 1_000).alias(
                "bar_id"
            )
        )
        .len()
    )
    assert dict(newest.iter_rows()) == dict(late.iter_rows())
    print(
        f"\ncrash test: {kills} SIGKILLs, last run read {received:,} of {len(messages):,}; "
        f"{expected.height:,} candles checked; lake rows {candles.height:,} for {unique.height:,} "
        f"distinct candles (repeats all identical); topic {len(on_topic):,} messages for "
        f"{len(by_bar):,} bars, 0 conflicting; DLQ {len(invalid):,}; drift bars {newest.height:,}"
    )
