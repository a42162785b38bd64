"""The decoder accepts exactly the messages the published trade and quote schemas accept,
apart from the rules no JSON Schema can state (listed in each schema's
`x-candlewax-rules`), which the generated messages leave out and
`test_decode.py`/`test_decode_quotes.py` test one by one."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from candlewax.json_schemas import input_schema
from candlewax.records import QUOTE, TRADE, MessageKind, RawBatch
from operators.decode import ValidationRules, decode_batch

NOW = int(time.time() * 1000)
RULES = ValidationRules(now_ms=lambda: NOW)
# Python's `re` lets `$` match before a final newline, ECMA-262 and the decoder do not:
# symbols here have no newline (the decoder's rule is the contract's).
symbols = st.one_of(
    st.sampled_from(["BTC-USD", "ES.Z24", "a:b/c_d", "X" * 32, "X" * 33, "", "A B", "É"]),
    st.text(alphabet=st.characters(exclude_characters="\n"), max_size=40),
)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.0, -0.0, 1e-300, 5e-324, 1.5]),
)
anything = st.one_of(st.none(), st.booleans(), st.text(max_size=5), numbers)
# `ts` as the contract writes it: never a float literal (`1.0`: a rule no schema states),
# and never beyond now + the future bound (relative to now: not in the schema either).
timestamps = st.one_of(
    st.integers(min_value=-(2**63), max_value=NOW + 3_600_000),
    st.sampled_from([946_684_799_999, 946_684_800_000, NOW, NOW + 3_600_000]),
    st.none(),
    st.text(max_size=3),
    st.booleans(),
)


@st.composite
def message(draw: st.DrawFn, kind: MessageKind) -> dict:
    """A valid message of `kind` with none, one, two or three fields changed to anything
    (or left out): about a third come out valid, the rest break one rule or several."""
    valid = {
        "symbol": draw(st.sampled_from(["BTC-USD", "ES.Z24", "a:b/c_d", "X" * 32])),
        **{name: draw(st.floats(1e-6, 1e6)) for name in kind.positive},
        "ts": draw(st.integers(946_684_800_000, NOW + 3_600_000)),
        kind.id_field: draw(st.one_of(st.integers(0, 2**63 - 1), st.text(max_size=8))),
        **{name: draw(st.text(max_size=8)) for name in kind.texts},
        **{name: draw(st.floats(0, 1e6)) for name in kind.non_negative},
        "type": kind.name,
    }
    if kind.ordered is not None:  # bid below ask, as the contract (stated in words) wants
        low, high = kind.ordered
        valid[high] = valid[low] * 1.001 + 1e-6
    wild = {
        "symbol": st.one_of(symbols, anything),
        "ts": timestamps,
        "type": st.sampled_from(["add", "trade", "quote", 7]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del valid[name]
        else:
            valid[name] = draw(wild.get(name, anything))
    if draw(st.booleans()):
        valid["extra"] = draw(st.one_of(anything, st.lists(anything, max_size=2)))
    return valid


def _agree(kind: MessageKind, payload: dict) -> None:
    schema = Draft202012Validator(input_schema(kind))
    if kind.ordered is not None:  # bid < ask: stated in words only, tested apart
        low, high = kind.ordered
        a, b = payload.get(low), payload.get(high)
        numbers_both = all(type(v) in (int, float) for v in (a, b))
        if numbers_both and a >= b:  # type: ignore[operator]
            return
    raw = json.dumps(payload).encode()
    decoded = decode_batch(RawBatch("test", [raw], [0]), RULES, origin=False, kind=kind)
    accepted = decoded.valid.height == 1
    SEEN[kind.name][accepted] += 1
    # A schema's "integer" admits 1.0; the contract's ts and ids do not (x-candlewax-rules).
    float_integer = any(type(payload.get(f)) is float for f in ("ts", kind.id_field))
    assert accepted == (schema.is_valid(payload) and not float_integer), (
        payload,
        [r.reason for r in decoded.rejections],
        decoded.filtered,
        [e.message for e in schema.iter_errors(payload)],
    )


SEEN = {kind: {True: 0, False: 0} for kind in ("trade", "quote")}


@settings(max_examples=400, deadline=None)
@given(message(TRADE))
def test_the_decoder_accepts_exactly_what_the_trade_schema_accepts(payload):
    _agree(TRADE, payload)


@settings(max_examples=400, deadline=None)
@given(message(QUOTE))
def test_the_decoder_accepts_exactly_what_the_quote_schema_accepts(payload):
    _agree(QUOTE, payload)


def test_both_sides_were_tried_many_times():
    # Runs after the two above (file order): the generated messages were not all valid,
    # nor all broken, so the agreement says something.
    for kind, seen in SEEN.items():
        assert seen[True] >= 50 and seen[False] >= 50, (kind, seen)
