"""A tiny terminal chat on the streamgate Python client.

    python examples/python_chat.py --user alice --room lobby ws://127.0.0.1:8000/ws
    python examples/python_chat.py --token "$JWT" --room lobby ws://a:8000/ws ws://b:8000/ws

Lines you type are published to the room; ``/dm USER TEXT`` sends a direct
message; ``/quit`` leaves. Messages of the room and your inbox are printed as
they come, also those you missed while the connection was down. With
``--state FILE`` the last id seen per room is kept across runs, so a restart
resumes where the previous run stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from datetime import datetime
from pathlib import Path

from streamgate_client import Client, Gap, Message, ServerError, connect


def load_positions(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def show(item: Message | Gap) -> None:
    if isinstance(item, Gap):
        print(f"*** {item.room}: some older messages are no longer available ***")
        return
    when = datetime.fromtimestamp(item.ts / 1000).strftime("%H:%M:%S")
    where = "dm" if item.room.startswith("@") else item.room
    body = item.body.get("text", item.body) if isinstance(item.body, dict) else item.body
    print(f"[{when}] {where} <{item.sender}> {body}")


async def print_messages(c: Client, positions: dict[str, str], state: Path | None) -> None:
    async for item in c.messages():
        show(item)
        if isinstance(item, Message) and state is not None:
            positions[item.room] = item.id
            state.write_text(json.dumps(positions))


def read_lines() -> asyncio.Queue[str | None]:
    """Standard input, line by line, read by a daemon thread (a blocked read
    must not keep the program alive after /quit); None at end of input."""
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=100)
    loop = asyncio.get_running_loop()

    def pump() -> None:
        try:
            for line in sys.stdin:
                asyncio.run_coroutine_threadsafe(lines.put(line.rstrip("\n")), loop).result()
            asyncio.run_coroutine_threadsafe(lines.put(None), loop).result()
        except RuntimeError:  # the event loop is gone: the chat has ended
            pass

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+", help="ws://host:port/ws of one or more instances")
    parser.add_argument("--room", default="lobby")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id (servers in AUTH_MODE=none)")
    who.add_argument("--token", help="a JWT (servers in AUTH_MODE=jwt)")
    parser.add_argument("--state", type=Path, help="file keeping the last id per room across runs")
    args = parser.parse_args()

    positions = load_positions(args.state)
    async with connect(args.urls, user=args.user, token=args.token) as c:
        print(f"connected as {c.user} to {c.instance}; /dm USER TEXT, /quit")
        joined = await c.join(args.room, since=positions.get(args.room, "$"))
        await c.join(f"@{c.user}", since=positions.get(f"@{c.user}", "$"))
        print(f"in {args.room} ({joined.replayed} missed messages follow)")
        printer = asyncio.create_task(print_messages(c, positions, args.state))
        lines = read_lines()
        try:
            while (line := await lines.get()) is not None and line != "/quit":
                if not line.strip():
                    continue
                try:
                    if line.startswith("/dm "):
                        _, to, text = (line.split(" ", 2) + [""])[:3]
                        await c.direct(to, {"text": text})
                    else:
                        await c.publish(args.room, {"text": line})
                except (ServerError, ValueError) as exc:
                    print(f"!!! not sent: {exc}")
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
