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
keeps a room, its idempotency records, its epoch, its watermark, its cursors
and its notification channel on one shard, in one slot, which the scripts
need (they touch several of them atomically, and notify with ``SPUBLISH``
on the room's channel, which must hash to the same slot).

In a Redis Cluster (``Keys(prefix, presence_buckets=N)``, N > 1) nothing that
spans rooms may become one hot key on one shard:

- Rooms spread by slot: a room is the unit of order, so it lives on one
  shard, and a shard carries its share of rooms. Direct messages and
  ``@all`` are rooms like the others (``@all`` is one stream by contract:
  one order for every broadcast; it is written rarely, read through
  Pub/Sub fan-out on its one shard).
- Cursors are per room (a hash in the room's slot), so per-user state spreads
  with the rooms.
- Who is online is split over N buckets by a hash of the user::

      P:presence:{P:p<k>}   ZSET  k = crc32(user) % N

  so the heartbeat's writes and the users listing spread over the shards
  (the tags ``P:p0`` .. land on different slots), and a user is always in
  one bucket.
- The canary is per Pub/Sub link: each link to a master listens on a
  channel whose tag hashes to a slot that master owns::

      P:canary:{P:c<t>}:<instance>   SHARD CHANNEL  t picked per master

  so each shard carries its own instances' canaries, and a canary that comes
  back proves that one link.

With one bucket (single Redis, Sentinel) the names are the ones above.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "sg"
    # >1 in a Redis Cluster: how many shards of the online set there are.
    presence_buckets: int = 1

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

    def presence(self, user: str = "") -> str:
        """The online set that holds ``user`` (the only one without buckets)."""
        if self.presence_buckets <= 1:
            return f"{self.prefix}:presence"
        bucket = zlib.crc32(user.encode()) % self.presence_buckets
        return self._bucket(bucket)

    def _bucket(self, k: int) -> str:
        return f"{self.prefix}:presence:{{{self.prefix}:p{k}}}"

    def presence_all(self) -> list[str]:
        """Every online set, to list who is online."""
        if self.presence_buckets <= 1:
            return [self.presence()]
        return [self._bucket(k) for k in range(self.presence_buckets)]

    def canary(self, instance: str, tag: str | None = None) -> str:
        """An instance's canary channel; ``tag`` (cluster mode) pins its slot."""
        if tag is None:
            return f"{self.prefix}:canary:{instance}"
        return f"{self.prefix}:canary:{{{self.prefix}:c{tag}}}:{instance}"

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
