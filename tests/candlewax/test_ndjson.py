"""NDJSON text in bulk: its newlines and bytes found in pieces, and `LineBlock`, a
batch kept as the text it was read from."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from candlewax import ndjson
from candlewax.ndjson import LineBlock, byte_counts, newline_positions

TEXTS = [
    b"",
    b"\n",
    b"{}",
    b'{"a":[1,{"b":2}]}\n\n{"c":"[{"}\n',
    bytes(range(256)) * 3,  # every byte value, `{` and `[` among them
]


@pytest.mark.parametrize("piece", [1, 3, 64, 1 << 18])
@pytest.mark.parametrize("text", TEXTS)
def test_newlines_and_bytes_are_found_and_counted_across_pieces(monkeypatch, text, piece):
    monkeypatch.setattr(ndjson, "_SCAN_BYTES", piece)
    expected = [i for i, byte in enumerate(text) if byte == ord("\n")]
    assert newline_positions(text).tolist() == expected
    wanted = b'{["\\:\x00'
    assert byte_counts(text, wanted) == [text.count(bytes([byte])) for byte in wanted]


@pytest.mark.parametrize(
    "lines", [[b""], [b"", b""], [b'{"a":1}', b"", b"\r", b"\xff"], [b"x" * 40] * 3]
)
def test_a_block_is_its_lines(lines):
    block = LineBlock.of(lines)
    assert len(block) == len(lines)
    assert list(block) == lines and block == lines
    assert block[1:] == lines[1:] and block[-1] == lines[-1]
    assert (None in block, lines[-1] in block) == (False, True)


def test_the_binary_column_points_at_each_line_s_bytes():
    lines = [b'{"symbol":"A","n":%d}' % i + b"x" * (i % 7) for i in range(1_000)]
    block = LineBlock.of(lines)
    rows = np.array([999, 0, 500, 500, 3])
    series = block.binary(rows)
    assert series is not None
    assert series.dtype == pl.Binary
    assert series.to_list() == [lines[i] for i in rows]
    # Gathered, filtered and compared as any Binary column.
    assert series.gather([1]).to_list() == [lines[0]]
    assert (series == pl.Series([lines[i] for i in rows])).all()


def test_short_lines_are_left_to_the_list_of_them():
    # A view holds a line of 12 bytes or fewer inline: not made from the text.
    block = LineBlock.of([b"{}", b'{"symbol":"A","price":1}'])
    assert block.binary(np.array([1])) is not None
    assert block.binary(np.array([0, 1])) is None
