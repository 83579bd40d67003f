"""``python -m ops.load.sendcost``: the CPU one ``send()`` of a small frame
costs the sending process on loopback, on this machine.

Every delivery at chat rates is its own ``send()``: a room of 10 that gets
one message per loop iteration cannot share a write between its sockets.
On loopback the kernel runs the receiver's TCP path and its wake-up inside
the sender's system call, so that cost lands on the server whatever the
server's code does. This measures it the way chat traffic pays it: a round
of one frame to each of ``--sockets`` sockets, then a pause long enough for
the receiving process to go back to sleep in ``epoll_wait``, so every round
wakes it. The result is a floor for "server CPU per published message":
deliveries × this, before any parsing, Redis round trip or bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import time
from collections.abc import Sequence

FRAME = b"\x81\x7e\x00\x96" + b"x" * 150  # a 150-byte text frame, as a small-room message


def _pairs(n: int) -> tuple[list[socket.socket], list[socket.socket]]:
    with socket.create_server(("127.0.0.1", 0), backlog=n) as listener:
        outs, ins = [], []
        for _ in range(n):
            out = socket.create_connection(listener.getsockname())
            out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer, _ = listener.accept()
            outs.append(out)
            ins.append(peer)
    return outs, ins


def _drain(ins: list[socket.socket]) -> None:
    """The receiving process: read everything until every sender closes."""
    sel = selectors.DefaultSelector()
    for s in ins:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(ins)
    while open_:
        for key, _ in sel.select(timeout=10):
            if not key.fileobj.recv(1 << 16):  # type: ignore[union-attr]
                sel.unregister(key.fileobj)
                open_ -= 1


def measure(sockets: int = 10, rounds: int = 3000, pause_s: float = 0.0005) -> dict[str, float]:
    """CPU seconds of this process per ``send()``, its receiver woken each round."""
    outs, ins = _pairs(sockets)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's code
        try:
            for s in outs:
                s.close()
            _drain(ins)
        finally:
            os._exit(0)
    for s in ins:
        s.close()
    cpu = 0.0
    try:
        for _ in range(rounds):
            t0 = time.process_time()
            for s in outs:
                s.send(FRAME)
            cpu += time.process_time() - t0
            time.sleep(pause_s)
    finally:
        for s in outs:
            s.close()
        os.waitpid(pid, 0)
    per_send = cpu / (rounds * sockets)
    return {"sockets": sockets, "rounds": rounds, "frame_bytes": len(FRAME),
            "cpu_us_per_send": round(per_send * 1e6, 2),
            "cpu_us_per_room_of_10": round(per_send * 10e6, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.load.sendcost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3000)
    a = ap.parse_args(argv)
    print(json.dumps(measure(a.sockets, a.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
