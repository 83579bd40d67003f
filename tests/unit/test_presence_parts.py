"""The presence heartbeat's parts: each name in exactly one, the same one every time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.presence import part_of


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.text(min_size=1, max_size=40), max_size=50), st.integers(1, 12))
def test_every_name_falls_in_one_part_and_always_the_same(names: list[str], parts: int) -> None:
    for name in names:
        p = part_of(name, parts)
        assert 0 <= p < parts
        assert part_of(name, parts) == p


def test_names_spread_over_the_parts() -> None:
    parts = 10
    counts = [0] * parts
    for i in range(10_000):
        counts[part_of(f"lt-run-r{i}", parts)] += 1
    # A burst per interval is what the parts remove: none may hold much more than its share.
    assert max(counts) < 2 * 10_000 / parts
