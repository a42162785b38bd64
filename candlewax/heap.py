"""The process's memory: the cyclic garbage collector kept out of the hot path, and
freed memory given back to the system.

CPython's collector runs a generation whenever the count of tracked objects made (and
not yet freed) passes a threshold, and a collection walks every tracked object of the
generations it collects. Two things in the flow make that costly, neither of which ever
makes a reference cycle:

- what start-up builds (modules, settings, the dataflow) lives as long as the process,
  yet every full collection walks it again: `freeze_startup()` moves it out of the
  generations (a live flow's full collection: ~4 ms instead of ~25 ms);
- a Kafka poll makes one `Message` object per message, and they are tracked: 20,000 of
  them alive at once set off dozens of collections that walk them all, only for them
  to be freed by reference counting a moment later (measured: ~0.5 us a message, half
  of what the poll costs). `collection_paused()` holds collections off while such a
  burst is made and freed; the count they added is gone again when it ends.

Freed memory is the other half. Memory Python, numpy and the dedupe's dictionaries
free goes back to glibc's heap, which returns it to the system only from the top of
the heap; a live flow frees large blocks (a dictionary of a dedupe horizon's keys, a
batch's arrays) between small ones that stay, so the heap fills with free holes and the
resident memory (RSS) climbs for minutes though nothing is held (measured in a
20 k trades/s soak: glibc's in-use memory cycled 80-135 MB with the dedupe horizon
while its heap grew 35 -> 216 MB in 10 minutes, 139 MB of it free). `MemoryTrimmer`
calls glibc's `malloc_trim(0)` now and then, which hands every free page inside the
heap back (~15 ms for 2,000 holes), so the RSS an operator (or a Kubernetes memory
limit) sees follows what is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


def freeze_startup() -> None:
    """Out of the collector's generations with everything that exists now: call when the
    flow is built, before it runs."""
    gc.collect()
    gc.freeze()


@contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic collection inside the block (in any thread: the collector is one per
    process). For short blocks that make many objects and free them before the end;
    anything left alive is tracked as usual and counted at the next collection."""
    if not gc.isenabled():  # paused already (an outer block), or by the application
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _glibc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (macOS)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _glibc_trim()


def release_free_memory() -> bool:
    """Hand the free pages of the C heap back to the system (glibc's `malloc_trim(0)`);
    whether anything was released (False also where there is no such call)."""
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


class MemoryTrimmer:
    """A daemon thread that calls `release_free_memory` every `interval_s` seconds, for
    the life of the process (`start` starts the one of the process; a flow's settings
    give the interval, `CANDLEWAX_MEMORY_TRIM_INTERVAL`). A trim holds glibc's heap lock
    while it runs (milliseconds), so it is not made more often than asked."""

    _started: MemoryTrimmer | None = None
    _lock = threading.Lock()

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.trims = 0
        self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)

    @classmethod
    def start(cls, interval_s: float) -> MemoryTrimmer | None:
        """The process's trimmer, started (once: a second call returns the first one);
        None when `interval_s` is 0 or the C library cannot trim."""
        if interval_s <= 0 or _MALLOC_TRIM is None:
            return None
        with cls._lock:
            if cls._started is None:
                cls._started = cls(interval_s)
                cls._started._thread.start()
            return cls._started

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            began = time.perf_counter()
            released = release_free_memory()
            self.trims += 1
            log.debug(
                "malloc_trim: %s in %.1f ms",
                "released memory" if released else "nothing to release",
                (time.perf_counter() - began) * 1e3,
            )
