"""Decode and validate: every contract rule, with the reason a user would look for."""

from __future__ import annotations

import gc
import math
import random
import re
import weakref
from concurrent.futures import Future

import pytest

import operators.decode as decoder
from candlewax.ndjson import LineBlock
from candlewax.records import ORIGIN_SCHEMA, TRADE, TRADE_SCHEMA, RawBatch
from operators.decode import ValidationRules, decode_batch
from operators.dedupe import KEY_COLUMNS, with_dedupe_keys
from operators.steps import JOIN_MESSAGES, joined_groups
from tests.factories import T0, trade

RULES = ValidationRules(now_ms=lambda: T0)


def decode(*messages: bytes | None):
    return decode_batch(RawBatch("test", list(messages), list(range(1, len(messages) + 1))), RULES)


GOOD = b'{"symbol":"BTC-USD","price":1.5,"size":2,"ts":%d}' % T0

REJECTIONS = [
    (b"{not json", "invalid_json", None),
    (b"\xff\xfe\x00", "bad_encoding", None),
    (b"", "empty_message", None),
    (None, "empty_message", None),
    (b"[1, 2]", "not_an_object", None),
    (b'"trade"', "not_an_object", None),
    (b"42", "not_an_object", None),
    (b'{"price":1,"size":1,"ts":%d}' % T0, "missing_field", "symbol"),
    (b'{"symbol":"A","size":1,"ts":%d}' % T0, "missing_field", "price"),
    (b'{"symbol":"A","price":1,"ts":%d}' % T0, "missing_field", "size"),
    (b'{"symbol":"A","price":1,"size":1}', "missing_field", "ts"),
    (b'{"symbol":7,"price":1,"size":1,"ts":%d}' % T0, "wrong_type", "symbol"),
    (b'{"symbol":"A","price":"1.5","size":1,"ts":%d}' % T0, "wrong_type", "price"),
    (b'{"symbol":"A","price":true,"size":1,"ts":%d}' % T0, "wrong_type", "price"),
    (b'{"symbol":"A","price":null,"size":1,"ts":%d}' % T0, "wrong_type", "price"),
    (b'{"symbol":"A","price":1,"size":false,"ts":%d}' % T0, "wrong_type", "size"),
    (b'{"symbol":"A","price":1,"size":[1],"ts":%d}' % T0, "wrong_type", "size"),
    (b'{"symbol":"A","price":1,"size":1,"ts":"%d"}' % T0, "wrong_type", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":null}', "wrong_type", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d.0}' % T0, "not_an_integer", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d.5}' % T0, "not_an_integer", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":1.7e12}', "not_an_integer", "ts"),
    (b'{"symbol":"A","price":NaN,"size":1,"ts":%d}' % T0, "not_finite", "price"),
    (b'{"symbol":"A","price":1,"size":Infinity,"ts":%d}' % T0, "not_finite", "size"),
    (b'{"symbol":"A","price":-Infinity,"size":1,"ts":%d}' % T0, "not_finite", "price"),
    (b'{"symbol":"A","price":1e999,"size":1,"ts":%d}' % T0, "not_finite", "price"),
    (
        b'{"symbol":"A","price":1,"size":1,"ts":123456789012345678901234567890}',
        "ts_out_of_range",
        "ts",
    ),
    (b'{"symbol":"A","price":0,"size":1,"ts":%d}' % T0, "non_positive", "price"),
    (b'{"symbol":"A","price":-3.5,"size":1,"ts":%d}' % T0, "non_positive", "price"),
    (b'{"symbol":"A","price":1,"size":0,"ts":%d}' % T0, "non_positive", "size"),
    (b'{"symbol":"A","price":1,"size":1e-400,"ts":%d}' % T0, "non_positive", "size"),
    (b'{"symbol":"","price":1,"size":1,"ts":%d}' % T0, "bad_symbol", "symbol"),
    (b'{"symbol":"BTC USD","price":1,"size":1,"ts":%d}' % T0, "bad_symbol", "symbol"),
    (b'{"symbol":"%s","price":1,"size":1,"ts":%d}' % (b"X" * 33, T0), "bad_symbol", "symbol"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d}' % (T0 // 1000), "ts_out_of_range", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d}' % (T0 + 3_600_001), "ts_out_of_range", "ts"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"trade_id":1.5}' % T0, "wrong_type", "trade_id"),
    (
        b'{"symbol":"A","price":1,"size":1,"ts":%d,"trade_id":{"a":1}}' % T0,
        "wrong_type",
        "trade_id",
    ),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"side":1}' % T0, "wrong_type", "side"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"type":5}' % T0, "wrong_type", "type"),
    # Hostile bytes: each is one rejection with its own reason, never an exception.
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"side":"\xff"}' % T0, "bad_encoding", "side"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"note":"\xc3"}' % T0, "bad_encoding", "note"),
    (b'\xef\xbb\xbf{"symbol":"A","price":1,"size":1,"ts":%d}' % T0, "bad_encoding", None),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"side":"\\ud800"}' % T0, "bad_encoding", "side"),
    (
        b'{"symbol":"A","price":1,"size":1,"ts":%d,"x":%s}' % (T0, b"[" * 5000 + b"]" * 5000),
        "nesting_too_deep",
        None,
    ),
    (
        b'{"symbol":"A","price":60000,"price":0.0001,"size":1,"ts":%d}' % T0,
        "duplicate_key",
        "price",
    ),
    (b'{"symbol":"A","price":6,"pri\\u0063e":1,"size":1,"ts":%d}' % T0, "duplicate_key", "price"),
    (b'{"symbol":"A","symbol":"B","price":1,"size":1,"ts":%d}' % T0, "duplicate_key", "symbol"),
    (
        b'{"type":"book","type":"trade","symbol":"A","price":1,"size":1,"ts":%d}' % T0,
        "duplicate_key",
        "type",
    ),
]


