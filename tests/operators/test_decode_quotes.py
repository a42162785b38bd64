"""The quote contract: every rule and every rejection reason, on the same decoder as trades."""

from __future__ import annotations

import pytest

from candlewax.records import QUOTE, QUOTE_SCHEMA, RawBatch
from operators.decode import ValidationRules, decode_batch
from operators.dedupe import Deduplicator, with_dedupe_keys
from tests.factories import T0, quote, trade

RULES = ValidationRules(now_ms=lambda: T0)


def decode(*messages: bytes | None, rules: ValidationRules = RULES):
    batch = RawBatch("quotes", list(messages), list(range(1, len(messages) + 1)))
    return decode_batch(batch, rules, origin=False, kind=QUOTE)


GOOD = quote("BTC-USD", 99.5, 100.5, T0, bid_size=2, ask_size=0)
PRETTY = b'{\n "type": "quote", "symbol": "P", "bid": 1, "ask": 2, "ts": %d\n}' % T0

QUOTE_REJECTIONS = [
    (b'{"type":"quote","bid":1,"ask":2,"ts":%d}' % T0, "missing_field", "symbol"),
    (b'{"type":"quote","symbol":"A","ask":2,"ts":%d}' % T0, "missing_field", "bid"),
    (b'{"type":"quote","symbol":"A","bid":1,"ts":%d}' % T0, "missing_field", "ask"),
    (b'{"type":"quote","symbol":"A","bid":1,"ask":2}', "missing_field", "ts"),
    (quote(bid="1.5"), "wrong_type", "bid"),
    (quote(ask=None), "wrong_type", "ask"),
    (quote(ask=True), "wrong_type", "ask"),
    (quote(bid_size="3"), "wrong_type", "bid_size"),
    (quote(ask_size=[1]), "wrong_type", "ask_size"),
    (quote(quote_id=1.5), "wrong_type", "quote_id"),
    (quote(venue=7), "wrong_type", "venue"),
    (b'{"type":"quote","symbol":"A","bid":NaN,"ask":2,"ts":%d}' % T0, "not_finite", "bid"),
    (b'{"type":"quote","symbol":"A","bid":1,"ask":1e999,"ts":%d}' % T0, "not_finite", "ask"),
    (
        b'{"type":"quote","symbol":"A","bid":1,"ask":2,"ts":%d,"bid_size":Infinity}' % T0,
        "not_finite",
        "bid_size",
    ),
    (quote(bid=0.0), "non_positive", "bid"),
    (quote(bid=-1.0, ask=-0.5), "non_positive", "bid"),
    (quote(ask=0.0, bid=0.0), "non_positive", "bid"),
    (quote(bid_size=-1), "negative", "bid_size"),
    (quote(ask_size=-0.001), "negative", "ask_size"),
    (quote(bid=101.0, ask=100.0), "crossed_book", "bid"),
    (quote(bid=100.0, ask=100.0), "locked_book", "bid"),
    (quote(symbol="BTC USD"), "bad_symbol", "symbol"),
    (quote(ts=T0 // 1000), "ts_out_of_range", "ts"),
    (quote(ts=T0 + 3_600_001), "ts_out_of_range", "ts"),
    (b'{"type":"quote","symbol":"A","bid":1,"ask":2,"ts":%d.5}' % T0, "not_an_integer", "ts"),
    (
        b'{"type":"quote","symbol":"A","bid":1,"bid":3,"ask":2,"ts":%d}' % T0,
        "duplicate_key",
        "bid",
    ),
    (
        b'{"type":"quote","symbol":"A","bid":1,"ask":2,"a\\u0073k":3,"ts":%d}' % T0,
        "duplicate_key",
        "ask",
    ),
    (b"{not json", "invalid_json", None),
    (b"[1]", "not_an_object", None),
    (b"", "empty_message", None),
]


@pytest.mark.parametrize(("message", "reason", "field"), QUOTE_REJECTIONS)
def test_each_quote_rule_rejects_with_its_reason_field_bytes_and_position(message, reason, field):
    for neighbours in ([GOOD], [PRETTY]):  # the strict read, and the careful one
        decoded = decode(neighbours[0], message, GOOD)

        assert decoded.valid.height == 2, "valid neighbours are not affected"
        assert [(r.reason, r.field) for r in decoded.rejections] == [(reason, field)]
        rejection = decoded.rejections[0]
        assert rejection.raw == message
        assert rejection.source == "quotes@2"
        assert rejection.detail


def test_a_crossed_book_says_both_sides():
    (rejection,) = decode(quote(bid=101.25, ask=100.5)).rejections
    assert "bid=101.25" in rejection.detail and "ask=100.5" in rejection.detail
    assert "crossed" in rejection.detail


def test_a_setting_accepts_locked_books_but_never_crossed_ones():
    rules = ValidationRules(now_ms=lambda: T0, accept_locked=True)
    decoded = decode(quote(bid=100.0, ask=100.0), quote(bid=100.5, ask=100.0), rules=rules)
    assert decoded.valid.select("bid", "ask").rows() == [(100.0, 100.0)]
    assert [r.reason for r in decoded.rejections] == ["crossed_book"]


def test_valid_quotes_keep_their_fields_and_arrival_order():
    decoded = decode(
        quote("ETH-USD", 2000.25, 2000.5, T0 + 5, quote_id=17, bid_size=1.5, ask_size=0, venue="X"),
        quote("BTC/USDT:PERP", 60000, 60000.1, T0, quote_id="u-1", extra={"a": [1]}),
        b'{"symbol":"A","bid":1,"ask":2,"ts":%d}' % T0,  # no `type`: a quote on the quotes input
    )
    assert decoded.rejections == [] and decoded.filtered == 0
    assert decoded.valid.schema == QUOTE_SCHEMA
    assert decoded.valid.rows() == [
        ("ETH-USD", T0 + 5, 2000.25, 2000.5, 1.5, 0.0, "17", "X"),
        ("BTC/USDT:PERP", T0, 60000.0, 60000.1, None, None, "u-1", None),
        ("A", T0, 1.0, 2.0, None, None, None, None),
    ]


def test_other_message_types_on_the_quotes_input_are_filtered():
    decoded = decode(GOOD, trade(type="trade"), b'{"type":"book","bids":[]}', trade(type="x"))
    assert (decoded.valid.height, decoded.filtered, decoded.rejections) == (1, 3, [])


@pytest.mark.parametrize("message", [m for m, _, _ in QUOTE_REJECTIONS] + [GOOD, PRETTY])
def test_a_quote_has_the_same_outcome_in_any_batch(message):
    def outcome(decoded, skip_valid=0, skip_rejected=0):
        return (
            decoded.valid.rows()[skip_valid:],
            [(r.reason, r.field, r.raw) for r in decoded.rejections][skip_rejected:],
        )

    alone = outcome(decode(message))
    for neighbours in ([GOOD], [PRETTY], [b"\xff", GOOD]):
        mine = decode(*neighbours)
        both = decode(*neighbours, message)
        assert outcome(both, mine.valid.height, len(mine.rejections)) == alone


def test_quotes_with_an_id_are_deduplicated_and_quotes_without_one_are_not():
    decoded = decode(quote(quote_id=7), quote(quote_id="7"), quote(quote_id=8), quote(), quote())
    keyed = with_dedupe_keys(decoded.valid, fingerprint=False, kind=QUOTE)
    kept, duplicates = Deduplicator(60_000).filter(keyed)
    assert duplicates == 1
    assert kept.get_column("quote_id").to_list() == ["7", "8", None, None]
