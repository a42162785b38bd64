"""All settings of the flow, from `CANDLEWAX_*` environment variables (or a `.env` file).

The names in `docs/contracts.md` (`CANDLEWAX_SOURCE`, `CANDLEWAX_SOURCE_PATH`,
`CANDLEWAX_KAFKA_BROKERS`, `CANDLEWAX_KAFKA_TAIL`, `CANDLEWAX_LAKE_DIR`) are a contract with
outside tools; the rest are ours and every one is documented in the README. A bad value
stops the start with one message naming the variable and what it expects
(`load_settings`), rather than a traceback from deep inside the flow.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from candlewax.records import DEFAULT_ALERT_FIELDS, DRIFT_FIELDS
from config.durations import MAX_DURATION_MS, format_duration, parse_duration_ms

ENV_PREFIX = "CANDLEWAX_"

# A duration setting: written `500ms`, `1s`, `5m`, held as whole milliseconds.
DurationMs = Annotated[int, NoDecode]


# Settings whose values may hold a secret: errors never echo them.
SECRET_FIELDS = {
    "kafka_sasl_password",
    "kafka_consumer_config",
    "kafka_producer_config",
    "postgres_dsn",
    "postgres_password",
    "redis_url",
}
# Variables with the prefix that are read by other parts, not the settings: the pods'
# start-up script (`candlewax recovery-init --partitions`, k8s/).
NOT_SETTINGS = {"CANDLEWAX_RECOVERY_PARTITIONS"}
# Bounds of duration settings beyond the general 0..366 days.
DURATION_BOUNDS = {
    "kafka_poll_timeout": (1, 10_000),  # 0 would spin a core while the topic is idle
    "kafka_end_confirm": (0, 600_000),
}
_SECRET_KEY = re.compile(r"password|secret|jaas|token|key\.password", re.I)


class SettingsError(ValueError):
    """A setting has a value the flow cannot use; the message names the variable."""


class Settings(BaseSettings):
    """Typed settings; see the README's table for what each one does."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    # --- where trades come from -------------------------------------------------------
    source: Literal["kafka", "file", "simulator"] = "kafka"
    source_path: Path | None = None
    batch_size: int = Field(default=100_000, ge=1, le=1_000_000)

    # --- where quotes come from (empty: no quotes branch) ------------------------------
    quotes_source: Literal["", "kafka", "file", "simulator"] = ""
    quotes_source_path: Path | None = None
    quotes_accept_locked: bool = False

    # --- Kafka -----------------------------------------------------------------------
    kafka_brokers: str = ""
    kafka_tail: bool = True
    kafka_trades_topic: str = "trades"
    kafka_candles_topic: str = "candles"
    kafka_dlq_topic: str = "trades.dlq"
    kafka_drift_topic: str = "candles.drift"
    kafka_live_topic: str = "candles.live"
    kafka_quotes_topic: str = "quotes"
    kafka_quote_bars_topic: str = "quote_bars"
    kafka_quotes_dlq_topic: str = "quotes.dlq"
    kafka_quote_drift_topic: str = "quote_bars.drift"
    kafka_poll_timeout: DurationMs = 10
    kafka_connect_timeout: DurationMs = 0
    kafka_end_confirm: DurationMs = 500
    kafka_security_protocol: str | None = None
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_consumer_config: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    kafka_producer_config: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)

    # --- the Parquet lake ------------------------------------------------------------
    lake_dir: Path = Path("lake")
    lake_flush_rows: int = Field(default=250_000, ge=1)
    lake_flush_interval: DurationMs = 30_000

    # --- serving stores (off when empty) ----------------------------------------------
    postgres_dsn: SecretStr = SecretStr("")
    postgres_password: SecretStr | None = None
    redis_url: SecretStr = SecretStr("")
    serving_retry_timeout: DurationMs = 300_000

    # --- candles, lateness, dedupe, drift --------------------------------------------
    resolutions: Annotated[list[int], NoDecode] = Field(default=[1_000, 10_000, 60_000])
    allowed_lateness: DurationMs = 1_000
    dedupe_horizon: DurationMs = 300_000
    dedupe_fingerprint: bool = False
    drift_threshold: float = Field(default=0.005, gt=0)
    drift_alert_fields: Annotated[list[str], NoDecode] = Field(default=list(DEFAULT_ALERT_FIELDS))
    drift_retention: DurationMs = 600_000
    restatement: bool = False
    restatement_horizon: DurationMs = 300_000
    live_interval: DurationMs = 200
    watermark_jitter: DurationMs = 100
    outlier_threshold: float = Field(default=0.1, ge=0)
    outlier_trades: int = Field(default=50, ge=10, le=100_000)
    shards: int = Field(default=4, ge=1, le=4_096)
    ts_min: Annotated[int, NoDecode] = 946_684_800_000  # 2000-01-01T00:00:00Z
    ts_max_future: DurationMs = 3_600_000

    # --- operations ------------------------------------------------------------------
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_port_per_process: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- the simulator source (a first version; see `sources/simulator.py`) ----------
    sim_symbols: int = Field(default=8, ge=1, le=10_000)
    sim_trades: int = Field(default=100_000, ge=0)
    sim_duration: DurationMs = 0
    sim_rate: float = Field(default=2_000.0, gt=0)
    sim_speed: float = Field(default=0.0, ge=0)
    sim_seed: int = 7
    sim_start: Annotated[int | None, NoDecode] = None
    sim_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    sim_disorder_rate: float = Field(default=0.0, ge=0, le=1)
    sim_late_rate: float = Field(default=0.0, ge=0, le=1)
    sim_malformed_rate: float = Field(default=0.0, ge=0, le=1)
    sim_fat_finger_rate: float = Field(default=0.0, ge=0, le=1)
    sim_future_rate: float = Field(default=0.0, ge=0, le=1)
    sim_noise_share: float = Field(default=0.0, ge=0, lt=1)
    sim_quotes_per_trade: float = Field(default=3.0, ge=0, le=1_000)
    sim_crossed_rate: float = Field(default=0.0, ge=0, le=1)
    sim_locked_rate: float = Field(default=0.0, ge=0, le=1)

    @field_validator(
        "kafka_poll_timeout",
        "kafka_connect_timeout",
        "kafka_end_confirm",
        "lake_flush_interval",
        "allowed_lateness",
        "dedupe_horizon",
        "drift_retention",
        "restatement_horizon",
        "live_interval",
        "watermark_jitter",
        "sim_duration",
        "ts_max_future",
        "serving_retry_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any, info: Any) -> int:
        ms = parse_duration_ms(value)
        low, high = DURATION_BOUNDS.get(info.field_name, (0, MAX_DURATION_MS))
        if not low <= ms <= high:
            raise ValueError(
                f"expected a duration from {format_duration(low)} to {format_duration(high)}"
            )
        return ms

    @field_validator("resolutions", mode="before")
    @classmethod
    def _resolutions(cls, value: Any) -> list[int]:
        items = value.split(",") if isinstance(value, str) else list(value)
        parsed = sorted({parse_duration_ms(item) for item in items if str(item).strip()})
        if not parsed:
            raise ValueError("expected a comma-separated list such as 1s,10s,1m")
        base = parsed[0]
        if base <= 0:
            raise ValueError("resolutions must be longer than 0ms")
        for res in parsed[1:]:
            if res % base:
                raise ValueError(
                    "every resolution must be a multiple of the smallest "
                    f"({format_duration(base)}) "
                    f"so coarser candles are exact roll-ups; {format_duration(res)} is not"
                )
        return parsed

    @field_validator("drift_alert_fields", mode="before")
    @classmethod
    def _drift_fields(cls, value: Any) -> list[str]:
        items = [f.strip() for f in value.split(",")] if isinstance(value, str) else list(value)
        unknown = sorted(set(items) - set(DRIFT_FIELDS))
        if unknown or not items:
            raise ValueError(f"expected a comma-separated list of {', '.join(DRIFT_FIELDS)}")
        return items

    @field_validator("kafka_consumer_config", "kafka_producer_config", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError('expected a JSON object of librdkafka settings, e.g. {"linger.ms": 5}')
        return value

    @field_validator("ts_min", "sim_start", mode="before")
    @classmethod
    def _epoch_ms(cls, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_epoch_ms(value)

    def check_source(self) -> None:
        """What the flow needs of its source settings (the tools around it do not)."""
        if self.source == "file" and self.source_path is None:
            raise ValueError("CANDLEWAX_SOURCE=file needs CANDLEWAX_SOURCE_PATH (an NDJSON file)")
        if self.source == "file" and not self.source_path.is_file():  # type: ignore[union-attr]
            raise ValueError(f"CANDLEWAX_SOURCE_PATH: no such file: {self.source_path}")
        if self.source == "kafka" and not self.brokers:
            raise ValueError(
                "CANDLEWAX_SOURCE=kafka needs CANDLEWAX_KAFKA_BROKERS (host:port,...); "
                "or set CANDLEWAX_SOURCE=file or simulator"
            )
        path = self.quotes_source_path
        if self.quotes_source == "file" and path is None:
            raise ValueError(
                "CANDLEWAX_QUOTES_SOURCE=file needs CANDLEWAX_QUOTES_SOURCE_PATH "
                "(an NDJSON file of quote messages)"
            )
        if self.quotes_source == "file" and not path.is_file():  # type: ignore[union-attr]
            raise ValueError(f"CANDLEWAX_QUOTES_SOURCE_PATH: no such file: {path}")
        if self.quotes_source == "kafka" and not self.brokers:
            raise ValueError("CANDLEWAX_QUOTES_SOURCE=kafka needs CANDLEWAX_KAFKA_BROKERS")

    # --- derived values --------------------------------------------------------------
    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.kafka_brokers.split(",") if b.strip()]

    @property
    def base_resolution(self) -> int:
        return self.resolutions[0]

    @property
    def bounded_input(self) -> bool:
        """Whether the inputs end; then watermarks follow event time only (reproducible
        output). Trades and quotes share the setting that decides it (a file, Kafka
        without tail, a simulator with an end and no pacing): both end or neither."""
        sources = [self.source] + ([self.quotes_source] if self.quotes_source else [])
        return all(self._bounded(source) for source in sources)

    def _bounded(self, source: str) -> bool:
        if source == "file":
            return True
        if source == "kafka":
            return not self.kafka_tail
        return (self.sim_trades > 0 or self.sim_duration > 0) and self.sim_speed == 0

    def kafka_client_config(self) -> dict[str, Any]:
        """Connection settings shared by consumers, producers and admin clients."""
        config: dict[str, Any] = {"bootstrap.servers": ",".join(self.brokers)}
        optional = {
            "security.protocol": self.kafka_security_protocol,
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password,
        }
        config.update({k: v for k, v in optional.items() if v})
        if self.kafka_sasl_password is not None:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config

    def secrets(self) -> list[str]:
        """Values that must never be shown: the SASL password and any secret-looking
        entry of the librdkafka configuration objects."""
        found = []
        if self.kafka_sasl_password is not None:
            found.append(self.kafka_sasl_password.get_secret_value())
        if self.postgres_password is not None:
            found.append(self.postgres_password.get_secret_value())
        found += [p for p in (url_password(self.postgres_dsn), url_password(self.redis_url)) if p]
        for extra in (self.kafka_consumer_config, self.kafka_producer_config):
            found += [str(v) for k, v in extra.items() if _SECRET_KEY.search(k)]
        return found


def url_password(secret: SecretStr) -> str | None:
    """The password inside a connection URI or libpq `key=value` string, if any."""
    value = secret.get_secret_value()
    if "://" in value:
        return urlsplit(value).password
    match = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", value)
    return match.group(1).strip("'") if match else None


def parse_epoch_ms(value: Any) -> int:
    """Epoch milliseconds from an integer or an ISO date/time (UTC when no zone is given)."""
    if isinstance(value, bool):
        raise ValueError("expected epoch milliseconds or an ISO date such as 2000-01-01")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected epoch milliseconds or an ISO date such as 2000-01-01") from None
    if isinstance(moment, date) and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _describe(error: Any) -> str:
    location = error.get("loc") or ()
    field = str(location[0]) if location else ""
    variable = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    # Values that may hold a secret are never echoed back.
    echo = field and field not in SECRET_FIELDS and "input" in error
    if echo and not isinstance(error["input"], dict):
        shown = repr(error["input"])
        if len(shown) > 80:
            shown = shown[:80] + "..."
        return f"{variable}: {message} (got {shown})"
    return f"{variable}: {message}" if field else message


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per `CANDLEWAX_*` variable that names no setting (a typo is otherwise
    ignored silently), with the nearest setting's name when there is one."""
    environ = os.environ if environ is None else environ
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    warnings = []
    for name in sorted(n for n in environ if n.upper().startswith(ENV_PREFIX)):
        if name.upper() in known or name.upper() in NOT_SETTINGS:
            continue
        near = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.75)
        hint = f"; did you mean {near[0]}?" if near else ""
        warnings.append(f"{name} is not a candlewax setting and is ignored{hint}")
    return warnings


def load_settings(*, for_flow: bool = True, **overrides: Any) -> Settings:
    """Read settings from the environment, turning validation errors into one clear message.
    `for_flow` also checks what the flow needs of its source (a file that exists, brokers
    for Kafka); the commands around the flow take only their defaults from here."""
    try:
        settings = Settings(**overrides)
        if for_flow:
            settings.check_source()
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise SettingsError("invalid candlewax settings:\n  " + "\n  ".join(lines)) from None
    except ValueError as exc:
        raise SettingsError(f"invalid candlewax settings:\n  {exc}") from None
    return settings
