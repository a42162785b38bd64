"""`candlewax dlq`: stats and show from the lake and from the dead-letter topic, and a
re-drive after a setting changed that puts the rejected trades into candles exactly once."""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
import time
from collections import Counter

import msgspec
import polars as pl
import pytest

from tests.factories import trade
from tests.kafka_helpers import produce, read_topic
from tests.processes import (
    ROOT,
    candlewax,
    file_env,
    flow_env,
    flow_topics,
    init_recovery,
    kafka_env,
    lake_table,
    run_flow_command,
)


@pytest.fixture(scope="module")
def rejected_lake(trades_file, tmp_path_factory):
    """The lake of a flow run over the faulty file, and the messages of that file."""
    path, messages = trades_file
    lake = tmp_path_factory.mktemp("dlq") / "lake"
    code, output = run_flow_command(flow_env(**file_env(path, lake)))
    assert code == 0, output[-3000:]
    return lake, messages


def test_stats_count_every_rejection_by_reason_and_input(rejected_lake, trades_file):
    lake, _ = rejected_lake
    dlq = lake_table(lake, "dlq")
    shown = candlewax("dlq", "stats", "--lake", str(lake)).stdout
    assert f"{dlq.height:,} dead-lettered messages in {lake}/dlq" in shown
    by_reason = Counter(dlq.get_column("reason"))
    assert len(by_reason) >= 3
    for reason, count in by_reason.items():
        (line,) = [line for line in shown.splitlines() if line.startswith(f"{reason} ")]
        assert f" {count:,} " in line and str(trades_file[0]) in line


def test_show_gives_each_message_its_reason_position_and_original_bytes(rejected_lake):
    lake, messages = rejected_lake
    shown = candlewax("dlq", "show", "--lake", str(lake), "--reason", "wrong_type", "--json")
    shown_all = candlewax(
        "dlq", "show", "--lake", str(lake), "--reason", "wrong_type", "--json", "--limit", "0"
    )
    records = [json.loads(line) for line in shown_all.stdout.splitlines()]
    assert len(shown.stdout.splitlines()) == 20 < len(records)
    for record in records:
        assert record["reason"] == "wrong_type" and record["field"]
        line = int(record["source"].rsplit("@", 1)[1])  # the file's line number
        assert record["raw"].encode() == messages[line - 1].replace(b"\n", b" ")
    text = candlewax("dlq", "show", "--lake", str(lake), "--limit", "3").stdout
    assert text.count("    bytes:  ") == 3 and "shown; --limit 0 for all" in text


def test_filters_by_time_and_input(rejected_lake):
    lake, _ = rejected_lake
    later = candlewax("dlq", "stats", "--lake", str(lake), "--since", "2999-01-01").stdout
    assert "no dead-lettered messages" in later
    other = candlewax("dlq", "stats", "--lake", str(lake), "--input", "another.ndjson").stdout
    assert "no dead-lettered messages" in other


def test_a_folder_that_is_not_a_lake_is_a_clear_error(tmp_path):
    result = candlewax("dlq", "stats", "--lake", str(tmp_path), check=False)
    assert result.returncode == 2 and "not a candlewax lake" in result.stderr