@pytest.mark.parametrize(("message", "reason", "field"), REJECTIONS)
def test_contract_breaks_go_to_the_dlq_with_reason_field_bytes_and_position(message, reason, field):
    decoded = decode(GOOD, message, GOOD)

    assert decoded.valid.height == 2, "valid neighbours are not affected"
    assert len(decoded.rejections) == 1
    rejection = decoded.rejections[0]
    assert (rejection.reason, rejection.field) == (reason, field)
    assert rejection.raw == message
    assert rejection.source == "test@2"
    assert rejection.detail


def test_valid_trades_keep_their_fields_and_arrival_order():
    decoded = decode(
        trade(
            "ETH-USD", 2000.5, 0.25, T0 + 5, trade_id=17, side="buy", venue="X", extra={"a": [1]}
        ),
        trade("BTC/USDT:PERP", 60000, 1, T0, trade_id="abc-1"),
        trade("sol_usd.x", 1e-8, 5e6, T0 + 3_600_000),
    )
    assert decoded.rejections == [] and decoded.filtered == 0 and decoded.received == 3
    assert decoded.valid.select(list(TRADE_SCHEMA)).rows() == [
        ("ETH-USD", T0 + 5, 2000.5, 0.25, "17", "buy", "X"),
        ("BTC/USDT:PERP", T0, 60000.0, 1.0, "abc-1", None, None),
        ("sol_usd.x", T0 + 3_600_000, 1e-8, 5e6, None, None, None),
    ]


@pytest.mark.parametrize(
    "neighbour", [GOOD, b'{\n "symbol": "P", "price": 1, "size": 1, "ts": 1\n}']
)
def test_valid_trades_carry_their_original_bytes_and_position(neighbour):
    # On the strict read (clean neighbours) and the careful one (a pretty-printed message).
    messages = [trade("A", 1, 1, T0, extra={"note": "kept"}), neighbour, GOOD]
    decoded = decode(*messages)
    origin = decoded.valid.select(list(ORIGIN_SCHEMA))
    assert origin.schema == ORIGIN_SCHEMA
    for raw, source, position in origin.rows():
        assert raw == messages[position - 1] and source == "test"


