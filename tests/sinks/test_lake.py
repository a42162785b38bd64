"""The Parquet lake: Hive partitions, zstd, files of many rows, DuckDB reads and prunes."""

from __future__ import annotations

import pickle
import threading
import time

import duckdb
import msgspec
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from candlewax import failures
from candlewax.failures import OutputError
from candlewax.records import TRADE_LAKE_SCHEMA, Candle, FlaggedTrades, bar_id
from sinks import lake as lake_module
from sinks.kafka import candle_messages
from sinks.lake import CANDLES, TRADES, LakeWriter
from sinks.parquet import LakeSink
from tests import factories
from tests.factories import T0, candle_batches, trade, trades_frame
from tests.flow_runs import run_flow

DAY = 86_400_000


def candle(symbol: str, resolution: str, start: int, width: int, price: float = 1.0) -> Candle:
    return Candle(
        symbol,
        resolution,
        start,
        start + width,
        price,
        price,
        price,
        price,
        2.0,
        price,
        3,
        bar_id(symbol, resolution, start),
    )


def lake_bar_ids(lake) -> list[str]:
    """The `bar_id` of every candle row in the lake, sorted (repeats kept)."""
    glob = f"{lake}/candles/**/*.parquet"
    query = f"select bar_id from read_parquet('{glob}', hive_partitioning = true) order by 1"
    return [bar for (bar,) in duckdb.sql(query).fetchall()]


def sample_candles() -> list[Candle]:
    out = []
    for day in range(3):
        for i in range(200):
            out.append(candle("A", "1s", T0 + day * DAY + i * 1000, 1000, 1.0 + i))
            if i % 10 == 0:
                out.append(candle("A", "10s", T0 + day * DAY + i * 1000, 10_000))
    return out


def test_writer_lays_out_hive_partitions_of_zstd_parquet_in_few_files(tmp_path):
    writer = LakeWriter(tmp_path, CANDLES, writer_id="t", flush_rows=10**6)
    writer.add(candle_batches(sample_candles()))
    writer.flush()
    written = writer.files_written
    relative = sorted(str(p.relative_to(tmp_path).parent) for p in written)
    assert relative == [
        f"candles/resolution={r}/date={d}"
        for r in ("10s", "1s")
        for d in ("2023-11-14", "2023-11-15", "2023-11-16")
    ]
    assert len(written) == 6, "one file per partition, not one per candle"
    metadata = pq.ParquetFile(written[0]).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert "resolution" not in pq.read_schema(written[0]).names, "partition values live in the path"
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary files are left behind"


def test_a_write_of_one_partition_is_one_file_of_all_its_rows(tmp_path):
    day_two = [c for c in sample_candles() if c.resolution == "10s" and c.window_start >= T0 + DAY]
    day_two = [c for c in day_two if c.window_start < T0 + 2 * DAY]
    writer = LakeWriter(tmp_path, CANDLES, writer_id="t", flush_rows=10**6)
    writer.add(candle_batches(day_two))
    writer.flush()
    (written,) = writer.files_written
    assert str(written.relative_to(tmp_path).parent) == "candles/resolution=10s/date=2023-11-15"
    table = pq.read_table(written)
    assert table.num_rows == len(day_two) == 20
    assert not {"resolution", "date"} & set(table.column_names)


def test_writer_flushes_by_row_count_and_by_age(tmp_path):
    now = [0.0]
    writer = LakeWriter(
        tmp_path,
        CANDLES,
        writer_id="t",
        flush_rows=300,
        flush_interval_ms=5_000,
        clock=lambda: now[0],
    )
    rows = [c for c in sample_candles() if c.resolution == "1s"][:100]
    writer.add(candle_batches(rows))
    assert writer.files_written == []
    now[0] = 5.0
    writer.add(candle_batches(rows[:1]))
    assert len(writer.files_written) == 1, "five seconds old: flushed"
    writer.add(candle_batches(rows * 3))
    assert len(writer.files_written) == 2, "300 rows: flushed"


