"""Hostile messages through the real broker: rejected once each with their exact bytes,
never a crash (so never a crash loop under recovery); and a clean stop on Ctrl-C."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.factories import T0, simulated
from tests.kafka_helpers import produce, read_topic
from tests.processes import (
    flow_env,
    flow_topics,
    init_recovery,
    kafka_env,
    lake_table,
    run_flow_command,
    start_flow_process,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]

GOOD = b'{"symbol":"BTC-USD","price":1,"size":1,"ts":%d' % T0
POISON = [
    GOOD + b',"side":"\xff"}',  # invalid UTF-8 inside a field
    GOOD + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}",  # nesting too deep to read
    b'{"symbol":"BTC-USD","price":60000,"price":0.0001,"size":1,"ts":%d}' % T0,
    b'{"symbol":"%s","price":1,"size":1,"ts":%d}' % (b"S" * 600_000, T0),  # 600 KB symbol
    b"\xef\xbb\xbf" + GOOD + b"}",  # byte-order mark
    GOOD + b',"venue":"\\udc00"}',  # lone surrogate
    b"\r",
    b"",
]


def summary_counts(log: str) -> dict[str, int]:
    match = re.search(
        r"received=(\d+) accepted=(\d+) duplicate=(\d+) filtered=(\d+) "
        r"rejected=(\d+) late=(\d+) \(they add up\)",
        log,
    )
    assert match, log[-3000:]
    names = ("received", "accepted", "duplicate", "filtered", "rejected", "late")
    return dict(zip(names, map(int, match.groups()), strict=True))


def test_poison_messages_are_rejected_once_with_recovery_not_crash_looped(broker, tmp_path):
    topics = flow_topics(broker)
    good = simulated(3_000, rate=1_000, seed=9, malformed_rate=0.0)
    produce(
        broker.bootstrap,
        topics["trades"],
        [*good[:1500], *((b"k", p) for p in POISON), *good[1500:]],
    )
    recovery = init_recovery(tmp_path / "recovery")
    env = flow_env(**kafka_env(broker.bootstrap, topics, tmp_path / "lake"))
    code, log = run_flow_command(env, "-r", recovery, "-s", "0", "-b", "0")
    assert code == 0, log[-3000:]
    counts = summary_counts(log)
    assert counts["received"] == 3_000 + len(POISON)
    assert counts["rejected"] == len(POISON)

    # Resumed from the snapshot: nothing is read or rejected twice.
    code, log = run_flow_command(env, "-r", recovery, "-s", "0", "-b", "0")
    assert code == 0, log[-3000:]
    assert summary_counts(log)["received"] == 0
    dlq = read_topic(broker.bootstrap, topics["dlq"])
    assert sorted(r.value or b"" for r in dlq) == sorted(POISON)
    reasons = {r.value: r.headers["candlewax.reason"].decode() for r in dlq}
    assert reasons[POISON[0]] == "bad_encoding" and reasons[POISON[2]] == "duplicate_key"
    assert reasons[POISON[1]] == "nesting_too_deep" and reasons[POISON[6]] == "empty_message"
    assert all(len(r.headers["candlewax.detail"]) < 300 for r in dlq)
    lake_dlq = lake_table(tmp_path / "lake", "dlq")
    assert sorted(lake_dlq.get_column("raw").to_list()) == sorted(POISON)


def test_a_message_too_large_for_kafka_is_cut_on_the_dlq_topic_and_whole_in_the_lake(
    broker, tmp_path
):
    huge = b'{"symbol":"%s","price":1,"size":1,"ts":%d}' % (b"S" * 1_500_000, T0)
    path = tmp_path / "trades.ndjson"
    path.write_bytes(GOOD + b"}\n" + huge + b"\n")
    topics = flow_topics(broker)
    env = flow_env(**kafka_env(broker.bootstrap, topics, tmp_path / "lake"))
    env.update(CANDLEWAX_SOURCE="file", CANDLEWAX_SOURCE_PATH=str(path))
    code, log = run_flow_command(env)
    assert code == 0, log[-3000:]
    (record,) = read_topic(broker.bootstrap, topics["dlq"])
    assert record.headers["candlewax.truncated"] == str(len(huge)).encode()
    assert record.value is not None and huge.startswith(record.value)
    assert lake_table(tmp_path / "lake", "dlq").get_column("raw").to_list() == [huge]


def test_ctrl_c_stops_a_live_flow_cleanly_with_the_lake_flushed(tmp_path):
    env = flow_env(
        CANDLEWAX_SOURCE="simulator",
        CANDLEWAX_SIM_SPEED="1",
        CANDLEWAX_SIM_RATE="2000",
        CANDLEWAX_SIM_TRADES="0",
        CANDLEWAX_LAKE_DIR=str(tmp_path / "lake"),
    )
    flow = start_flow_process(env)
    time.sleep(5)
    flow.send_signal(signal.SIGINT)
    out, _ = flow.communicate(timeout=60)
    log = out.decode(errors="replace")
    assert flow.returncode == 0, log[-3000:]
    assert "Traceback" not in log and "panicked" not in log
    assert "run stopped by SIGINT" in log
    counts = summary_counts(log)
    assert counts["received"] > 2_000
    trades = lake_table(tmp_path / "lake", "trades")
    assert trades.height == counts["accepted"] + counts["late"]