def test_non_trade_messages_are_filtered_not_rejected():
    decoded = decode(
        trade(type="add"),
        b'{"type":"cancel","order_id":5}',
        b'{"type":"modify","price":"oops"}',
        trade(type="trade"),
        trade(),
    )
    assert decoded.filtered == 3
    assert decoded.rejections == []
    assert decoded.valid.height == 2


def test_a_pretty_printed_message_is_still_one_valid_trade():
    pretty = b'{\n  "symbol": "A",\n  "price": 2,\n  "size": 3,\n  "ts": %d\n}' % T0
    decoded = decode(GOOD, pretty)
    assert decoded.valid.get_column("symbol").to_list() == ["BTC-USD", "A"]


def test_every_message_has_exactly_one_outcome():
    messages = [GOOD, trade(type="book"), *(m for m, _, _ in REJECTIONS)]
    decoded = decode(*messages)
    assert decoded.valid.height + decoded.filtered + len(decoded.rejections) == len(messages)
    assert decoded.received == len(messages)


def test_a_huge_offending_value_is_quoted_short_and_kept_whole_in_the_raw_bytes():
    message = b'{"symbol":"%s","price":1,"size":1,"ts":%d}' % (b"S" * 600_000, T0)
    (rejection,) = decode(message).rejections
    assert (rejection.reason, rejection.field) == ("bad_symbol", "symbol")
    assert len(rejection.detail) < 200
    assert rejection.raw == message


def test_repeated_unknown_fields_and_escapes_outside_the_contract_are_fine():
    decoded = decode(
        b'{"symbol":"A","price":2,"size":1,"ts":%d,"x":1,"x":2}' % T0,
        b'{"symbol":"A","price":3,"size":1,"ts":%d,"note":"\\ud800 caf\\u00e9"}' % T0,
        b'{"symbol":"A","price":4,"size":1,"ts":%d,"nested":{"price":9,"price":8}}' % T0,
        b'{"symbol":"A","price":5,"size":1,"ts":%d,"venue":"price"}' % T0,
    )
    assert decoded.rejections == []
    assert decoded.valid.get_column("price").to_list() == [2.0, 3.0, 4.0, 5.0]


HOSTILE = [m for m, _, _ in REJECTIONS] + [
    GOOD,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"x":1,"x":2}' % T0,
    b'{\n "symbol": "A", "price": 2, "size": 3, "ts": %d\n}' % T0,
    b"\r",
    b"   ",
]


@pytest.mark.parametrize("message", HOSTILE)
def test_a_message_has_the_same_outcome_in_any_batch(message):
    def outcome(decoded):
        return (
            decoded.valid.drop("_position").rows(),
            [(r.reason, r.field, r.raw) for r in decoded.rejections],
            decoded.filtered,
        )

    alone = outcome(decode(message))
    # Next to clean neighbours, and next to a pretty-printed message (which sends the
    # whole batch down the fallback read); after 300 KB of clean ones, past the first
    # piece the batch's bytes are scanned in.
    pretty = b'{\n "symbol": "P", "price": 1, "size": 1, "ts": %d\n}' % T0
    for neighbours in ([GOOD], [pretty], [b"\xff", GOOD], [GOOD] * 5_000):
        batch = decode(*neighbours, message)
        mine = decode(*neighbours)
        trades = batch.valid.drop("_position").rows()[mine.valid.height :]
        rejections = [(r.reason, r.field, r.raw) for r in batch.rejections][len(mine.rejections) :]
        assert (trades, rejections, batch.filtered - mine.filtered) == alone


# What a line of a file can be: anything but a newline.
FILE_LINES = [m for m in HOSTILE if m is not None and b"\n" not in m]