def test_duckdb_reads_the_lake_and_prunes_partitions(tmp_path):
    writer = LakeWriter(tmp_path, CANDLES, writer_id="t")
    writer.add(candle_batches(sample_candles()))
    writer.flush()
    glob = f"{tmp_path}/candles/**/*.parquet"
    con = duckdb.connect()
    count = con.execute(
        f"select count(*) from read_parquet('{glob}', hive_partitioning = true) "
        "where resolution = '10s' and date = '2023-11-15'"
    ).fetchone()
    assert count == (20,)
    plan = con.execute(
        f"explain analyze select count(*) from read_parquet('{glob}', hive_partitioning = true) "
        "where resolution = '10s' and date = '2023-11-15'"
    ).fetchall()
    text = "\n".join(str(row[1]) for row in plan)
    # DuckDB's profile shows that it opened 1 of the 6 files: the partition filter pruned 5.
    assert "Scanning Files: 1/6" in text, text
    row = con.execute(
        f"select symbol, resolution, epoch_ms(window_start), bar_id, revision, date "
        f"from read_parquet('{glob}', hive_partitioning = true) where resolution = '1s' "
        "order by window_start limit 1"
    ).fetchone()
    assert row[0] == "A" and row[1] == "1s" and row[3] == f"A:1s:{T0}" and row[4] == 0
    assert row[2] == T0 and str(row[5]) == "2023-11-14"


def test_a_resumed_writer_replaces_the_files_written_after_its_snapshot(tmp_path):
    rows = [c for c in sample_candles() if c.resolution == "1s"][:50]
    before = LakeWriter(tmp_path, CANDLES, writer_id="a", flush_rows=10)
    for start in (0, 10):  # two files before the snapshot
        before.add(candle_batches(rows[start : start + 10]))
    state = before.snapshot()
    for start in (20, 30, 40):  # three more after it, then the process dies
        before.add(candle_batches(rows[start : start + 10]))
    assert len(before.files_written) == 5
    after = LakeWriter(tmp_path, CANDLES, writer_id="new", flush_rows=10)
    after.restore(state)
    after.add(candle_batches(rows[20:]))  # the resumed input replays what came after the snapshot
    after.close()
    assert lake_bar_ids(tmp_path) == sorted(c.bar_id for c in rows), "each row once"


def test_a_snapshot_never_waits_for_a_write_in_flight_and_a_resume_loses_nothing(tmp_path):
    rows = [c for c in sample_candles() if c.resolution == "1s"][:30]
    release = threading.Event()
    before = LakeWriter(tmp_path, CANDLES, writer_id="a", flush_rows=10, background=True)
    write = before._write_partitions
    before._write_partitions = lambda frames: release.wait(30) and write(frames)  # type: ignore[method-assign]
    before.add(candle_batches(rows[:10]))  # a write starts, and hangs
    before.add(candle_batches(rows[10:15]))  # buffered behind it
    began = time.monotonic()
    state = before.snapshot()
    assert time.monotonic() - began < 1.0, "the snapshot waited for the write"
    release.set()
    before.close()  # the hung write lands after the snapshot, then the process dies
    assert len(before.files_written) >= 2
    after = LakeWriter(tmp_path, CANDLES, writer_id="new", flush_rows=10)
    after.restore(state)
    after.add(candle_batches(rows[15:]))  # the input replays what came after the snapshot
    after.close()
    assert lake_bar_ids(tmp_path) == sorted(c.bar_id for c in rows), "each row once"


def test_rows_held_for_a_snapshot_are_written_after_a_restore(tmp_path):
    rows = [c for c in sample_candles() if c.resolution == "1s"][:50]
    before = LakeWriter(tmp_path, CANDLES, writer_id="a", flush_rows=10**6)
    before.add(candle_batches(rows))
    held = before.snapshot().pending
    assert held and before.files_written == [], "buffered, not written: large files stay large"
    after = LakeWriter(tmp_path, CANDLES, writer_id="b")  # a resumed flow's writer
    after.restore(held)
    after.flush()
    assert len(lake_bar_ids(tmp_path)) == 50


