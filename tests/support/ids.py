"""Stream ids and account-by-id comparisons with readable failures."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

ID_RE = re.compile(r"^\d+-\d+$")


def id_key(id_: str) -> tuple[int, int]:
    """Order of Redis stream ids: `<ms>-<seq>` compared numerically."""
    ms, seq = id_.split("-")
    return int(ms), int(seq)


def assert_ids_equal(got: Sequence[str], expected: Sequence[str], what: str = "ids") -> None:
    """`got` must be exactly `expected`: nothing missing, no duplicate, same order."""
    if list(got) == list(expected):
        return
    dupes = sorted((i for i, n in Counter(got).items() if n > 1), key=id_key)
    missing = sorted(set(expected) - set(got), key=id_key)
    extra = sorted(set(got) - set(expected), key=id_key)
    first = next(
        (n for n, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
    )
    raise AssertionError(
        f"{what}: got {len(got)}, expected {len(expected)}; "
        f"{len(missing)} missing (first {missing[:5]}), {len(dupes)} duplicated (first {dupes[:5]}), "
        f"{len(extra)} unexpected (first {extra[:5]}); first difference at index {first}: "
        f"got {list(got[first:first + 3])} expected {list(expected[first:first + 3])}"
    )