@pytest.mark.parametrize("message", FILE_LINES)
def test_a_file_s_text_decodes_as_its_lines_do(message):
    # A file source hands over the text it read (`LineBlock`), not a bytes per line: the
    # same trades (original bytes, source and line number included), rejections and
    # filtered count, on the strict read and on the careful one, in small batches and in
    # large ones (whose original bytes point into the text read).
    for neighbours in ([], [GOOD], [b"\xff", GOOD], [trade("B", 2, 1, T0)] * 12_000):
        lines = [*neighbours, message, trade(type="book"), GOOD]
        positions = range(1, len(lines) + 1)
        as_lines = decode_batch(RawBatch("file:t", lines, positions), RULES)
        as_text = decode_batch(RawBatch("file:t", LineBlock.of(lines), positions), RULES)
        assert as_text.valid.equals(as_lines.valid)
        assert as_text.valid.schema == as_lines.valid.schema
        assert as_text.rejections == as_lines.rejections
        assert (as_text.filtered, as_text.received) == (as_lines.filtered, as_lines.received)
        origin = as_text.valid.select("_raw", "_position").rows()
        assert origin == [(lines[position - 1], position) for _, position in origin]


# Messages Arrow's strict read lets through (or would crash on) that the contract refuses.
STRICT_READ_GAPS = [
    (b"null", "not_an_object"),
    (b'{"symbol":"A","price":NaN,"size":1,"ts":%d}' % T0, "not_finite"),
    (b'{"symbol":"A","price":1,"size":Infinity,"ts":%d}' % T0, "not_finite"),
    (b'{"symbol":"A","price":1,"size":1,"ts":%d,"q":"\xff"}' % T0, "bad_encoding"),
    (b'\xef\xbb\xbf{"symbol":"A","price":1,"size":1,"ts":%d}' % T0, "bad_encoding"),
    (
        b'{"symbol":"A","price":1,"size":1,"ts":%d,"x":%s}' % (T0, b"[" * 5000 + b"]" * 5000),
        "nesting_too_deep",
    ),
    (b'{"symbol":"A","price":null,"size":1,"ts":%d}' % T0, "wrong_type"),
    (b'{"symbol":"A","size":1,"ts":%d}' % T0, "missing_field"),
]


@pytest.mark.parametrize(("message", "reason"), STRICT_READ_GAPS)
def test_what_the_strict_batch_read_lets_through_is_still_rejected(message, reason):
    far = [GOOD] * 5_000 + [message] + [GOOD]  # past the first piece of the byte scan
    for batch in ([message], [GOOD, message, GOOD], [message, GOOD], far):
        decoded = decode(*batch)
        assert [r.reason for r in decoded.rejections] == [reason]
        assert decoded.valid.height == len(batch) - 1


# Messages polars' NDJSON reader reads without complaint where the contract (and Arrow's
# read) does not: a text field holding another type, a key given twice, minus zero (read
# as +0.0); and messages whose punctuation only looks like those.
POLARS_READ_GAPS = [
    b'{"symbol":7,"price":1,"size":1,"ts":%d}' % T0,
    b'{"symbol":true,"price":1,"size":1,"ts":%d}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"venue":12.5}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"side":"buy","side":"sell"}' % T0,
    b'{"symbol":"A","price":1,"price":2,"size":1,"ts":%d,"venue":7}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"venue":"X","venue":false}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"side":null}' % T0,
    b'{"symbol":"A","price":1,"size":-0,"ts":%d}' % T0,
    b'{"symbol":"A","price":-0,"size":1,"ts":%d}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"venue":"a:"b""}' % T0,
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"venue":"x-0"}' % T0,
    b'{"symbol":7,"price":1,"size":1,"ts":%d,"venue":"\\"\\""}' % T0,  # quotes make up
    b'{"symbol":"A","price":1,"size":1,"ts":%d,"trade_id":"7"}' % T0,
]


