"""Failures of inputs and outputs, as an operator meets them: one line naming what failed
and why, a non-zero exit, no summary claiming success, no half-written file, no secret in
any line; and with recovery, a restart after the fault is fixed loses nothing."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from tests.factories import simulated, trade
from tests.kafka_helpers import produce, read_topic
from tests.processes import (
    file_env,
    flow_env,
    flow_topics,
    init_recovery,
    kafka_env,
    lake_table,
    run_flow_command,
    start_flow_process,
)
from tests.reference import reference_candles
from tools.broker import EmbeddedBroker, free_port

RESOLUTIONS = {"1s": 1_000, "10s": 10_000, "1m": 60_000}
SECRET = "planted-Pa55word-xyzzy"


def assert_one_clean_failure_line(code: int, log: str, *words: str) -> str:
    assert code != 0, log[-2000:]
    failures = [line for line in log.splitlines() if "stopped:" in line]
    assert len(failures) == 1, log[-3000:]
    for word in words:
        assert word in failures[0], failures[0]
    for noise in ("Traceback", "panicked", "run summary", "they add up"):
        assert noise not in log, log[-3000:]
    return failures[0]


def write_trades(path: Path, n: int = 40_000) -> list[bytes]:
    messages = [value for _, value in simulated(n, rate=2_000, seed=4)]
    path.write_bytes(b"\n".join(messages) + b"\n")
    return messages


def lake_current_candles(lake: Path) -> pl.DataFrame:
    frame = lake_table(lake, "candles").sort("revision").unique("bar_id", keep="last")
    return frame.select("bar_id", "open", "high", "low", "close", "trade_count").sort("bar_id")


def test_an_unwritable_lake_stops_the_flow_and_a_restart_after_the_fix_loses_nothing(tmp_path):
    trades = tmp_path / "trades.ndjson"
    messages = write_trades(trades)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "candles").write_text("not a directory")  # the fault: candles cannot be written
    recovery = init_recovery(tmp_path / "recovery")
    env = flow_env(
        CANDLEWAX_SOURCE="file",
        CANDLEWAX_SOURCE_PATH=str(trades),
        CANDLEWAX_LAKE_DIR=str(lake),
        CANDLEWAX_BATCH_SIZE="2000",
        CANDLEWAX_LAKE_FLUSH_ROWS="500",
    )
    code, log = run_flow_command(env, "-r", recovery, "-s", "0", "-b", "0")
    line = assert_one_clean_failure_line(code, log, "lake dataset 'candles'", "cannot write")
    assert "Not a directory" in line or "File exists" in line, line
    assert list(lake.rglob("*.tmp")) == []

    (lake / "candles").unlink()  # the fix
    code, log = run_flow_command(env, "-r", recovery, "-s", "0", "-b", "0")
    assert code == 0, log[-3000:]
    expected = reference_candles(messages, 1_000, RESOLUTIONS, ts_max=2**62)
    got = lake_current_candles(lake)
    assert got.get_column("bar_id").to_list() == expected.get_column("bar_id").to_list()
    assert got.rows() == expected.select(got.columns).rows()


def test_a_full_disk_stops_the_flow_with_the_cause_and_leaves_no_temporary_file(tmp_path):
    if (
        shutil.which("unshare") is None
        or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
            capture_output=True,
            check=False,
        ).returncode
    ):
        pytest.skip("needs a private mount namespace (unshare -m, root) for a small tmpfs")
    trades = tmp_path / "trades.ndjson"
    write_trades(trades, 60_000)
    lake = tmp_path / "lake"
    lake.mkdir()
    env = flow_env(
        CANDLEWAX_SOURCE="file", CANDLEWAX_SOURCE_PATH=str(trades), CANDLEWAX_LAKE_DIR=str(lake)
    )
    # The lake on a 256 KB file system, in a mount namespace of its own; after the flow
    # ends, count what is left in it.
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {lake} && "
        '"$@"; code=$?; echo "temporary files left: $(find {lake} -name "*.tmp" | wc -l)"; '
        "exit $code"
    ).replace("{lake}", str(lake))
    code, log = run_flow_command(env, prefix=("unshare", "-m", "sh", "-c", script, "sh"))
    assert_one_clean_failure_line(code, log, "lake dataset", "No space left on device")
    assert "temporary files left: 0" in log, log[-2000:]


@pytest.mark.broker
def test_an_invalid_output_topic_stops_the_flow_naming_it(broker, tmp_path):
    trades = tmp_path / "trades.ndjson"
    write_trades(trades, 5_000)
    env = flow_env(
        **file_env(trades, tmp_path / "lake"),
        CANDLEWAX_KAFKA_BROKERS=broker.bootstrap,
        CANDLEWAX_KAFKA_CANDLES_TOPIC="bad topic!",
    )
    code, log = run_flow_command(env)
    line = assert_one_clean_failure_line(code, log, "Kafka topic 'bad topic!'")
    # The broker's answer, or librdkafka's own when its metadata came first.
    assert "Invalid topic" in line or "Unknown topic" in line, line


@pytest.mark.broker
def test_a_misspelled_input_topic_stops_a_bounded_run(broker, tmp_path):
    settings = kafka_env(broker.bootstrap, flow_topics(broker), tmp_path / "lake")
    env = flow_env(**{**settings, "CANDLEWAX_KAFKA_TRADES_TOPIC": "tradez-nobody-made"})
    code, log = run_flow_command(env, timeout_s=60)
    assert code == 2
    assert_one_clean_failure_line(code, log, "'tradez-nobody-made'", "does not exist")
    assert "tradez-nobody-made" not in {t for t in broker.admin().list_topics(timeout=10).topics}


def test_an_unreachable_broker_is_said_once_and_secrets_never_show(tmp_path):
    port, metrics_port = free_port(), free_port()
    env = flow_env(
        CANDLEWAX_KAFKA_BROKERS=f"127.0.0.1:{port}",
        CANDLEWAX_KAFKA_CONNECT_TIMEOUT="4s",
        CANDLEWAX_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        CANDLEWAX_KAFKA_SASL_MECHANISM="PLAIN",
        CANDLEWAX_KAFKA_SASL_USERNAME="user",
        CANDLEWAX_KAFKA_SASL_PASSWORD=SECRET,
        CANDLEWAX_KAFKA_PRODUCER_CONFIG=f'{{"ssl.key.password": "{SECRET}2"}}',
        CANDLEWAX_LAKE_DIR=str(tmp_path / "lake"),
        CANDLEWAX_METRICS_PORT=str(metrics_port),
    )
    scraped: list[str] = []

    def scrape() -> None:
        for _ in range(30):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                    scraped.append(r.read().decode())
                    return
            except OSError:
                time.sleep(0.1)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    started = time.monotonic()
    code, log = run_flow_command(env, timeout_s=60)
    scraper.join()
    assert code == 2
    assert time.monotonic() - started < 20
    assert_one_clean_failure_line(code, log, f"127.0.0.1:{port}", "unreachable")
    assert log.count("is unreachable") == 1, log
    assert len(log.splitlines()) <= 6, log
    assert scraped and "candlewax_messages" in scraped[0]
    for text in (log, *scraped):
        assert SECRET not in text

    # A settings error quotes no secret either, even from a broken JSON object.
    env["CANDLEWAX_KAFKA_CONSUMER_CONFIG"] = f'{{"sasl.password": "{SECRET}", oops}}'
    code, log = run_flow_command(env, timeout_s=60)
    assert code == 2 and "CANDLEWAX_KAFKA_CONSUMER_CONFIG" in log
    assert SECRET not in log


@pytest.mark.broker
def test_a_broker_that_comes_up_late_is_waited_for_quietly(tmp_path):
    port = free_port()
    topics = {n: f"late.{n}" for n in ("trades", "candles", "dlq", "drift", "live")}
    env = flow_env(**kafka_env(f"127.0.0.1:{port}", topics, tmp_path / "lake", tail=True))
    flow = start_flow_process(env)
    try:
        time.sleep(4)
        with EmbeddedBroker(port=port) as broker:
            broker.create_topics({name: 1 for name in topics.values()})
            now = int(time.time() * 1000)
            messages = [(b"A", trade("A", 10.0, 1.0, now + i, trade_id=i)) for i in range(200)]
            produce(broker.bootstrap, topics["trades"], messages)
            deadline = time.monotonic() + 60
            while not read_topic(broker.bootstrap, topics["candles"]):
                assert time.monotonic() < deadline, "no candle from the late broker"
                time.sleep(0.5)
            flow.send_signal(signal.SIGTERM)
            out, _ = flow.communicate(timeout=60)
    finally:
        if flow.poll() is None:
            flow.kill()
    log = out.decode(errors="replace")
    assert flow.returncode == 0, log[-3000:]
    assert log.count("is unreachable for the source") == 1, log
    assert log.count("is reachable again for the source") == 1, log
    # No client is left said to be unreachable once the broker is up: one that had
    # nothing to send (the dead-letter and drift producers) says nothing at all.
    unreachable = re.findall(r"is unreachable for the (.+?) \(", log)
    back = re.findall(r"is reachable again for the (.+?), after", log)
    assert sorted(unreachable) == sorted(back), log
    assert not any("trades.dlq" in client or "drift" in client for client in unreachable), log
    assert "run stopped by SIGTERM: received=200 accepted=200" in log, log[-2000:]
    assert "Traceback" not in log


def test_an_unreachable_kafka_output_stops_the_flow_once_deliveries_time_out(tmp_path):
    trades = tmp_path / "trades.ndjson"
    write_trades(trades, 2_000)
    env = flow_env(
        **file_env(trades, tmp_path / "lake"),
        CANDLEWAX_KAFKA_BROKERS=f"127.0.0.1:{free_port()}",
        CANDLEWAX_KAFKA_PRODUCER_CONFIG='{"message.timeout.ms": 3000}',
    )
    code, log = run_flow_command(env, timeout_s=60)
    assert_one_clean_failure_line(code, log, "Kafka topic", "timed out")


def test_an_input_file_that_breaks_while_read_stops_the_flow_naming_it(tmp_path):
    import gzip

    path = tmp_path / "trades.ndjson.gz"
    messages = [value for _, value in simulated(20_000, rate=2_000, seed=3)]
    data = gzip.compress(b"\n".join(messages))
    path.write_bytes(data[: len(data) // 2])  # cut in the middle: a truncated download
    env = flow_env(**file_env(path, tmp_path / "lake"))
    code, log = run_flow_command(env, timeout_s=60)
    assert_one_clean_failure_line(code, log, "input file", "trades.ndjson.gz")
