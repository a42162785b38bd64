"""The `candlewax` commands as a user runs them: help, simulate, replay, profile."""

from __future__ import annotations

import json

import msgspec
import polars as pl
import pytest

from tests.factories import faulty_stream
from tests.processes import ROOT, candlewax, run_flow_processes

SPOT = ROOT / "tests" / "fixtures" / "binance-ws" / "spot_btcusdt_20240808_excerpt.txt"


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "simulate",
            ["--count", "--endless", "--speed", "--duplicates", "--fat-finger", "--quotes"],
        ),
        (
            "replay",
            ["--format", "--column", "--market", "--speed", "--loop", "--brokers", "--ts-unit"],
        ),
        (
            "profile",
            ["--gaps", "--outlier-trades", "--outlier-threshold", "--report", "--json", "--clean"],
        ),
        ("demo", ["--trades", "--workers", "--live"]),
        ("dashboard", ["--lake", "--brokers", "--metrics", "--host", "--port"]),
    ],
)
def test_every_command_explains_its_options(command, options):
    text = candlewax(command, "--help").stdout
    for option in options:
        assert option in text


def test_simulate_is_deterministic_by_seed_and_writes_ndjson(tmp_path):
    common = ["--count", "2000", "--seed", "5", "--start", "2024-08-09", "--duplicates", "0.05"]
    candlewax("simulate", *common, "-o", str(tmp_path / "a.ndjson"))
    candlewax("simulate", *common, "-o", str(tmp_path / "b.ndjson.gz"))
    first = (tmp_path / "a.ndjson").read_bytes()
    import gzip

    assert first == gzip.decompress((tmp_path / "b.ndjson.gz").read_bytes())
    lines = first.splitlines()
    assert 2050 < len(lines) < 2150
    assert msgspec.json.decode(lines[0])["ts"] == 1723161600000


def test_simulate_quotes_are_the_books_of_the_same_markets(tmp_path):
    common = ["--count", "3000", "--seed", "5", "--start", "2024-08-09"]
    candlewax("simulate", *common, "-o", str(tmp_path / "trades.ndjson"))
    result = candlewax(
        "simulate", *common, "--quotes", "--crossed", "0.01", "-o", str(tmp_path / "q.ndjson")
    )
    trades = pl.read_ndjson(tmp_path / "trades.ndjson")
    quotes = pl.read_ndjson(tmp_path / "q.ndjson")
    assert "the quotes of 3,000 trades" in result.stderr
    assert set(quotes["type"]) == {"quote"} and quotes["quote_id"].is_unique().all()
    assert 2 < quotes.height / trades.height < 4  # 3 quotes per trade on average
    assert set(quotes["symbol"]) == set(trades["symbol"])
    crossed = (quotes["bid"] > quotes["ask"]).sum()
    assert 0 < crossed < 0.03 * quotes.height, "crossed books, as asked, and only those"
    # Around the same prices: each symbol's mid stays within 1 % of its trades' median.
    for symbol in trades["symbol"].unique():
        price = trades.filter(pl.col("symbol") == symbol)["price"].median()
        book = quotes.filter(pl.col("symbol") == symbol)
        mid = ((book["bid"] + book["ask"]) / 2).median()
        assert abs(mid / price - 1) < 0.01, symbol


def test_replay_sends_valid_trades_in_event_time_order_and_reports_the_rest(tmp_path):
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(
        b'{"symbol":"A","price":2,"size":1,"ts":1723161600500,"trade_id":2}\n'
        b'{"symbol":"A","price":1,"size":1,"ts":1723161600100,"trade_id":1}\n'
        b'{"symbol":"A","price":"x","size":1,"ts":1723161600200}\n'
        b'{"type":"cancel","order_id":5}\n'
    )
    out = tmp_path / "out.ndjson"
    result = candlewax("replay", str(source), "-o", str(out))
    sent = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert [t["trade_id"] for t in sent] == ["1", "2"]
    assert "rejected: wrong_type (price)  e.g. 3" in result.stderr
    assert "filtered: not a trade" in result.stderr and "sent 2 trades" in result.stderr


