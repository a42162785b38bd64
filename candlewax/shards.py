"""Which shard of the candle step a symbol belongs to, and the key that routes the shard.

The candle step is keyed by shard, a fixed set of symbols, not by symbol: a step per
symbol costs tens of microseconds of Python whatever its size, and a live poll of a
whole exchange touches hundreds of symbols with a few trades each, while one step of a
shard does the work of all its symbols in the same vectorised operations
(`operators.candles.ShardCandles`). A symbol belongs to exactly one shard (CRC-32 of its
name modulo the number of shards), so its state lives in one place, on one worker, as
with a key per symbol.

Bytewax 0.21 sends a key to worker `SipHash-1-3(key's UTF-8 bytes + 0xFF) % workers`
(Rust's `DefaultHasher` of the key string). Plain keys land unevenly: "shard-0" to
"shard-7" went 6 and 2 on two workers. So the key of shard `i` is the first of
`shard-{i}`, `shard-{i}.1`, `shard-{i}.2`, ... whose hash is `i` modulo 840, which every
number from 1 to 8 divides: shard `i` goes to worker `i % W` for any such `W` (and any
other divisor of 840), so `N` shards spread evenly over `W` workers whenever `W` divides
`N`. Were Bytewax to hash otherwise, shards would only spread less evenly; a symbol
still has one shard.
"""

from __future__ import annotations

import functools
import zlib

_SPREAD = 840  # divisible by every worker count from 1 to 8
_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=65_536)
def shard_of(symbol: str, shards: int) -> int:
    """The shard of a symbol: the same in every process and every run."""
    return zlib.crc32(symbol.encode()) % shards


@functools.cache
def shard_keys(shards: int) -> tuple[str, ...]:
    """The state key of each shard (see the module's docstring for how they are chosen)."""
    return tuple(_key_of(i) for i in range(shards))


def shard_key(symbol: str, shards: int) -> str:
    """The state key of the symbol's shard."""
    return shard_keys(shards)[shard_of(symbol, shards)]


def bytewax_worker(key: str, workers: int) -> int:
    """The worker Bytewax 0.21 routes a state key to."""
    return _siphash13(key.encode() + b"\xff") % workers


def _key_of(shard: int) -> str:
    salt = 0
    while True:
        key = f"shard-{shard}" if salt == 0 else f"shard-{shard}.{salt}"
        if _siphash13(key.encode() + b"\xff") % _SPREAD == shard % _SPREAD:
            return key
        salt += 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def _siphash13(data: bytes) -> int:
    """SipHash-1-3 with the zero key: what Rust's `DefaultHasher::new()` computes."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    whole = n - n % 8
    for i in range(0, whole, 8):
        word = int.from_bytes(data[i : i + 8], "little")
        v3 ^= word
        sip_round()
        v0 ^= word
    last = ((n & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3
