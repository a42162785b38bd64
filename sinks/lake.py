"""The Parquet lake: Hive-style partitions of zstd Parquet files that DuckDB reads.

Layout (docs/contracts.md):
    candles/resolution=<res>/date=<YYYY-MM-DD>/*.parquet
    trades/date=<YYYY-MM-DD>/*.parquet
    drift/date=<YYYY-MM-DD>/*.parquet
    dlq/date=<YYYY-MM-DD>/*.parquet              (trades' and quotes' rejections)
    quote_bars/resolution=<res>/date=<YYYY-MM-DD>/*.parquet
    quotes/date=<YYYY-MM-DD>/*.parquet           (valid, deduplicated quotes, late flagged)
    quote_drift/date=<YYYY-MM-DD>/*.parquet

Rows are buffered and written in files of many rows (a size or age bound), never a file
per record. A file is written under a hidden temporary name and renamed into place, so a
reader never sees half a file. Partition columns live in the path, not in the files.
Files are written on a background thread (Arrow releases the GIL while it encodes and
compresses), so the flow keeps computing meanwhile; at most one write is in flight. The
age bound holds on a timer too (a ticker thread), so the rows of a quiet stream reach
the lake within the flush interval even when no new rows arrive to trigger a write.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from candlewax.failures import failed_at
from candlewax.records import (
    QUOTE_LAKE_SCHEMA,
    TRADE_LAKE_SCHEMA,
    Candle,
    CandleBatch,
    DriftRecord,
    FlaggedQuotes,
    FlaggedTrades,
    QuoteBar,
    QuoteBarBatch,
    QuoteDriftRecord,
    Rejection,
    candle_frame,
    concat_frames,
    quote_bar_frame,
)

# zstd's level 2: with polars' writer, 16 % less CPU than its default 3 for the trades
# and 23 % for the candles, files 2-3 % larger. With Arrow's writer and the encodings of
# `_encodings` (2 M sparse trades' rows in files of 250,000): levels 1, 2, 3 took 0.40,
# 0.42, 0.45 s for 19.9, 19.4, 18.7 MB.
_ZSTD_LEVEL = 2


def encode_parquet(frame: pl.DataFrame, target: Path | IO[bytes]) -> None:
    """Write `frame` as one Parquet file of the lake: zstd, with min/max statistics
    (DuckDB prunes row groups on them) on every column but those of unique values.

    Arrow's writer, told how to encode each column (`_encodings`): polars' writer
    estimates each column's cardinality and tries a dictionary of each. On 2 M trades'
    lake rows in files of 250,000, polars' took 0.53-0.56 s of CPU for 22.7 MB, this one
    0.41 s for 19.4 MB. No Arrow schema is stored: a reader sees the Parquet types
    (`string`, `timestamp[ms, tz=UTC]`), whatever polars' in-memory ones."""
    dictionary, delta, unique = _encodings(tuple(frame.schema.items()))
    pq.write_table(
        frame.to_arrow(compat_level=pl.CompatLevel.newest()),  # its texts not copied
        target,  # type: ignore[arg-type]
        compression="zstd",
        compression_level=_ZSTD_LEVEL,
        use_dictionary=dictionary,
        column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
        write_statistics=[name for name in frame.columns if name not in unique],
        store_schema=False,
    )


# Text columns of (nearly) unique values: ids and a rejection's detail.
_UNIQUE_TEXT_SUFFIXES = ("_id", "detail")


@functools.lru_cache(maxsize=64)
def _encodings(
    columns: tuple[tuple[str, pl.DataType], ...],
) -> tuple[list[str], list[str], frozenset[str]]:
    """How each column of a lake frame is encoded: text of few values (a symbol, a side,
    a reason) in a dictionary; integers and timestamps (times that rise, sequence
    numbers, counts) as deltas, which then compress to little (2 M trades' `ts` in 0.21
    MB, 2.7 MB before; `seq` in 0.01, 2.0 before); and the columns of unique values
    (ids, details, bytes), given no statistics, which on them cost time and prune
    nothing."""
    text = [name for name, dtype in columns if dtype in (pl.String, pl.Categorical)]
    unique = frozenset(
        name
        for name, dtype in columns
        if dtype == pl.Binary or (name in text and name.endswith(_UNIQUE_TEXT_SUFFIXES))
    )
    delta = [name for name, dtype in columns if dtype.is_integer() or dtype == pl.Datetime]
    return [name for name in text if name not in unique], delta, unique


