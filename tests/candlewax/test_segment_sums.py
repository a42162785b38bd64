"""Segment sums: the exactly rounded sum of every segment, the same bits as `math.fsum`."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from candlewax.segment_sums import segment_fsum, segment_fsums


def _segments(lengths: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(lengths, dtype=np.int64)
    firsts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    return firsts, firsts + lengths - 1


def _exactly_rounded(values: np.ndarray, firsts: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """The reference, apart from `fsum`: the exact rational sum, rounded once (int
    division rounds correctly, ties to even)."""
    return np.array(
        [
            float(sum((Fraction(v) for v in values[a : b + 1].tolist()), Fraction(0)))
            for a, b in zip(firsts.tolist(), lasts.tolist(), strict=True)
        ]
    )


def _same_bits(got: np.ndarray, expected: np.ndarray) -> None:
    differ = np.flatnonzero(got.view(np.int64) != expected.view(np.int64))
    assert len(differ) == 0, (
        f"segments {differ[:5].tolist()}: {got[differ[:5]]} != {expected[differ[:5]]}"
    )


def _many_short(rng: np.random.Generator, count: int = 3_000) -> np.ndarray:
    return rng.integers(1, 16, size=count)  # a dense tape's 1 s candles: enough to go together


@pytest.mark.parametrize(
    "make",
    [
        # notional: two-decimal prices times share counts (no term exact in binary)
        lambda rng, n: np.round(rng.uniform(1, 900, n), 2) * rng.integers(1, 5_000, n),
        # volume: fractional crypto sizes
        lambda rng, n: np.round(rng.uniform(0, 3, n), 8) + 1e-8,
        # magnitudes 40 orders apart, both signs
        lambda rng, n: rng.standard_normal(n) * 10.0 ** rng.integers(-20, 20, n),
        # cancellation: terms of 1e16 that cancel, leaving their small parts
        lambda rng, n: np.where(rng.random(n) < 0.5, 1e16, -1e16) + rng.random(n),
    ],
    ids=["notional", "fractional-sizes", "wide-magnitudes", "cancelling"],
)
def test_every_segment_is_its_exactly_rounded_sum(make) -> None:
    rng = np.random.default_rng(7)
    lengths = np.concatenate((_many_short(rng), rng.integers(100, 400, size=5)))  # and long
    firsts, lasts = _segments(rng.permutation(lengths))
    values = make(rng, int(lengths.sum()))
    got = segment_fsum(values, firsts, lasts)
    _same_bits(got, _exactly_rounded(values, firsts, lasts))
    expected_fsum = [
        math.fsum(values[a : b + 1].tolist()) for a, b in zip(firsts, lasts, strict=True)
    ]
    _same_bits(got, np.array(expected_fsum))


def test_columns_summed_together_are_each_column_s_own_sums() -> None:
    # A candle's volume and notional go through one call: each comes out as its own.
    rng = np.random.default_rng(11)
    lengths = np.concatenate((_many_short(rng), rng.integers(100, 400, size=3)))
    firsts, lasts = _segments(rng.permutation(lengths))
    size = np.round(rng.uniform(0, 3, int(lengths.sum())), 8) + 1e-8
    notional = np.round(rng.uniform(1, 900, len(size)), 2) * size
    volume_sums, notional_sums = segment_fsums((size, notional), firsts, lasts)
    _same_bits(volume_sums, _exactly_rounded(size, firsts, lasts))
    _same_bits(notional_sums, _exactly_rounded(notional, firsts, lasts))
    (alone,) = segment_fsums((notional,), firsts[:2], lasts[:2])
    _same_bits(alone, _exactly_rounded(notional, firsts[:2], lasts[:2]))
    # Share counts (whole numbers) beside a fractional column, and two whole ones.
    shares = np.round(size * 1_000)
    shares_sums, notional_sums = segment_fsums((shares, notional), firsts, lasts)
    _same_bits(shares_sums, _exactly_rounded(shares, firsts, lasts))
    _same_bits(notional_sums, _exactly_rounded(notional, firsts, lasts))
    both = segment_fsums((shares, shares + 1), firsts, lasts)
    _same_bits(both[1], _exactly_rounded(shares + 1, firsts, lasts))


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: rng.integers(1, 5_000, n).astype(float),  # share counts
        lambda rng, n: rng.integers(-9_000, 9_000, n) * 2.0**30,  # both signs, large
        lambda rng, n: np.where(rng.random(n) < 0.3, -0.0, rng.integers(0, 3, n) * 1.0),
        # past 2**53 in all: not every running sum is a float, so the general way
        lambda rng, n: rng.integers(1, 2**40, n) * 2.0**13 + 1.0,
    ],
    ids=["share-counts", "large-both-signs", "zeros", "past-2**53"],
)
def test_whole_numbers_sum_to_the_exact_sums(make) -> None:
    rng = np.random.default_rng(5)
    lengths = np.concatenate((_many_short(rng), rng.integers(100, 400, size=3)))
    firsts, lasts = _segments(rng.permutation(lengths))
    values = make(rng, int(lengths.sum()))
    got = segment_fsum(values, firsts, lasts)
    _same_bits(got, _exactly_rounded(values, firsts, lasts) + 0.0)  # a zero is +0.0
    expected_fsum = [
        math.fsum(values[a : b + 1].tolist()) for a, b in zip(firsts, lasts, strict=True)
    ]
    _same_bits(got, np.array(expected_fsum))
    # Segments in any order, overlapping: each is its own sum.
    picked = rng.permutation(len(firsts))[:50]
    _same_bits(segment_fsum(values, firsts[picked], lasts[picked]), np.array(expected_fsum)[picked])


def test_ties_and_near_ties_round_as_the_exact_sum_does() -> None:
    """Sums on or next to the midpoint between two floats, where rounding the running
    sum and its error separately would go the wrong way; each among enough short
    segments to be summed together."""
    half_ulp = 2.0**-53
    tricky = [
        [1.0, half_ulp],  # a tie: to even, 1.0
        [1.0 + 2.0**-52, half_ulp],  # a tie: to even, up
        [1.0, half_ulp, 2.0**-106],  # just above the tie: up
        [1.0, half_ulp, -(2.0**-106)],  # just below: 1.0
        [1.0, -(2.0**-54), -(2.0**-107)],  # below a power of two, where the gap halves
        [2.0**53, 1.0, 1.0, 1.0],  # integers past 2**53
    ]
    rng = np.random.default_rng(3)
    for case in tricky:
        filler = _many_short(rng)
        lengths = np.concatenate(([len(case)], filler))
        values = np.concatenate((case, rng.uniform(1, 2, int(filler.sum()))))
        firsts, lasts = _segments(lengths)
        got = segment_fsum(values, firsts, lasts)
        expected = math.fsum(case)
        assert got[0].hex() == expected.hex() == float(sum(map(Fraction, case))).hex(), case
        _same_bits(got[1:], _exactly_rounded(values, firsts, lasts)[1:])


@pytest.mark.parametrize("many", [False, True], ids=["fsum-each", "vectorised"])
def test_a_sum_past_the_largest_float_is_an_infinity_not_an_error(many) -> None:
    """`fsum` raises where a partial sum overflows (two trades of 1e308 shares in one
    candle); the exact sum, rounded as IEEE does, is a float or an infinity, and the
    other segments of the call are not lost."""
    cases = [
        ([1e308, 1e308], math.inf),
        ([-1e308, -1e308, 5.0], -math.inf),
        ([1e308, 1e308, -1e308], 1e308),  # back within range: the exact sum
        ([math.inf, 1e308, 1e308], math.inf),  # an overflowed notional among them
        ([math.nan, 1e308, 1e308], math.nan),
        ([math.inf, -math.inf], math.nan),  # fsum: ValueError
    ]
    rng = np.random.default_rng(13)
    filler = _many_short(rng) if many else np.array([2, 3])
    lengths = np.concatenate(([len(c) for c, _ in cases], filler))
    values = np.concatenate(
        ([v for c, _ in cases for v in c], rng.uniform(1, 2, int(filler.sum())))
    )
    firsts, lasts = _segments(lengths)
    got = segment_fsum(values, firsts, lasts)
    expected = np.array([value for _, value in cases])
    np.testing.assert_array_equal(got[: len(cases)], expected)  # NaN where NaN
    rest = slice(len(cases), None)
    _same_bits(got[rest], _exactly_rounded(values, firsts[rest], lasts[rest]))


def test_long_segments_summed_in_pieces_round_as_the_exact_sum_does() -> None:
    """Segments of hundreds to thousands of terms are summed in pieces, and the pieces'
    sums and errors summed again: what each piece rounded away must reach the result.
    Here the rounding of each segment turns on terms far below the first term's last
    bit, spread over many pieces: a tie, just above it, just below it."""
    tiny = 2.0**-62  # 512 of them make half of 1.0's last bit
    tricky = [
        [1.0] + [tiny] * 512,  # a tie: to even, 1.0
        [1.0] + [tiny] * 512 + [2.0**-106],  # just above: up
        [1.0 + 2.0**-52] + [tiny] * 511 + [tiny / 2] * 2 + [-(2.0**-106)],  # just below
        [1.0] + [tiny] * 1_000 + [-tiny] * 489 + [2.0**-70] * 300,  # cancelling pieces
        [3.0] * 700 + [-(2.0**-52)] * 3,  # integers, then a nudge below their sum
        # A second piece whose error sum itself rounds (128 + 2**-60): without what it
        # lost, its sum is a tie that rounds down, where the exact sum rounds up.
        [0.0] * 16 + [2.0**60, 128.0, 2.0**-60],
    ]
    rng = np.random.default_rng(11)
    for case in tricky:
        filler = rng.integers(200, 2_000, size=40)  # enough long segments to go in pieces
        lengths = np.concatenate(([len(case)], filler))
        values = np.concatenate((case, rng.uniform(1, 2, int(filler.sum()))))
        firsts, lasts = _segments(lengths)
        got = segment_fsum(values, firsts, lasts)
        exact = float(sum(map(Fraction, case)))
        assert got[0].hex() == exact.hex() == math.fsum(case).hex(), case[:3]
        _same_bits(got[1:], _exactly_rounded(values, firsts, lasts)[1:])


def test_infinities_nans_and_zeros_are_as_fsum_gives_them() -> None:
    rng = np.random.default_rng(5)
    cases = [[math.inf, 1.0], [1.0, math.nan], [-0.0, -0.0], [-0.0], [0.5, -0.5]]
    filler = _many_short(rng)
    lengths = np.concatenate(([len(c) for c in cases], filler))
    values = np.concatenate(([v for c in cases for v in c], rng.uniform(1, 2, int(filler.sum()))))
    firsts, lasts = _segments(lengths)
    got = segment_fsum(values, firsts, lasts)
    for i, case in enumerate(cases):
        expected = math.fsum(case)
        assert got[i] == expected or (math.isnan(got[i]) and math.isnan(expected)), case
        assert math.copysign(1, got[i]) == math.copysign(1, expected), case  # +0.0 as fsum


def test_few_or_long_segments_and_none() -> None:
    rng = np.random.default_rng(9)
    for lengths in ([1], [3, 1, 2], [5_000, 2, 7], rng.integers(1, 40, size=50)):
        firsts, lasts = _segments(lengths)
        values = rng.uniform(0, 1e6, int(np.sum(lengths)))
        _same_bits(segment_fsum(values, firsts, lasts), _exactly_rounded(values, firsts, lasts))
    empty = np.zeros(0, dtype=np.int64)
    assert len(segment_fsum(np.zeros(0), empty, empty)) == 0