def test_a_sum_that_overflows_float64_is_null_in_the_lake_and_in_json(tmp_path, workers):
    # Valid trades (finite, > 0) whose notional price * size overflows float64.
    result = run_flow(
        [
            trade("X", 1e308, 10.0, T0),
            trade("X", 1e308, 1e308, T0 + 1),
            trade("X", 2.0, 1.0, T0 + 5_000),
        ],
        factories.settings(resolutions="1s"),
        workers=workers,
    )
    extreme = next(c for c in result.candles if c.window_start == T0)
    assert (extreme.high, extreme.trade_count) == (1e308, 2)
    batches = candle_batches(result.candles)
    published = [msgspec.json.decode(value) for _, value, _ in candle_messages(batches)]
    assert [c["vwap"] for c in published if c["window_start"] == T0] == [None]
    writer = LakeWriter(tmp_path, CANDLES, writer_id="t")
    writer.add(batches)
    writer.close()
    rows = duckdb.sql(
        f"select volume, vwap from read_parquet('{tmp_path}/candles/**/*.parquet',"
        " hive_partitioning = true) order by window_start"
    ).fetchall()
    assert rows == [(1e308 + 10.0, None), (1.0, 2.0)]


def test_the_flush_interval_holds_on_a_timer_for_a_quiet_stream(tmp_path):
    writer = LakeWriter(
        tmp_path,
        CANDLES,
        writer_id="t",
        flush_rows=1_000_000,
        flush_interval_ms=200,
        background=True,
    )
    writer.add(candle_batches(sample_candles()[:10]))  # then nothing more arrives

    def rows_in_files() -> int:
        return sum(pq.read_table(f).num_rows for f in tmp_path.glob("candles/**/*.parquet"))

    deadline = time.monotonic() + 10
    while rows_in_files() < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows_in_files() == 10, "rows reach the lake within the flush interval, unprompted"
    writer.close()
    assert list(tmp_path.glob("candles/**/*.tmp")) == []


@pytest.mark.parametrize("quiet_flush_ms", [0, 500])
def test_a_bounded_run_writes_what_it_holds_once_rows_stop_coming(tmp_path, quiet_flush_ms):
    # Rows come for a while (more often than the quiet time), then stop: with a quiet
    # time the writer writes them then, without it only at the flush interval (an hour).
    writer = LakeWriter(
        tmp_path,
        CANDLES,
        writer_id="t",
        flush_rows=1_000_000,
        flush_interval_ms=3_600_000,
        background=True,
        quiet_flush_ms=quiet_flush_ms,
    )
    rows = [c for c in sample_candles() if c.resolution == "1s"][:40]
    for start in range(0, 40, 4):
        writer.add(candle_batches(rows[start : start + 4]))
        time.sleep(0.01)
        assert not list(tmp_path.rglob("*.parquet")), "nothing written while rows keep coming"
    landed = _eventually(lambda: len(list(tmp_path.rglob("*.parquet"))) > 0, seconds=3)
    assert landed == (quiet_flush_ms > 0)
    writer.close()
    assert lake_bar_ids(tmp_path) == sorted(c.bar_id for c in rows), "every row, once"


def test_many_small_records_are_held_as_one_frame_and_every_row_lands_once(tmp_path):
    # Live, the trades sink gets a small record per symbol per step; thousands are held
    # between writes. They are made into one frame as they come (one object for the
    # garbage collector to walk, not thousands): every row must still land exactly once,
    # through a snapshot and a resume too.
    records = []
    for step in range(1_500):
        rows = [(T0 + step * 10 + i, 100.0 + step, 1.0) for i in range(2)]
        ids = [step * 2 + i for i in range(2)]
        records.append(FlaggedTrades(trades_frame(rows, ids=ids), np.zeros(2, bool), np.arange(2)))
    before = LakeWriter(tmp_path, TRADES, writer_id="a", flush_rows=10**6)
    for record in records[:1_000]:
        before.add([record])
    assert len(before._pending) < 1_000, "small records are held one by one"
    state = pickle.loads(pickle.dumps(before.snapshot()))  # as Bytewax keeps it
    after = LakeWriter(tmp_path, TRADES, writer_id="b", flush_rows=10**6)
    after.restore(state)
    for record in records[1_000:]:
        after.add([record])
    after.close()
    got = duckdb.sql(
        f"SELECT trade_id FROM read_parquet('{tmp_path}/trades/**/*.parquet') ORDER BY ts"
    ).fetchall()
    assert [int(row[0]) for row in got] == list(range(3_000))