# How long after a failure the lake writers wait for the writes on their threads to end.
_ABANDON_WAIT_S = 2.0
# Buffered records are made into one frame of lake rows once there are this many (small).
_COMPACT_RECORDS = 512
_TRADE_COLUMNS = [name for name in TRADE_LAKE_SCHEMA.names if name not in ("late", "seq")]
_QUOTE_COLUMNS = [name for name in QUOTE_LAKE_SCHEMA.names if name not in ("late", "seq")]


def trades_frame(batches: Sequence[FlaggedTrades]) -> pl.DataFrame:
    """Flagged trades (from the candle step) as rows of the lake's `trades` dataset."""
    return _flagged_frame([b.trades for b in batches], batches, _TRADE_COLUMNS)


def quotes_frame(batches: Sequence[FlaggedQuotes]) -> pl.DataFrame:
    """Flagged quotes (from the quote bar step) as rows of the lake's `quotes` dataset."""
    return _flagged_frame([b.quotes for b in batches], batches, _QUOTE_COLUMNS)


def _flagged_frame(
    frames: list[pl.DataFrame], batches: Sequence[FlaggedTrades | FlaggedQuotes], columns: list[str]
) -> pl.DataFrame:
    frame = concat_frames(frames).select(columns)
    late = pl.Series("late", np.concatenate([b.late for b in batches]), dtype=pl.Boolean)
    seq = pl.Series("seq", np.concatenate([b.seq for b in batches]), dtype=pl.Int64)
    return frame.with_columns(pl.col("ts").cast(pl.Datetime("ms", "UTC")), late, seq)


@dataclass(frozen=True)
class LakeDataset:
    """One top-level directory of the lake: its rows, partition columns and date column."""

    name: str
    partition_by: tuple[str, ...]
    date_column: str
    to_frame: Callable[[Sequence[Any]], pl.DataFrame]  # batches of records to lake rows


def _candles_frame(batches: Sequence[CandleBatch]) -> pl.DataFrame:
    return Candle.lake_frame([candle_frame(batches)])


def _quote_bars_frame(batches: Sequence[QuoteBarBatch]) -> pl.DataFrame:
    return QuoteBar.lake_frame([quote_bar_frame(batches)])


CANDLES = LakeDataset("candles", ("resolution", "date"), "window_start", _candles_frame)
TRADES = LakeDataset("trades", ("date",), "ts", trades_frame)
DRIFT = LakeDataset("drift", ("date",), "window_start", DriftRecord.lake_frame)
DLQ = LakeDataset("dlq", ("date",), "received_at", Rejection.lake_frame)
QUOTE_BARS = LakeDataset("quote_bars", ("resolution", "date"), "window_start", _quote_bars_frame)
QUOTES = LakeDataset("quotes", ("date",), "ts", quotes_frame)
QUOTE_DRIFT = LakeDataset("quote_drift", ("date",), "window_start", QuoteDriftRecord.lake_frame)
DATASETS = {d.name: d for d in (CANDLES, TRADES, DRIFT, DLQ, QUOTE_BARS, QUOTES, QUOTE_DRIFT)}


def scan(dataset: str) -> str:
    """DuckDB SQL that reads one dataset of the lake, Hive partitions as columns. Its file
    pattern is the named query parameter `$<dataset>` (see `scan_parameters`): paths are
    never quoted into SQL by hand."""
    return f"read_parquet(${dataset}, hive_partitioning = true)"


def scan_parameters(lake: Path, *datasets: str) -> dict[str, str]:
    """The parameters of `scan(dataset)` for each dataset, in the lake at `lake`."""
    return {name: str(Path(lake) / name / "**" / "*.parquet") for name in datasets}


def require_lake(path: Path) -> Path:
    """`path` if it is a candlewax lake (a directory holding at least one of the datasets),
    else `FileNotFoundError` saying so: every command that reads a lake checks this first."""
    path = Path(path)
    if not path.is_dir() or not any((path / name).is_dir() for name in DATASETS):
        expected = ", ".join(f"{name}/" for name in DATASETS)
        raise FileNotFoundError(f"{path}: not a candlewax lake (expected {expected} in it)")
    return path


