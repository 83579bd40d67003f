"""Join-point resolution: one row per rule, plus the cursor and decoding paths."""

from __future__ import annotations

import pytest

from streams.joinpoint import Bounds, Cursor, JoinPoint, resolve
from streams.log import parse_cursor
from streams.model import ZERO

E = "epoch-now"
OLD = "epoch-before"

# A stream of the current incarnation: born at 100-0, last generated 200-0,
# nothing trimmed.
LIVE = Bounds(last_id="200-0", trim_mark="0-0", length=50, epoch=E, born="100-0")
# The same, trimmed: the first retained entry is 150-0.
TRIMMED = Bounds(last_id="200-0", trim_mark="150-0", length=20, epoch=E, born="100-0")
# A stream older than epochs: its record was adopted, born unknown.
ADOPTED = Bounds(last_id="200-0", trim_mark="0-0", length=50, epoch=E, born="0-0")
MISSING = Bounds(last_id="0-0", trim_mark="0-0", length=0)


@pytest.mark.parametrize(
    ("since", "epoch", "bounds", "expected"),
    [
        # "$": live, recovered, whatever the client had
        ("$", None, LIVE, JoinPoint(None, True, ZERO, E)),
        ("$", OLD, LIVE, JoinPoint(None, True, ZERO, E)),
        ("$", None, MISSING, JoinPoint(None, True, ZERO, "")),
        # "0": everything retained; recovered unless trimmed
        ("0", None, LIVE, JoinPoint(ZERO, True, ZERO, E)),
        ("0", E, LIVE, JoinPoint(ZERO, True, ZERO, E)),
        ("0", None, TRIMMED, JoinPoint(ZERO, False, (150, 0), E)),
        # a normal resume inside the incarnation, with or without the epoch
        ("120-0", None, LIVE, JoinPoint((120, 0), True, ZERO, E)),
        ("120-0", E, LIVE, JoinPoint((120, 0), True, ZERO, E)),
        ("100-0", E, LIVE, JoinPoint((100, 0), True, ZERO, E)),  # saw the first entry
        ("200-0", E, LIVE, JoinPoint((200, 0), True, ZERO, E)),  # saw the last entry
        # another epoch: the client saw none of this incarnation
        ("120-0", OLD, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        ("300-0", OLD, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        ("0", OLD, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        ("120-0", OLD, TRIMMED, JoinPoint(ZERO, False, (150, 0), E)),
        # beyond the last generated id: live, not recovered
        ("200-1", None, LIVE, JoinPoint(None, False, ZERO, E)),
        ("300-0", E, LIVE, JoinPoint(None, False, ZERO, E)),
        ("300-0", E, TRIMMED, JoinPoint(None, False, ZERO, E)),
        # below the incarnation's first entry (the stream was recreated) even
        # without an epoch: replay it all
        ("99-9", None, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        ("3-0", None, TRIMMED, JoinPoint(ZERO, False, (150, 0), E)),
        # born unknown: only the trim mark and the end judge
        ("99-9", None, ADOPTED, JoinPoint((99, 9), True, ZERO, E)),
        # below the trim mark: replay what is retained, not recovered
        ("149-9", E, TRIMMED, JoinPoint((149, 9), False, (150, 0), E)),
        ("150-0", E, TRIMMED, JoinPoint((150, 0), True, (150, 0), E)),
        ("9-0", None, Bounds("100-0", "10-0", 5, E, "0-0"), JoinPoint((9, 0), False, (10, 0), E)),  # numeric
        # no stream at all
        ("0", None, MISSING, JoinPoint(ZERO, True, ZERO, "")),
        ("0", OLD, MISSING, JoinPoint(ZERO, False, ZERO, "")),
        ("120-0", None, MISSING, JoinPoint(ZERO, False, ZERO, "")),
        ("120-0", OLD, MISSING, JoinPoint(ZERO, False, ZERO, "")),
    ],
)
def test_resolve(since: str, epoch: str | None, bounds: Bounds, expected: JoinPoint) -> None:
    assert resolve(since, epoch, None, bounds) == expected


@pytest.mark.parametrize(
    ("cursor", "client_epoch", "bounds", "expected"),
    [
        # no cursor: "$"
        (None, None, LIVE, JoinPoint(None, True, ZERO, E)),
        (None, OLD, LIVE, JoinPoint(None, True, ZERO, E)),
        # a cursor of this epoch, or one stored before cursors had an epoch
        (Cursor("120-0", E), None, LIVE, JoinPoint((120, 0), True, ZERO, E)),
        (Cursor("120-0"), None, LIVE, JoinPoint((120, 0), True, ZERO, E)),
        # the cursor's epoch counts, not one the client sent without since
        (Cursor("120-0", E), OLD, LIVE, JoinPoint((120, 0), True, ZERO, E)),
        # a cursor from another incarnation
        (Cursor("120-0", OLD), None, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        (Cursor("50-0"), None, LIVE, JoinPoint(ZERO, False, ZERO, E)),
        # a cursor beyond the end (erased by a failover)
        (Cursor("300-0", E), None, LIVE, JoinPoint(None, False, ZERO, E)),
        # the stream is gone
        (Cursor("120-0", E), None, MISSING, JoinPoint(ZERO, False, ZERO, "")),
    ],
)
def test_resolve_from_the_cursor(cursor: Cursor | None, client_epoch: str | None, bounds: Bounds,
                                 expected: JoinPoint) -> None:
    assert resolve(None, client_epoch, cursor, bounds) == expected


@pytest.mark.parametrize(
    ("text", "cursor"),
    [
        ("5-1/abc", Cursor("5-1", "abc")),
        ("5-1", Cursor("5-1", None)),
        ("5-1/", Cursor("5-1", None)),
    ],
)
def test_parse_cursor(text: str, cursor: Cursor) -> None:
    assert parse_cursor(text) == cursor
