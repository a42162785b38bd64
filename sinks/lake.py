"""The Parquet lake: Hive-style partitions of zstd Parquet files that DuckDB reads.

Layout (../shared/DESIGN.md):
    candles/resolution=<res>/date=<YYYY-MM-DD>/*.parquet
    trades/date=<YYYY-MM-DD>/*.parquet
    drift/date=<YYYY-MM-DD>/*.parquet
    dlq/date=<YYYY-MM-DD>/*.parquet

Rows are buffered and written in files of many rows (a size or age bound), never a file
per record. A file is written under a hidden temporary name and renamed into place, so a
reader never sees half a file. Partition columns live in the path, not in the files.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from candlewax.records import TRADE_LAKE_SCHEMA, Candle, DriftRecord, FlaggedTrades, Rejection


def trades_to_arrow(batches: Sequence[FlaggedTrades]) -> pa.Table:
    """Flagged trades (from the candle step) as the lake's trade table."""
    frame = pl.concat([b.trades for b in batches], how="vertical_relaxed", rechunk=True)
    late = pl.Series("late", np.concatenate([b.late for b in batches]), dtype=pl.Boolean)
    columns = [name for name in TRADE_LAKE_SCHEMA.names if name != "late"]
    return frame.select(columns).with_columns(late).to_arrow().cast(TRADE_LAKE_SCHEMA)


@dataclass(frozen=True)
class LakeDataset:
    """One top-level directory of the lake: its records, partition columns and date column."""

    name: str
    partition_by: tuple[str, ...]
    date_column: str
    to_arrow: Callable[[Sequence[Any]], pa.Table]


CANDLES = LakeDataset("candles", ("resolution", "date"), "window_start", Candle.to_arrow)
TRADES = LakeDataset("trades", ("date",), "ts", trades_to_arrow)
DRIFT = LakeDataset("drift", ("date",), "window_start", DriftRecord.to_arrow)
DLQ = LakeDataset("dlq", ("date",), "received_at", Rejection.to_arrow)
DATASETS = {d.name: d for d in (CANDLES, TRADES, DRIFT, DLQ)}


class LakeWriter:
    """Buffers Arrow tables of one dataset and writes them as partitioned Parquet files."""

    def __init__(
        self,
        root: Path,
        dataset: LakeDataset,
        *,
        writer_id: str,
        flush_rows: int = 250_000,
        flush_interval_ms: int = 30_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.writer_id = writer_id
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_ms / 1000.0
        self._clock = clock
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._first_at: float | None = None
        self._file_seq = itertools.count()
        self.files_written: list[Path] = []

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._tables.append(table)
        self._rows += table.num_rows
        if self._first_at is None:
            self._first_at = self._clock()
        if self._rows >= self.flush_rows or self._clock() - self._first_at >= self.flush_interval_s:
            self.flush()

    def flush(self) -> list[Path]:
        if not self._tables:
            return []
        table = pa.concat_tables(self._tables)
        self._tables, self._rows, self._first_at = [], 0, None
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.with_columns(
            pl.col(self.dataset.date_column).dt.date().cast(pl.String).alias("date")
        )
        written = []
        for key, part in frame.partition_by(
            list(self.dataset.partition_by), as_dict=True, maintain_order=True
        ).items():
            directory = self.root / self.dataset.name
            for column, value in zip(self.dataset.partition_by, key, strict=True):
                directory = directory / f"{column}={value}"
            written.append(self._write(directory, part.drop(list(self.dataset.partition_by))))
        self.files_written.extend(written)
        return written

    def _write(self, directory: Path, frame: pl.DataFrame) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{self.writer_id}-{next(self._file_seq):06d}.parquet"
        final = directory / name
        temporary = directory / f".{name}.tmp"
        frame.write_parquet(temporary, compression="zstd", statistics=True)
        os.replace(temporary, final)
        return final


def new_writer_id(worker_index: int) -> str:
    """Unique per sink instance: worker index, start time and a random tag (no collisions
    between workers, processes, pods or restarts)."""
    return f"w{worker_index:03d}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}"
