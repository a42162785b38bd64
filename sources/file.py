"""An NDJSON file of trade messages, replayed as a bounded stream of raw batches.

One line is one message, kept byte for byte: a blank line is an `empty_message`
rejection and a CRLF file's `\r` stays in the message (JSON reads it as whitespace; the
dead-letter queue keeps the original bytes). `.gz` files are read directly. The
snapshot is the byte offset and line number of the next line, so a resume continues at
the line where the last snapshot was taken.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from candlewax.failures import InputError, fail
from candlewax.records import RawBatch
from candlewax.stopping import stop_requested
from sources.formats.reading import contract_messages, detect_format

READ_BYTES = 16 * 1024 * 1024  # upper bound on one read; batches stop at `batch_size` lines


def open_binary(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class NdjsonFilePartition(StatefulSourcePartition[RawBatch, tuple[int, int]]):
    def __init__(self, path: Path, batch_size: int, resume: tuple[int, int] | None):
        self._file = open_binary(path)
        self._source = f"file:{path}"
        self._batch_size = batch_size
        self._offset, self._line = resume if resume is not None else (0, 0)
        if self._offset:
            self._file.seek(self._offset)
        self._pending = b""  # bytes read past the last whole line
        self._buffered: list[bytes] = []  # whole lines read but not yet handed over
        self._eof = False

    def next_batch(self) -> list[RawBatch]:
        if stop_requested():
            raise StopIteration
        try:
            lines = self._read_lines()
        except (OSError, EOFError) as exc:  # a corrupt .gz, a disk error
            fail(InputError(f"input file {self._source.removeprefix('file:')}", str(exc)))
        if not lines:
            raise StopIteration
        first = self._line + 1
        self._line += len(lines)
        self._offset += sum(map(len, lines)) + len(lines)
        values: list[bytes | None] = lines  # type: ignore[assignment]
        return [RawBatch(self._source, values, range(first, first + len(lines)))]

    def _read_lines(self) -> list[bytes]:
        """Up to `batch_size` whole lines (without newline), split in C from large reads."""
        while len(self._buffered) < self._batch_size and not self._eof:
            chunk = self._file.read(READ_BYTES)
            if not chunk:
                self._eof = True
                if self._pending:
                    self._buffered.append(self._pending)
                    self._pending = b""
                break
            parts = (self._pending + chunk).split(b"\n")
            self._pending = parts.pop()
            self._buffered.extend(parts)
        lines = self._buffered[: self._batch_size]
        del self._buffered[: self._batch_size]
        return lines

    def snapshot(self) -> tuple[int, int]:
        return self._offset, self._line

    def close(self) -> None:
        self._file.close()


class _ConvertedFilePartition(StatefulSourcePartition[RawBatch, tuple[int, int]]):
    """A file in another format, converted to contract messages up front; the snapshot
    is the index of the next message (the same state shape as NDJSON's)."""

    def __init__(
        self,
        path: Path,
        messages: tuple[list[bytes | None], list[int]],
        batch_size: int,
        resume: tuple[int, int] | None,
    ):
        self._values, self._positions = messages
        self._source = f"file:{path}"
        self._batch_size = batch_size
        self._next = resume[1] if resume is not None else 0

    def next_batch(self) -> list[RawBatch]:
        if stop_requested() or self._next >= len(self._values):
            raise StopIteration
        end = min(self._next + self._batch_size, len(self._values))
        batch = RawBatch(
            self._source, self._values[self._next : end], self._positions[self._next : end]
        )
        self._next = end
        return [batch]

    def snapshot(self) -> tuple[int, int]:
        return 0, self._next


class NdjsonFileSource(FixedPartitionedSource[RawBatch, tuple[int, int]]):
    """A whole file is one partition: its order is the input order. NDJSON is streamed;
    CSV, Parquet and the exchange formats `candlewax replay` reads are converted to
    contract messages first (the format is told by the name and, for Parquet, by its
    first bytes), so a Parquet file is never read as lines of text."""

    def __init__(self, path: Path, batch_size: int = 20_000):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"CANDLEWAX_SOURCE_PATH: no such file: {self.path}")
        self.batch_size = batch_size
        self.format = detect_format(self.path)
        # A file that cannot be read stops the start, before the flow runs.
        self._converted = (
            None if self.format == "ndjson" else contract_messages(self.path, self.format)
        )

    def list_parts(self) -> list[str]:
        return [f"file:{self.path.name}"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> StatefulSourcePartition[RawBatch, tuple[int, int]]:
        if self._converted is not None:
            return _ConvertedFilePartition(
                self.path, self._converted, self.batch_size, resume_state
            )
        return NdjsonFilePartition(self.path, self.batch_size, resume_state)