@dataclass(frozen=True)
class LakeRows:
    """Rows already in the lake's form: many small records made into one frame, or the
    buffered rows of a snapshot of an earlier version."""

    frame: pl.DataFrame

    def __len__(self) -> int:
        return self.frame.height


@dataclass(frozen=True)
class LakeWriterState:
    """A lake writer in a recovery snapshot (see `LakeWriter.snapshot`)."""

    writer_id: str
    next_file: int
    # The records not yet in a file, as the flow handed them over (Bytewax pickles them
    # only when it writes a recovery snapshot); bytes (Arrow IPC) in earlier versions.
    pending: list[Any] | bytes | None


class LakeWriter:
    """Buffers rows of one dataset and writes them as partitioned Parquet files."""

    def __init__(
        self,
        root: Path,
        dataset: LakeDataset,
        *,
        writer_id: str,
        flush_rows: int = 250_000,
        flush_interval_ms: int = 30_000,
        clock: Callable[[], float] = time.monotonic,
        background: bool = False,
        on_timer_error: Callable[[Exception], None] | None = None,
        quiet_flush_ms: int = 0,
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.writer_id = writer_id
        self.flush_rows = flush_rows
        # Each writer flushes a little before the interval ends, at its own point (from
        # its name), so a sink's writers do not all encode Parquet at the same moment.
        spread = 0.75 + 0.25 * (zlib.crc32(writer_id.encode()) % 1000) / 1000
        self.flush_interval_s = flush_interval_ms / 1000.0 * spread
        self._clock = clock
        # Bounded runs: what is buffered is written once no rows have come for this long
        # (0: never). The input has likely ended: a Kafka backfill then confirms its end
        # with `CANDLEWAX_KAFKA_END_CONFIRM` of quiet, and the last files are written
        # meanwhile instead of after it (~0.15 s of a 2 M-trade run from Kafka).
        self.quiet_flush_s = quiet_flush_ms / 1000.0
        self._rows_at = 0.0  # when rows last came
        # Records as the flow handed them over: they become lake rows on the writer's
        # thread when written, so the flow's thread never pays for the conversion.
        self._pending: list[Any] = []
        self._rows = 0
        self._first_at: float | None = None
        self._file_seq = itertools.count()
        self._next_file = 0  # the number of the next file this writer starts
        self._executor = (
            ThreadPoolExecutor(1, f"lake-{dataset.name}", initializer=_yield_to_the_flow)
            if background
            else None
        )
        self._in_flight: Future[list[Path]] | None = None
        self._last: Future[list[Path]] | None = None  # the write `close` started
        # What the write in flight holds, and the number of its first file: a snapshot
        # taken meanwhile counts those rows as not yet written, so it never waits.
        self._in_flight_items: list[Any] = []
        self._in_flight_first_file = 0
        self._writing: set[Path] = set()  # temporary files being written right now
        self._writing_lock = threading.Lock()
        self._abandoned = False  # after a failure: no write starts (`abandon`)
        self.files_written: list[Path] = []
        # The worker and the ticker share the buffer; the lock is held for list moves only
        # (the writing itself happens on the executor's thread).
        self._lock = threading.RLock()
        self._timer_error: Exception | None = None
        self._on_timer_error = on_timer_error
        self._stopped = threading.Event()
        if background and (flush_interval_ms > 0 or quiet_flush_ms > 0):
            threading.Thread(
                target=self._tick, name=f"lake-{dataset.name}-timer", daemon=True
            ).start()

    def _tick(self) -> None:
        period = min(max(self.flush_interval_s / 4, 0.01), 1.0)
        if self.quiet_flush_s > 0:
            period = min(period, max(self.quiet_flush_s / 4, 0.01))
        while not self._stopped.wait(period):
            try:
                with self._lock:
                    if self._first_at is not None and (self._due() or self._quiet()):
                        self.flush(wait=False)
            except Exception as exc:  # reported now, and raised again by the next call
                self._timer_error = exc
                if self._on_timer_error is not None:
                    with contextlib.suppress(Exception):
                        self._on_timer_error(exc)
                return

    def _due(self) -> bool:
        assert self._first_at is not None
        return self._clock() - self._first_at >= self.flush_interval_s

    def _quiet(self) -> bool:
        return self.quiet_flush_s > 0 and self._clock() - self._rows_at >= self.quiet_flush_s

    def _raise_timer_error(self) -> None:
        if self._timer_error is not None:
            raise self._timer_error

    def add(self, records: Sequence[Any]) -> None:
        if records:
            with self._lock:
                self._raise_timer_error()
                self._buffer(list(records))

    def _buffer(self, records: list[Any]) -> None:
        self._rows_at = self._clock()
        self._pending.extend(records)
        self._rows += sum(len(record) for record in records)
        if len(self._pending) >= _COMPACT_RECORDS and self._rows < len(self._pending) * 1_000:
            # Live, records are small (a frame per symbol per step) and a flush interval
            # holds tens of thousands of them: each is a few objects the garbage
            # collector walks at every full collection (70-150 ms pauses of the flow).
            # Made into one frame of lake rows now, they are one object.
            self._pending = [LakeRows(self._rows_of(self._pending))]
        if self._first_at is None:
            self._first_at = self._clock()
        if self._rows >= self.flush_rows or self._due():
            self.flush(wait=False)

    def flush(self, wait: bool = True) -> None:
        """Write what is buffered; with `wait`, return only once every file is in place.
        Without it, never block: while a write is in flight (one at most), the rows stay
        buffered for the next flush, so neither the flow nor a snapshot waits on a write."""
        with self._lock:
            self._raise_timer_error()
            if not wait and self._in_flight is not None and not self._in_flight.done():
                return
            self._collect()  # its errors surface here
            if self._pending:
                first_file, records = self._next_file, self._pending
                self._in_flight = self._write_pending()
                if self._in_flight is not None:
                    self._in_flight_items, self._in_flight_first_file = records, first_file
            if wait:
                self._collect()

    def _write_pending(self) -> Future[list[Path]] | None:
        """Write the buffered records (the buffer starts over): on the writer's thread,
        returning the write, or here without one."""
        records, self._pending, self._rows, self._first_at = self._pending, [], 0, None
        if self._executor is not None:
            return self._executor.submit(self._write_partitions, records)
        self.files_written.extend(self._write_partitions(records))
        return None

    def snapshot(self) -> LakeWriterState:
        """What a resumed writer needs: its name, the number of its next file, and the
        rows not yet in a file. It never waits for a write in flight (that would stall
        the flow at every epoch): the rows of a write that has not landed count as not
        written, and a resumed writer deletes whatever files that write left."""
        with self._lock:
            self._raise_timer_error()
            if self._in_flight is not None and self._in_flight.done():
                self._collect()
            if self._in_flight is not None:
                records = [*self._in_flight_items, *self._pending]
                next_file = self._in_flight_first_file
            else:
                records = list(self._pending)
                next_file = self._next_file
        # The records themselves (immutable): encoding them here cost tens of ms per
        # writer at every epoch, recovery or not.
        return LakeWriterState(self.writer_id, next_file, records or None)

    def restore(self, state: LakeWriterState | list[Any] | bytes | None) -> None:
        """Carry on from a snapshot: the same writer name and file numbers, the rows the
        snapshot held buffered again. Files this writer wrote after the snapshot are
        deleted first: their rows are in the snapshot or come again from the resumed
        input, so a restart never doubles rows in the lake (a crash loop used to)."""
        if isinstance(state, LakeWriterState):
            self.writer_id = state.writer_id
            self._next_file = state.next_file
            self._file_seq = itertools.count(state.next_file)
            self._discard_files_from(state.next_file)
            pending = state.pending
        else:  # a snapshot of an earlier version: pending rows only
            pending = state
        if isinstance(pending, bytes):
            pending = [LakeRows(pl.read_ipc(io.BytesIO(pending)))]
        if pending:
            with self._lock:
                self._buffer(list(pending))

    def _discard_files_from(self, first: int) -> None:
        prefix = f"part-{self.writer_id}-"
        for path in (self.root / self.dataset.name).rglob(f"{prefix}*.parquet"):
            number = path.name.removeprefix(prefix).removesuffix(".parquet")
            if number.isdigit() and int(number) >= first:
                path.unlink(missing_ok=True)

    def close(self, wait: bool = True) -> None:
        """Write what is buffered and stop. Without `wait`, the last write is only
        started (on the writer's thread, after a write in flight): `finish()` waits."""
        self._stopped.set()
        with self._lock:
            self._raise_timer_error()
            if self._pending:  # queued after a write in flight: the writer's thread is one
                self._last = self._write_pending()
        if wait:
            self.finish()

    def finish(self) -> None:
        """Wait for every write this writer started (their errors surface here), then let
        its thread go."""
        with self._lock:
            self._collect()
            if self._last is not None:
                last, self._last = self._last, None
                self.files_written.extend(last.result())
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _collect(self) -> None:
        future, self._in_flight = self._in_flight, None
        self._in_flight_items = []
        if future is not None:
            self.files_written.extend(future.result())

    def _rows_of(self, records: list[Any]) -> pl.DataFrame:
        frames = [r.frame for r in records if isinstance(r, LakeRows)]
        fresh = [r for r in records if not isinstance(r, LakeRows)]
        if fresh:
            frames.append(self.dataset.to_frame(fresh))
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")

    def _write_partitions(self, records: list[Any]) -> list[Path]:
        # The date stays a Date while rows are split (text for every row cost as much as
        # encoding the Parquet); a partition's directory says it as ISO text.
        frame = self._rows_of(records).with_columns(
            pl.col(self.dataset.date_column).dt.date().alias("date")
        )
        written = []
        partition_by = list(self.dataset.partition_by)
        for key, part in _partitions(frame, partition_by).items():
            directory = self.root / self.dataset.name
            for column, value in zip(partition_by, key, strict=True):
                directory = directory / f"{column}={value}"
            written.append(self._write(directory, part.drop(partition_by)))
        return written

    def _write(self, directory: Path, frame: pl.DataFrame) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        number = next(self._file_seq)
        self._next_file = number + 1
        name = f"part-{self.writer_id}-{number:06d}.parquet"
        final = directory / name
        temporary = directory / f".{name}.tmp"
        with self._writing_lock:
            if self._abandoned:  # the process is ending on a failure: no new file
                raise OSError(f"lake writer {self.writer_id} was abandoned after a failure")
            self._writing.add(temporary)
        try:
            encode_parquet(frame, temporary)
            os.replace(temporary, final)
        finally:  # a failed write (disk full...) leaves no half file behind
            self._writing.discard(temporary)
            temporary.unlink(missing_ok=True)
        return final

    def abandon(self) -> None:
        """The process is ending on a failure: no write starts any more, the one on the
        writer's thread is let end (it removes its own temporary file; a full disk fails
        it at once), and what is still being written is removed. Their rows are in the
        last recovery snapshot or come again on resume. Removing the temporary files at
        once was not enough: a write that had not opened its file yet created it after,
        and the process's end left it in the lake."""
        self._stopped.set()
        with self._writing_lock:
            self._abandoned = True
        writes = [write for write in (self._in_flight, self._last) if write is not None]
        if writes:  # every writer waits until the same moment, counted from the failure
            until = (failed_at() or time.monotonic()) + _ABANDON_WAIT_S
            wait_for(writes, timeout=max(0.0, until - time.monotonic()))
        for temporary in list(self._writing):
            temporary.unlink(missing_ok=True)


def _partitions(frame: pl.DataFrame, by: list[str]) -> dict[tuple[Any, ...], pl.DataFrame]:
    """The frame's rows by the values of the `by` columns, in order. A write usually holds
    one partition (a day of one dataset): then the frame as it is, not a copy of every
    row (`partition_by` copies, ~7 % of the CPU of writing the trades)."""
    columns = [frame.get_column(name) for name in by]
    if frame.height and all(not c.has_nulls() and c.min() == c.max() for c in columns):
        return {tuple(c[0] for c in columns): frame}
    return frame.partition_by(by, as_dict=True, maintain_order=True)


def _yield_to_the_flow() -> None:
    """Writer threads run at a lower CPU priority than the flow's own thread (Linux sets
    it per thread): encoding Parquet can wait, a closing window should not."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def new_writer_id(partition: int) -> str:
    """Unique per writer: its partition, its start time and a random tag, so no two
    writers (workers, processes, pods, restarts) ever write the same file name."""
    return f"p{partition:03d}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"
