"""Every Redis key and channel name used by the service, in one place.

Layout (``P`` is the configured prefix, default ``sg``; ``R`` a room name)::

    P:{R}:log            STREAM  the room's messages; fields u (sender), b (body
                                 JSON text), c (client_id, optional)
    P:{R}:idem:<U>|<cid> STRING  id stored for sender U's client_id, expires
                                 after 24 h (U never contains ``|``, so the
                                 first ``|`` after ``idem:`` ends it, whatever
                                 the client_id holds)
    P:{R}:cursor         HASH    user -> "<id>/<epoch>": last acknowledged id and the
                                 stream epoch it belongs to (only moves forward
                                 within an epoch; a bare "<id>" predates epochs)
    P:{R}:members        ZSET    "user|instance" -> expiry (unix seconds)
    P:{R}:confirmed      STRING  highest id confirmed by replicas (replica mode)
    P:{R}:epoch          HASH    the stream's incarnation: token (random, written
                                 with the stream's first entry), born (that
                                 entry's id; 0-0 for a stream older than epochs)
    P:{R}:live           CHANNEL Pub/Sub notification of each new entry
    P:presence           ZSET    "user|instance" -> expiry (unix seconds)
    P:canary:<instance>  CHANNEL an instance's Pub/Sub self-check

Every key of a room carries the hash tag ``{R}`` so that a Redis Cluster
would keep a room, its idempotency records, its epoch and its cursors on one
shard, which the scripts need (they touch several of them atomically).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sg"

    def log(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:log"

    def idem(self, room: str, sender: str, client_id: str) -> str:
        """The idempotency record of one sender's ``client_id`` in ``room``.

        Scoped to the sender: another user picking the same client_id must
        neither suppress this user's publish nor learn its id. The sender
        comes first because user ids never contain ``|`` while client ids
        may, which keeps ``(sender, client_id) -> key`` one-to-one.
        """
        return f"{self.prefix}:{{{room}}}:idem:{sender}|{client_id}"

    def cursor(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:cursor"

    def members(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:members"

    def confirmed(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:confirmed"

    def epoch(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:epoch"

    def channel(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}:live"

    def presence(self) -> str:
        return f"{self.prefix}:presence"

    def canary(self, instance: str) -> str:
        return f"{self.prefix}:canary:{instance}"

    def room_of_channel(self, channel: str) -> str | None:
        """Invert :meth:`channel`; None for channels that are not room channels."""
        head = f"{self.prefix}:{{"
        tail = "}:live"
        if channel.startswith(head) and channel.endswith(tail):
            return channel[len(head) : -len(tail)]
        return None


def presence_member(user: str, instance: str) -> str:
    """User ids never contain ``|``, so the first ``|`` splits the pair."""
    return f"{user}|{instance}"


def user_of_member(member: str) -> str:
    return member.split("|", 1)[0]
