"""A live candle chart and the pipeline's health in a browser.

    candlewax dashboard [--lake lake] [--brokers HOST:PORT] [--metrics URL ...]
                        [--host 127.0.0.1] [--port 8050]

Open the printed URL: a candlestick chart per symbol with volume (symbol picker,
resolution switch), the forming candle as the flow publishes it (`candles.live`), quote
bar spreads under it when the quotes branch runs, and a health strip (messages/s by
outcome, consumer lag, rejects by reason, drift alerts, candle delay p99) read from the
flow's /metrics endpoints (`--metrics` once per process). History comes from the lake
(DuckDB), what happens next from the Kafka topics. Read-only; it listens on 127.0.0.1
unless `--host` says otherwise. Topic names and defaults come from the CANDLEWAX_*
settings the flow uses.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from config.durations import format_duration, parse_duration_ms
from config.settings import Settings
from tools.dashboard.app import Dashboard, DashboardConfig
from tools.dashboard.bars import CANDLE, FORMING, QUOTE_BAR

log = logging.getLogger("candlewax.dashboard")


def add_arguments(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.add_argument(
        "--lake",
        type=Path,
        default=settings.lake_dir,
        help="the lake (default: CANDLEWAX_LAKE_DIR)",
    )
    parser.add_argument(
        "--brokers",
        default=settings.kafka_brokers,
        help="Kafka bootstrap servers for the live updates (default: CANDLEWAX_KAFKA_BROKERS; "
        "empty: the lake only)",
    )
    default_metrics = (
        [f"http://127.0.0.1:{settings.metrics_port}/metrics"] if settings.metrics_port else []
    )
    parser.add_argument(
        "--metrics",
        action="append",
        metavar="URL",
        help="a flow process's /metrics endpoint, once per process (default: "
        "http://127.0.0.1:CANDLEWAX_METRICS_PORT/metrics)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8050, help="port to listen on (8050)")
    parser.add_argument(
        "--lookback",
        default="15m",
        help="how far back the topics are read for bars the lake may not have yet (15m)",
    )
    parser.set_defaults(default_metrics=default_metrics, settings=settings)


def run(args: argparse.Namespace) -> int:
    dashboard = Dashboard(dashboard_config(args))
    config = uvicorn.Config(
        dashboard.app, host=args.host, port=args.port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    print(f"candlewax dashboard: http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    server.run()
    return 0


def dashboard_config(args: argparse.Namespace) -> DashboardConfig:
    settings: Settings = args.settings
    client = None
    if args.brokers:
        client = {**settings.kafka_client_config(), "bootstrap.servers": args.brokers}
    return DashboardConfig(
        lake=Path(args.lake),
        resolutions=tuple(format_duration(ms) for ms in settings.resolutions),
        client_config=client,
        topics=dashboard_topics(settings),
        metrics_urls=tuple(args.metrics or args.default_metrics),
        lookback_ms=parse_duration_ms(args.lookback),
    )


def dashboard_topics(settings: Settings) -> dict[str, str]:
    """The topics the dashboard reads, by the kind of record they hold."""
    return {
        CANDLE: settings.kafka_candles_topic,
        FORMING: settings.kafka_live_topic,
        QUOTE_BAR: settings.kafka_quote_bars_topic,
    }
