"""An idle joined socket costs the instance no task of its own.

Its reader is the server's task for the socket; the outbox writer runs only
while frames are queued, the catch-up worker only while a feed catches up,
and the token's expiry is a timer. Observed from outside through the
``streamgate_tasks`` gauge: 201 idle joined sockets against 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.support import Instance, WsClient, new_client_id, open_client, scaled
from tests.support.tokens import SECRET, make_token
from tests.test_metrics import scrape

MORE = 200
# The server's own task per socket (uvicorn's, which runs the endpoint), and
# a little room for a task that happens to be alive during one scrape.
TASKS_PER_SOCKET = 1.0
SLACK = 0.1


async def _settled_tasks(inst: Instance) -> float:
    """The fewest tasks over a few scrapes: a scrape's own request, or a
    presence write that happens to run, must not count as a socket's."""
    seen = []
    for _ in range(5):
        seen.append((await scrape(inst)).value("streamgate_tasks"))
        await asyncio.sleep(0.1)
    return min(seen)


async def _joined(inst: Instance, user: str, room: str, since: str) -> WsClient:
    client = await open_client(inst, token=make_token(user), name=user)
    await client.join(room, since=since)
    return client


async def test_idle_joined_sockets_run_no_task_of_their_own(
    make_instance: Callable[..., Instance], uid: Callable[[str], str], room: str,
) -> None:
    inst = make_instance("T", AUTH_MODE="jwt", JWT_SECRET=SECRET)
    publisher = await open_client(inst, token=make_token(uid("pub")), name="pub")
    clients: list[WsClient] = [publisher]
    try:
        await publisher.join(room, since="$")
        first = await publisher.publish(room, {"n": 0}, client_id=new_client_id())
        one = await _settled_tasks(inst)
        assert one >= 1

        # Half replay (their catch-up worker runs, then ends), half join live;
        # all with an expiring token.
        for start in range(0, MORE, 50):
            clients += await asyncio.gather(*(
                _joined(inst, uid(f"idle{i}"), room, "0" if i % 2 else "$")
                for i in range(start, start + 50)
            ))
        for c in clients[1:]:
            if c.ids[room]:
                assert c.ids[room] == [first["id"]]
        # A live message reaches every socket (written straight to each).
        sent = await publisher.publish(room, {"n": 1}, client_id=new_client_id())
        await asyncio.gather(*(c.wait_for_id(room, sent["id"], scaled(10.0)) for c in clients))

        many = await _settled_tasks(inst)
        per_socket = (many - one) / MORE
        assert per_socket <= TASKS_PER_SOCKET + SLACK, (
            f"{many - one:g} more tasks for {MORE} more idle sockets: "
            f"{per_socket:.2f} per socket")
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

