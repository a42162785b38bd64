"""The candle flow: trades -> decode/validate -> dedupe -> event-time candles -> sinks.

    python -m bytewax.run flows.ohlcv            # settings from CANDLEWAX_* variables
    python -m bytewax.run flows.ohlcv -w 2       # two workers (Timely), keyed by symbol

With a quotes input (`CANDLEWAX_QUOTES_SOURCE`) the same flow has a second branch:
quotes -> decode/validate -> dedupe -> quote bars -> sinks. One flow rather than two: one
deployment, one recovery store and one set of metrics; a symbol's trades and quotes run
on the same worker; and the input clock of a process counts the partitions of both
inputs, so neither branch's watermark runs ahead while the other is behind.

`build_flow` makes the same flow around any source and sinks, so tests wrap it with
`TestingSource`/`TestingSink`; the module attribute `flow` builds it from the settings
(lazily, so importing this module for `build_flow` reads no environment).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import FixedPartitionedSink, Sink

from candlewax.cluster import offset_bytewax_api_port, process_id
from candlewax.failures import RedactingFilter, add_secret, exit_on_failure, redact
from candlewax.heap import freeze_startup
from candlewax.metrics import FlowMetrics, serve_metrics
from candlewax.records import QUOTE, TRADE, MessageKind, record_symbol
from candlewax.shards import shard_key
from candlewax.stopping import stop_on_signals, stopped_by
from config.settings import Settings, SettingsError, load_settings, unknown_variables
from operators import steps
from operators.candles import CandleSpec
from operators.decode import ValidationRules, read_ahead
from operators.drift import DriftPolicy
from operators.price_guard import OutlierRule
from sinks import lake, postgres, redis
from sinks.kafka import (
    DEFAULT_MESSAGE_MAX_BYTES,
    KafkaRecordSink,
    KafkaViewSink,
    candle_messages,
    dlq_messages,
    drift_messages,
    forming_candle_messages,
    quote_bar_messages,
    quote_drift_messages,
)
from sinks.parquet import LakeSink, LastWrites
from sources.file import NdjsonFileSource
from sources.kafka import KafkaBatchSource
from sources.simulator import SimulatorConfig, SimulatorSource

log = logging.getLogger("candlewax")


@dataclass
class FlowSinks:
    """Where each output stream goes; each list may hold several sinks (Kafka and lake)."""

    candles: list[Sink[Any]] = field(default_factory=list)
    trades: list[Sink[Any]] = field(default_factory=list)
    drift: list[Sink[Any]] = field(default_factory=list)
    dlq: list[Sink[Any]] = field(default_factory=list)
    quote_bars: list[Sink[Any]] = field(default_factory=list)
    quotes: list[Sink[Any]] = field(default_factory=list)
    quote_drift: list[Sink[Any]] = field(default_factory=list)
    quote_dlq: list[Sink[Any]] = field(default_factory=list)
    forming: list[Sink[Any]] = field(default_factory=list)
    """Live forming candles (`candles.live`): Kafka only, not the lake."""


def build_flow(
    settings: Settings,
    *,
    source: Source[Any] | None = None,
    sinks: FlowSinks | None = None,
    metrics: FlowMetrics | None = None,
    flow_id: str = "candlewax_ohlcv",
    quote_source: Source[Any] | None = None,
) -> Dataflow:
    """The candle dataflow; sources and sinks default to what the settings name (quotes:
    none unless `CANDLEWAX_QUOTES_SOURCE` is set or `quote_source` given)."""
    metrics = metrics if metrics is not None else FlowMetrics()
    source = source if source is not None else default_source(settings)
    if quote_source is None and settings.quotes_source:
        quote_source = default_quote_source(settings)
    sinks = sinks if sinks is not None else default_sinks(settings)

    flow = Dataflow(flow_id)
    raw = op.input("trades_in", flow, source)
    rule = outlier_rule(settings)
    decoded = steps.decode(
        "decode",
        raw,
        validation_rules(settings),
        settings.dedupe_fingerprint,
        metrics,
        origin=rule.enabled,
        shards=settings.shards,
    )
    unique = steps.dedupe("dedupe", decoded.valid, settings.dedupe_horizon, metrics)
    rejections = decoded.rejections
    if rule.enabled:
        guarded = steps.price_guard("price_guard", unique, rule, metrics)
        unique = guarded.trades
        rejections = op.merge("rejections", rejections, guarded.outliers)
    forming_s = settings.live_interval / 1000.0 if sinks.forming else 0.0
    shards = settings.shards
    windows = steps.candles("candles", unique, candle_spec(settings), metrics, forming_s, shards)
    by_shard = functools.partial(_by_shard, shards=shards)
    outputs: list[tuple[str, Stream[Any], list[Sink[Any]], Any]] = [
        ("candles", windows.candles, sinks.candles, by_shard),
        ("trades", windows.trades, sinks.trades, by_shard),
        ("drift", windows.drift, sinks.drift, by_shard),
        ("dlq", rejections, sinks.dlq, _by_source),
        ("forming", windows.forming, sinks.forming, by_shard),
    ]
    if quote_source is not None:
        outputs += _quote_branch(flow, quote_source, settings, sinks, metrics)
    _connect(outputs)
    return flow


def _quote_branch(
    flow: Dataflow,
    source: Source[Any],
    settings: Settings,
    sinks: FlowSinks,
    metrics: FlowMetrics,
) -> list[tuple[str, Stream[Any], list[Sink[Any]], Any]]:
    """The quotes branch: its streams and where each goes."""
    raw = op.input("quotes_in", flow, source)
    decoded = steps.decode(
        "decode_quotes",
        raw,
        validation_rules(settings),
        settings.dedupe_fingerprint,
        metrics.quotes,
        origin=False,
        kind=QUOTE,
    )
    unique = steps.dedupe("dedupe_quotes", decoded.valid, settings.dedupe_horizon, metrics.quotes)
    bars = steps.quote_bars("quote_bars", unique, candle_spec(settings), metrics.quotes)
    return [
        ("quote_bars", bars.bars, sinks.quote_bars, _by_symbol),
        ("quotes", bars.quotes, sinks.quotes, _by_symbol),
        ("quote_drift", bars.drift, sinks.quote_drift, _by_symbol),
        ("quote_dlq", decoded.rejections, sinks.quote_dlq, _by_source),
    ]


def _connect(outputs: list[tuple[str, Stream[Any], list[Sink[Any]], Any]]) -> None:
    for name, stream, sinks, key in outputs:
        keyed = None
        for index, sink in enumerate(sinks):
            if isinstance(sink, FixedPartitionedSink):  # partitioned sinks route by key
                keyed = keyed or op.key_on(f"{name}_key", stream, key)
                op.output(f"{name}_out_{index}", keyed, sink)
            else:
                op.output(f"{name}_out_{index}", stream, sink)


def _by_symbol(batch: Any) -> str:
    return record_symbol(batch)


def _by_shard(batch: Any, shards: int) -> str:
    """The key of a shard's batch (all its rows are of the shard's symbols)."""
    return shard_key(record_symbol(batch), shards)


def _by_source(rejections: Any) -> str:
    return str(rejections.get_column("source")[0]).rsplit("@", 1)[0]


def validation_rules(settings: Settings) -> ValidationRules:
    return ValidationRules(
        ts_min=settings.ts_min,
        ts_max_future_ms=settings.ts_max_future,
        accept_locked=settings.quotes_accept_locked,
    )


def outlier_rule(settings: Settings) -> OutlierRule:
    return OutlierRule(threshold=settings.outlier_threshold, trades=settings.outlier_trades)


def candle_spec(settings: Settings) -> CandleSpec:
    return CandleSpec(
        resolutions=tuple(settings.resolutions),
        allowed_lateness_ms=settings.allowed_lateness,
        drift_retention_ms=settings.drift_retention,
        live=not settings.bounded_input,
        drift=DriftPolicy(
            threshold=settings.drift_threshold, fields=tuple(settings.drift_alert_fields)
        ),
        restatement=settings.restatement,
        restatement_horizon_ms=settings.restatement_horizon,
        watermark_jitter_ms=settings.watermark_jitter,
    )


def simulator_config(settings: Settings) -> SimulatorConfig:
    return SimulatorConfig(
        symbols=settings.sim_symbols,
        trades=settings.sim_trades,
        duration_ms=settings.sim_duration,
        rate=settings.sim_rate,
        speed=settings.sim_speed,
        seed=settings.sim_seed,
        start_ms=settings.sim_start,
        allowed_lateness_ms=settings.allowed_lateness,
        base_window_ms=settings.base_resolution,
        duplicate_rate=settings.sim_duplicate_rate,
        disorder_rate=settings.sim_disorder_rate,
        late_rate=settings.sim_late_rate,
        malformed_rate=settings.sim_malformed_rate,
        fat_finger_rate=settings.sim_fat_finger_rate,
        future_rate=settings.sim_future_rate,
        noise_share=settings.sim_noise_share,
        quotes_per_trade=settings.sim_quotes_per_trade,
        crossed_rate=settings.sim_crossed_rate,
        locked_rate=settings.sim_locked_rate,
    )


def default_source(settings: Settings) -> Source[Any]:
    if settings.source == "file":
        assert settings.source_path is not None
        return NdjsonFileSource(settings.source_path, settings.batch_size, read_ahead(TRADE))
    if settings.source == "simulator":
        return SimulatorSource(simulator_config(settings), settings.batch_size)
    return kafka_source(settings, settings.kafka_trades_topic, TRADE)


def kafka_source(settings: Settings, topic: str, kind: MessageKind) -> KafkaBatchSource:
    return KafkaBatchSource(
        settings.kafka_client_config(),
        topic,
        tail=settings.kafka_tail,
        batch_size=settings.batch_size,
        poll_timeout_ms=settings.kafka_poll_timeout,
        consumer_config=settings.kafka_consumer_config,
        connect_timeout_ms=settings.kafka_connect_timeout,
        end_confirm_ms=settings.kafka_end_confirm,
        read_ahead=read_ahead(kind),
    )


def default_quote_source(settings: Settings) -> Source[Any]:
    if settings.quotes_source == "file":
        assert settings.quotes_source_path is not None
        return NdjsonFileSource(settings.quotes_source_path, settings.batch_size, read_ahead(QUOTE))
    if settings.quotes_source == "simulator":
        config = dataclasses.replace(simulator_config(settings), kind="quote")
        return SimulatorSource(config, settings.batch_size)
    return kafka_source(settings, settings.kafka_quotes_topic, QUOTE)


# A bounded run's lake writes what it holds once no rows have come for this long: the
# input has likely ended (a Kafka backfill confirms its end with 500 ms of quiet).
BOUNDED_QUIET_FLUSH_MS = 200


def default_sinks(settings: Settings) -> FlowSinks:
    """The lake always; Kafka topics too when brokers are set."""

    last_writes = LastWrites()  # the lake's last writes at the end run side by side

    def lake_sink(dataset: lake.LakeDataset) -> LakeSink:
        return LakeSink(
            settings.lake_dir,
            dataset,
            flush_rows=settings.lake_flush_rows,
            flush_interval_ms=settings.lake_flush_interval,
            last_writes=last_writes,
            quiet_flush_ms=BOUNDED_QUIET_FLUSH_MS if settings.bounded_input else 0,
        )

    sinks = FlowSinks(
        candles=[lake_sink(lake.CANDLES)],
        trades=[lake_sink(lake.TRADES)],
        drift=[lake_sink(lake.DRIFT)],
        dlq=[lake_sink(lake.DLQ)],
    )
    if settings.quotes_source:
        sinks.quote_bars.append(lake_sink(lake.QUOTE_BARS))
        sinks.quotes.append(lake_sink(lake.QUOTES))
        sinks.quote_drift.append(lake_sink(lake.QUOTE_DRIFT))
        sinks.quote_dlq.append(lake_sink(lake.DLQ))
    if settings.brokers:
        client = settings.kafka_client_config()
        extra = settings.kafka_producer_config

        def kafka_sink(topic: str, to_messages: Any) -> KafkaRecordSink:
            return KafkaRecordSink(client, topic, to_messages, extra)

        sinks.candles.append(kafka_sink(settings.kafka_candles_topic, candle_messages))
        if settings.live_interval and not settings.bounded_input:
            # A view, not an output: best effort, it never stops or slows the flow.
            view = KafkaViewSink(client, settings.kafka_live_topic, forming_candle_messages)
            sinks.forming.append(view)
        sinks.drift.append(kafka_sink(settings.kafka_drift_topic, drift_messages))
        max_bytes = int(extra.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES))
        to_dlq = functools.partial(dlq_messages, max_message_bytes=max_bytes)
        sinks.dlq.append(kafka_sink(settings.kafka_dlq_topic, to_dlq))
        if settings.quotes_source:
            sinks.quote_bars.append(kafka_sink(settings.kafka_quote_bars_topic, quote_bar_messages))
            sinks.quote_drift.append(
                kafka_sink(settings.kafka_quote_drift_topic, quote_drift_messages)
            )
            sinks.quote_dlq.append(kafka_sink(settings.kafka_quotes_dlq_topic, to_dlq))
    _add_serving_sinks(settings, sinks)
    return sinks


def _add_serving_sinks(settings: Settings, sinks: FlowSinks) -> None:
    """PostgreSQL tables and the Redis projection, each when its setting is not empty."""
    dsn = settings.postgres_dsn.get_secret_value()
    if dsn:
        password = settings.postgres_password
        target = postgres.PostgresTarget(
            dsn,
            password.get_secret_value() if password is not None else None,
            settings.serving_retry_timeout,
        )
        sinks.candles.append(postgres.PostgresSink(target, postgres.CANDLES))
        sinks.drift.append(postgres.PostgresSink(target, postgres.DRIFT))
        if settings.quotes_source:
            sinks.quote_bars.append(postgres.PostgresSink(target, postgres.QUOTE_BARS))
            sinks.quote_drift.append(postgres.PostgresSink(target, postgres.QUOTE_DRIFT))
    url = settings.redis_url.get_secret_value()
    if url:
        store = redis.RedisTarget(url, settings.serving_retry_timeout)
        sinks.candles.append(redis.RedisSink(store, redis.CANDLES))
        if settings.live_interval and not settings.bounded_input:
            sinks.forming.append(redis.RedisSink(store, redis.FORMING))
        if settings.quotes_source:
            sinks.quote_bars.append(redis.RedisSink(store, redis.QUOTE_BARS))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())


class _RunOutcome:
    """How the run ended, for the summary at exit: a summary never claims success for a
    run that crashed (an input or output failure ends the process before it, see
    `candlewax.failures`)."""

    def __init__(self, metrics: FlowMetrics):
        self.metrics = metrics
        self.crash: str | None = None
        self._previous_hook = sys.excepthook

    def on_exception(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # a second Ctrl-C: stop at once, no traceback
            self.crash = "stopped at once by a second interrupt"
            return
        self.crash = f"{kind.__name__}: {redact(str(error))}"
        self._previous_hook(kind, error, trace)

    def log_at_exit(self) -> None:
        if self.crash is not None:
            log.error("run FAILED (%s); counts so far: %s", self.crash, self.metrics.counts())
        elif stopped_by() is not None:
            self.metrics.log_summary(f"run stopped by {stopped_by()}")
        else:
            self.metrics.log_summary("run summary")


def flow_from_environment() -> Dataflow:
    """What `python -m bytewax.run flows.ohlcv` runs: settings, metrics, summary at exit."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"candlewax: {redact(str(exc))}", file=sys.stderr)
        raise SystemExit(2) from None
    for secret in settings.secrets():
        add_secret(secret)
    configure_logging(settings.log_level)
    for warning in unknown_variables():
        log.warning(warning)
    exit_on_failure()  # an input or output failure: one line, exit non-zero (no panic)
    stop_on_signals()  # Ctrl-C / SIGTERM: stop cleanly, lake flushed
    metrics = FlowMetrics.default()
    # Processes sharing a host each take base port + process id; pods (one process per
    # network namespace) keep the base port: CANDLEWAX_METRICS_PORT_PER_PROCESS=false.
    offset = process_id() if settings.metrics_port_per_process else 0
    if settings.metrics_port:
        serve_metrics(settings.metrics_port + offset)
    api_port = offset_bytewax_api_port(offset)
    if api_port is not None:
        log.info("Bytewax dataflow API on port %s", api_port)
    outcome = _RunOutcome(metrics)
    sys.excepthook = outcome.on_exception
    atexit.register(outcome.log_at_exit)
    log.info(
        "candle flow: source=%s quotes=%s resolutions=%s lateness=%sms lake=%s kafka=%s "
        "postgres=%s redis=%s",
        settings.source,
        settings.quotes_source or "off",
        settings.resolutions,
        settings.allowed_lateness,
        settings.lake_dir,
        settings.kafka_brokers or "off",
        "on" if settings.postgres_dsn.get_secret_value() else "off",
        "on" if settings.redis_url.get_secret_value() else "off",
    )
    try:
        flow = build_flow(settings, metrics=metrics)
    except (OSError, ValueError) as exc:  # an input file that cannot be read, say
        log.error("candlewax: %s", redact(str(exc)))
        raise SystemExit(2) from None
    freeze_startup()  # what exists now lives as long as the process (`candlewax.heap`)
    return flow


_flow: Dataflow | None = None


def __getattr__(name: str) -> Any:
    # `bytewax.run` looks up `flow`; build it on first use, from the environment.
    global _flow
    if name == "flow":
        if _flow is None:
            _flow = flow_from_environment()
        return _flow
    raise AttributeError(name)
