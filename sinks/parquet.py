"""Bytewax sink that writes records into one dataset of the Parquet lake (see `lake`).

A partitioned sink, so Bytewax tells each partition when an epoch ends: the partition
writes out what it buffered before its snapshot is taken. Everything before a recovery
snapshot is therefore in files, and a resumed flow replays only what came after: at
least once, and a row written twice is the same row (same `bar_id`, `revision`, values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.lake import LakeDataset, LakeWriter, new_writer_id


class _LakePartition(StatefulSinkPartition[Any, int]):
    def __init__(self, writer: LakeWriter):
        self.writer = writer

    def write_batch(self, values: list[Any]) -> None:
        self.writer.add(values)

    def snapshot(self) -> int:
        self.writer.flush(wait=True)
        return len(self.writer.files_written)

    def close(self) -> None:
        self.writer.close()


class LakeSink(FixedPartitionedSink[Any, int]):
    """`partitions` independent writers per dataset, spread over the workers; items are
    `(key, record)` pairs routed by key (the symbol), so one symbol's rows stay together."""

    def __init__(
        self,
        root: Path,
        dataset: LakeDataset,
        *,
        flush_rows: int,
        flush_interval_ms: int,
        partitions: int = 8,
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms
        self.partitions = partitions

    def list_parts(self) -> list[str]:
        return [f"{self.dataset.name}-{index}" for index in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _LakePartition:
        index = int(for_part.rsplit("-", 1)[1])
        writer = LakeWriter(
            self.root,
            self.dataset,
            writer_id=new_writer_id(index),
            flush_rows=self.flush_rows,
            flush_interval_ms=self.flush_interval_ms,
            background=True,
        )
        return _LakePartition(writer)
