"""The cyclic garbage collector kept out of the hot path.

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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