def test_trade_files_read_back_as_the_contract_with_statistics_to_prune_on(tmp_path):
    # Any reader (pyarrow, polars, DuckDB) sees the contract's types, and every column a
    # query filters on (symbol, ts, prices, sequence) has min/max statistics: DuckDB
    # skips the files whose range a filter on `ts` excludes.
    writer = LakeWriter(tmp_path, TRADES, writer_id="t", flush_rows=1_000)
    for part in range(3):  # three files, each a range of ts
        rows = [(T0 + part * 10_000 + i, 100.0 + i % 7, 0.5 + i % 3) for i in range(1_000)]
        ids = [part * 1_000 + i for i in range(1_000)]
        frame = trades_frame(rows, ids=ids)
        writer.add([FlaggedTrades(frame, np.zeros(1_000, bool), np.arange(1_000))])
    writer.close()
    files = sorted(tmp_path.glob("trades/date=*/*.parquet"))
    assert len(files) == 3
    assert pq.read_schema(files[0]).remove_metadata() == TRADE_LAKE_SCHEMA
    group = pq.ParquetFile(files[1]).metadata.row_group(0)
    stats = {group.column(i).path_in_schema: group.column(i).statistics for i in range(9)}
    for name in ("symbol", "ts", "price", "size", "late", "seq"):  # (no side, venue here)
        assert stats[name] is not None and stats[name].has_min_max, name
    assert stats["price"].min == 100.0 and stats["price"].max == 106.0
    assert stats["seq"].min == 0 and stats["seq"].max == 999
    glob = f"{tmp_path}/trades/**/*.parquet"
    query = (
        f"select count(*), min(seq), max(trade_id) from read_parquet('{glob}') "
        f"where ts >= epoch_ms({T0 + 10_000}) and ts < epoch_ms({T0 + 20_000})"
    )
    con = duckdb.connect()
    assert con.execute(query).fetchone() == (1_000, 0, "1999")
    plan = "\n".join(str(row[1]) for row in con.execute(f"explain analyze {query}").fetchall())
    assert "Row Groups Scanned: 1 / 3" in plan, plan  # the other two skipped on statistics


def test_extreme_values_and_any_bytes_read_back_unchanged(tmp_path):
    # Deltas of integers at both ends of int64 overflow; text with NUL and astral
    # characters; bytes that are not UTF-8: every reader gets back what was written.
    extremes = [-(2**63), 2**63 - 1, 0, -(2**63), 2**63 - 1, 5, -1]
    frame = pl.DataFrame(
        {
            "n": extremes,
            "u": pl.Series([0, 2**64 - 1, 1, 2**63, 3, 2**64 - 2, 7], dtype=pl.UInt64),
            "at": pl.Series([*extremes[2:], 0, 0], dtype=pl.Int64).cast(pl.Datetime("ms", "UTC")),
            "text": ["\x00a\U0010ffff", "", "é" * 40, "x", "\x00", "a b", "€"],
            "raw": [b"\xff\x00\xfe", b"", b"\x00" * 20, b"{", b"\xc3", b"a", b"\x80"],
        }
    )
    path = tmp_path / "extreme.parquet"
    lake_module.encode_parquet(frame, path)
    assert pl.read_parquet(path).equals(frame)
    got = duckdb.sql(f"select list(n), list(u), list(raw) from '{path}'").fetchall()
    assert got == [(extremes, frame["u"].to_list(), frame["raw"].to_list())]


@pytest.fixture
def no_failure_yet(monkeypatch):
    """The process's failure state as at the start (`candlewax.failures`), and again after."""
    monkeypatch.setattr(failures._policy, "failure", None)


