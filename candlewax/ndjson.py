"""NDJSON text in bulk: where its lines end, how many of some bytes it holds, `LineBlock`,
a batch of messages kept as the text they were read from, and `json_objects`, the rows
of a frame as JSON objects.

A file source that split each read into one Python `bytes` per line spent 0.34 us a
message doing so (a third of the decode's cost), and the decode joined the lines back
into one text for its strict read. A `LineBlock` is that text with its newlines found
(in numpy, 0.05 us a message): the strict read takes the text as it is, the origin
column is made from it without a Python object per message, and the lines are split
out only when something asks for them one by one (the careful path, a rejection's
bytes).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import polars as pl
import pyarrow as pa

# `pl.from_arrow` imports it on its first call (30-100 ms, measured): the first batch a
# flow decodes paid for it, after every other import was done. Now the import does.
import pyarrow.compute

NEWLINE = ord("\n")
_SCAN_BYTES = 1 << 18  # a piece and its buffers stay in the core's cache


def newline_positions(text: bytes | memoryview) -> np.ndarray:
    """Where each `\\n` of `text` is (int64 offsets, ascending)."""
    hits = np.empty(min(len(text), _SCAN_BYTES), dtype=bool)
    found = [np.empty(0, dtype=np.int64)]
    for start, piece in _pieces(text):
        equal = hits[: len(piece)]
        np.equal(piece, NEWLINE, out=equal)
        found.append(np.flatnonzero(equal) + start)
    return np.concatenate(found)


def byte_counts(text: bytes, wanted: bytes) -> list[int]:
    """How many times `text` holds each byte of `wanted` (a comparison pass a byte, in
    numpy: ~0.01 us a 120-byte message each, 5x faster than `bytes.count`; to know only
    whether a byte is there at all, `bytes.find` is faster still)."""
    size = min(len(text), _SCAN_BYTES)
    hits = np.empty(size, dtype=bool)
    counts = [0] * len(wanted)
    for _, piece in _pieces(text):
        equal = hits[: len(piece)]
        for index, byte in enumerate(wanted):
            np.equal(piece, byte, out=equal)
            counts[index] += int(np.count_nonzero(equal))
    return counts


_MINUS, _ZERO = ord("-"), ord("0")
# What may follow a number's `0`: it is not the number zero if one of these does.
_DIGIT_GOES_ON = np.zeros(256, dtype=bool)
_DIGIT_GOES_ON[list(b"0123456789.eE")] = True


def may_hold_negative_zero(text: bytes) -> bool:
    """Whether `text` holds `-0` not followed by a digit, `.` or an exponent: the number
    minus zero (or a string that looks like it: a false alarm). JSON readers disagree on
    its sign (Arrow reads -0.0, polars 0.0)."""
    data = np.frombuffer(text, dtype=np.uint8)
    size = len(data)
    for start, piece in _pieces(text):
        minus = np.flatnonzero(piece == _MINUS) + start
        if not len(minus):
            continue
        minus = minus[minus + 1 < size]
        zero = minus[data[minus + 1] == _ZERO] + 2
        if not len(zero):
            continue
        if (zero >= size).any() or not _DIGIT_GOES_ON[data[zero]].all():
            return True
    return False


def _pieces(text: bytes | memoryview) -> Iterator[tuple[int, np.ndarray]]:
    """`text` as cache-sized pieces of bytes, each with where it starts. Scans compare a
    piece at a time into one reused buffer: a comparison of the whole text made a
    text-sized array, and its fresh pages cost more than the comparisons."""
    data = np.frombuffer(text, dtype=np.uint8)
    for start in range(0, len(data), _SCAN_BYTES):
        yield start, data[start : start + _SCAN_BYTES]


def json_objects(frame: pl.DataFrame) -> list[bytes]:
    """Each row of `frame` as a JSON object, the bytes `write_ndjson` writes for it.

    `write_ndjson` writes one text for the whole frame, which is then encoded and split
    into a message per row: 1.7 us of CPU a candle (422 ms for 244,543 candles, the
    Kafka candle sink's main cost). Here each row's JSON is one polars string made of
    the column names and the values cast to text (the same float formatting: shortest
    round trip), one pass per column, then a `bytes` per row: ~0.9 us a candle. Text,
    booleans, integers and finite floats (or nulls) only, and text that needs no escape
    (no `"`, `\\` or control character: symbols and bar ids never do): any other frame
    is written by `write_ndjson`, so the bytes are the same either way."""
    if frame.height == 0:
        return []
    schema = frame.schema
    expression = _object_expression(tuple(schema.items()))
    if expression is None or _needs_writer(frame, schema):
        text = frame.write_ndjson()
        return text.encode().split(b"\n")[: frame.height]
    return frame.select(expression).to_series().cast(pl.Binary).to_list()


@functools.lru_cache(maxsize=64)
def _object_expression(columns: tuple[tuple[str, pl.DataType], ...]) -> pl.Expr | None:
    """The expression of each row's JSON object, or None for a column it cannot write."""
    parts: list[pl.Expr] = []
    for index, (name, dtype) in enumerate(columns):
        parts.append(pl.lit(("{" if index == 0 else ",") + json.dumps(name) + ":"))
        column = pl.col(name)
        if dtype == pl.String():
            value = pl.concat_str(pl.lit('"'), column, pl.lit('"'))
        elif dtype == pl.Float64() or dtype == pl.Boolean() or dtype.is_integer():
            value = column.cast(pl.String)
        else:
            return None
        parts.append(value.fill_null("null"))
    parts.append(pl.lit("}"))
    return pl.concat_str(parts).alias("json")


_ESCAPED = r'["\\\x00-\x1f]'  # what JSON text escapes


def _needs_writer(frame: pl.DataFrame, schema: pl.Schema) -> bool:
    """Whether some text needs an escape or some float is not finite (NaN, inf)."""
    texts = [name for name, dtype in schema.items() if dtype == pl.String()]
    floats = [name for name, dtype in schema.items() if dtype == pl.Float64()]
    checks = [pl.col(name).str.contains(_ESCAPED).any() for name in texts]
    checks += [(~pl.col(name).is_finite()).any() for name in floats]
    return bool(checks) and bool(frame.select(pl.any_horizontal(checks)).item())


class LineBlock(Sequence[bytes]):
    """Messages as an NDJSON text holds them: `text` is the lines joined by `\\n` (no
    newline after the last), `newlines` where those newlines are. As a sequence, the
    lines (split once, on first use)."""

    __slots__ = ("_lines", "newlines", "text")

    def __init__(self, text: bytes, newlines: np.ndarray):
        self.text = text
        self.newlines = newlines
        self._lines: list[bytes] | None = None

    @classmethod
    def of(cls, lines: Sequence[bytes]) -> LineBlock:
        """The block of some lines (none of which holds a newline)."""
        text = b"\n".join(lines)
        return cls(text, newline_positions(text))

    def __len__(self) -> int:
        return len(self.newlines) + 1

    def lines(self) -> list[bytes]:
        if self._lines is None:
            self._lines = self.text.split(b"\n")
        return self._lines

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        return self.lines()[index]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.lines())

    def __contains__(self, value: object) -> bool:
        return isinstance(value, bytes) and value in self.lines()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LineBlock):
            return self.text == other.text
        return isinstance(other, Sequence) and self.lines() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each line's first byte in `text` and its length."""
        starts = np.empty(len(self), dtype=np.int64)
        starts[0] = 0
        starts[1:] = self.newlines + 1
        ends = np.empty(len(self), dtype=np.int64)
        ends[:-1] = self.newlines
        ends[-1] = len(self.text)
        return starts, ends - starts

    def binary(self, rows: np.ndarray) -> pl.Series | None:
        """The lines at `rows` as a polars Binary series that points into `text` (a view
        per line, no copy of the bytes), or None where that cannot be done: a line of 12
        bytes or fewer (views hold those inline) or a text past 2 GiB (views hold 32-bit
        offsets); `pl.Series(lines)` then."""
        starts, lengths = self.bounds()
        starts, lengths = starts[rows], lengths[rows]
        if len(self.text) >= 2**31 or (lengths <= 12).any():
            return None
        # A view of a line longer than 12 bytes: its length, its first 4 bytes, the
        # buffer it is in and where (Arrow's binary view layout). The first 4 bytes come
        # as they lie in one gather, of the text seen as a 4-byte word starting at every
        # byte: four gathers of a byte each took ~5 ms of a 100,000-line batch, whose
        # text is not in this core's cache (the read-ahead read it on another).
        words = np.ndarray((len(self.text) - 3,), dtype=np.int32, buffer=self.text, strides=(1,))
        views = np.empty((len(rows), 4), dtype=np.int32)
        views[:, 0] = lengths
        views[:, 1] = words[starts]
        views[:, 2] = 0
        views[:, 3] = starts
        array = pa.Array.from_buffers(
            pa.binary_view(), len(rows), [None, pa.py_buffer(views), pa.py_buffer(self.text)]
        )
        series = pl.from_arrow(array)
        assert isinstance(series, pl.Series)
        return series
