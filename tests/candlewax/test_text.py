"""Text built from columns, whatever chunks the columns are held in."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from candlewax.text import formatted


def test_the_text_puts_each_value_in_its_place_and_is_null_where_a_value_is():
    frame = pl.DataFrame({"symbol": ["BTC-USD", "ETH-USD"], "price": [1.5, None], "n": [7, 8]})
    text = frame.select(formatted("{} at {} (#{})", "symbol", pl.col("price"), "n"))
    assert text.to_series().to_list() == ["BTC-USD at 1.5 (#7)", None]
    ends = frame.select(formatted("{}", "symbol"), formatted("[{}]", pl.lit(3)).alias("x"))
    assert ends.rows() == [("BTC-USD", "[3]"), ("ETH-USD", "[3]")]


def test_columns_in_several_chunks_with_an_empty_one_between_are_formatted():
    # The layout that made `pl.format` panic: a frame of four batches, filtered so the
    # third chunk is empty.
    frame = pl.DataFrame({"source": ["kafka:trades/0"] * 962, "position": list(range(962))})
    bounds = [0, 240, 480, 720, 962]
    batches = [frame.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    kept = np.zeros(962, dtype=bool)
    kept[[204, 765]] = True
    chunked = pl.concat(batches, rechunk=False).filter(pl.Series(kept))
    assert chunked.get_column("position").n_chunks() == 4
    text = chunked.select(formatted("{}@{}", "source", "position")).to_series()
    assert text.to_list() == ["kafka:trades/0@204", "kafka:trades/0@765"]


def test_a_template_must_have_a_place_for_each_value():
    with pytest.raises(ValueError, match="2 places for 1 values"):
        formatted("{}@{}", "source")
