"""An NDJSON file of trade messages, replayed as a bounded stream of raw batches.

One line is one message (blank lines are skipped); `.gz` files are read directly. The
snapshot is the byte offset and line number of the next line, so a resume continues at
the line where the last snapshot was taken.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from candlewax.records import RawBatch

AVERAGE_LINE_BYTES = 128


def open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115


class NdjsonFilePartition(StatefulSourcePartition[RawBatch, tuple[int, int]]):
    def __init__(self, path: Path, batch_size: int, resume: tuple[int, int] | None):
        self._file = open_binary(path)
        self._source = f"file:{path}"
        self._batch_size = batch_size
        self._offset, self._line = resume if resume is not None else (0, 0)
        if self._offset:
            self._file.seek(self._offset)

    def next_batch(self) -> list[RawBatch]:
        lines = self._file.readlines(self._batch_size * AVERAGE_LINE_BYTES)
        if not lines:
            raise StopIteration
        first = self._line + 1
        self._line += len(lines)
        self._offset += sum(map(len, lines))
        values: list[bytes | None] = []
        positions: list[int] = []
        for number, line in enumerate(lines, first):
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                values.append(stripped)
                positions.append(number)
        return [RawBatch(self._source, values, positions)] if values else []

    def snapshot(self) -> tuple[int, int]:
        return self._offset, self._line

    def close(self) -> None:
        self._file.close()


class NdjsonFileSource(FixedPartitionedSource[RawBatch, tuple[int, int]]):
    """A whole file is one partition: its order is the input order."""

    def __init__(self, path: Path, batch_size: int = 20_000):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"CANDLEWAX_SOURCE_PATH: no such file: {self.path}")
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [f"file:{self.path.name}"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> NdjsonFilePartition:
        return NdjsonFilePartition(self.path, self.batch_size, resume_state)