@pytest.mark.parametrize("message", POLARS_READ_GAPS)
def test_what_polars_batch_read_lets_through_is_judged_as_alone(message, monkeypatch):
    # A large clean batch is read by polars' NDJSON reader, not Arrow's; with one of these
    # in it, each is judged as on its own (Arrow's read or the exact path), its floats'
    # signs too (-0 is -0.0, as Arrow and Python read it), its neighbours unchanged.
    reads = {"polars": 0, "arrow": 0}

    def counting(path, read):
        def counted(*args, **kwargs):
            reads[path] += 1
            return read(*args, **kwargs)

        return counted

    monkeypatch.setattr(decoder.pl, "read_ndjson", counting("polars", decoder.pl.read_ndjson))
    monkeypatch.setattr(decoder.pa_json, "read_json", counting("arrow", decoder.pa_json.read_json))
    monkeypatch.setattr(decoder._POLARS_PAUSE, "left", 0)  # what earlier tests' batches left

    def outcome(decoded):
        rows = decoded.valid.drop("_position", "_raw").rows()
        signs = [[math.copysign(1, v) for v in row if isinstance(v, float)] for row in rows]
        return rows, signs, [(r.reason, r.field, r.detail, r.raw) for r in decoded.rejections]

    ids = [trade("B", 2, 1, T0 + i, trade_id=i) for i in range(5_000)]
    clean = decode(*ids)
    assert reads["polars"] and not reads["arrow"]  # (twice if the ids were read as text first)
    alone = outcome(decode(message))
    mixed = decode(*ids, message)
    mine = outcome(clean)
    assert [part[len(part) - len(alone[i]) :] for i, part in enumerate(outcome(mixed))] == list(
        alone
    )
    assert [part[: len(mine[i])] for i, part in enumerate(outcome(mixed))] == list(mine)


# Bytes that change what a message's punctuation says: the counts `_polars_read` goes by.
_MUTATIONS = [
    b'"',
    b":",
    b"\\",
    b"-0",
    b"-",
    b"0",
    b"{",
    b"}",
    b"[",
    b",",
    b" ",
    b"null",
    b"true",
    b"5",
    b'"x"',
    b'"side":"b"',
    b'"price":3',
    b'"symbol":7',
    b"\x00",
    b"\xc3\xa9",
    b"e",
]


_VALUES = [
    b"5",
    b"true",
    b"null",
    b"-0",
    b"-0.0",
    b'"x"',
    b"1.5",
    b"{}",
    b"[]",
    b'"a:b"',
    b'"\\""',
    b'"5","symbol":"Z"',
    b'7,"venue":"W"',
    b'"q","x":1',
]


def test_hostile_edits_of_a_message_in_a_large_batch_are_judged_as_alone(monkeypatch):
    # A well-formed message edited at random (a value swapped for one of another type or
    # shape, bytes inserted or deleted that change its punctuation), each alone next to
    # 4,000 clean ones: its outcome is what the
    # message gets on its own (a small batch, which polars never reads), floats' signs
    # too, and polars' read vouches for some of the batches, so that path is tried.
    rng = random.Random(31)
    message = (
        b'{"symbol":"BTC-USD","price":1.5,"size":2,"ts":%d,"trade_id":7,"side":"sell",'
        b'"venue":"V","type":"trade"}' % T0
    )
    clean = [trade("B", 2, 1, T0 + i, trade_id=i, side="buy", venue="X") for i in range(4_000)]
    mine = decode(*clean)
    polars_reads = []
    read_ndjson = decoder.pl.read_ndjson
    monkeypatch.setattr(
        decoder.pl, "read_ndjson", lambda *a, **k: polars_reads.append(1) or read_ndjson(*a, **k)
    )

    def outcome(decoded, skip=0):
        rows = decoded.valid.drop("_position", "_raw").rows()[skip:]
        signs = [[math.copysign(1, v) for v in row if isinstance(v, float)] for row in rows]
        return rows, signs, [(r.reason, r.field, r.detail, r.raw) for r in decoded.rejections]

    values = [m.span(1) for m in re.finditer(rb':("[^"]*"|[^,}]*)', message)]
    vouched = 0
    for _ in range(150):
        edited = bytearray(message)
        if rng.random() < 0.6:  # a value of another type or shape in its place
            start, end = rng.choice(values)
            edited[start:end] = rng.choice(_VALUES)
        for _ in range(rng.randint(0, 2)):
            at = rng.randrange(len(edited) + 1)
            if rng.random() < 0.3:
                del edited[at : at + rng.randint(1, 4)]
            else:
                edited[at:at] = rng.choice(_MUTATIONS)
        monkeypatch.setattr(decoder._POLARS_PAUSE, "left", 0)
        alone = outcome(decode(bytes(edited)))
        reads = len(polars_reads)
        in_batch = decode(*clean, bytes(edited))
        assert outcome(in_batch, skip=mine.valid.height) == alone, bytes(edited)
        assert in_batch.valid.height == mine.valid.height + len(alone[0])
        vouched += len(polars_reads) > reads and decoder._POLARS_PAUSE.left == 0
    assert vouched >= 5


