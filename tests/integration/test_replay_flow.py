"""Real captures replayed into the broker and through the flow: candles equal the batch truth."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from candlewax.records import Candle, QuoteBar
from sources.formats import read_market_file
from tests.factories import RESOLUTIONS
from tests.kafka_helpers import read_topic
from tests.processes import ROOT, candlewax, flow_topics, kafka_env, run_flow_processes
from tests.reference import (
    assert_candles_match,
    assert_quote_bars_match,
    reference_candles,
    reference_quote_bars,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]
FIXTURES = ROOT / "tests" / "fixtures" / "binance-ws"


@dataclass
class Replayed:
    log: str  # what `candlewax replay` said
    records: list[Any]  # the trades topic, in (partition, offset) order
    candles: list[Candle]
    dlq: list[Any]


def replay_through_the_flow(broker: Any, lake: Path, *captures: Path) -> Replayed:
    """`candlewax replay` of the captures into a fresh trades topic, then the flow over it."""
    topics = flow_topics(broker, trades_partitions=2)
    args = ["--brokers", broker.bootstrap, "--topic", topics["trades"]]
    result = candlewax("replay", *map(str, captures), *args)
    records = read_topic(broker.bootstrap, topics["trades"])
    run_flow_processes(kafka_env(broker.bootstrap, topics, lake))
    candles = [
        msgspec.json.decode(r.value, type=Candle)
        for r in read_topic(broker.bootstrap, topics["candles"])
    ]
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    return Replayed(result.stderr, ordered, candles, read_topic(broker.bootstrap, topics["dlq"]))


def test_replayed_binance_captures_become_the_right_candles(broker, tmp_path):
    replayed = replay_through_the_flow(
        broker,
        tmp_path / "lake",
        FIXTURES / "spot_btcusdt_20240808_excerpt.txt",
        FIXTURES / "usdm_ethusdt_20240808_excerpt.txt.gz",
    )
    assert "sent 66 trades" in replayed.log
    assert len(replayed.records) == 66
    assert {r.key for r in replayed.records} == {b"BTCUSDT", b"ETHUSDT_PERP"}
    # Each symbol sits in one partition, so the topic's order per symbol is the input order.
    messages = [r.value for r in replayed.records]
    assert_candles_match(replayed.candles, reference_candles(messages, 1_000, RESOLUTIONS))
    assert replayed.dlq == []


def test_spot_and_futures_of_one_pair_replayed_together_never_share_a_candle(broker, tmp_path):
    # The README's example: the Binance captures of spot and USD-M futures BTCUSDT (the
    # same 10 seconds), replayed together.
    spot = FIXTURES / "spot_btcusdt_20240808_10s.txt.gz"
    futures = FIXTURES / "usdm_btcusdt_20240808_10s.txt.gz"
    replayed = replay_through_the_flow(broker, tmp_path / "lake", spot, futures)
    assert "sent 546 trades" in replayed.log
    candles = replayed.candles
    assert {c.symbol for c in candles} == {"BTCUSDT", "BTCUSDT_PERP"}
    for path, symbol in ((spot, "BTCUSDT"), (futures, "BTCUSDT_PERP")):
        # Each market's candles are those of its own capture alone, bar by bar.
        alone = read_market_file(path).valid
        mine = [c for c in candles if c.symbol == symbol]
        assert sum(c.trade_count for c in mine if c.resolution == "1m") == alone.height
        messages = [r.value for r in replayed.records if r.key == symbol.encode()]
        assert len(messages) == alone.height
        assert_candles_match(mine, reference_candles(messages, 1_000, RESOLUTIONS))


def capture_quotes(path: Path, symbol: str) -> list[bytes]:
    """The book tickers of a raw capture as quote messages, read plainly (json, no adapter):
    a futures ticker's own time `T`, else the line's receive time (ns) in ms; sorted by
    time, ties in capture order."""
    quotes = []
    for number, line in enumerate(gzip.decompress(path.read_bytes()).splitlines()):
        received, _, body = line.partition(b" ")
        message = json.loads(body)
        if not message["stream"].endswith("@bookTicker"):
            continue
        data = message["data"]
        ts = data.get("T", int(received) // 1_000_000)
        quote = {"symbol": symbol, "ts": ts, "bid": float(data["b"]), "ask": float(data["a"])}
        quotes.append((ts, number, json.dumps({"type": "quote", **quote}).encode()))
    return [message for _, _, message in sorted(quotes)]


def test_real_book_tickers_replayed_become_the_right_quote_bars(broker, tmp_path):
    spot = FIXTURES / "spot_btcusdt_20240808_10s.txt.gz"
    futures = FIXTURES / "usdm_btcusdt_20240808_10s.txt.gz"
    topics = flow_topics(broker, trades_partitions=2, quotes=True)
    bootstrap = broker.bootstrap
    candlewax(
        "replay", str(spot), str(futures), "--brokers", bootstrap, "--topic", topics["trades"]
    )
    sent = candlewax(
        "replay", "--quotes", str(spot), str(futures), "--brokers", bootstrap,
        "--topic", topics["quotes"],
    )  # fmt: skip
    assert "sent 2,613 quotes" in sent.stderr
    run_flow_processes(kafka_env(bootstrap, topics, tmp_path / "lake"))
    bars = [
        msgspec.json.decode(r.value, type=QuoteBar)
        for r in read_topic(bootstrap, topics["quote_bars"])
    ]
    assert {b.symbol for b in bars} == {"BTCUSDT", "BTCUSDT_PERP"}
    for path, symbol in ((spot, "BTCUSDT"), (futures, "BTCUSDT_PERP")):
        expected = reference_quote_bars(capture_quotes(path, symbol), 1_000, RESOLUTIONS)
        mine = {b.bar_id: b for b in bars if b.symbol == symbol}
        skip = ("symbol", "resolution", "window_start", "window_end", "bar_id", "revision")
        fields = {
            b: {k: v for k, v in bar.as_dict().items() if k not in skip} for b, bar in mine.items()
        }
        assert_quote_bars_match(fields, expected)
    assert read_topic(bootstrap, topics["quotes_dlq"]) == []
