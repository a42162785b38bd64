"""Raw batches from in-memory messages, for flows built around Bytewax's `TestingSource`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from candlewax.records import RawBatch


def raw_batches(
    messages: Sequence[bytes | None], batch_size: int = 1_000, source: str = "test"
) -> Iterable[RawBatch]:
    """Cut messages into `RawBatch`es; positions are 1-based message numbers."""
    for start in range(0, len(messages), batch_size):
        chunk = list(messages[start : start + batch_size])
        yield RawBatch(source, chunk, list(range(start + 1, start + 1 + len(chunk))))