def begun_ahead(result):
    done = Future()
    done.set_result(result)
    return done


@pytest.mark.parametrize("odd", [None, *POLARS_READ_GAPS[:3], b"not json"])
@pytest.mark.parametrize("as_text", [True, False])
def test_a_batch_read_ahead_decodes_as_it_does_when_read_in_turn(odd, as_text, monkeypatch):
    # A source begins the strict read on its own thread before the decode gets the batch
    # (`read_ahead`, the batch's `ahead`): the decode then does no strict read and says
    # the same (a batch the strict read refused goes the careful way, as in turn).
    lines = [trade("B", 2, 1, T0 + i, trade_id=i) for i in range(4_000)] + [odd or GOOD, GOOD]
    positions = range(1, len(lines) + 1)
    values = LineBlock.of(lines) if as_text else lines
    in_turn = decode_batch(RawBatch("t", values, positions), RULES)
    ahead = begun_ahead(decoder.read_ahead(TRADE)(values))
    monkeypatch.setattr(decoder, "_polars_read", None)  # a strict read now would fail
    monkeypatch.setattr(decoder.pa_json, "read_json", None)
    decoded = decode_batch(RawBatch("t", values, positions, ahead=ahead), RULES)
    assert decoded.valid.equals(in_turn.valid)
    assert decoded.rejections == in_turn.rejections
    assert bool(decoded.rejections) == (odd is not None)


def test_a_batch_read_ahead_is_freed_once_dropped_without_the_cycle_collector():
    # The flow pauses the cyclic collector for long stretches: batches read ahead that
    # referred to themselves piled up, 20 MB each (peak RSS +430 MB on the 2 M-trade file).
    block = LineBlock.of([trade("B", 2, 1, T0 + i, trade_id=i) for i in range(4_000)])
    batch = RawBatch(
        "t", block, range(1, 4_001), ahead=begun_ahead(decoder.read_ahead(TRADE)(block))
    )
    decoded = decode_batch(batch, RULES)
    assert decoded.valid.height == 4_000
    frame = weakref.ref(batch.ahead.result()[0])
    gc.disable()
    try:
        del block, batch, decoded
        assert frame() is None
    finally:
        gc.enable()