def test_replay_loops_shift_time_and_ids(tmp_path):
    out = tmp_path / "out.ndjson"
    candlewax("replay", str(SPOT), "--loop", "2", "-o", str(out))
    sent = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert len(sent) == 2 * 56
    assert [t["ts"] for t in sent] == sorted(t["ts"] for t in sent)
    assert len({t["trade_id"] for t in sent}) == 112 and sent[56]["trade_id"].endswith("~1")


def test_replay_of_a_file_that_is_not_there_says_so():
    result = candlewax("replay", "no-such-file.csv", check=False)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_profile_writes_markdown_html_json_and_clean_parquet(tmp_path):
    result = candlewax(
        "profile",
        str(SPOT),
        "--json",
        str(tmp_path / "q.json"),
        "--clean",
        str(tmp_path / "clean.parquet"),
    )
    assert "## Gaps" in result.stdout and "| BTCUSDT |" in result.stdout
    figures = json.loads((tmp_path / "q.json").read_text())
    assert figures["overview"]["valid_trades"] == 56
    assert {row["threshold_ms"] for row in figures["gaps"]} == {500, 5_000, 30_000}
    clean = pl.read_parquet(tmp_path / "clean.parquet")
    assert clean.height == 56 and clean.get_column("ts").is_sorted()
    candlewax("profile", str(SPOT), "--report", str(tmp_path / "q.html"))
    page = (tmp_path / "q.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page


def test_profile_reads_a_lake_written_by_the_flow(tmp_path):

    source = tmp_path / "trades.ndjson"
    source.write_bytes(b"\n".join(faulty_stream(5_000, seed=2)) + b"\n")
    lake = tmp_path / "lake"
    run_flow_processes(
        {
            "CANDLEWAX_SOURCE": "file",
            "CANDLEWAX_SOURCE_PATH": str(source),
            "CANDLEWAX_LAKE_DIR": str(lake),
        }
    )
    candlewax("profile", str(lake), "--json", str(tmp_path / "lake.json"))
    figures = json.loads((tmp_path / "lake.json").read_text())
    lake_trades = pl.read_parquet(lake / "trades" / "**" / "*.parquet")
    assert figures["overview"]["valid_trades"] == lake_trades.height
    assert (
        figures["overview"]["rejected"]
        == pl.read_parquet(lake / "dlq" / "**" / "*.parquet").height
        > 0
    )
    assert all(row["by_trade_id"] == 0 for row in figures["duplicates"]), "the lake is deduplicated"


def test_simulate_refuses_an_output_name_it_cannot_honour(tmp_path):
    result = candlewax("simulate", "--count", "10", "-o", str(tmp_path / "x.parquet"), check=False)
    assert result.returncode == 2
    assert "NDJSON" in result.stderr and "x.parquet" in result.stderr
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("command", ["drift", "reconcile"])
def test_lake_commands_stop_on_a_directory_that_is_no_lake(command, tmp_path):
    result = candlewax(command, "--lake", str(tmp_path / "nonexist"), check=False)
    assert result.returncode == 2
    assert "not a candlewax lake" in result.stderr


@pytest.mark.parametrize(
    "command", ["simulate", "replay", "profile", "reconcile", "drift", "recovery-init", "demo"]
)
def test_one_bad_setting_is_one_line_and_exit_2_for_every_command(command):
    result = candlewax(command, "--help", check=False, env={"CANDLEWAX_DRIFT_THRESHOLD": "abc"})
    assert result.returncode == 2
    assert "CANDLEWAX_DRIFT_THRESHOLD" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2  # the title and the one bad value


def test_the_commands_take_their_defaults_from_the_settings(tmp_path):
    lake = tmp_path / "my-lake"
    result = candlewax("drift", check=False, env={"CANDLEWAX_LAKE_DIR": str(lake)})
    assert result.returncode == 2 and str(lake) in result.stderr
    shown = candlewax("reconcile", "--help", env={"CANDLEWAX_RESOLUTIONS": "2s,1m"}).stdout
    assert "2s,1m" in shown
