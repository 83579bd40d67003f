"""Stream ids, the live envelope, notification decoding and ``Bounds.recovered``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.entries import decode_notification
from streams.log import Bounds
from streams.model import (
    MAX as MAX_ID,
    ZERO,
    Envelope,
    StreamId,
    parse_id_fast,
    exclusive_start,
    format_id,
    id_ms,
    is_id,
    parse_id,
)

U64 = 2**64 - 1
u64 = st.integers(min_value=0, max_value=U64)
pairs = st.tuples(u64, u64)
quick = settings(max_examples=300, deadline=None, database=None)

# Inputs that only pass because the id regex uses ``\d`` (any Unicode digit)
# and ``$`` (which also matches before a trailing newline) instead of
# ``[0-9]`` and ``\Z`` / ``fullmatch``.
LENIENT_ID = "streams/model.py _ID_RE accepts non-ASCII digits and a trailing newline"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-0", (0, 0)),
        ("0", (0, 0)),
        ("1-2", (1, 2)),
        ("1700000000000-0", (1700000000000, 0)),
        ("1700000000000-15", (1700000000000, 15)),
        ("1700000000000", (1700000000000, 0)),  # bare ms means ms-0
        ("007-008", (7, 8)),
        (f"{U64}-{U64}", (U64, U64)),
        (f"{U64}", (U64, 0)),
        ("00000000000000000001-0", (1, 0)),  # 20 digits
    ],
)
def test_parse_id_valid(text: str, expected: tuple[int, int]) -> None:
    assert parse_id(text) == expected
    assert is_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "$",
        "*",
        "+",
        "-1",
        "1-",
        "-0-0",
        "1-0-0",
        "1--0",
        "1.5",
        "1-0.5",
        "0x10",
        " 1-0",
        "1-0 ",
        "+1-0",
        "1-+0",
        "a-0",
        "1-b",
        "1_000-0",
        f"{U64 + 1}",
        f"{U64 + 1}-0",
        f"0-{U64 + 1}",
        "1" * 21,
        "000000000000000000001-0",  # 21 digits
        pytest.param("1-0\n", marks=()),
        pytest.param("\u0661-\u0660", marks=()),
        pytest.param("\uff11-0", marks=()),
    ],
)
def test_parse_id_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_id(text)
    assert not is_id(text)


@pytest.mark.parametrize("value", [None, 0, 5, 1.0, b"1-0", ["1-0"], {"id": "1-0"}, (1, 0)])
def test_is_id_rejects_non_strings(value: object) -> None:
    assert not is_id(value)


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("9-0", "10-0"),  # as text "9-0" > "10-0"
        ("1-9", "1-10"),
        ("99-99", "100-0"),
        ("0-1", "1-0"),
        ("1699999999999-999", "1700000000000-0"),
        ("5", "5-1"),
        (f"{U64 - 1}-{U64}", f"{U64}-0"),
    ],
)
def test_ids_order_numerically_not_lexicographically(smaller: str, larger: str) -> None:
    assert parse_id(smaller) < parse_id(larger)


def test_zero_and_bare_ms() -> None:
    assert ZERO == (0, 0) == parse_id("0") == parse_id("0-0")
    assert parse_id("42") == parse_id("42-0")


@pytest.mark.parametrize(("sid", "text"), [((0, 0), "0-0"), ((1, 2), "1-2"), ((U64, U64), f"{U64}-{U64}")])
def test_format_id(sid: tuple[int, int], text: str) -> None:
    assert format_id(sid) == text


@quick
@given(pairs)
def test_format_parse_round_trip(sid: tuple[int, int]) -> None:
    text = format_id(sid)
    assert is_id(text)
    assert parse_id(text) == sid


@quick
@given(u64)
def test_bare_ms_is_seq_zero(ms: int) -> None:
    assert parse_id(str(ms)) == (ms, 0)


@quick
@given(pairs, pairs)
def test_id_order_equals_integer_pair_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    pa, pb = parse_id(format_id(a)), parse_id(format_id(b))
    assert (pa < pb) == (a < b)
    assert (pa == pb) == (a == b)


@quick
@given(st.lists(pairs, max_size=30))
def test_sorting_ids_by_parse_id_sorts_by_integer_pairs(sids: list[tuple[int, int]]) -> None:
    texts = [format_id(s) for s in sids]
    assert [parse_id(t) for t in sorted(texts, key=parse_id)] == sorted(sids)


@quick
@given(st.text(max_size=30))
def test_parse_id_never_raises_anything_but_value_error(text: str) -> None:
    try:
        parse_id(text)
    except ValueError:
        assert not is_id(text)
    else:
        assert is_id(text)


def _parsed(parse: Callable[[str], StreamId], text: str) -> StreamId | None:
    try:
        return parse(text)
    except ValueError:
        return None


@quick
@given(st.one_of(st.text(max_size=45), st.text("0123456789-", max_size=45),
                 st.builds(format_id, pairs)))
def test_the_envelope_fast_path_parses_exactly_what_parse_id_parses(text: str) -> None:
    assert _parsed(parse_id_fast, text) == _parsed(parse_id, text)


@pytest.mark.parametrize(("text", "ms"), [("0-0", 0), ("1700000000000-7", 1700000000000), ("12", 12)])
def test_id_ms(text: str, ms: int) -> None:
    assert id_ms(text) == ms


def test_envelope_ts_and_key() -> None:
    env = Envelope(room="lobby", id="1700000000123-4", prev="1700000000123-3", sender="alice", body="1")
    assert env.ts == 1700000000123
    assert env.key == (1700000000123, 4)


# -- notification decoding ----------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (b'5-0\n0-0\nalice\n"hi"', ("5-0", "0-0", "alice", '"hi"')),
        (b"5-1\n5-0\nbob\nnull", ("5-1", "5-0", "bob", "null")),
        (b"5-1\n5-0\nbob\n", ("5-1", "5-0", "bob", "")),
        # A body may contain newlines; only the first three separate fields.
        (b'7-0\n6-0\ncarol\n[1,\n2,\n3]', ("7-0", "6-0", "carol", "[1,\n2,\n3]")),
        (b'7-0\n6-0\ncarol\n\n\n{"a":\n"b"}\n', ("7-0", "6-0", "carol", '\n\n{"a":\n"b"}\n')),
        ('8-0\n7-0\nd\u00e9\n"\u00e9t\u00e9 \U0001f600"'.encode(), ("8-0", "7-0", "d\u00e9", '"\u00e9t\u00e9 \U0001f600"')),
    ],
)
def test_decode_notification(payload: bytes, fields: tuple[str, str, str, str]) -> None:
    env = decode_notification("room-1", payload)
    assert env == Envelope("room-1", *fields)


@pytest.mark.parametrize("payload", [b"", b"5-0", b"5-0\n0-0", b"5-0\n0-0\nalice"])
def test_decode_notification_too_few_fields(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_notification("r", payload)


# -- Bounds.recovered ---------------------------------------------------------


@pytest.mark.parametrize(
    ("last_id", "trim_mark", "since", "recovered"),
    [
        # nothing trimmed
        ("10-0", "0-0", "0-0", True),
        ("10-0", "0-0", "0", True),
        ("10-0", "0-0", "5-0", True),
        ("10-0", "0-0", "10-0", True),
        # empty stream that never had an entry
        ("0-0", "0-0", "0-0", True),
        # trimmed up to (and including) what the reader already saw
        ("10-0", "5-0", "5-0", True),
        ("10-0", "5-0", "7-3", True),
        ("10-0", "9-5", "10-0", True),
        # an entry after since was trimmed
        ("10-0", "5-0", "4-9", False),
        ("10-0", "5-0", "0-0", False),
        ("10-0", "5-1", "5-0", False),
        ("100-0", "10-0", "9-0", False),  # numeric: 9 < 10
        # since beyond the last id the stream ever generated
        ("10-0", "0-0", "10-1", False),
        ("10-0", "0-0", "11-0", False),
        ("9-0", "0-0", "10-0", False),  # numeric: 10 > 9
        ("0-0", "0-0", "1-0", False),
        # everything trimmed, reader saw the last one
        ("10-0", "10-0", "10-0", True),
    ],
)
def test_bounds_recovered(last_id: str, trim_mark: str, since: str, recovered: bool) -> None:
    assert Bounds(last_id=last_id, trim_mark=trim_mark, length=0).recovered(since) is recovered


@pytest.mark.parametrize(
    ("sid", "start"),
    [
        (ZERO, "-"),
        ((0, 1), "(0-1"),
        ((1700000000000, 0), "(1700000000000-0"),
        ((U64, U64 - 1), f"({U64}-{U64 - 1}"),
        ((U64 - 1, U64), f"({U64 - 1}-{U64}"),
        (MAX_ID, None),  # nothing follows the largest id; Redis refuses "(max"
    ],
)
def test_exclusive_start(sid: tuple[int, int], start: str | None) -> None:
    assert exclusive_start(sid) == start
    assert MAX_ID == parse_id(f"{U64}-{U64}")
