"""The flow with its serving stores on, real servers (PostgreSQL, Redis): the tables hold
the current revision of every bar the flow emitted and every drift record; Redis holds
the newest bar of every symbol and resolution. On 1 and 2 workers, with restatements."""

from __future__ import annotations

from typing import Any

import polars as pl
import psycopg
import pytest
import redis

from candlewax.records import Candle, QuoteBar
from sinks import postgres
from sinks import redis as projection
from tests import factories
from tests.factories import T0
from tests.flow_runs import run_flow
from tests.operators.test_quote_windows import quote_stream
from tests.processes import postgres_table as stored


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    return factories.faulty_stream(12_000, seed=5)


def current(records: list[Any]) -> dict[str, Any]:
    """The highest revision of every bar (the first of equal ones)."""
    newest: dict[str, Any] = {}
    for record in records:
        if record.revision > getattr(newest.get(record.bar_id), "revision", -1):
            newest[record.bar_id] = record
    return newest


def latest_by_series(records: list[Any]) -> dict[str, Any]:
    """The Redis view: per symbol and resolution, the latest window, at its highest revision."""
    latest: dict[str, Any] = {}
    for record in current(records).values():
        key = f"{record.symbol}:{record.resolution}"
        if record.window_start > getattr(latest.get(key), "window_start", -1):
            latest[key] = record
    return latest


def redis_hashes(url: str, kind: str) -> dict[str, dict[str, str]]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        keys = sorted(client.scan_iter(f"candlewax:{kind}:*"))
        return {k.split(":", 2)[2]: client.hgetall(k) for k in keys}


def as_text(record: Any) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in record.as_dict().items()}


def test_the_stores_hold_the_current_candles_and_every_drift_record(
    stream, workers, postgres_dsn, redis_url
):
    target = postgres.PostgresTarget(postgres_dsn)
    store = projection.RedisTarget(redis_url)
    settings = factories.settings(restatement=True, restatement_horizon="10m")
    result = run_flow(
        stream,
        settings,
        workers=workers,
        batch_size=700,
        more_sinks={
            "candles": [
                postgres.PostgresSink(target, postgres.CANDLES),
                projection.RedisSink(store, projection.CANDLES),
            ],
            "drift": [postgres.PostgresSink(target, postgres.DRIFT)],
        },
    )
    newest = current(result.candles)
    assert any(c.revision > 0 for c in newest.values())  # restated candles among them
    expected = Candle.frame(sorted(newest.values(), key=lambda c: c.bar_id))
    table = stored(postgres_dsn, "candles")
    assert table.select(expected.columns).equals(expected)

    drift = stored(postgres_dsn, "drift", "bar_id, late_trades")
    assert result.drift and drift.height == len(result.drift)
    assert sorted(drift.select("bar_id", "late_trades", "corrected_close").rows()) == sorted(
        (d.bar_id, d.late_trades, d.corrected_close) for d in result.drift
    )

    latest = latest_by_series(result.candles)
    assert redis_hashes(redis_url, "candle") == {k: as_text(c) for k, c in latest.items()}


def test_quote_bars_reach_both_stores(postgres_dsn, redis_url):
    target = postgres.PostgresTarget(postgres_dsn)
    store = projection.RedisTarget(redis_url)
    quotes = quote_stream(3_000, seed=3, symbols=4)
    result = run_flow(
        [factories.trade(ts=T0)],
        factories.settings(),
        quotes=quotes,
        more_sinks={
            "quote_bars": [
                postgres.PostgresSink(target, postgres.QUOTE_BARS),
                projection.RedisSink(store, projection.QUOTE_BARS),
            ],
            "quote_drift": [postgres.PostgresSink(target, postgres.QUOTE_DRIFT)],
        },
    )
    expected = QuoteBar.frame(sorted(current(result.quote_bars).values(), key=lambda b: b.bar_id))
    assert expected.height > 100
    assert stored(postgres_dsn, "quote_bars").select(expected.columns).equals(expected)
    drift = stored(postgres_dsn, "quote_drift", "bar_id")
    assert drift.height == len(
        {(d.bar_id, d.late_quotes, d.detected_event_ts) for d in result.quote_drift}
    )
    latest = latest_by_series(result.quote_bars)
    assert redis_hashes(redis_url, "quote_bar") == {k: as_text(b) for k, b in latest.items()}


def test_running_the_same_input_again_changes_no_row(stream, postgres_dsn):
    """A replay (or a resume that repeats an epoch) is idempotent."""
    target = postgres.PostgresTarget(postgres_dsn)
    settings = factories.settings(restatement=True)
    sinks = {"candles": [postgres.PostgresSink(target, postgres.CANDLES)]}
    run_flow(stream, settings, more_sinks=sinks, batch_size=900)
    first = stored(postgres_dsn, "candles")
    run_flow(stream, settings, more_sinks=sinks, batch_size=400)
    assert stored(postgres_dsn, "candles").equals(first)
    assert first.filter(pl.col("revision") > 0).height > 0
    with psycopg.connect(postgres_dsn) as connection:
        (n,) = connection.execute("SELECT count(DISTINCT bar_id) FROM candles").fetchone() or (0,)
    assert n == first.height