def test_large_batches_of_integer_and_string_ids_read_the_same():
    def ids(*messages):
        return decode(*messages).valid.get_column("trade_id").to_list()

    n = 5_000
    numbered = [trade(trade_id=i, ts=T0 + i) for i in range(n)]
    named = [trade(trade_id=str(i), ts=T0 + i) for i in range(n)]
    text = [str(i) for i in range(n)]
    for _ in range(2):  # each kind after the other, as a feed that changes its ids would
        assert ids(*numbered) == ids(*named) == text
        assert ids(*named[: n // 2], *numbered[n // 2 :]) == text


def test_integer_and_string_trade_ids_read_the_same_in_any_batch():
    def ids(*messages):
        return decode(*messages).valid.get_column("trade_id").to_list()

    numbered = [trade(trade_id=n, ts=T0 + n) for n in range(3)]
    named = [trade(trade_id=str(n), ts=T0 + n) for n in range(3)]
    assert ids(*numbered) == ids(*named) == ids(*numbered[:2], named[2]) == ["0", "1", "2"]


@pytest.mark.parametrize("fingerprint", [False, True])
@pytest.mark.parametrize("copies", [1, 400])  # small: Arrow's read; large: polars'
def test_ids_read_as_numbers_key_dedupe_as_their_text_does(fingerprint, copies):
    edges = [0, 7, -1, 10**18 - 1, 10**18, -(10**18 - 1), -(10**18), 2**63 - 1, -(2**63)]
    numbers = [*edges, None] * copies
    numbered = [trade(trade_id=n, ts=T0 + i) for i, n in enumerate(numbers)]
    named = [
        trade(trade_id=None if n is None else str(n), ts=T0 + i) for i, n in enumerate(numbers)
    ]
    from_numbers, from_text = decode(*numbered), decode(*named)
    assert from_numbers.id_numbers is not None, "the ids were read as integers"
    assert from_text.id_numbers is None
    keys = [
        with_dedupe_keys(d.valid, fingerprint, TRADE, d.id_numbers).select(KEY_COLUMNS).rows()
        for d in (from_numbers, from_text)
    ]
    assert keys[0] == keys[1]
    assert keys[0][: len(edges)] == [
        (n, None) if abs(n) < 10**18 else (None, str(n)) for n in edges
    ], "up to 18 digits an integer key, past them the id's text"
    assert (keys[0][len(edges)][1] is not None) == fingerprint, "no id: a fingerprint if asked"


@pytest.mark.parametrize("careful", [False, True])
def test_batches_of_several_partitions_decoded_as_one_keep_each_message_s_source(careful):
    # What the decode step does with the polls of a worker's partitions that come together.
    firsts = [trade("A", 1, 1, T0, trade_id=1), b'{"symbol": "A"}', trade("B", 2, 1, T0)]
    seconds = [trade("C", 3, 1, T0, trade_id=7), b"not json"]
    if careful:  # a pretty-printed message sends the whole joined batch the careful way
        seconds.append(b'{\n "symbol": "P", "price": 1, "size": 1, "ts": %d\n}' % T0)
    batches = [
        RawBatch("kafka:trades/0", firsts, range(40, 43), [b"A", None, b"B"]),
        RawBatch("kafka:trades/3", seconds, [9, 12, 13][: len(seconds)]),
    ]
    joined = RawBatch.joined(batches)
    whole = decode_batch(joined, ValidationRules(now_ms=lambda: T0 + 10**9))
    apart = [decode_batch(b, ValidationRules(now_ms=lambda: T0 + 10**9)) for b in batches]

    assert whole.valid.rows() == [row for part in apart for row in part.valid.rows()]
    assert [(r.source, r.reason, r.raw, r.key) for r in whole.rejections] == [
        (r.source, r.reason, r.raw, r.key) for part in apart for r in part.rejections
    ]
    assert [r.source for r in whole.rejections] == ["kafka:trades/0@41", "kafka:trades/3@12"]
    origin = whole.valid.select("_source", "_position").rows()
    assert origin[:3] == [("kafka:trades/0", 40), ("kafka:trades/0", 42), ("kafka:trades/3", 9)]


def test_only_small_batches_are_joined_and_in_their_order():
    def batch(n: int, name: str) -> RawBatch:
        return RawBatch(name, [GOOD] * n, range(n))

    small = [batch(10, "a"), batch(20, "b"), batch(30, "c")]
    assert [[b.source for b in g] for g in joined_groups(small)] == [["a", "b", "c"]]
    large = [batch(10, "a"), batch(JOIN_MESSAGES, "big"), batch(5, "c"), batch(5, "d")]
    assert [[b.source for b in g] for g in joined_groups(large)] == [["a"], ["big"], ["c", "d"]]


@pytest.mark.parametrize("bad", [b"BTC USD", b"", b"X" * 33], ids=["space", "empty", "long"])
def test_bad_symbols_in_a_large_batch_are_rejected_where_they_are(bad):
    # Each distinct symbol is judged once: exactly the rows whose symbol breaks the
    # rule are rejected, wherever they are in the batch.
    messages = [trade(symbol=f"S{i % 300}", ts=T0 + i) for i in range(6_000)]
    for position in (0, 2_999, 5_999):
        messages[position] = trade(symbol=bad.decode(), ts=T0 + position)
    decoded = decode(*messages)
    assert [(r.raw, r.reason) for r in decoded.rejections] == [
        (messages[position], "bad_symbol") for position in (0, 2_999, 5_999)
    ]
    assert decoded.valid.height == 5_997
