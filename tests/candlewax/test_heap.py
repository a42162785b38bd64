"""Freed memory goes back to the system: a heap full of free holes (what a live flow's
churn of large and small allocations leaves) is handed back by `release_free_memory`,
and the flow process does it on its own every `CANDLEWAX_MEMORY_TRIM_INTERVAL`.

Each case runs in a fresh process, whose heap holds only what the case made."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")

# 2,000 blocks of 64 KiB (below glibc's mmap threshold: they are carved from the heap),
# each followed by a small block that stays: freeing the large ones leaves ~125 MiB of
# holes that glibc cannot give back from the top of the heap.
FRAGMENT = """
import json, time
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
kept, large = [], []
for _ in range(2000):
    large.append(bytearray(64 * 1024))
    kept.append(bytearray(1024))
allocated = rss_mb()
large.clear()
freed = rss_mb()
"""


def _run(code: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", FRAGMENT + code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_release_free_memory_hands_a_fragmented_heap_back():
    seen = _run(
        "from candlewax.heap import release_free_memory\n"
        "released = release_free_memory()\n"
        "print(json.dumps(dict(allocated=allocated, freed=freed, trimmed=rss_mb(),"
        " released=released)))\n"
    )
    # Freed but still resident: the problem this solves.
    assert seen["freed"] > seen["allocated"] - 20
    assert seen["released"]
    assert seen["trimmed"] < seen["freed"] - 100


def test_the_trimmer_releases_on_its_own_interval_and_is_one_per_process():
    seen = _run(
        "from candlewax.heap import MemoryTrimmer\n"
        "trimmer = MemoryTrimmer.start(0.05)\n"
        "again = MemoryTrimmer.start(5)\n"
        "off = MemoryTrimmer.start(0)\n"
        "deadline = time.monotonic() + 10\n"
        "while trimmer.trims < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps(dict(freed=freed, trimmed=rss_mb(), trims=trimmer.trims,"
        " same=again is trimmer, off=off is None, interval=again.interval_s)))\n"
    )
    assert seen["trims"] >= 2 and seen["trimmed"] < seen["freed"] - 100
    assert seen["same"] and seen["interval"] == 0.05  # the first start's, not restarted
    assert seen["off"]  # `0` starts nothing


def _flow_log(tmp_path, interval: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "CANDLEWAX_SOURCE": "simulator",
            "CANDLEWAX_SIM_TRADES": "3000",
            "CANDLEWAX_SIM_RATE": "2000",
            "CANDLEWAX_SIM_SPEED": "1",  # real time: the run lasts ~1.5 s
            "CANDLEWAX_KAFKA_BROKERS": "",
            "CANDLEWAX_LAKE_DIR": str(tmp_path / "lake"),
            "CANDLEWAX_METRICS_PORT": "0",
            "CANDLEWAX_LOG_LEVEL": "DEBUG",
            "CANDLEWAX_MEMORY_TRIM_INTERVAL": interval,
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.ohlcv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_the_flow_process_trims_every_interval_the_setting_gives(tmp_path):
    assert "malloc_trim:" in _flow_log(tmp_path, "100ms")


def test_a_zero_interval_turns_the_trimming_off(tmp_path):
    log = _flow_log(tmp_path, "0")
    assert "candle flow:" in log and "malloc_trim:" not in log