def test_redrive_without_a_topic_for_file_rejections_says_what_to_do(rejected_lake, tmp_path):
    lake, _ = rejected_lake
    result = candlewax(
        "dlq", "redrive", "--lake", str(lake), "--brokers", "127.0.0.1:1",
        "--ledger", str(tmp_path / "ledger.ndjson"), check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--topic" in result.stderr


@pytest.mark.broker
def test_a_redrive_waits_for_one_under_way_and_sends_nothing_it_sent(
    rejected_lake, broker, tmp_path
):
    lake, _ = rejected_lake
    topic = "redrive.turns"
    broker.create_topics({topic: 1})
    ledger = tmp_path / "ledger.ndjson"
    sources = lake_table(lake, "dlq").get_column("source").unique().to_list()
    command = [
        sys.executable, "-m", "tools.cli", "dlq", "redrive", "--lake", str(lake),
        "--brokers", broker.bootstrap, "--topic", topic, "--ledger", str(ledger),
    ]  # fmt: skip
    with ledger.open("a") as under_way:  # another re-drive, holding the ledger
        fcntl.flock(under_way, fcntl.LOCK_EX)
        second = subprocess.Popen(
            command, cwd=ROOT, env=flow_env(), stdout=subprocess.PIPE, text=True
        )
        assert second.stdout is not None
        assert "another re-drive is writing" in second.stdout.readline()
        assert read_topic(broker.bootstrap, topic) == []  # it waits, sending nothing
        # The one under way sends them all and says so in the ledger, then lets go.
        under_way.write("".join(json.dumps({"source": s}) + "\n" for s in sources))
        under_way.flush()
        fcntl.flock(under_way, fcntl.LOCK_UN)
    output = second.communicate(timeout=120)[0]
    assert second.returncode == 0, output
    assert f"re-drove 0 messages: nothing; {len(sources):,} re-driven before" in output
    assert read_topic(broker.bootstrap, topic) == []


@pytest.mark.broker
@pytest.mark.slow
def test_trades_rejected_under_one_setting_reach_the_candles_once_after_a_redrive(broker, tmp_path):
    """A venue's clock ran 2 h ahead: its trades broke the 1 h bound. The bound is
    widened, the flow resumes, the DLQ is re-driven (twice: the second sends nothing)."""
    topics = flow_topics(broker)
    now = (int(time.time() * 1000) // 60_000) * 60_000
    normal = [
        (b"BTC-USD", trade("BTC-USD", 100.0 + k % 7, ts=now - 60_000 + 50 * k, trade_id=k))
        for k in range(1_000)
    ]
    ahead = [
        (
            b"SKEW",
            trade("SKEW", 50.0 + k / 100, 2.0, ts=now + 7_200_000 + 100 * k, trade_id=f"s{k}"),
        )
        for k in range(40)
    ]
    produce(broker.bootstrap, topics["trades"], normal[:500] + ahead + normal[500:])
    lake = tmp_path / "lake"
    recovery = init_recovery(tmp_path / "recovery")
    env = flow_env(**kafka_env(broker.bootstrap, topics, lake), CANDLEWAX_TS_MAX_FUTURE="1h")

    code, output = run_flow_command(env, "-r", recovery, "-s", "1", "-b", "0")
    assert code == 0, output[-3000:]
    assert "rejected=40" in output
    stats = candlewax("dlq", "stats", "--lake", str(lake), "--reason", "ts_out_of_range").stdout
    assert "40 dead-lettered messages" in stats and topics["trades"] in stats
    on_topic = candlewax(
        "dlq", "stats", "--dlq-topic", topics["dlq"], "--brokers", broker.bootstrap
    ).stdout
    assert "40 dead-lettered messages" in on_topic

    redrive = ("dlq", "redrive", "--lake", str(lake), "--brokers", broker.bootstrap)
    assert "would re-drive 40 messages" in candlewax(*redrive, "--dry-run").stdout
    first = candlewax(*redrive, "--reason", "ts_out_of_range").stdout
    assert f"re-drove 40 messages: 40 to {topics['trades']!r}" in first
    second = candlewax(*redrive).stdout
    assert "re-drove 0 messages" in second and "40 re-driven before" in second
    assert "would re-drive 40" in candlewax(*redrive, "--force", "--dry-run").stdout

    records = read_topic(broker.bootstrap, topics["trades"])
    again = [r for r in records if "candlewax.redriven_from" in r.headers]
    assert sorted(r.value for r in again) == sorted(v for _, v in ahead)
    assert {r.key for r in again} == {b"SKEW"}
    assert {r.headers["candlewax.redrive_reason"] for r in again} == {b"ts_out_of_range"}

    wider = {**env, "CANDLEWAX_TS_MAX_FUTURE": "3h"}
    code, output = run_flow_command(wider, "-r", recovery, "-s", "1", "-b", "0")
    assert code == 0, output[-3000:]
    summary = re.search(r"run summary: (received=\d+ accepted=\d+ duplicate=\d+[^;]*)", output)
    assert summary, output[-3000:]
    # only the re-driven ones, all accepted
    assert summary.group(1).startswith("received=40 accepted=40 duplicate=0 filtered=0 rejected=0")

    candles = lake_table(lake, "candles").sort("revision").unique("bar_id", keep="last")
    skew = candles.filter((pl.col("symbol") == "SKEW") & (pl.col("resolution") == "1s"))
    assert skew.get_column("trade_count").sum() == 40  # each once
    assert skew.get_column("volume").sum() == 80.0
    prices = sorted(msgspec.json.decode(v)["price"] for _, v in ahead)
    assert sorted(skew.get_column("open").to_list()) == sorted(prices[k] for k in range(0, 40, 10))
    btc = candles.filter((pl.col("symbol") == "BTC-USD") & (pl.col("resolution") == "1s"))
    assert btc.get_column("trade_count").sum() == 1_000  # the others untouched


@pytest.mark.broker
def test_hostile_bytes_are_shown_escaped_and_re_driven_byte_for_byte(broker, tmp_path):
    """Not UTF-8, control characters, a NUL, a tombstone, binary keys: `show` prints them
    (text and JSON) without failing, and `redrive` sends each back exactly as it came."""
    topics = flow_topics(broker)
    hostile = [
        (b"k\xff\x00", b'{"symbol":"BTC-USD","price":1,"size":1,"ts":1,"side":"\xff"}'),
        (None, b"\x00\x01\x02\x1b[31mred\r\n"),
        (b"\xc3\x28", b"\xfe\xff\xfe\xff"),
        (b"tomb", None),
        (b"", b"   "),
        (b"long", b"[" * 3_000),
    ]
    produce(broker.bootstrap, topics["trades"], hostile)
    lake = tmp_path / "lake"
    code, output = run_flow_command(flow_env(**kafka_env(broker.bootstrap, topics, lake)))
    assert code == 0, output[-3000:]
    assert "rejected=6" in output

    text = candlewax("dlq", "show", "--lake", str(lake), "--limit", "0").stdout
    assert text.count("    bytes:  ") == 6 and "\\xff" in text and "\\x1b" in text
    shown = candlewax("dlq", "show", "--lake", str(lake), "--limit", "0", "--json").stdout
    assert len([json.loads(line) for line in shown.splitlines()]) == 6

    broker.create_topics({f"{topics['trades']}.again": 1})
    sent = candlewax(
        "dlq", "redrive", "--lake", str(lake), "--brokers", broker.bootstrap,
        "--topic", f"{topics['trades']}.again",
    ).stdout  # fmt: skip
    assert "re-drove 6 messages" in sent
    again = read_topic(broker.bootstrap, f"{topics['trades']}.again")
    assert Counter((r.key, r.value) for r in again) == Counter(hostile)
