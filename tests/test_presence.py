"""Presence across instances, and how it heals after an instance is killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.support import Instance, async_wait_until, open_client, scaled
from tests.support.http import members, presence

PRESENCE_TTL = 2.0


async def _present(inst: Instance, users: set[str]) -> bool:
    return users <= await presence(inst)


async def _absent(inst: Instance, users: set[str]) -> bool:
    return not (users & await presence(inst))


async def test_users_on_both_instances_are_present_everywhere(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    alice, bob = uid("alice"), uid("bob")
    async with await open_client(inst_a, alice), await open_client(inst_b, bob):
        for inst in (inst_a, inst_b):
            await async_wait_until(lambda inst=inst: _present(inst, {alice, bob}), timeout=5)


async def test_user_with_two_connections_stays_present_until_the_last_closes(
    inst_a: Instance, inst_b: Instance, uid: Callable[[str], str]
) -> None:
    carol = uid("carol")
    first = await open_client(inst_a, carol)
    second = await open_client(inst_b, carol)
    try:
        await async_wait_until(lambda: _present(inst_a, {carol}), timeout=5)
        await first.close()
        # Still connected through B: present now and a full TTL later.
        deadline = time.monotonic() + scaled(PRESENCE_TTL * 1.5)
        while time.monotonic() < deadline:
            assert carol in await presence(inst_b), "user dropped out while a connection remained"
            await asyncio.sleep(0.2)  # observation cadence, not synchronisation
    finally:
        await second.close()
    await async_wait_until(
        lambda: _absent(inst_a, {carol}), timeout=3 * PRESENCE_TTL, message="closed user still present"
    )


async def test_room_members_across_instances(
    inst_a: Instance, inst_b: Instance, room: str, uid: Callable[[str], str]
) -> None:
    alice, bob, outsider = uid("alice"), uid("bob"), uid("outsider")
    async with (
        await open_client(inst_a, alice) as a,
        await open_client(inst_b, bob) as b,
        await open_client(inst_b, outsider),
    ):
        await a.join(room, since="$")
        await b.join(room, since="$")

        async def room_is_exactly_alice_and_bob(inst: Instance) -> bool:
            return await members(inst, room) == {alice, bob}

        for inst in (inst_a, inst_b):
            await async_wait_until(lambda inst=inst: room_is_exactly_alice_and_bob(inst), timeout=5)
    # Both disconnected: the room empties.
    await async_wait_until(
        lambda: _no_members(inst_a, room), timeout=3 * PRESENCE_TTL, message="members left behind"
    )


async def _no_members(inst: Instance, room: str) -> bool:
    return not await members(inst, room)


async def test_users_of_a_killed_instance_drop_out_within_three_ttls(
    inst_a: Instance, make_instance: Callable[..., Instance], room: str, uid: Callable[[str], str]
) -> None:
    doomed = make_instance("K", PRESENCE_TTL=str(int(PRESENCE_TTL)))
    victim, survivor = uid("victim"), uid("survivor")
    on_doomed = await open_client(doomed, victim)
    async with await open_client(inst_a, survivor) as s:
        await on_doomed.join(room, since="$")
        await s.join(room, since="$")
        await async_wait_until(lambda: _present(inst_a, {victim, survivor}), timeout=5)
        await async_wait_until(lambda: _has_members(inst_a, room, {victim, survivor}), timeout=5)

        doomed.kill()
        killed_at = time.monotonic()
        await on_doomed.wait_closed(timeout=5)

        async def victim_gone_survivor_stays() -> bool:
            users = await presence(inst_a)
            assert survivor in users, "the surviving instance's user dropped out of presence"
            return victim not in users

        await async_wait_until(
            victim_gone_survivor_stays, timeout=3 * PRESENCE_TTL + 1, message="killed instance's user still present"
        )
        gone_after = time.monotonic() - killed_at
        assert gone_after <= scaled(3 * PRESENCE_TTL + 1)

        async def victim_not_member() -> bool:
            room_members = await members(inst_a, room)
            assert survivor in room_members
            return victim not in room_members

        await async_wait_until(victim_not_member, timeout=3 * PRESENCE_TTL + 1, message="killed user still a member")
        # The survivor is still there a while later.
        assert survivor in await presence(inst_a)
        assert (await s.ping())["type"] == "pong"


async def _has_members(inst: Instance, room: str, users: set[str]) -> bool:
    return users <= await members(inst, room)


async def test_a_user_in_many_rooms_stays_a_member_of_each_while_the_refresh_is_spread(
    inst_a: Instance, room: str, uid: Callable[[str], str]
) -> None:
    """The heartbeat re-scores one part of the rooms per tick: every room
    must still be reached once per TTL/3, so no membership expires."""
    dave = uid("dave")
    rooms = [f"{room}-{i}" for i in range(30)]
    async with await open_client(inst_a, dave) as c:
        for r in rooms:
            await c.join(r, since="$")
        # Three TTLs: an entry whose room no tick reached would be gone.
        deadline = time.monotonic() + scaled(3 * PRESENCE_TTL)
        while time.monotonic() < deadline:
            for r in rooms:
                assert dave in await members(inst_a, r), f"{dave} dropped out of {r}"
            assert dave in await presence(inst_a)
            await asyncio.sleep(0.3)  # observation cadence, not synchronisation
