"""The room chain as tables: one input, the step it answers, the state after."""

from __future__ import annotations

from streams.chain import Phase, RoomChain, Step
from streams.model import MAX, ZERO, Envelope, StreamId


def sid(n: int) -> StreamId:
    return StreamId(n, 0)


def env(n: int, prev: int) -> Envelope:
    return Envelope("r", f"{n}-0", f"{prev}-0", "u", str(n))


def ids(step: Step) -> list[int]:
    return [e.key.ms for e in step.deliver]


def live_at(head: int, epoch: str = "E") -> RoomChain:
    chain = RoomChain()
    chain.opened(sid(head), epoch)
    step = chain.read_done(ZERO, epoch, [])
    assert step.live and chain.phase is Phase.LIVE
    return chain


def test_opening_buffers_then_first_read_hands_over_in_order() -> None:
    chain = RoomChain()
    assert chain.notified(env(3, 2)) == Step()  # before the stream's end is known
    assert chain.opened(sid(1), "E") == Step(read=True)
    step = chain.read_done(ZERO, "E", [env(2, 1), env(3, 2)])
    assert ids(step) == [2, 3] and step.read
    step = chain.read_done(ZERO, "E", [])
    assert step.live and ids(step) == [] and step.filled == 2
    assert chain.head == sid(3)


def test_live_hands_over_a_continuing_chain_at_once() -> None:
    chain = live_at(5)
    assert ids(chain.notified(env(6, 5))) == [6]
    assert ids(chain.notified(env(7, 6))) == [7]
    assert chain.head == sid(7)


def test_duplicate_and_older_notifications_are_dropped() -> None:
    chain = live_at(5)
    chain.notified(env(6, 5))
    assert chain.notified(env(6, 5)) == Step()
    assert chain.notified(env(4, 3)) == Step()
    assert chain.phase is Phase.LIVE


def test_a_gap_starts_a_fill_that_reads_the_missing_entry() -> None:
    chain = live_at(5)
    step = chain.notified(env(7, 6))
    assert step == Step(read=True) and chain.phase is Phase.FILLING
    assert chain.notified(env(8, 7)) == Step()  # buffered while filling
    step = chain.read_done(ZERO, "E", [env(6, 5), env(7, 6)])
    assert ids(step) == [6, 7] and step.read
    step = chain.read_done(ZERO, "E", [])
    assert ids(step) == [8] and step.live and step.filled == 2


def test_a_break_in_the_buffer_reads_again_before_handing_over() -> None:
    # Replica mode: 7 is confirmed after 8, so 8's notification (prev 7)
    # arrives while a read that ran too early returns nothing.
    chain = live_at(6)
    chain.notified(env(8, 7))
    step = chain.read_done(ZERO, "E", [])
    assert ids(step) == [] and step.read and not step.live
    step = chain.read_done(ZERO, "E", [env(7, 6), env(8, 7)])
    assert ids(step) == [7, 8]
    assert chain.read_done(ZERO, "E", []).live


def test_an_unexplained_break_is_handed_over_after_two_more_empty_reads() -> None:
    chain = live_at(6)
    chain.notified(env(8, 7))  # 7 was erased by a failover: no read finds it
    assert chain.read_done(ZERO, "E", []).read
    assert chain.read_done(ZERO, "E", []).read
    step = chain.read_done(ZERO, "E", [])
    assert ids(step) == [8] and step.live


def test_trimmed_entries_are_reported_lost_up_to_the_trim_mark() -> None:
    chain = live_at(5)
    chain.notified(env(20, 19))
    step = chain.read_done(sid(15), "E", [env(15, 14), env(16, 15)])
    assert step.lost == sid(15) and ids(step) == [15, 16]


def test_no_loss_reported_when_the_trim_mark_is_behind_head() -> None:
    chain = live_at(5)
    chain.notified(env(7, 6))
    step = chain.read_done(sid(3), "E", [env(6, 5), env(7, 6)])
    assert step.lost is None


def test_resync_while_live_reads_and_while_filling_reads_once_more() -> None:
    chain = live_at(5)
    assert chain.resynced() == Step(read=True)
    assert chain.resynced() == Step()
    assert chain.reread
    assert chain.read_done(ZERO, "E", []).read  # the read may predate the outage
    assert chain.read_done(ZERO, "E", []).live


def test_another_epoch_reports_every_member_lost_and_starts_over() -> None:
    chain = live_at(5, epoch="E1")
    chain.notified(env(7, 0))  # the new stream's first entry: prev 0-0
    step = chain.read_done(ZERO, "E2", [])
    assert step.lost == MAX and step.read and chain.head == ZERO
    step = chain.read_done(ZERO, "E2", [env(7, 0)])
    assert ids(step) == [7]


def test_a_reborn_stream_below_head_is_not_taken_for_a_duplicate() -> None:
    chain = live_at(50, epoch="E1")
    step = chain.notified(env(3, 0))  # ids went backwards: a new incarnation
    assert step.read and chain.phase is Phase.FILLING
    step = chain.read_done(ZERO, "E2", [env(3, 0)])
    assert step.lost == MAX
    step = chain.read_done(ZERO, "E2", [env(3, 0)])
    assert ids(step) == [3]


def test_an_unknown_epoch_is_adopted_without_a_loss() -> None:
    chain = RoomChain()
    chain.opened(ZERO, "")  # the stream did not exist yet
    assert chain.read_done(ZERO, "", []).live
    chain.notified(env(1, 0))
    chain.notified(env(3, 2))
    step = chain.read_done(ZERO, "E", [env(2, 1), env(3, 2)])
    assert step.lost is None and ids(step) == [2, 3]


def test_a_lost_stream_is_a_loss() -> None:
    chain = live_at(5, epoch="E1")
    chain.resynced()
    step = chain.read_done(ZERO, "", [])
    assert step.lost == MAX


def test_buffer_overflow_drops_the_buffer_and_reads_on() -> None:
    chain = RoomChain(pending_limit=3)
    chain.opened(sid(1), "E")
    for n in range(2, 7):
        chain.notified(env(n, n - 1))
    assert len(chain.pending) <= 3 and chain.reread
    step = chain.read_done(ZERO, "E", [env(n, n - 1) for n in range(2, 7)])
    assert ids(step) == [2, 3, 4, 5, 6]
    assert chain.read_done(ZERO, "E", []).read  # the reread asked for by the overflow
    assert chain.read_done(ZERO, "E", []).live


def test_closed_chain_hands_over_nothing() -> None:
    chain = live_at(5)
    chain.close()
    assert chain.notified(env(6, 5)) == Step()
    assert chain.resynced() == Step()
    assert chain.read_done(ZERO, "E", [env(6, 5)]) == Step()
