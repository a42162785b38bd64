"""Bytewax sink that writes records into one dataset of the Parquet lake (see `lake`).

A partitioned sink, so each partition takes part in recovery snapshots: its snapshot
holds the writer's name, the number of its next file and the rows it has buffered but
not yet written (waiting for a write in flight to land first). Everything before a
snapshot is therefore in a file or in the snapshot. A resumed flow's writer deletes the
files it wrote after that snapshot, writes the held rows and what the input replays:
nothing is lost, nothing is doubled, and files stay large (the size and age bounds
still decide).

A write that fails (lake not writable, disk full) stops the flow through
`candlewax.failures.fail`, naming the dataset, the lake and the cause; the writer leaves
no temporary file behind, and after a failure `close()` writes nothing more.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from candlewax.failures import OutputError, PipelineError, fail, failure, on_failure
from sinks.lake import LakeDataset, LakeWriter, LakeWriterState, new_writer_id

_T = TypeVar("_T")


class LastWrites:
    """The lake partitions of one flow in this process not closed yet, and the last
    writes of those that are. At the end of a bounded run Bytewax closes a worker's sink
    partitions one after another, and each close used to wait for its own last write
    (a 2 M-trade file's candles: 0.2 s, then the trades', ...: 0.3 s of a 2 s run on
    one core). A close now only starts its partition's last write; the last of the
    flow's partitions in the process to close waits for all of them, so they run side
    by side and every file is in place when the run ends. One for all of a flow's lake
    sinks (`flows.ohlcv.default_sinks`); a sink without one has its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._closed: list[_LakePartition] = []

    def opened(self) -> None:
        with self._lock:
            self._open += 1

    def closed(self, partition: _LakePartition | None) -> None:
        """`partition` has started its last write (None: it writes no more at all);
        once no partition is open, wait for every write started."""
        with self._lock:
            self._open -= 1
            if partition is not None:
                self._closed.append(partition)
            if self._open > 0:
                return
            closed, self._closed = self._closed, []
        if failure() is not None:  # the process is ending: each partition's `abandon`
            return  # removes what its writes left, and nothing is waited for
        for each in closed:
            each._guarded(each.writer.finish)


class _LakePartition(StatefulSinkPartition[Any, LakeWriterState]):
    def __init__(self, writer: LakeWriter, last_writes: LastWrites):
        self.writer = writer
        self.last_writes: LastWrites | None = last_writes
        last_writes.opened()
        on_failure(self.abandon)

    def _guarded(self, action: Callable[[], _T]) -> _T:
        try:
            return action()
        except PipelineError:
            raise
        except Exception as exc:
            _report(self.writer, exc)

    def write_batch(self, values: list[Any]) -> None:
        self._guarded(lambda: self.writer.add(values))

    def snapshot(self) -> LakeWriterState:
        return self._guarded(self.writer.snapshot)

    def close(self) -> None:
        if failure() is not None:
            self.abandon()  # after a failure nothing more is written
            return
        try:
            self._guarded(lambda: self.writer.close(wait=False))
        except BaseException:
            self._leave(started=False)
            raise
        self._leave(started=True)

    def abandon(self) -> None:
        self._leave(started=False)
        self.writer.abandon()

    def _leave(self, started: bool) -> None:
        """Count this partition out of its flow's `LastWrites` (once)."""
        last_writes, self.last_writes = self.last_writes, None
        if last_writes is not None:
            last_writes.closed(self if started else None)


def _report(writer: LakeWriter, error: Exception) -> NoReturn:
    what = f"lake dataset {writer.dataset.name!r} in {writer.root}"
    fail(OutputError(what, f"cannot write: {error}"))


class LakeSink(FixedPartitionedSink[Any, LakeWriterState]):
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
        last_writes: LastWrites | None = None,
        quiet_flush_ms: int = 0,
    ):
        self.root = Path(root)
        self.dataset = dataset
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms
        self.partitions = partitions
        self.last_writes = LastWrites() if last_writes is None else last_writes
        self.quiet_flush_ms = quiet_flush_ms  # `LakeWriter`'s: bounded runs only

    def list_parts(self) -> list[str]:
        return [f"{self.dataset.name}-{index}" for index in range(self.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: LakeWriterState | None
    ) -> _LakePartition:
        index = int(for_part.rsplit("-", 1)[1])
        writer = LakeWriter(
            self.root,
            self.dataset,
            writer_id=new_writer_id(index),
            flush_rows=self.flush_rows,
            flush_interval_ms=self.flush_interval_ms,
            background=True,
            on_timer_error=lambda error: _report(writer, error),
            quiet_flush_ms=self.quiet_flush_ms,
        )
        writer.restore(resume_state)  # the same writer again: its name, files and rows
        return _LakePartition(writer, self.last_writes)