def _held_sink(tmp_path, partitions: int, release: threading.Event, started: list[str]):
    """A candles LakeSink whose writes record their writer and hang until `release`."""
    sink = LakeSink(
        tmp_path, CANDLES, flush_rows=10**6, flush_interval_ms=600_000, partitions=partitions
    )
    built = [sink.build_part("lake", part, None) for part in sink.list_parts()]
    for partition in built:
        write = partition.writer._write_partitions

        def held(records, write=write, name=partition.writer.writer_id):
            started.append(name)
            release.wait(30)
            return write(records)

        partition.writer._write_partitions = held  # type: ignore[method-assign]
    return built


def test_the_last_writes_at_the_end_run_side_by_side_and_all_land_before_the_last_close(
    tmp_path, no_failure_yet
):
    rows = [c for c in sample_candles() if c.resolution == "1s"][:60]
    release, started = threading.Event(), []
    first, second, third = _held_sink(tmp_path, 3, release, started)
    for index, partition in enumerate((first, second, third)):
        partition.write_batch(candle_batches(rows[index * 20 : (index + 1) * 20]))
    began = time.monotonic()
    first.close()
    second.close()
    assert time.monotonic() - began < 5, "a close that is not the last waited for its write"
    assert _eventually(lambda: len(started) == 2), "both last writes run at once"
    last = threading.Thread(target=third.close)
    last.start()
    last.join(0.5)
    assert last.is_alive(), "the last close returned before the writes landed"
    release.set()
    last.join(30)
    assert not last.is_alive()
    assert lake_bar_ids(tmp_path) == sorted(c.bar_id for c in rows), "every row, once"
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_failed_last_write_of_an_earlier_partition_fails_the_last_close(tmp_path, no_failure_yet):
    release, started = threading.Event(), []
    release.set()
    first, second = _held_sink(tmp_path, 2, release, started)
    first.write_batch(candle_batches(sample_candles()[:5]))
    first.writer._write_partitions = lambda records: 1 / 0  # type: ignore[method-assign]
    first.close()  # starts the write that fails, and does not wait for it
    with pytest.raises(OutputError, match=r"lake dataset 'candles'.*division by zero"):
        second.close()


def test_once_abandoned_a_writer_writes_nothing_more_into_the_lake(tmp_path, monkeypatch):
    """A failing process removes its writers' temporary files and ends at once after. A
    write that had not opened its file yet when that happened created it after, and the
    process's end left it behind: abandoning lets the write on the writer's thread end
    first, and starts no other."""
    release, started = threading.Event(), threading.Event()
    encode = lake_module.encode_parquet

    def held(frame, target):  # the write is under way, its file not opened yet
        started.set()
        release.wait(30)
        encode(frame, target)

    monkeypatch.setattr(lake_module, "encode_parquet", held)
    rows = [c for c in sample_candles() if c.resolution == "1s"]
    writer = LakeWriter(tmp_path, CANDLES, writer_id="t", background=True, flush_interval_ms=0)
    writer.add(candle_batches(rows[:5]))  # one partition: one write
    assert started.wait(10)
    threading.Timer(0.3, release.set).start()
    writer.abandon()
    when_abandoned = sorted(tmp_path.rglob("*"))
    time.sleep(0.6)
    assert sorted(tmp_path.rglob("*")) == when_abandoned, "a file was written after abandon"
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(OSError, match="abandoned"):
        writer.add(candle_batches(rows[5:10]))
        writer.flush()
    assert sorted(tmp_path.rglob("*")) == when_abandoned, "a write started after abandon"


def _eventually(check, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_once_the_process_fails_the_last_close_waits_for_no_write(tmp_path, no_failure_yet):
    release, started = threading.Event(), []
    first, second = _held_sink(tmp_path, 2, release, started)
    first.write_batch(candle_batches(sample_candles()[:5]))
    first.close()  # its last write starts, and hangs
    assert _eventually(lambda: started)
    failures._policy.failure = "a sink failed"  # as `fail` records it
    began = time.monotonic()
    second.close()  # the last: after a failure it abandons, and waits for nothing
    assert time.monotonic() - began < 5
    release.set()
