"""`candlewax dashboard` without a browser: how it merges bars, reads the health, and
what its HTTP interface serves (a real uvicorn server, a real broker)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
import pytest
import uvicorn

from candlewax.records import Candle, candle_frame
from operators.candles import CandleSpec, ShardCandles
from sinks.lake import CANDLES, LakeRows, LakeWriter
from tests.factories import T0, trades_frame
from tests.kafka_helpers import produce
from tools.broker import free_port
from tools.dashboard.app import Dashboard, DashboardConfig
from tools.dashboard.bars import CANDLE, FORMING, RecentBars, merged
from tools.dashboard.health import Scrape, health, histogram_quantile, parse_samples
from tools.dashboard.history import lake_bars, recent_dates

RESOLUTIONS = {"1s": 1_000, "10s": 10_000}


def candle(start: int, close: float, revision: int = 0, resolution: str = "1s", **extra) -> dict:
    return {
        "symbol": "BTC-USD",
        "resolution": resolution,
        "window_start": start,
        "window_end": start + 1_000,
        "open": 100.0,
        "high": max(100.0, close),
        "low": min(100.0, close),
        "close": close,
        "volume": 1.0,
        "vwap": close,
        "trade_count": 1,
        "bar_id": f"BTC-USD:{resolution}:{start}",
        "revision": revision,
        **extra,
    }


# --- merging bars ------------------------------------------------------------------------
def test_a_restated_candle_replaces_its_bar_and_a_stale_copy_never_moves_it_back():
    bars = RecentBars(RESOLUTIONS)
    assert bars.add(CANDLE, candle(T0, 101.0))
    assert bars.add(CANDLE, candle(T0, 102.0, revision=1))
    assert bars.add(CANDLE, candle(T0, 101.0, revision=0)) == [], "a redelivered revision 0"
    assert [c["close"] for c in bars.closed(CANDLE, "BTC-USD", "1s")] == [102.0]


def test_a_forming_candle_gives_way_to_its_closed_candle_for_good():
    bars = RecentBars(RESOLUTIONS)
    bars.add(FORMING, candle(T0, 101.0, final=False))
    assert [f["close"] for f in bars.forming("BTC-USD", "1s")] == [101.0]
    bars.add(CANDLE, candle(T0, 103.0))
    assert bars.forming("BTC-USD", "1s") == []
    assert bars.add(FORMING, candle(T0, 99.0, final=False)) == [], "late forming: ignored"
    assert bars.forming("BTC-USD", "1s") == []


def test_the_coarse_forming_candle_is_the_roll_up_the_flow_closes_the_window_with():
    # Trades over 7 s of one 10 s window; the engine's 1 s candles feed the dashboard one
    # at a time (the last one still forming), then the engine closes the 10 s candle.
    rows = [(T0 + 130 * i, 100 + (i * 37 % 11), 0.5 + i % 3) for i in range(54)]
    engine = ShardCandles(CandleSpec(resolutions=(1_000, 10_000)))
    batches = [engine.on_trades(trades_frame(rows)).candles, engine.on_end().candles]
    final = {c.bar_id: c for c in Candle.rows(candle_frame(batches))}
    bars = RecentBars(RESOLUTIONS)
    base = sorted((c for c in final.values() if c.resolution == "1s"), key=lambda c: c.bar_id)
    for c in base[:-1]:
        bars.add(CANDLE, c.as_dict())
    changed = bars.add(FORMING, {**base[-1].as_dict(), "final": False})
    (rolled,) = [r for kind, r in changed if r["resolution"] == "10s"]
    closed = final[f"BTC-USD:10s:{T0}"]
    for name in ("open", "high", "low", "close", "trade_count", "window_start", "window_end"):
        assert rolled[name] == getattr(closed, name), name
    assert rolled["volume"] == pytest.approx(closed.volume)
    assert rolled["vwap"] == pytest.approx(closed.vwap)
    bars.add(CANDLE, closed.as_dict())
    assert bars.forming("BTC-USD", "10s") == [], "the flow's own candle replaces the view"


def test_the_lake_and_the_topics_merge_by_revision():
    lake = [candle(T0, 1.0), candle(T0 + 1_000, 2.0, revision=1), candle(T0 + 2_000, 3.0)]
    topic = [candle(T0 + 1_000, 9.0, revision=0), candle(T0 + 2_000, 4.0, revision=1)]
    got = merged(lake, topic, limit=10)
    assert [(c["window_start"] - T0, c["close"]) for c in got] == [
        (0, 1.0),
        (1_000, 2.0),
        (2_000, 4.0),
    ]
    assert [c["close"] for c in merged(lake, topic, limit=2)] == [2.0, 4.0]


# --- health ------------------------------------------------------------------------------
EXPOSITION = """\
# TYPE candlewax_messages counter
candlewax_messages_total{outcome="accepted"} %(accepted)s
candlewax_messages_total{outcome="rejected"} 5
# TYPE candlewax_kafka_consumer_lag gauge
candlewax_kafka_consumer_lag{partition="0",topic="trades"} 7
# TYPE candlewax_candle_delay_seconds histogram
candlewax_candle_delay_seconds_bucket{le="0.05",resolution="1s"} %(fast)s
candlewax_candle_delay_seconds_bucket{le="0.1",resolution="1s"} %(all)s
candlewax_candle_delay_seconds_bucket{le="+Inf",resolution="1s"} %(all)s
candlewax_candle_delay_seconds_count{resolution="1s"} %(all)s
candlewax_candle_delay_seconds_sum{resolution="1s"} 1
"""


def test_histogram_quantile_interpolates_inside_the_bucket_as_prometheus_does():
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_health_adds_processes_up_and_turns_two_scrapes_into_rates():
    def scrape(at, accepted, fast, total):
        samples: dict = {}
        for _ in range(2):  # two processes with the same counts
            parse_samples(EXPOSITION % {"accepted": accepted, "fast": fast, "all": total}, samples)
        return Scrape(at, samples, endpoints=3, up=2)

    first, second = scrape(10.0, 1_000, 90, 100), scrape(12.0, 3_000, 90, 200)
    h = health(first, second)
    assert (h.processes_up, h.processes) == (2, 3)
    assert h.trades_per_s["accepted"] == 2_000.0  # (6000 - 2000) / 2 s
    assert h.consumer_lag == 14.0
    # The last interval's 200 new delays were all between 50 and 100 ms.
    assert 0.05 < h.candle_delay_p99_s <= 0.1
    assert health(second, scrape(13.0, 10, 0, 0)).trades_per_s["accepted"] == 0.0, "restarted"


# --- the HTTP interface ----------------------------------------------------------------------
class Server:
    def __init__(self, config: DashboardConfig):
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                Dashboard(config).app, host="127.0.0.1", port=self.port, log_level="warning"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def events(self, path: str, until: int, timeout_s: float = 30.0) -> list[tuple[str, dict]]:
        """Server-sent events from `path` until `until` of them came."""
        url = f"http://127.0.0.1:{self.port}{path}"
        got: list[tuple[str, dict]] = []
        deadline = time.monotonic() + timeout_s
        with urllib.request.urlopen(url, timeout=timeout_s) as stream:
            name = None
            while len(got) < until and time.monotonic() < deadline:
                line = stream.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    got.append((name, json.loads(line[6:])))
        return got


def write_lake(lake: Path, records: list[dict]) -> None:
    writer = LakeWriter(lake, CANDLES, writer_id="test")
    writer.add([LakeRows(Candle.lake_frame([Candle.frame([Candle(**r) for r in records])]))])
    writer.close()


def lake_only(lake: Path) -> DashboardConfig:
    return DashboardConfig(lake=lake, resolutions=("1s", "10s"), client_config=None)


def test_history_comes_from_the_lake_at_its_highest_revision(tmp_path):
    write_lake(tmp_path, [candle(T0, 1.0), candle(T0, 2.0, revision=1), candle(T0 + 1_000, 3.0)])
    with Server(lake_only(tmp_path)) as server:
        status, _, body = server.get("/api/config")
        assert status == 200 and json.loads(body)["symbols"] == ["BTC-USD"]
        status, _, body = server.get("/api/bars?symbol=BTC-USD&resolution=1s")
        got = json.loads(body)["candles"]
        assert [(c["window_start"], c["close"], c["revision"]) for c in got] == [
            (T0, 2.0, 1),
            (T0 + 1_000, 3.0, 0),
        ]
        assert got[0] == candle(T0, 2.0, revision=1), "the contract's record, as the topic has it"


def test_history_reads_only_the_newest_days_a_chart_needs(tmp_path):
    day = 86_400_000
    write_lake(tmp_path, [candle(T0 - k * day, float(k + 1)) for k in range(6)])
    oldest = sorted((tmp_path / "candles" / "resolution=1s").iterdir())[0]
    (next(oldest.glob("*.parquet"))).write_bytes(b"not parquet: never read")
    got = lake_bars(tmp_path, "candle", "BTC-USD", "1s", limit=500)
    assert [c["close"] for c in got] == [2.0, 1.0]  # 500 s of bars: today and yesterday
    assert [d.name for d in recent_dates(tmp_path, "candles", "1s", 300_000)] == [
        p.name for p in sorted(oldest.parent.iterdir(), reverse=True)[:5]
    ]  # 300,000 s (3.5 days): the four days they touch and one more
    assert lake_bars(tmp_path, "candle", "BTC-USD", "10s", limit=10) == []


def test_it_is_read_only_says_what_is_wrong_and_sends_security_headers(tmp_path):
    with Server(lake_only(tmp_path)) as server:
        assert server.get("/api/config", method="POST")[0] == 405
        status, _, body = server.get("/api/bars?symbol=BTC-USD&resolution=5s")
        assert status == 400 and "resolution: expected one of 1s, 10s" in json.loads(body)["error"]
        assert server.get("/api/bars?symbol=BTC-USD&limit=x")[0] == 400
        assert server.get("/api/bars?resolution=1s")[0] == 400
        status, headers, page = server.get("/")
        assert status == 200 and b"lightweight-charts.standalone.production.js" in page
        assert "script-src 'self';" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        status, _, script = server.get("/static/vendor/lightweight-charts.standalone.production.js")
        assert status == 200 and b"TradingView Lightweight Charts" in script[:400]


@pytest.mark.broker
def test_live_updates_reach_the_page_of_their_series_only(broker, tmp_path):
    topics = {CANDLE: "d.candles", FORMING: "d.live", "quote_bar": "d.quote_bars"}
    broker.create_topics({t: 1 for t in topics.values()})
    config = DashboardConfig(
        lake=tmp_path,
        resolutions=("1s", "10s"),
        client_config={"bootstrap.servers": broker.bootstrap},
        topics=topics,
    )
    with Server(config) as server:
        time.sleep(2)  # the feed assigns the partitions (forming ones from their end)

        def send() -> None:
            time.sleep(1)
            other = {**candle(T0, 5.0), "symbol": "ETH-USD", "bar_id": f"ETH-USD:1s:{T0}"}
            messages = [
                (topics[FORMING], candle(T0, 100.5, final=False)),
                (topics[CANDLE], other),
                (topics[CANDLE], candle(T0, 101.0)),
                (topics[CANDLE], candle(T0, 99.0, revision=1)),
                (topics[CANDLE], candle(T0, 101.0)),  # stale: dropped
                (topics[CANDLE], candle(T0 + 1_000, 102.0)),
            ]
            for topic, record in messages:
                key = record["bar_id"].encode()
                produce(broker.bootstrap, topic, [(key, msgspec.json.encode(record))])
                time.sleep(0.3)  # two topics: the feed sees them in the order sent

        threading.Thread(target=send, daemon=True).start()
        events = server.events("/api/events?symbol=BTC-USD&resolution=1s", until=4)
    assert [(name, e["close"], e["revision"]) for name, e in events] == [
        ("forming", 100.5, 0),
        ("candle", 101.0, 0),
        ("candle", 99.0, 1),
        ("candle", 102.0, 0),
    ]
