"""Settings: defaults that work, documented names, one clear message per bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, load_settings, unknown_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_follow_the_design(monkeypatch):
    monkeypatch.setenv("CANDLEWAX_KAFKA_BROKERS", "127.0.0.1:9092")
    settings = load_settings()
    assert settings.source == "kafka" and settings.kafka_tail and not settings.bounded_input
    assert settings.resolutions == [1_000, 10_000, 60_000]
    assert settings.allowed_lateness == 1_000 and settings.drift_threshold == 0.005
    assert settings.lake_dir == Path("lake")
    assert (settings.kafka_trades_topic, settings.kafka_candles_topic) == ("trades", "candles")
    assert (settings.kafka_dlq_topic, settings.kafka_drift_topic) == ("trades.dlq", "candles.drift")


def test_values_from_the_environment(monkeypatch, tmp_path):
    (tmp_path / "trades.ndjson").write_text("")
    monkeypatch.setenv("CANDLEWAX_SOURCE", "file")
    monkeypatch.setenv("CANDLEWAX_SOURCE_PATH", str(tmp_path / "trades.ndjson"))
    monkeypatch.setenv("CANDLEWAX_RESOLUTIONS", "5s, 1s, 1m, 1h")
    monkeypatch.setenv("CANDLEWAX_ALLOWED_LATENESS", "250ms")
    monkeypatch.setenv("CANDLEWAX_KAFKA_TAIL", "false")
    monkeypatch.setenv("CANDLEWAX_KAFKA_PRODUCER_CONFIG", '{"linger.ms": 5}')
    settings = load_settings()
    assert settings.resolutions == [1_000, 5_000, 60_000, 3_600_000]
    assert settings.allowed_lateness == 250 and settings.bounded_input
    assert settings.kafka_producer_config == {"linger.ms": 5}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CANDLEWAX_ALLOWED_LATENESS", "soon", "expected a duration such as 500ms"),
        ("CANDLEWAX_RESOLUTIONS", "1s,1500ms", "must be a multiple of the smallest"),
        ("CANDLEWAX_KAFKA_TAIL", "perhaps", "valid boolean"),
        ("CANDLEWAX_SOURCE", "carrier-pigeon", "'kafka', 'file' or 'simulator'"),
        ("CANDLEWAX_DRIFT_THRESHOLD", "-1", "greater than 0"),
        ("CANDLEWAX_TS_MIN", "yesterday", "epoch milliseconds or an ISO date"),
        ("CANDLEWAX_KAFKA_CONSUMER_CONFIG", "[1]", "JSON object"),
        # Values that pass a type check and would hurt at run time:
        ("CANDLEWAX_DEDUPE_HORIZON", "999999999999d", "at most 366d"),
        ("CANDLEWAX_ALLOWED_LATENESS", "400d", "at most 366d"),
        ("CANDLEWAX_KAFKA_POLL_TIMEOUT", "0", "from 1ms to 10s"),
        ("CANDLEWAX_KAFKA_POLL_TIMEOUT", "1m", "from 1ms to 10s"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv("CANDLEWAX_SOURCE", "simulator")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert variable in message and expected in message
    assert repr(value) in message or variable == "CANDLEWAX_KAFKA_CONSUMER_CONFIG"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CANDLEWAX_KAFKA_CONSUMER_CONFIG", '{"sasl.password": "s3cret-Value", oops}'),
        ("CANDLEWAX_KAFKA_PRODUCER_CONFIG", '["sasl.password", "s3cret-Value"]'),
    ],
)
def test_a_bad_value_that_may_hold_a_secret_is_not_echoed(monkeypatch, variable, value):
    monkeypatch.setenv("CANDLEWAX_SOURCE", "simulator")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert variable in str(error.value)
    assert "s3cret-Value" not in str(error.value)


def test_the_sasl_password_is_a_secret_that_reaches_only_the_client(monkeypatch):
    monkeypatch.setenv("CANDLEWAX_SOURCE", "simulator")
    monkeypatch.setenv("CANDLEWAX_KAFKA_SASL_PASSWORD", "s3cret-Value")
    monkeypatch.setenv("CANDLEWAX_KAFKA_PRODUCER_CONFIG", '{"ssl.key.password": "k3y-Value"}')
    settings = load_settings()
    assert "s3cret-Value" not in repr(settings) and "s3cret-Value" not in str(settings)
    assert settings.kafka_client_config()["sasl.password"] == "s3cret-Value"
    assert sorted(settings.secrets()) == ["k3y-Value", "s3cret-Value"]


def test_a_misspelled_variable_is_named_with_the_setting_it_resembles():
    warnings = unknown_variables(
        {
            "CANDLEWAX_KAFKA_BROKER": "x",
            "CANDLEWAX_LAKE_DIR": "y",
            "CANDLEWAX_ZZZ": "1",
            "HOME": "/",
        }
    )
    assert warnings == [
        "CANDLEWAX_KAFKA_BROKER is not a candlewax setting and is ignored; "
        "did you mean CANDLEWAX_KAFKA_BROKERS?",
        "CANDLEWAX_ZZZ is not a candlewax setting and is ignored",
    ]


def test_kafka_source_without_brokers_says_what_to_set(monkeypatch):
    with pytest.raises(SettingsError, match="CANDLEWAX_KAFKA_BROKERS"):
        load_settings()


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    documented = set(re.findall(r"`(CANDLEWAX_[A-Z_]+)`", text))
    for name in Settings.model_fields:
        assert f"CANDLEWAX_{name.upper()}" in documented, (
            f"CANDLEWAX_{name.upper()} is not in the README"
        )


def test_the_flow_refuses_to_start_with_one_clear_message(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    env.update(
        {
            "PYTHONPATH": str(README.parent),
            "CANDLEWAX_SOURCE": "file",
            "CANDLEWAX_SOURCE_PATH": str(tmp_path / "missing.ndjson"),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.ohlcv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CANDLEWAX_SOURCE_PATH: no such file" in result.stderr
    assert "Traceback" not in result.stderr
