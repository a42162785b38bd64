"""The candlewax package sets polars' allocator and numpy's OpenBLAS up before either
loads, through the environment they read once, and glibc's mmap and trim thresholds
(`mallopt`); a value the user set wins."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.processes import ROOT

TUNED = ("_RJEM_MALLOC_CONF", "OPENBLAS_NUM_THREADS")
PROBE = (
    "import json, os, sys\n"
    "import {entry}\n"
    "print(json.dumps([os.environ.get(name) for name in {names!r}]))\n"
)


def _printed(code: str, drop: Callable[[str], bool], env: dict[str, str]) -> Any:
    """What `code`, run in a fresh process, prints as JSON; the environment without the
    variables `drop` names, with `env`."""
    clean = {k: v for k, v in os.environ.items() if not drop(k)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(result.stdout)


def _seen_by(entry: str, **env: str) -> list[str | None]:
    return _printed(PROBE.format(entry=entry, names=TUNED), lambda k: k in TUNED, env)


OURS = "dirty_decay_ms:5000,muzzy_decay_ms:5000"


@pytest.mark.parametrize("entry", ["flows.ohlcv", "tools.cli", "bench.common"])
def test_each_entry_point_sets_the_native_libraries_up_before_they_load(entry):
    # polars puts its own settings first when it loads: jemalloc takes the last of each.
    allocator, blas = _seen_by(entry)
    assert allocator is not None and allocator.endswith("," + OURS)
    assert blas == "1"


def test_a_value_the_user_set_wins():
    allocator, blas = _seen_by(
        "flows.ohlcv", _RJEM_MALLOC_CONF="narenas:1", OPENBLAS_NUM_THREADS="2"
    )
    assert allocator is not None and allocator.endswith(",narenas:1") and OURS not in allocator
    assert blas == "2"


def test_the_package_comes_before_polars_and_numpy_in_every_entry_package():
    for package in ("flows", "tools", "bench"):
        source = (ROOT / package / "__init__.py").read_text()
        imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
        assert imports[0] == "import candlewax  # noqa: F401", package


# After a 30 MiB block is freed (glibc raises its mmap threshold to 30 MiB), eight 20 MiB
# blocks, each followed by a 1 MiB block that stays, are made and freed: where they came
# from glibc's heap, their pages stay resident below the blocks that stay.
HEAP_PROBE = """
import json
{entry}
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
first = bytearray(30 << 20)
del first
kept, large = [], []
for _ in range(8):
    large.append(bytearray(20 << 20))
    kept.append(bytearray(1 << 20))
held = rss_mb()
large.clear()
print(json.dumps(dict(held=held, freed=rss_mb())))
"""


def _heap_after_freeing(entry: str, **env: str) -> dict[str, float]:
    return _printed(HEAP_PROBE.format(entry=entry), lambda k: k.startswith("MALLOC_"), env)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_large_blocks_freed_go_back_to_the_system_in_every_entry_package():
    # glibc alone: the freed blocks stay resident (the soak's climb).
    alone = _heap_after_freeing("")
    assert alone["freed"] > alone["held"] - 20
    for entry in ("flows.ohlcv", "tools.cli", "bench.common"):
        seen = _heap_after_freeing(f"import {entry}")
        assert seen["freed"] < seen["held"] - 120, entry
    # A threshold the user set wins: 32 MiB keeps the blocks in the heap again.
    theirs = _heap_after_freeing("import flows.ohlcv", MALLOC_MMAP_THRESHOLD_=str(32 << 20))
    assert theirs["freed"] > theirs["held"] - 20


# A 10 MiB block (below the mmap threshold: from the heap, at its top) made and freed ten
# times, as a file batch's text is: the page faults of the ten, where a freed block that
# goes back to the system takes fresh pages (2,560 faults) every time.
TOP_PROBE = """
import json, resource
{entry}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = bytearray(10 << 20)  # the heap grows to hold it once
del block
before = faults()
for _ in range(10):
    block = bytearray(10 << 20)
    del block
print(json.dumps(faults() - before))
"""
BLOCK_PAGES = (10 << 20) // 4096


def _faults_of_ten_blocks(entry: str, **env: str) -> int:
    return _printed(TOP_PROBE.format(entry=entry), lambda k: k.startswith("MALLOC_"), env)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_a_block_freed_at_the_top_of_the_heap_is_kept_for_the_next_batch():
    for entry in ("flows.ohlcv", "tools.cli", "bench.common"):
        assert _faults_of_ten_blocks(f"import {entry}") < BLOCK_PAGES, entry
    # glibc's own trim threshold (128 KiB, which the fixed mmap threshold leaves it at)
    # set by the user wins: every block takes fresh pages.
    theirs = _faults_of_ten_blocks("import flows.ohlcv", MALLOC_TRIM_THRESHOLD_=str(128 << 10))
    assert theirs > 8 * BLOCK_PAGES
