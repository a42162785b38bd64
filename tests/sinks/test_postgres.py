"""The PostgreSQL serving tables, against a real server (Debian's `postgresql`, started by
the `postgres_server` fixture): the DDL, exact round trips, revision-aware idempotent
upserts, and what a server restart or a wrong password does to a writer."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pytest

from candlewax.failures import OutputError
from candlewax.records import CANDLE_ROW, Candle, CandleBatch, DriftRecord, candle_frame
from sinks import postgres
from sinks.postgres import CANDLES, DRIFT, PostgresTarget, PostgresWriter, schema_ddl
from tests.factories import T0
from tests.processes import postgres_table as stored

ROOT = Path(__file__).resolve().parents[2]


def candle_batch(symbol: str, starts: list[int], revision: int = 0, price: float = 100.0):
    rows = np.zeros(len(starts), dtype=CANDLE_ROW)
    rows["res"], rows["start"] = 1_000, starts
    rows["open"], rows["high"], rows["low"] = price, price * 1.01, price / 3
    rows["close"] = price + 0.1
    rows["count"], rows["volume"], rows["notional"] = 3, 0.7, price * 0.7 + 1e-9
    rows["revision"] = revision
    return CandleBatch.of_symbol(symbol, rows, ((1_000, "1s"),))


def written(dsn: str, *batches: list, table=CANDLES, **options) -> PostgresWriter:
    writer = PostgresWriter(PostgresTarget(dsn, retry_timeout_ms=30_000), table, **options)
    for batch in batches:
        writer.add(batch)
    writer.close()
    return writer


def test_the_checked_in_ddl_is_the_one_made_from_the_records():
    assert (ROOT / "schemas" / "postgres.sql").read_text() == schema_ddl()


def test_missing_tables_are_created_with_the_records_columns_and_bar_id_as_key(postgres_dsn):
    written(postgres_dsn, [candle_batch("BTC-USD", [T0])])
    with psycopg.connect(postgres_dsn) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'candles' ORDER BY ordinal_position"
        ).fetchall()
        key = connection.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'candles'::regclass "
            "AND i.indisprimary"
        ).fetchall()
        indexes = {
            r[0]
            for r in connection.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'candles'"
            ).fetchall()
        }
    assert [name for name, _ in columns] == Candle.ARROW_SCHEMA.names
    types = dict(columns)
    assert types["window_start"] == "timestamp with time zone"
    assert types["vwap"] == "double precision" and types["trade_count"] == "bigint"
    assert key == [("bar_id",)]
    assert {"candles_symbol_time", "candles_time_brin"} <= indexes


def test_candles_come_back_exactly_as_the_flow_made_them(postgres_dsn):
    batches = [
        candle_batch("BTC-USD", [T0, T0 + 1_000], price=1 / 3),
        candle_batch("ETH-USD", [T0], price=123456.789012345678),
    ]
    written(postgres_dsn, batches)
    expected = candle_frame(batches).sort("bar_id")
    assert stored(postgres_dsn, "candles").equals(
        expected.select(stored(postgres_dsn, "candles").columns)
    )
    # bit for bit, not approximately
    table = stored(postgres_dsn, "candles")
    assert table.get_column("low").to_list() == expected.get_column("low").to_list()


def test_a_vwap_that_is_not_finite_is_stored_as_null(postgres_dsn):
    overflowed = candle_batch("BTC-USD", [T0, T0 + 1_000])
    overflowed.rows["notional"][0] = math.inf  # prices x sizes beyond float64
    written(postgres_dsn, [overflowed])
    table = stored(postgres_dsn, "candles")
    assert table.get_column("vwap").to_list()[0] is None
    assert table.get_column("vwap").to_list()[1] == pytest.approx(100.0)


def test_a_bar_is_replaced_only_by_a_higher_revision(postgres_dsn):
    first = [candle_batch("BTC-USD", [T0, T0 + 1_000], revision=1, price=100.0)]
    lower = [candle_batch("BTC-USD", [T0], revision=0, price=50.0)]
    equal = [candle_batch("BTC-USD", [T0 + 1_000], revision=1, price=60.0)]
    higher = [candle_batch("BTC-USD", [T0], revision=2, price=70.0)]
    written(postgres_dsn, first, lower, equal, higher)
    table = stored(postgres_dsn, "candles")
    assert table.get_column("revision").to_list() == [2, 1]
    assert table.get_column("open").to_list() == [70.0, 100.0]


def test_within_one_batch_the_highest_revision_of_a_bar_wins(postgres_dsn):
    batch = [
        candle_batch("BTC-USD", [T0], revision=3, price=30.0),
        candle_batch("BTC-USD", [T0], revision=1, price=10.0),
    ]
    written(postgres_dsn, batch)
    table = stored(postgres_dsn, "candles")
    assert table.select("revision", "open").rows() == [(3, 30.0)]


def test_sending_the_same_batches_again_changes_nothing(postgres_dsn):
    batches = [candle_batch(f"S{i}", [T0 + k * 1_000 for k in range(50)]) for i in range(20)]
    written(postgres_dsn, batches)
    before = stored(postgres_dsn, "candles")
    writer = written(postgres_dsn, batches, batches)
    assert writer.rows_written == 2_000  # both committed...
    assert stored(postgres_dsn, "candles").equals(before)  # ...and nothing changed
    assert before.height == 1_000


def drift_frame(late: int, corrected_close: float) -> pl.DataFrame:
    record = dict.fromkeys(DriftRecord.frame_schema(), 0.0)
    record.update(
        bar_id=f"BTC-USD:1s:{T0}", symbol="BTC-USD", resolution="1s", window_start=T0,
        window_end=T0 + 1_000, revision=0, late_trades=late, max_lateness_ms=2_000,
        emitted_missing=False, emitted_trade_count=3, corrected_trade_count=3 + late,
        corrected_close=corrected_close, drifted_fields="", alert=False,
        detected_event_ts=T0 + 500,
    )  # fmt: skip
    return DriftRecord.frame([DriftRecord(**record)])


def test_drift_records_are_all_kept_and_each_is_written_once(postgres_dsn):
    records = [drift_frame(1, 101.0), drift_frame(2, 102.0)]
    written(postgres_dsn, records, records, [drift_frame(1, 101.0)], table=DRIFT)
    table = stored(postgres_dsn, "drift", "late_trades")
    assert table.select("late_trades", "corrected_close").rows() == [(1, 101.0), (2, 102.0)]
    assert table.get_column("drifted_fields").to_list() == ["", ""]  # empty, not null
    assert table.get_column("emitted_open").to_list() == [0.0, 0.0]


def test_a_server_restart_mid_run_loses_no_rows_and_counts_none_before_the_commit(
    postgres_server, postgres_dsn
):
    writer = PostgresWriter(PostgresTarget(postgres_dsn, retry_timeout_ms=60_000), CANDLES)
    symbols = [f"S{i:03d}" for i in range(100)]
    sent = 0
    for round_ in range(30):
        batches = [candle_batch(s, [T0 + round_ * 1_000]) for s in symbols]
        writer.add(batches)
        sent += len(batches)
        if round_ == 10:
            writer.flush()
            postgres_server.kill()  # the server is gone; the next writes cannot commit
            committed = writer.rows_written
            writer.add([candle_batch("LATE", [T0])])
            sent += 1
            time.sleep(1.0)
            # not committed, so not counted, and still in what a snapshot would hold
            assert writer.rows_written == committed
            assert any(getattr(b, "symbol", None) == "LATE" for b in writer.pending())
            postgres_server.start()  # same port, same data (after crash recovery)
    writer.close()
    assert writer.rows_written == sent
    with psycopg.connect(postgres_dsn) as connection:
        (count,) = connection.execute("SELECT count(*) FROM candles").fetchone() or (0,)
    assert count == sent == 30 * 100 + 1


def test_a_wrong_password_stops_at_once_without_showing_it(postgres_server, postgres_dsn):
    wrong = postgres_dsn.replace(postgres_server.password, "not-the-pass-word")
    errors: list[BaseException] = []
    writer = PostgresWriter(
        PostgresTarget(wrong, retry_timeout_ms=300_000), CANDLES, on_error=errors.append
    )
    started = time.monotonic()
    writer.add([candle_batch("BTC-USD", [T0])])
    with pytest.raises(OutputError) as raised:
        writer.close()
    assert time.monotonic() - started < 20  # not the 5-minute retry
    assert "password authentication failed" in str(raised.value)
    assert "candles" in str(raised.value)
    assert errors and errors[0] is raised.value


def test_a_server_that_stays_away_past_the_retry_timeout_stops_the_writer(postgres_server):
    from tools.broker import free_port

    dsn = f"postgresql://candlewax:x@127.0.0.1:{free_port()}/candlewax"  # nothing listens
    writer = PostgresWriter(PostgresTarget(dsn, retry_timeout_ms=1_500), CANDLES)
    writer.add([candle_batch("BTC-USD", [T0])])
    with pytest.raises(OutputError, match="still failing after"):
        writer.close()
    assert writer.rows_written == 0


def test_a_database_that_cannot_keep_up_makes_the_flow_wait_not_grow(postgres_dsn):
    release = threading.Event()
    target = PostgresTarget(postgres_dsn)
    writer = PostgresWriter(target, CANDLES, max_pending_rows=10, max_write_rows=5)
    original = writer._commit

    def slow_commit(data: bytes) -> None:
        release.wait(10)
        original(data)

    writer._commit = slow_commit  # type: ignore[method-assign]
    writer.add([candle_batch("A", [T0 + k * 1_000 for k in range(5)])])  # taken, in flight
    writer.add([candle_batch("B", [T0 + k * 1_000 for k in range(10)])])  # queued: at the bound
    waited = threading.Event()

    def add_more() -> None:
        writer.add([candle_batch("C", [T0])])  # over the bound: waits
        waited.set()

    threading.Thread(target=add_more, daemon=True).start()
    assert not waited.wait(0.5)
    release.set()
    assert waited.wait(10)
    writer.close()
    assert writer.rows_written == 16


def test_a_password_in_the_dsn_is_a_secret_of_the_settings():
    from config.settings import load_settings

    settings = load_settings(
        for_flow=False,
        postgres_dsn="postgresql://me:s3cret-pw@db.example:5432/market",
        redis_url="redis://:r3dis-pw@cache:6379/0",
        postgres_password="other-pw",
    )
    assert {"s3cret-pw", "r3dis-pw", "other-pw"} <= set(settings.secrets())
    assert "s3cret-pw" not in repr(settings)
    libpq = load_settings(for_flow=False, postgres_dsn="host=db user=me password='a b c'")
    assert "a b c" in libpq.secrets()


def test_the_module_prints_the_ddl():
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "sinks.postgres"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0 and shown.stdout == postgres.schema_ddl()
