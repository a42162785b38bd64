"""Structured rows joined end to end are the rows of `np.concatenate`, field for field."""

from __future__ import annotations

import numpy as np

from candlewax.records import CANDLE_ROW, QUOTE_BAR_ROW
from candlewax.rows import appended, joined


def _rows(dtype: np.dtype, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=dtype)
    for name in dtype.names or ():
        rows[name] = rng.integers(-(10**12), 10**12, n).astype(dtype[name])
    return rows


def test_joined_rows_equal_concatenated_rows_for_both_row_types():
    for dtype in (CANDLE_ROW, QUOTE_BAR_ROW):
        parts = [_rows(dtype, n, seed) for seed, n in enumerate((3, 0, 1, 17))]
        expected = np.concatenate(parts)
        got = joined(parts)
        assert got.dtype == dtype and len(got) == 21
        assert got.tobytes() == expected.tobytes()
        for name in dtype.names or ():
            assert np.array_equal(got[name], expected[name])


def test_strided_or_mixed_parts_are_joined_all_the_same():
    rows = _rows(CANDLE_ROW, 10, 1)
    strided = rows[::2]  # not contiguous: the bytes are not the rows
    assert joined((strided, rows[:1])).tobytes() == np.concatenate((strided, rows[:1])).tobytes()
    plain = np.arange(4.0)
    assert np.array_equal(joined((plain, plain)), np.concatenate((plain, plain)))


def test_appending_to_no_rows_gives_the_block_and_otherwise_a_new_array():
    none, block = np.zeros(0, dtype=CANDLE_ROW), _rows(CANDLE_ROW, 2, 2)
    assert appended(none, block) is block
    rows = _rows(CANDLE_ROW, 3, 3)
    both = appended(rows, block)
    both["count"] = 0  # a new array: the parts are untouched
    assert rows["count"].any() and block["count"].any()
