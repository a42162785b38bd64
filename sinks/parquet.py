"""Bytewax sink that writes records into one dataset of the Parquet lake (see `lake`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sinks.lake import LakeDataset, LakeWriter, new_writer_id


class _LakePartition(StatelessSinkPartition[Any]):
    def __init__(self, writer: LakeWriter):
        self.writer = writer

    def write_batch(self, items: list[Any]) -> None:
        self.writer.add(items)

    def close(self) -> None:
        self.writer.close()


class LakeSink(DynamicSink[Any]):
    """Each worker writes its own files; file names never collide across workers."""

    def __init__(
        self, root: Path, dataset: LakeDataset, *, flush_rows: int, flush_interval_ms: int
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LakePartition:
        writer = LakeWriter(
            self.root,
            self.dataset,
            writer_id=new_writer_id(worker_index),
            flush_rows=self.flush_rows,
            flush_interval_ms=self.flush_interval_ms,
            background=True,
        )
        return _LakePartition(writer)
