"""The NDJSON file source: every line once, in order, with its line number; resumable."""

from __future__ import annotations

import gzip

import pytest

from sources import file
from sources.file import NdjsonFilePartition, NdjsonFileSource


def drain(partition) -> list:
    batches = []
    while True:
        try:
            batches.extend(partition.next_batch())
        except StopIteration:
            return batches


def lines_of(batches):
    return [(n, v) for b in batches for n, v in zip(b.positions, b.values, strict=True)]


def test_every_line_is_a_message_in_order_with_its_line_number(tmp_path):
    path = tmp_path / "t.ndjson"
    path.write_bytes(b'{"a":1}\n\n{"a":2}\n\r\n{"a":3}')  # no newline at the end
    batches = drain(NdjsonFilePartition(path, batch_size=2, resume=None))
    assert lines_of(batches) == [
        (1, b'{"a":1}'),
        (2, b""),  # a blank line is a message too (an empty one)
        (3, b'{"a":2}'),
        (4, b"\r"),
        (5, b'{"a":3}'),
    ]
    assert batches[0].position(0) == f"file:{path}@1"


def test_crlf_and_gzip_files_keep_their_bytes_exactly(tmp_path):
    path = tmp_path / "t.ndjson.gz"
    with gzip.open(path, "wb") as out:
        out.write(b'{"a":1}\r\n{"a":2}\r\n')
    assert lines_of(drain(NdjsonFilePartition(path, 10, None))) == [
        (1, b'{"a":1}\r'),
        (2, b'{"a":2}\r'),
    ]


def test_a_resume_continues_after_the_snapshot(tmp_path):
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(1, 101)))
    first = NdjsonFilePartition(path, batch_size=30, resume=None)
    head = first.next_batch()
    resumed = NdjsonFilePartition(path, batch_size=30, resume=first.snapshot())
    rest = drain(resumed)
    numbers = [n for n, _ in lines_of(head + rest)]
    assert numbers == list(range(1, 101))
    assert lines_of(rest)[0] == (31, b'{"n":31}')


@pytest.mark.parametrize("read_bytes", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("batch_size", [1, 3, 1_000])
@pytest.mark.parametrize("ahead", [False, True])
def test_lines_split_by_reads_and_batches_anywhere_are_read_whole(
    tmp_path, monkeypatch, read_bytes, batch_size, ahead
):
    # Reads end inside lines and batches inside reads; a resume from any batch's snapshot
    # reads the rest. Read ahead, every block is worked on before it is handed over, at
    # most one block waits, the snapshot counts only the blocks handed over, and the
    # first block is an eighth of a batch.
    monkeypatch.setattr(file, "READ_BYTES", read_bytes)
    lines = [b'{"n":%d%s}' % (i, b"x" * (i % 13)) if i % 10 else b"" for i in range(1, 90)]
    path = tmp_path / "t.ndjson"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    expected = list(enumerate(lines, start=1))
    worked_on = []

    def read_ahead(block):
        worked_on.append(block)
        return len(worked_on) - 1

    partition = NdjsonFilePartition(path, batch_size, None, read_ahead if ahead else None)
    read, handed, sizes = [], 0, []
    while True:
        try:
            batches = partition.next_batch()
        except StopIteration:
            break
        assert all(len(batch) <= batch_size for batch in batches)
        if ahead:
            assert [batch.ahead.result() for batch in batches] == [handed]
            assert worked_on[handed] is batches[0].values
            handed += 1
            assert handed <= len(worked_on) <= handed + 1
        read += lines_of(batches)
        rest = lines_of(drain(NdjsonFilePartition(path, batch_size, partition.snapshot())))
        assert read + rest == expected
        sizes.extend(len(batch) for batch in batches)
    partition.close()
    assert read == expected
    assert len(worked_on) == (handed if ahead else 0)
    # Read ahead, the first block is a small one: the flow starts on it sooner.
    first = min(len(lines), max(1, batch_size // 8)) if ahead else min(len(lines), batch_size)
    assert sizes[0] == first


def test_a_missing_file_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="CANDLEWAX_SOURCE_PATH"):
        NdjsonFileSource(tmp_path / "nope.ndjson")


def test_parquet_and_csv_files_of_trades_become_contract_messages(tmp_path):
    import msgspec
    import polars as pl

    trades = pl.DataFrame(
        {
            "symbol": ["A", "B"],
            "ts": [1_700_000_000_000, 1_700_000_000_001],
            "price": [1.5, 2.0],
            "size": [3.0, 4.0],
        }
    )
    parquet = tmp_path / "trades.bin"  # told by its first bytes, not its name
    trades.write_parquet(parquet)
    csv = tmp_path / "trades.csv"
    trades.write_csv(csv)
    for path in (parquet, csv):
        source = NdjsonFileSource(path, batch_size=1)
        batches = drain(source.build_part("in", source.list_parts()[0], None))
        messages = [msgspec.json.decode(v) for _, v in lines_of(batches)]
        assert [(m["symbol"], m["ts"], m["price"], m["size"]) for m in messages] == trades.rows()
        assert [n for n, _ in lines_of(batches)] == [1, 2]


def test_a_tabular_file_without_the_contract_columns_stops_the_start(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no column for ts"):
        NdjsonFileSource(path)
