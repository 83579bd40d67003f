"""Kernel view of loopback TCP sockets (from /proc/net/tcp), to check backpressure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


@dataclass(frozen=True)
class TcpSocket:
    state: str
    tx_queue: int  # bytes written by the owner and not yet acknowledged by the peer
    rx_queue: int  # bytes received and not yet read by the owner


def tcp_socket(local_port: int, remote_port: int) -> TcpSocket | None:
    """The IPv4 socket with these ports, or None when it no longer exists."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == local_port and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                tx, rx = queues.split(":")
                return TcpSocket(STATES.get(state, state), int(tx, 16), int(rx, 16))
    return None
