"""The profiler's figures on data with known gaps, outliers, duplicates and disorder."""

from __future__ import annotations

import json

import polars as pl
import pytest

from sources.formats import read_market_file
from tests.factories import FAULTS, T0, quote, simulated
from tests.flow_runs import run_flow
from tests.processes import candlewax
from tools.quality_checks import QualityOptions, profile


def known_feed() -> pl.DataFrame:
    rows = []
    # A: a trade every 100 ms for 10 s, then silences of 6 s and 40 s
    ts = T0
    for i in range(100):
        rows.append(("A", ts, 100.0 + (i % 3) * 0.01, 1.0, str(i), "buy"))
        ts += 100
    for gap in (6_000, 40_000):
        ts += gap
        rows.append(("A", ts, 100.0, 1.0, f"g{gap}", "buy"))
    # B: steady, with two fat fingers (x10 and x0.5), three repeated ids, two identical prints
    for i in range(200):
        price = 50.0
        if i == 120:
            price = 500.0
        if i == 150:
            price = 25.0
        rows.append(("B", T0 + i * 50, price, 2.0, f"b{i}", "sell"))
    rows += [("B", T0 + 60 * 50, 50.0, 2.0, f"b{i}", "sell") for i in (1, 2, 3)]  # same ids again
    rows.append(("B", T0 + 10_000, 50.0, 3.0, None, "buy"))
    rows.append(("B", T0 + 10_000, 50.0, 3.0, None, "buy"))  # identical print
    # C: two trades arriving 300 ms and 1.2 s behind
    rows += [
        ("C", T0 + 5_000, 10.0, 1.0, "c1", "buy"),
        ("C", T0 + 4_700, 10.0, 1.0, "c2", "buy"),
        ("C", T0 + 6_000, 10.0, 1.0, "c3", "buy"),
        ("C", T0 + 4_800, 10.0, 1.0, "c4", "buy"),
    ]
    return pl.DataFrame(
        rows, schema=["symbol", "ts", "price", "size", "trade_id", "side"], orient="row"
    )


@pytest.fixture(scope="module")
def report():
    result, _ = profile(
        known_feed(),
        QualityOptions(),
        source="known",
        rows=320,
        rejected={"wrong_type": 4},
        skipped={"not_a_trade_event:bookTicker": 9},
    )
    return result


def by(rows, **match):
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def test_gaps_at_each_threshold(report):
    assert by(report.gaps, symbol="A", threshold_ms=500)[0]["gaps"] == 2
    five = by(report.gaps, symbol="A", threshold_ms=5_000)[0]
    assert (five["gaps"], five["longest_ms"]) == (2, 40_000)
    thirty = by(report.gaps, symbol="A", threshold_ms=30_000)[0]
    assert (thirty["gaps"], thirty["silent_s"]) == (1, 40.0)
    assert thirty["longest_from"] == "2023-11-14T22:13:16.000Z"  # T0 + 9.9 s + 6.1 s
    assert by(report.gaps, symbol="B", threshold_ms=5_000)[0]["gaps"] == 0


def test_outliers_are_the_fat_fingers(report):
    assert by(report.outliers, symbol="B")[0]["outliers"] == 2
    assert by(report.outliers, symbol="A")[0]["outliers"] == 0
    worst = report.outlier_examples[0]
    assert (worst["symbol"], worst["price"], worst["reference"]) == ("B", 500.0, 50.0)
    assert worst["deviation"] == pytest.approx(9.0)


def test_duplicates_by_id_and_by_fingerprint(report):
    b = by(report.duplicates, symbol="B")[0]
    assert b["by_trade_id"] == 3
    # by fingerprint: the identical pair at T0+10 s, and the three re-sends, which carry
    # the same time, price, size and side as b60
    assert b["by_fingerprint"] == 1 + 3
    assert by(report.duplicates, symbol="A")[0] == {
        "symbol": "A",
        "by_fingerprint": 0,
        "by_trade_id": 0,
    }


def test_missing_ids_in_a_numeric_sequence(report):
    a = by(report.id_sequence, symbol="A")[0]
    assert (a["first_id"], a["last_id"], a["missing_ids"]) == (0, 99, 0)
    assert by(report.id_sequence, symbol="B") == []  # ids "b0".. are not numbers


def test_out_of_order_arrivals_and_depth(report):
    c = by(report.out_of_order, symbol="C")[0]
    assert (c["out_of_order"], c["max_depth_ms"]) == (2, 1_200)
    assert by(report.out_of_order, symbol="A")[0]["out_of_order"] == 0


def test_rejections_skips_and_overview(report):
    assert report.rejected == [{"reason": "wrong_type", "rows": 4}]
    assert report.overview["valid_trades"] == 102 + 205 + 4 and report.overview["symbols"] == 3
    assert report.overview["rejected"] == 4 and report.overview["skipped"] == 9


def test_the_profile_finds_what_the_flows_guard_takes_out(tmp_path):
    # One implementation: on the simulator's fat fingers, among duplicates and disorder,
    # the profile flags exactly the trades the flow sends to the DLQ as price outliers.
    messages = [v for _, v in simulated(8_000, seed=2, fat_finger_rate=0.005, **FAULTS)]
    path = tmp_path / "sim.ndjson"
    path.write_bytes(b"\n".join(messages) + b"\n")
    read = read_market_file(path)
    _, scored = profile(read.valid, QualityOptions(), source="sim", rows=read.rows)
    flagged = scored.filter(pl.col("outlier")).select("symbol", "trade_id").rows()
    caught = [r.raw for r in run_flow(messages).dlq if r.reason == "price_outlier"]
    assert len(caught) > 20
    assert sorted(flagged) == sorted(
        (m["symbol"], str(m["trade_id"])) for m in map(json.loads, caught)
    )


def test_the_quote_profile_counts_crossed_and_locked_books_and_wide_spreads(tmp_path):
    messages = [quote("A", 100.0, 100.02, T0 + k * 10, quote_id=k) for k in range(60)]
    messages[40] = quote("A", 99.0, 101.0, T0 + 400, quote_id=40)  # 100 x the usual spread
    messages += [
        quote("A", 100.05, 100.0, T0 + 700),
        quote("B", 5.0, 5.0, T0 + 700),
        quote("B", 5.0, 5.0, T0 + 710),
    ]
    path = tmp_path / "quotes.ndjson"
    path.write_bytes(b"\n".join(messages) + b"\n")
    figures = tmp_path / "q.json"
    out = candlewax("profile", "--quotes", str(path), "--json", str(figures))
    report = json.loads(figures.read_text())
    assert report["overview"]["crossed_books"] == 1 and report["overview"]["locked_books"] == 2
    assert report["book_faults"] == [
        {"symbol": "A", "crossed": 1, "locked": 0},
        {"symbol": "B", "crossed": 0, "locked": 2},
    ]
    [wide] = report["spread_outliers"]
    assert (wide["symbol"], wide["spread_outliers"]) == ("A", 1)
    assert wide["max_ratio"] == pytest.approx(100.0)
    assert report["spread_outlier_examples"][0]["spread"] == 2.0
    assert "Crossed and locked books" in out.stdout
