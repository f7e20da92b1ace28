"""The Redis adapter: many nodes behave as one Pusher app.

* **Bus.** Each node subscribes once per app to ``{prefix}:{app}:bus``. An event published on a
  node is written to its own sockets at once and sent once to the bus; every other node frames
  it once and writes it to its sockets. No per-subscriber Redis traffic.
* **State.** Counts, presence rosters and signed-in users live in Redis and change only through
  the atomic scripts of :mod:`.lua`, which also decide, once for the whole cluster, whether a
  member is new or gone, a channel occupied or vacated, a user online or offline.
* **Liveness.** Each node renews a lease in ``{prefix}:nodes``; a node whose lease ran out is
  *reaped* by one survivor (a ``SET NX`` claim): its ledger is undone, its members announced
  gone, webhooks sent (:mod:`.redis_link`, :mod:`.redis_restore`).
* **Outages.** Commands go through one writer, pipelined, in order. When Redis cannot be
  reached the node keeps serving its own sockets with local answers, says it is not ready, and
  retries with backoff; once back, it makes Redis agree with what it holds (its ledger against
  its sockets) and re-sends presence rosters to its sockets (:mod:`.redis_writer`,
  :mod:`.redis_link`, :mod:`.resync`).
* **Outbox.** Bus messages published while Redis is unreachable wait in a bounded
  :class:`~.outbox.Outbox` and go out in order once the node is back in the cluster, after
  its resync, and once the nodes it knew before the outage are back too (pub/sub keeps
  nothing for a node that has not subscribed again yet). Each carries ``origin#seq``, so a
  message sent twice (a pipeline that failed half-way is sent again) is delivered once.
* **Redis Cluster.** Every key a script touches carries its app's ``{app}`` hash tag, so each
  script runs on one shard, and redis-py routes ``PUBLISH`` by its channel's slot: an app's
  scripts and bus messages all go to the shard of its bus key, in order. Classic pub/sub
  reaches subscribers on every shard, so one subscription per node still hears everything.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import wire
from ..apps import Apps
from ..channel_state import member_added_frame, member_removed_frame
from . import bus, lua
from .base import ChannelCounts, HubView, Joined, Left, SignedIn, SignedOut
from .local import LocalAdapter
from .outbox import Outbox, Sequences
from .redis_client import Client, connect_url, text
from .redis_keys import AppKeys
from .redis_link import ClusterLink
from .redis_restore import keep
from .redis_writer import UNREACHABLE, Op

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ..channel_state import Channel, Member
    from ..config import AppConfig

__all__ = ["RedisAdapter"]


class RedisAdapter:
    """Shares a hub's state with the other nodes through Redis."""

    def __init__(self, apps: tuple[AppConfig, ...], url: str, prefix: str = "pusher-compat",
                 lease_seconds: float = 10.0,
                 client: Client | None = None,
                 outbox_max_bytes: int = 8 * 1024 * 1024, outbox_max_age: float = 10.0
                 ) -> None:
        self.node = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        """This node's name in the cluster (unique: host, process, random)."""
        self._origin = self.node.encode()
        """:attr:`node` as bus messages carry it."""
        self._apps = Apps(apps)
        self._redis = client if client is not None else connect_url(url)
        self._keys = {app.id: AppKeys(prefix, app.id, self.node) for app in self._apps}
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(getattr(lua, name))
            for name in ("JOIN", "LEAVE", "USERS", "HEARTBEAT", "REAP", "RATE")}
        self._local = LocalAdapter()
        """Answers while the node is not in the cluster."""
        self._hub: HubView | None = None
        self._link = ClusterLink(self._redis, self.node, prefix, lease_seconds, self._apps,
                                 self._keys, self._scripts, lambda: self.hub, self._receive,
                                 Outbox(outbox_max_bytes, outbox_max_age))
        """The link state, the lease, reaping, the writer and the outbox."""
        self._seq: dict[str, int] = {}
        """The sequence number of this node's last bus message, per app."""
        self._sequences = Sequences()
        """The last sequence number seen of every other node, to let each message in once."""

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._link.up

    @property
    def dropped(self) -> dict[tuple[str, str], int]:
        return {(app_id, reason.value): count
                for (app_id, reason), count in self._link.outbox.dropped.items()}

    def bind(self, hub: HubView) -> None:
        self._hub = hub
        self._local.bind(hub)

    @property
    def client(self) -> Client:
        """The Redis client, shared with the webhook store."""
        return self._redis

    async def live_nodes(self) -> set[str]:
        """Nodes not reaped yet: a node leaves this set only once its state was undone."""
        return await self._link.live_nodes()

    @property
    def hub(self) -> HubView:
        assert self._hub is not None, "RedisAdapter used before bind()"
        return self._hub

    async def start(self) -> None:
        """Connect (waiting at most a few seconds: a node starts even while Redis is down,
        not ready, and joins the cluster when Redis comes)."""
        self._link.start()
        deadline = time.monotonic() + 5
        while not self.ready and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Flush what is queued, give back this node's share of the state, stop."""
        await self._link.stop()
        await self._redis.aclose()

    # -- outbound ----------------------------------------------------------------------

    def _submit(self, op: Op) -> None:
        """Queue a script call for Redis, or answer it locally while not in the cluster."""
        if not self.ready:
            self._link.answered_locally()
            if op.fallback is not None:
                op.fallback()
            return
        self._link.writer.queue(op)

    def _send(self, app_id: str, body: bus.Message) -> None:
        """Queue one bus message, in order with the scripts, or keep it in the outbox while
        the bus is held. Its origin is ``node#seq``: receivers let each one through once."""
        seq = self._seq[app_id] = self._seq.get(app_id, 0) + 1
        message = bus.encode(bus.origin(self._origin, seq), body)
        self._link.post(app_id, message)

    def publish(self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
                ) -> None:
        self._send(app_id, bus.Event(channel, except_socket_id, wire.unframe(frame)))

    def remember(self, app: AppConfig, channel: str, frame: bytes) -> None:
        payload = wire.unframe(frame)
        ttl_ms = int(app.cache_ttl_seconds * 1000)
        self._send(app.id, bus.Cache(channel, ttl_ms, payload))
        if self.ready:
            self._link.writer.command("SET", self._keys[app.id].cache(channel), payload, "PX",
                                      ttl_ms)

    def terminate(self, app_id: str, user_id: str) -> None:
        self._send(app_id, bus.Terminate(user_id))

    def joined(self, app: AppConfig, channel: Channel, member: Member | None, first: bool,
               done: Callable[[Joined], None]) -> None:
        keys = self._keys[app.id]
        user, info, message = "", b"", b""
        if member is not None:
            user, info = member.key, wire.dumps(member.user_info)
            message = self._event(channel.name, member_added_frame(channel.name, member))
        args = [self.node, channel.name, channel.local_sockets, user, info,
                app.max_presence_members, keys.bus, message]

        def answer(reply: list[Any]) -> None:
            if reply[0] == -1:
                done(Joined(0, occupied=False, full=True))
                return
            roster = reply[3]
            done(Joined(int(reply[0]), occupied=reply[1] == 1, added=reply[2] == 1,
                        roster={text(roster[i]): wire.loads(roster[i + 1])
                                for i in range(0, len(roster), 2)}))

        self._submit(Op(self._scripts["JOIN"], keys.channel(channel.name), args, answer,
                         lambda: self._local.joined(app, channel, member, first, done)))

    def left(self, app: AppConfig, channel: Channel, member: Member | None,
             done: Callable[[Left], None]) -> None:
        keys = self._keys[app.id]
        user, message = "", b""
        if member is not None:
            user = member.key
            message = self._event(channel.name,
                                  member_removed_frame(channel.name, member.user_id))
        args = [self.node, channel.name, channel.local_sockets, user, keys.bus, message]

        def answer(reply: list[Any]) -> None:
            done(Left(int(reply[0]), vacated=reply[1] == 1, removed=reply[2] == 1))

        self._submit(Op(self._scripts["LEAVE"], keys.channel(channel.name), args, answer,
                         lambda: self._local.left(app, channel, member, done)))

    def signed_in(self, app: AppConfig, user_id: str, watchlist: tuple[str, ...],
                  done: Callable[[SignedIn], None]) -> None:
        def answer(reply: list[Any]) -> None:
            online = {text(u) for u in reply[2]}
            done(SignedIn(int(reply[0]), online=reply[1] == 1,
                          watched_online=tuple(u for u in watchlist if u in online)))

        self._users(app, user_id, 1, watchlist, answer,
                    lambda: self._local.signed_in(app, user_id, watchlist, done))

    def signed_out(self, app: AppConfig, user_id: str, done: Callable[[SignedOut], None]
                   ) -> None:
        self._users(app, user_id, -1, (), lambda reply: done(SignedOut(reply[1] == -1)),
                    lambda: self._local.signed_out(app, user_id, done))

    def _users(self, app: AppConfig, user_id: str, delta: int, watchlist: tuple[str, ...],
               done: Callable[[Any], None] | None, fallback: Callable[[], None] | None) -> None:
        keys = self._keys[app.id]
        args = [user_id, delta, keys.bus, bus.watch(self._origin, user_id, True),
                bus.watch(self._origin, user_id, False), *watchlist]
        self._submit(Op(self._scripts["USERS"], keys.user_keys(), args, done, fallback))

    def _event(self, channel: str, frame: bytes) -> bytes:
        """The bus message a script publishes with ``frame`` for every subscriber."""
        return bus.event(self._origin, channel, wire.unframe(frame))

    # -- inbound: the bus --------------------------------------------------------------

    def _receive(self, app_id: str, data: bytes) -> None:
        sender, message = bus.decode(data)
        # This node's sockets had the event when it was published; scripts' messages carry
        # no sequence number (they are never sent twice).
        if sender.node == self._origin or (
                sender.seq is not None
                and not self._sequences.fresh(app_id, sender.node, sender.seq)):
            return
        hub = self.hub
        match message:
            case bus.Event(channel, except_id, payload):
                hub.deliver(app_id, channel, wire.frame(payload), except_id)
            case bus.Watch(user, online):
                hub.watch_event(app_id, user, online)
            case bus.Terminate(user):
                hub.terminate_local(app_id, user)
            case bus.Cache(channel, ttl_ms, payload):
                keep(hub, app_id, channel, payload, ttl_ms / 1000)

    # -- queries -----------------------------------------------------------------------

    def connection_count(self, app_id: str) -> int:
        remote = self._link.remote_connections.get(app_id, 0)
        return self.hub.local_connection_count(app_id) + remote

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        if not self.ready:
            return await self._local.channels(app_id, prefix)
        keys = self._keys[app_id]
        names = sorted(n for n in map(text, await self._redis.smembers(keys.channels))
                       if n.startswith(prefix))
        return dict(zip(names, await self._counts(keys, names), strict=True))

    async def channel(self, app_id: str, name: str) -> ChannelCounts | None:
        if not self.ready:
            return await self._local.channel(app_id, name)
        counts = (await self._counts(self._keys[app_id], [name]))[0]
        return counts if counts.subscription_count else None

    async def _counts(self, keys: AppKeys, names: list[str]) -> list[ChannelCounts]:
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hvals(keys.sockets(name))
            pipe.hlen(keys.roster(name))
        replies = await pipe.execute()
        return [ChannelCounts(sum(map(int, replies[i])), replies[i + 1])
                for i in range(0, len(replies), 2)]

    async def members(self, app_id: str, name: str) -> list[str]:
        if not self.ready:
            return await self._local.members(app_id, name)
        return [text(u) for u in await self._redis.hkeys(self._keys[app_id].roster(name))]

    async def take(self, app_id: str, bucket: str, cost: int, limit: int) -> float | None:
        if self.ready:
            now = time.time()
            window = self._keys[app_id].rate(bucket, int(now))
            try:
                taken = await self._scripts["RATE"](keys=[window], args=[cost, limit])
            except UNREACHABLE as error:
                self._link.lost(error)
            else:
                return None if taken else 1.0 - now % 1.0
        return await self._local.take(app_id, bucket, cost, limit)
