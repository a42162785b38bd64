"""Real captures replayed into the broker and through the flow: candles equal the batch truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from candlewax.records import Candle
from sources.formats import read_market_file
from tests.factories import RESOLUTIONS
from tests.kafka_helpers import read_topic
from tests.processes import ROOT, candlewax, flow_topics, kafka_env, run_flow_processes
from tests.reference import assert_candles_match, reference_candles

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
