"""Catch-up pages: sizing, slicing at frame boundaries, sharing."""

from __future__ import annotations

import gc

import pytest

from app import pages
from app.pages import Page, PageCache
from app.protocol import wire_text_frame


def _frames(sizes: list[int]) -> list[bytes]:
    return [wire_text_frame("x" * n) for n in sizes]


def _keys(n: int) -> list[tuple[int, int]]:
    return [(10, k) for k in range(n)]


@pytest.mark.parametrize(
    ("budget", "entry_bytes", "most", "expected"),
    [
        (512 * 1024, 0.0, 1000, pages.UNKNOWN_ENTRY_COUNT),  # not known yet: a small first read
        (512 * 1024, 2100.0, 1000, 249),
        (512 * 1024, 10.0, 1000, 1000),  # capped by the caller's count
        (1000, 5000.0, 1000, 1),  # never fewer than one entry
        (4096, 1024.0, 1000, 4),
    ],
)
def test_entries_for(budget: int, entry_bytes: float, most: int, expected: int) -> None:
    assert pages.entries_for(budget, entry_bytes, most) == expected


def test_build_keeps_the_prefix_that_fits_the_budget() -> None:
    frames = _frames([1000] * 10)
    page = pages.build(frames, _keys(10), budget=3 * len(frames[0]) + 10)
    assert page.count == 3
    assert page.last == (10, 2)
    assert page.blob == b"".join(frames[:3])
    assert page.cuts == (page.nbytes,)


def test_build_takes_one_entry_larger_than_the_budget() -> None:
    frames = _frames([5000, 10])
    page = pages.build(frames, _keys(2), budget=100)
    assert (page.count, page.blob) == (1, frames[0])


def test_build_of_nothing_is_an_empty_page() -> None:
    page = pages.build([], [], budget=100)
    assert not page and page.nbytes == 0 and page.cuts == ()


@pytest.mark.parametrize("sizes", [[2000] * 300, [100, 70_000, 30, 40_000, 9_000] * 5, [200_000]])
def test_cuts_fall_on_frame_boundaries_and_slices_stay_small(sizes: list[int]) -> None:
    frames = _frames(sizes)
    page = pages.build(frames, _keys(len(frames)), budget=10**9)
    ends = set()
    pos = 0
    for f in frames:
        pos += len(f)
        ends.add(pos)
    assert set(page.cuts) <= ends and page.cuts[-1] == page.nbytes
    start = 0
    for end in page.cuts:
        # a slice is at most SLICE_BYTES, unless it is one frame larger than that
        assert end - start <= pages.SLICE_BYTES or end - start in {len(f) for f in frames}
        start = end


def test_texts_give_back_the_frames() -> None:
    texts = ["a", "b" * 200, "c" * 70_000, '{"type":"message","body":"é"}']
    page = pages.build([wire_text_frame(t) for t in texts], _keys(4), budget=10**9)
    assert list(page.texts()) == texts


def _page(n: int) -> Page:
    return Page(b"x" * n, 1, (1, n), (n,))


def test_a_page_is_found_only_while_someone_holds_it() -> None:
    cache = PageCache(max_bytes=10_000)
    held = _page(1000)
    cache.add("k", held)
    assert cache.kept_bytes == 0
    del held
    gc.collect()
    assert cache.get("k") is None


def test_a_page_asked_for_twice_is_kept_up_to_the_byte_bound() -> None:
    cache = PageCache(max_bytes=2500)
    for k in range(3):
        page = _page(1000)
        cache.add(k, page)
        assert cache.get(k) is page  # a second socket asks: keep it
        del page
    gc.collect()
    assert cache.kept_bytes == 2000
    assert cache.get(0) is None  # the oldest went first
    assert cache.get(1) is not None and cache.get(2) is not None


def test_clear_forgets_everything() -> None:
    cache = PageCache(max_bytes=10_000)
    page = _page(100)
    cache.add("k", page)
    cache.get("k")
    cache.clear()
    assert cache.get("k") is None and cache.kept_bytes == 0
