"""A million hostile messages through the whole flow: it finishes, and nothing is lost.

    python -m bench.fuzz                 # 1,000,000 messages
    python -m bench.fuzz --count 3000000 --seed 2

Half the lines are trades from the simulator (40 symbols, 0.05 % fat fingers: the
guard's dead-letter records made in the flow's large batches, a few per symbol, which
crashed the flow before stop 28), the other half hostile: bytes that are not UTF-8,
byte-order marks, lone surrogates, nesting thousands deep, repeated contract fields
(plain and spelt with escapes), numbers out of range, wrong types, truncated and spliced
JSON, blank and `\\r`-only lines, megabyte-long fields. The flow runs as users run it
(`python -m bytewax.run flows.ohlcv`, file source); then the bench checks that received =
lines in the file, that the outcomes add up, and that every rejection is in the lake's
`dlq/` with the exact bytes of its line. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from bench.common import START_MS, trades_file
from tests.processes import flow_env, run_flow_command

GOOD = b'{"symbol":"BTC-USD","price":60000.5,"size":0.1,"ts":%d,"trade_id":%d}'


def hostile(rng: random.Random, ts: int, n: int) -> bytes:
    """One hostile line (no newline inside: one line is one message)."""
    good = GOOD % (ts, n)
    kind = rng.randrange(16)
    if kind == 0:
        at = rng.randrange(len(good))
        return good[:at] + bytes([rng.randrange(0x80, 0x100)]) + good[at:]
    if kind == 1:
        return b"\xef\xbb\xbf" + good
    if kind == 2:
        return good[:-1] + b',"side":"\\ud800"}'
    if kind == 3:
        depth = rng.choice([100, 5000, 50_000])
        return good[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 4:
        return good[:-1] + b',"price":0.0001}'
    if kind == 5:
        return good[:-1] + b',"pri\\u0063e":0.0001}'
    if kind == 6:
        return good.replace(b"60000.5", rng.choice([b"1e999", b"NaN", b'"60000"', b"null", b"-1"]))
    if kind == 7:
        return good.replace(
            b'"ts":%d' % ts, rng.choice([b'"ts":1.5e12', b'"ts":"x"', b'"ts":99999999999999999999'])
        )
    if kind == 8:
        return good[: rng.randrange(len(good))]
    if kind == 9:
        return rng.choice([b"", b"\r", b"   ", b"\t", b"null", b"[]", b'"trade"', b"{}"])
    if kind == 10:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))).replace(b"\n", b"")
    if kind == 11:  # long fields; one in ~20,000 hostile lines is a megabyte or more
        size = 1_500_000 if rng.random() < 0.0002 else rng.choice([100, 1000, 10_000])
        return good[:-1] + b',"venue":"' + b"V" * size + b'"}'
    if kind == 12:
        size = 600_000 if rng.random() < 0.0002 else 33
        return good.replace(b"BTC-USD", b"S" * size)
    if kind == 13:
        return good + b"\r"  # a CRLF line: valid, and its bytes kept exactly
    if kind == 14:
        return good.replace(b"{", b'{"type":{"a":1},', 1)
    return good.replace(b'"symbol"', b'"symbol":"ETH-USD","symbol"', 1)


def write_stream(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    trades = trades_file(count // 2, symbols=40, seed=seed, fat_finger_rate=0.0005)
    clean = trades.read_bytes().split(b"\n")[:-1]
    lines: list[bytes] = []
    for index, trade in enumerate(clean):
        lines.append(trade)
        # Event times that keep pace with the simulated stream (5,000 trades/s).
        lines.append(hostile(rng, START_MS + index // 5, 10**9 + index))
    path.write_bytes(b"\n".join(lines[:count]) + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        stream = work / "hostile.ndjson"
        print(f"writing {args.count:,} messages (half hostile) ...", flush=True)
        write_stream(stream, args.count, args.seed)
        lines = stream.read_bytes().split(b"\n")[:-1]
        env = flow_env(
            CANDLEWAX_SOURCE="file",
            CANDLEWAX_SOURCE_PATH=str(stream),
            CANDLEWAX_LAKE_DIR=str(work / "lake"),
            CANDLEWAX_TS_MAX_FUTURE="366d",
        )
        began = time.perf_counter()
        code, log = run_flow_command(env, "-w", "2", timeout_s=3600)
        seconds = time.perf_counter() - began
        summary = re.search(
            r"received=(\d+) accepted=(\d+) duplicate=(\d+) filtered=(\d+) rejected=(\d+) "
            r"late=(\d+) \((they add up|MISMATCH[^)]*)\)",
            log,
        )
        checks: list[tuple[str, bool]] = [("the flow finished (exit 0)", code == 0)]
        if summary is None:
            print(log[-3000:], file=sys.stderr)
            checks.append(("a summary was printed", False))
        else:
            received, _, _, _, rejected, _ = map(int, summary.groups()[:6])
            checks.append((f"received = {received:,} = lines in the file", received == len(lines)))
            checks.append(("the outcomes add up", summary.group(7) == "they add up"))
            with duckdb.connect() as con:
                dlq = con.sql(
                    f"select raw, source from read_parquet('{work}/lake/dlq/**/*.parquet')"
                ).fetchall()
            checks.append(
                (f"rejected = {rejected:,} = rows in the lake's dlq/", rejected == len(dlq))
            )
            exact = all(raw == lines[int(source.rsplit("@", 1)[1]) - 1] for raw, source in dlq)
            checks.append(("every dead-lettered message has the exact bytes of its line", exact))
            print(re.sub(r".*?(received=.*?\)).*", r"\1", summary.group(0)))
        print(
            f"{len(lines):,} messages in {seconds:.1f} s ({len(lines) / seconds:,.0f} messages/s)"
        )
        for name, ok in checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}")
        return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
