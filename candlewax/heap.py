"""The process's memory: the cyclic garbage collector kept out of the hot path, and
glibc's heap kept from filling with free holes.

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

glibc's malloc (Python's blocks above 512 bytes, numpy's arrays, the dedupe's hash
tables) serves a block from its heap unless the block is larger than a threshold; the
heap goes back to the system only from its top. The threshold starts at 128 KiB and
rises to the size of each larger block freed, up to 32 MiB; a live flow soon frees
such blocks (a dedupe horizon's dictionary of keys, resized as it fills), and from then
on those blocks come from the heap, between small ones that stay: the heap fills with
free holes. Measured in a 20 k trades/s soak: glibc's in-use memory cycled 70-135 MB
with the dedupe horizon while its heap grew 35 -> 216 MB in 10 minutes (139 MB of it
free), RSS +58 MB after the warm-up; calling `malloc_trim` every 30 s changed nothing
(+60 MB: the holes were not whole pages). `bound_glibc_heap_blocks` fixes the threshold
at 16 MiB (`mallopt`, which also stops it rising): larger blocks (the dictionaries of
hundreds of thousands of keys and more) get pages of their own, handed back when freed.
The same soak: RSS +20 MB, the heap 94-128 MB with no trend. A file batch's text
(~13 MB for 100,000 messages) stays below it: at 4 MiB it took fresh pages every batch
(the file flow seemed 5-10 % slower in two alternated pairs, sparse, best of three:
736-814 k trades/s against 863 k/s); at 16 MiB the sparse file flow's CPU is that of
the 32 MiB glibc reaches by itself within the noise (3.65-4.51 s against 3.72-4.68 s,
alternated).

Fixing the threshold also stops glibc's trim threshold from following it (it would be
twice the mmap threshold): it stays at 128 KiB, so a freed block at the heap's top went
back to the system at once and the next batch's block took fresh pages (a 2 M-trade file
flow: ~370,000 page faults, ~220,000 of them these). `bound_glibc_heap_blocks` sets it
to twice the mmap threshold, as glibc would: ~150,000 faults, and the kernel's time of
two sparse file runs 1.1-1.4 s -> 0.5-1.0 s (alternated, three times). The heap's top
keeps at most 32 MiB free: the file flow's peak RSS +35-95 MB; the 10-minute soak still
flat (+16 MB).
"""

from __future__ import annotations

import ctypes
import gc
import os
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


# glibc's `mallopt` parameters (malloc.h), and the values set.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's own rule while its threshold moves


def bound_glibc_heap_blocks() -> None:
    """Fix glibc's mmap threshold at `MMAP_THRESHOLD` and its trim threshold at
    `TRIM_THRESHOLD` (see above), each unless the environment sets it
    (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, which glibc read when the
    process started). Does nothing where the C library is not glibc."""
    try:
        # The symbols the process has loaded already: `ctypes.util.find_library` would
        # run `ldconfig` (~3 ms and a fork) at every start of every entry package.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS: no mallopt)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for name, parameter, value in (
        ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if name not in os.environ:
            mallopt(parameter, value)
