"""NDJSON text in bulk: its newlines and bytes found in pieces, `LineBlock`, a batch
kept as the text it was read from, and rows written as JSON objects."""

from __future__ import annotations

import json
import math
import random
import struct

import numpy as np
import polars as pl
import pytest

from candlewax import ndjson
from candlewax.ndjson import LineBlock, byte_counts, json_objects, newline_positions

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
    # Lines whose first 4 bytes differ (a view holds them as its prefix).
    lines = [b'%d{"symbol":"A"}' % i + b"x" * (i % 7) for i in range(1_000)]
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


def _random_frame(rng: random.Random, rows: int) -> pl.DataFrame:
    """Columns of every kind a record has, with values from every corner of each."""
    alphabet = "AZaz09._:/-\x7féé€😀"

    def text() -> str | None:
        if rng.random() < 0.1:
            return None
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    def number() -> float | None:
        pick = rng.random()
        if pick < 0.1:
            return None
        if pick < 0.3:
            return rng.choice([0.0, -0.0, 5e-324, 1e300, -1e-7, 1e16, 1e15, 0.1 + 0.2])
        bits = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        return bits if math.isfinite(bits) else rng.uniform(-1e6, 1e6)

    extremes = [None, 0, -(2**63), 2**63 - 1]
    return pl.DataFrame(
        {
            "symbol": [text() for _ in range(rows)],
            'we"ird\\name': [number() for _ in range(rows)],
            "count": [rng.choice([*extremes, rng.randint(-9, 9)]) for _ in range(rows)],
            "final": [rng.choice([None, True, False]) for _ in range(rows)],
        },
        schema={
            "symbol": pl.String,
            'we"ird\\name': pl.Float64,
            "count": pl.Int64,
            "final": pl.Boolean,
        },
    )


# One value that polars' own writer must write: text it escapes, a float not finite.
ODD = [None, 'a"b', "a\\b", "a\nb", "\x00", "\x1f", math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_rows_as_json_objects_are_the_bytes_polars_writes(odd):
    rng = random.Random(7)
    for rows in (1, 2, 50, 3_000):
        frame = _random_frame(rng, rows)
        if odd is not None:
            column = "symbol" if isinstance(odd, str) else 'we"ird\\name'
            values = frame.get_column(column).to_list()
            values[rng.randrange(rows)] = odd
            frame = frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))
        written = frame.write_ndjson().encode().split(b"\n")[:rows]
        assert json_objects(frame) == written
        for line, row in zip(written, frame.iter_rows(named=True), strict=True):
            assert json.loads(line).keys() == row.keys()
        # Made by columns unless something needs polars' writer: then written by it.
        assert ndjson._needs_writer(frame, frame.schema) == (odd is not None)
    assert json_objects(frame.clear()) == []
