"""Bytewax sink that writes records into one dataset of the Parquet lake (see `lake`).

A partitioned sink, so each partition takes part in recovery snapshots: its snapshot
holds the rows it has buffered but not yet written (waiting for a write in flight to
land first). Everything before a snapshot is therefore in a file or in the snapshot, and
a resumed flow writes the held rows and replays only what came after: nothing is lost,
files stay large (the size and age bounds still decide), and a row written twice is the
same row (same `bar_id`, `revision`, values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from sinks.lake import LakeDataset, LakeWriter, new_writer_id


class _LakePartition(StatefulSinkPartition[Any, bytes | None]):
    def __init__(self, writer: LakeWriter):
        self.writer = writer

    def write_batch(self, values: list[Any]) -> None:
        self.writer.add(values)

    def snapshot(self) -> bytes | None:
        return self.writer.pending()

    def close(self) -> None:
        self.writer.close()


class LakeSink(FixedPartitionedSink[Any, bytes | None]):
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

    def build_part(self, step_id: str, for_part: str, resume_state: bytes | None) -> _LakePartition:
        index = int(for_part.rsplit("-", 1)[1])
        writer = LakeWriter(
            self.root,
            self.dataset,
            writer_id=new_writer_id(index),
            flush_rows=self.flush_rows,
            flush_interval_ms=self.flush_interval_ms,
            background=True,
        )
        writer.restore(resume_state)
        return _LakePartition(writer)
