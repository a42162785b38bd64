"""Every replay format, read from small fixtures into contract trades."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from sources.formats import ReadOptions, detect_format, read_market_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binance-ws"
SPOT = FIXTURES / "spot_btcusdt_20240808_excerpt.txt"
FUTURES = FIXTURES / "usdm_ethusdt_20240808_excerpt.txt.gz"


def rows(read, *columns):
    return read.valid.select(
        columns or ["symbol", "ts", "price", "size", "trade_id", "side"]
    ).rows()


def test_binance_websocket_capture_keeps_the_trade_events_only():
    read = read_market_file(SPOT)
    assert read.format == "binance-ws"
    lines = SPOT.read_bytes().splitlines()
    assert read.rows == len(lines) == 300
    assert read.valid.height == sum(b'"e":"trade"' in line for line in lines) == 56
    assert read.rejections == []
    assert read.skipped["not_a_trade_event:bookTicker"] > 0
    assert read.skipped["not_a_trade_event:depthUpdate"] > 0
    assert sum(read.skipped.values()) + read.valid.height == read.rows
    # {"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000",
    #  "q":"0.02000000","T":1723161255342,"m":true,...}: the buyer was the maker, so a sell
    assert rows(read)[0] == ("BTCUSDT", 1723161255342, 61837.63, 0.02, "3735683259", "sell")


def test_compressed_futures_capture_is_read_directly():
    read = read_market_file(FUTURES)
    assert read.format == "binance-ws" and read.valid.height == 10
    assert set(read.valid.get_column("symbol")) == {"ETHUSDT_PERP"}
    assert read.valid.get_column("ts").is_sorted()


SPOT_10S = FIXTURES / "spot_btcusdt_20240808_10s.txt.gz"
FUTURES_10S = FIXTURES / "usdm_btcusdt_20240808_10s.txt.gz"


@pytest.mark.parametrize("name", ["usdm_btcusdt.txt", "capture.txt"])
def test_spot_and_futures_of_one_pair_are_two_instruments(tmp_path, name):
    # Binance names the USD-M perpetual like the spot pair; the events tell them apart,
    # whatever the file is called.
    renamed = tmp_path / name
    renamed.write_bytes(gzip.decompress(FUTURES_10S.read_bytes()))
    futures, spot = read_market_file(renamed), read_market_file(SPOT_10S)
    assert set(rows(futures, "symbol", "venue")) == {("BTCUSDT_PERP", "binance-futures")}
    assert set(rows(spot, "symbol", "venue")) == {("BTCUSDT", "binance")}
    assert futures.valid.height == 401 and spot.valid.height == 145


def test_the_market_can_be_named_and_delivery_contracts_keep_their_names(tmp_path):
    line = (
        '1 {"stream":"x","data":{"e":"trade","s":"%s","t":1,"p":"1","q":"1",'
        '"T":1723161255342,"m":true}}\n'
    )
    capture = tmp_path / "capture.txt"
    capture.write_text(line % "BTCUSDT" + line % "BTCUSDT_240927")
    # Neither "X" nor "M": the market is the file's, spot unless it is named.
    assert rows(read_market_file(capture), "symbol") == [("BTCUSDT",), ("BTCUSDT_240927",)]
    futures = read_market_file(capture, ReadOptions(market="futures"))
    assert rows(futures, "symbol") == [("BTCUSDT_PERP",), ("BTCUSDT_240927",)]
    # Futures trade dumps: six columns with a header; a delivery contract's file name
    dump = tmp_path / "BTCUSDT_240927-trades-2024-08-08.csv"
    dump.write_text(
        "id,price,qty,quote_qty,time,is_buyer_maker\n1,61800.3,0.006,1,1723161255342,false\n"
    )
    assert rows(read_market_file(dump), "symbol", "venue") == [
        ("BTCUSDT_240927", "binance-futures")
    ]
    perp = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    perp.write_bytes(dump.read_bytes())
    assert rows(read_market_file(perp), "symbol") == [("BTCUSDT_PERP",)]


def test_binance_trade_csv_with_and_without_header_in_ms_and_us(tmp_path):
    body = (
        "3735683259,61837.63,0.02,1236.75,{t1},True,True\n"
        "3735683260,61837.64,0.5,30918.82,{t2},False,True\n"
    )
    plain = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    plain.write_text(body.format(t1=1723161255342, t2=1723161255400))
    read = read_market_file(plain)
    assert read.format == "binance-csv"
    assert rows(read) == [
        ("BTCUSDT", 1723161255342, 61837.63, 0.02, "3735683259", "sell"),
        ("BTCUSDT", 1723161255400, 61837.64, 0.5, "3735683260", "buy"),
    ]
    # 2025 spot files: microseconds, a header, zipped, and the symbol from --symbol
    micro = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n" + body.format(
        t1=1723161255342123, t2=1723161255400999
    )
    archive = tmp_path / "trades.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("trades.csv", micro)
    read = read_market_file(archive, ReadOptions(format="binance-csv", symbol="ETHBTC"))
    assert rows(read, "symbol", "ts") == [("ETHBTC", 1723161255342), ("ETHBTC", 1723161255400)]


def test_kibot_ticks_are_eastern_time_with_ids_from_position(tmp_path):
    path = tmp_path / "IBM.txt"
    path.write_text(
        "08/08/2024,09:30:00,191.25,191.24,191.26,100\n"
        "08/08/2024,09:30:00,191.26,191.25,191.27,300\n"
        "12/02/2024,16:00:00.250,227.5,227.49,227.51,50\n"
    )
    read = read_market_file(path)
    assert read.format == "kibot"
    # 09:30 EDT (UTC-4) and 16:00 EST (UTC-5)
    assert rows(read, "symbol", "ts", "price", "size", "trade_id") == [
        ("IBM", 1723123800000, 191.25, 100.0, "IBM.txt:1"),
        ("IBM", 1723123800000, 191.26, 300.0, "IBM.txt:2"),
        ("IBM", 1733173200250, 227.5, 50.0, "IBM.txt:3"),
    ]
    again = read_market_file(path)
    assert (
        again.valid.get_column("trade_id").to_list() == read.valid.get_column("trade_id").to_list()
    )


def test_kibot_bid_and_ask_columns_are_read_as_quotes(tmp_path):
    path = tmp_path / "IBM.txt"
    path.write_text(
        "08/08/2024,09:30:00,191.25,191.24,191.26,100\n"
        "08/08/2024,09:30:01,191.26,191.27,191.25,300\n"  # crossed: rejected, with its line
        "08/08/2024,09:30:02,191.26,191.25,191.25,300\n"  # locked
    )
    read = read_market_file(path, ReadOptions(quotes=True))
    assert rows(read, "symbol", "ts", "bid", "ask", "quote_id") == [
        ("IBM", 1723123800000, 191.24, 191.26, "IBM.txt:1")
    ]
    assert [(r.reason, r.source) for r in read.rejections] == [
        ("crossed_book", f"file:{path.name}@2"),
        ("locked_book", f"file:{path.name}@3"),
    ]


def test_binance_book_tickers_are_quotes_with_their_own_or_the_capture_time():
    spot = read_market_file(FIXTURES / "spot_btcusdt_20240808_10s.txt.gz", ReadOptions(quotes=True))
    futures = read_market_file(
        FIXTURES / "usdm_btcusdt_20240808_10s.txt.gz", ReadOptions(quotes=True)
    )
    assert (spot.valid.height, futures.valid.height) == (696, 1917)
    assert set(spot.valid.get_column("symbol")) == {"BTCUSDT"}
    assert set(futures.valid.get_column("symbol")) == {"BTCUSDT_PERP"}
    first = futures.valid.row(0, named=True)
    assert first["quote_id"] is not None and first["bid"] < first["ask"]
    assert spot.skipped["not_a_quote_event:trade"] == 145


def test_a_trade_only_format_read_for_quotes_says_so(tmp_path):
    path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    path.write_text("1,61837.63,0.02,1236.75,1723161255342,true,true\n")
    with pytest.raises(ValueError, match="hold no quotes"):
        read_market_file(path, ReadOptions(quotes=True))


def test_csv_with_a_column_mapping_and_bad_rows_reported(tmp_path):
    path = tmp_path / "ticks.csv.gz"
    with gzip.open(path, "wt") as out:
        out.write(
            "ticker,time,px,qty\nAAPL,1723161255,225.5,10\nAAPL,1723161256,abc,5\nAAPL,1723161257,226,-1\n"
        )
    options = ReadOptions(
        columns={"symbol": "ticker", "ts": "time", "price": "px", "size": "qty"}, ts_unit="s"
    )
    read = read_market_file(path, options)
    assert read.format == "csv"
    assert rows(read, "symbol", "ts", "price", "size", "trade_id") == [
        ("AAPL", 1723161255000, 225.5, 10.0, "ticks.csv:1")
    ]
    assert [(r.reason, r.field, r.source) for r in read.rejections] == [
        ("wrong_type", "price", "file:ticks.csv.gz@2"),
        ("non_positive", "size", "file:ticks.csv.gz@3"),
    ]


def test_csv_without_the_needed_columns_says_what_to_map(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="--column"):
        read_market_file(path, ReadOptions(format="csv", symbol="X"))


def test_parquet_and_zstd_files(tmp_path):
    frame = pl.DataFrame(
        {
            "symbol": ["A", "B"],
            "ts": [1723161255000, 1723161255001],
            "price": [1.5, 2.5],
            "size": [1.0, 2.0],
            "trade_id": [7, 8],
        }
    )
    parquet = tmp_path / "t.parquet"
    frame.write_parquet(parquet)
    read = read_market_file(parquet)
    assert read.format == "parquet"
    assert rows(read, "symbol", "ts", "price", "trade_id") == [
        ("A", 1723161255000, 1.5, "7"),
        ("B", 1723161255001, 2.5, "8"),
    ]
    zst = tmp_path / "t.ndjson.zst"
    with pa.CompressedOutputStream(str(zst), "zstd") as out:
        out.write(
            b'{"symbol":"A","price":1,"size":2,"ts":1723161255000}\n{"type":"add"}\nnot json\n'
        )
    read = read_market_file(zst)
    assert read.format == "ndjson" and read.valid.height == 1 and read.filtered == 1
    assert [r.reason for r in read.rejections] == ["invalid_json"]


@pytest.mark.parametrize(
    ("name", "first_line", "expected"),
    [
        ("a.ndjson", b'{"symbol":"A"}', "ndjson"),
        ("a.txt", b'1723161253937085768 {"stream":"x"}', "binance-ws"),
        ("BTCUSDT-trades-2024-08-08.csv", b"1,2,3,4,5,True", "binance-csv"),
        ("IBM.txt", b"08/08/2024,09:30:00,1,1,1,1", "kibot"),
        ("x.csv", b"symbol,ts,price,size", "csv"),
    ],
)
def test_formats_are_detected_from_name_and_first_line(tmp_path, name, first_line, expected):
    path = tmp_path / name
    path.write_bytes(first_line + b"\n")
    assert detect_format(path) == expected


def test_futures_contract_months_in_one_file_are_each_their_own_symbol(tmp_path):
    table = tmp_path / "es.csv"
    table.write_text(
        "symbol,expiry,ts,price,size\n"
        "ES,202412,1723161255342,5400.25,1\n"
        "ES,202503,1723161255343,5455.50,2\n"
        "ESZ4,Z4,1723161255344,5400.50,1\n"
    )
    assert rows(read_market_file(table), "symbol") == [("ES_202412",), ("ES_202503",), ("ESZ4",)]
    named = tmp_path / "named.csv"
    named.write_text("root,month,ts,price,size\nCL,F25,1723161255342,70.1,1\n")
    options = ReadOptions(columns={"symbol": "root", "contract": "month"})
    assert rows(read_market_file(named, options), "symbol") == [("CL_F25",)]
    with pytest.raises(ValueError, match="no column 'nope' for the contract"):
        read_market_file(named, ReadOptions(columns={"symbol": "root", "contract": "nope"}))
