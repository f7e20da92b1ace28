"""The Redis adapter: many nodes behave as one Pusher app.

* **Bus.** Each node subscribes once per app to ``{prefix}:{app}:bus``. An event published on a
  node is written to its own sockets at once and sent once to the bus; every other node frames
  it once and writes it to its sockets. No per-subscriber Redis traffic.
* **State.** Counts, presence rosters and signed-in users live in Redis and change only through
  the atomic scripts of :mod:`.lua`, which also decide, once for the whole cluster, whether a
  member is new or gone, a channel occupied or vacated, a user online or offline.
* **Liveness.** Each node renews a lease in ``{prefix}:nodes``; a node whose lease ran out is
  *reaped* by one survivor (a ``SET NX`` claim): its ledger is undone, its members announced
  gone, webhooks sent.
* **Outages.** Commands go through one writer, pipelined, in order. When Redis cannot be
  reached the node keeps serving its own sockets with local answers, says it is not ready, and
  retries with backoff; once back, it makes Redis agree with what it holds (its ledger against
  its sockets) and re-sends presence rosters to its sockets.
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
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from .. import wire
from ..apps import Apps
from ..channel_state import (
    channel_record,
    count_record,
    member_added_frame,
    member_record,
    member_removed_frame,
)
from ..channels import kind_of
from . import bus, lua
from .base import ChannelCounts, HubView, Joined, Left, SignedIn, SignedOut
from .local import LocalAdapter
from .outbox import Outbox, Sequences
from .redis_client import connect_url
from .redis_keys import AppKeys, nodes_key, reap_claim_key
from .redis_writer import UNREACHABLE as _UNREACHABLE
from .redis_writer import Op, Writer, queue_script
from .resync import Ledger, ScriptCall, resync_calls

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ..channel_state import Channel, Member
    from ..config import AppConfig

__all__ = ["RedisAdapter"]

log = logging.getLogger("pusher_compat.redis")

_OUTBOX_POLL = 0.05
"""Seconds between two looks at the other nodes' leases while the outbox waits for them."""
_OUTBOX_MARGIN = 0.5
"""The outbox stops waiting this long before its oldest message would be too old to send
(several polls: a loaded event loop wakes late)."""

def _queue_call(pipe: Any, script: AsyncScript, call: ScriptCall) -> None:
    """Queue a :class:`ScriptCall` of :func:`resync_calls`."""
    queue_script(pipe, script, call.keys, call.args)


class Link(Enum):
    """This node's place in the cluster."""

    DOWN = "down"
    """Redis cannot be reached: local answers only, not ready, retrying with backoff."""
    JOINING = "joining"
    """Redis answers: subscribing to the bus and resynchronising; answers are still local."""
    UP = "up"
    """In the cluster: commands go to Redis, answers come from it, ready."""


class _Bus(Enum):
    """Where this node's bus messages go."""

    HELD = "held"
    """Into the outbox: Redis is unreachable, or it is back and the outbox waits for the other
    nodes to be back too. Messages published meanwhile queue behind, to keep the order."""
    OPEN = "open"
    """Straight to Redis, with the scripts, in order (only while the node is up)."""


class RedisAdapter:
    """Shares a hub's state with the other nodes through Redis."""

    def __init__(self, apps: tuple[AppConfig, ...], url: str, prefix: str = "pusher-compat",
                 lease_seconds: float = 10.0,
                 client: aioredis.Redis | RedisCluster | None = None,
                 outbox_max_bytes: int = 8 * 1024 * 1024, outbox_max_age: float = 10.0
                 ) -> None:
        self.node = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._origin = self.node.encode()
        self._apps = Apps(apps)
        self._url = url
        self._prefix = prefix
        self._lease_ms = int(lease_seconds * 1000)
        self._beat = max(0.2, lease_seconds / 4)
        self._redis = client if client is not None else connect_url(url)
        self._nodes = nodes_key(prefix)
        self._keys = {app.id: AppKeys(prefix, app.id, self.node) for app in self._apps}
        self._buses = {keys.bus: app_id for app_id, keys in self._keys.items()}
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(getattr(lua, name))
            for name in ("JOIN", "LEAVE", "USERS", "HEARTBEAT", "REAP", "RATE")}
        self._local = LocalAdapter()
        self._hub: HubView | None = None
        self._writer = Writer(self._redis, lambda: self.ready, self._lost)
        self._trouble = asyncio.Event()
        """Wakes the supervisor at once when the link is lost (else it waits a beat)."""
        self._link = Link.DOWN
        self._dirty = False
        """Local answers were given since the last resynchronisation began: it runs again."""
        self._remote_connections: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._bus = _Bus.HELD
        self._outbox = Outbox(outbox_max_bytes, outbox_max_age)
        self._flusher: asyncio.Task[None] | None = None
        """Sends the outbox once the other nodes are back (see :meth:`_flush_outbox`)."""
        self._peers: dict[str, float] = {}
        """The other nodes and their lease expiries (Redis ms) at the last heartbeat."""
        self._awaited: dict[str, float] = {}
        """:attr:`_peers` when Redis was lost (a heartbeat while joining may read an emptied
        Redis): the outbox waits for each of them to renew its lease."""
        self._seq: dict[str, int] = {}
        """The sequence number of this node's last bus message, per app."""
        self._sequences = Sequences()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._link is Link.UP

    @property
    def dropped(self) -> dict[tuple[str, str], int]:
        return {(app_id, reason.value): count
                for (app_id, reason), count in self._outbox.dropped.items()}

    def bind(self, hub: HubView) -> None:
        self._hub = hub
        self._local.bind(hub)

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        """The Redis client, shared with the webhook store."""
        return self._redis

    async def live_nodes(self) -> set[str]:
        """Nodes not reaped yet: a node leaves this set only once its state was undone."""
        nodes: list[bytes] = cast("list[bytes]", await self._redis.zrange(self._nodes, 0, -1))
        return {_text(n) for n in nodes}

    @property
    def hub(self) -> HubView:
        assert self._hub is not None, "RedisAdapter used before bind()"
        return self._hub

    async def start(self) -> None:
        """Connect (waiting at most a few seconds: a node starts even while Redis is down,
        not ready, and joins the cluster when Redis comes)."""
        self._tasks = [asyncio.create_task(self._supervise()),
                       asyncio.create_task(self._writer.run())]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until_up(), timeout=5)

    async def _until_up(self) -> None:
        while not self.ready:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Flush what is queued, give back this node's share of the state, stop."""
        if self.ready:
            self._writer.wake()
            for _ in range(100):
                if not self._writer.pending:
                    break
                await asyncio.sleep(0.01)
        for task in [*self._tasks, *filter(None, [self._listener, self._flusher])]:
            await _cancelled(task)
        if self.ready:
            with contextlib.suppress(*_UNREACHABLE):
                await self._reap(self.node)
        if self._pubsub is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await self._pubsub.aclose()
        await self._redis.aclose()
        self._outbox.clear()

    # -- outbound ----------------------------------------------------------------------

    def _submit(self, op: Op) -> None:
        if not self.ready:
            self._dirty = True
            if op.fallback is not None:
                op.fallback()
            return
        self._writer.queue(op)

    def _send(self, app_id: str, body: bus.Message) -> None:
        """Queue one bus message, in order with the scripts, or keep it in the outbox while
        the bus is held. Its origin is ``node#seq``: receivers let each one through once."""
        seq = self._seq[app_id] = self._seq.get(app_id, 0) + 1
        message = bus.encode(bus.origin(self._origin, seq), body)
        if self._bus is _Bus.OPEN:
            self._writer.command("PUBLISH", self._keys[app_id].bus, message)
        else:
            self._outbox.add(app_id, message)

    def publish(self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
                ) -> None:
        self._send(app_id, bus.Event(channel, except_socket_id, wire.unframe(frame)))

    def remember(self, app: AppConfig, channel: str, frame: bytes) -> None:
        payload = wire.unframe(frame)
        ttl_ms = int(app.cache_ttl_seconds * 1000)
        self._send(app.id, bus.Cache(channel, ttl_ms, payload))
        if self.ready:
            self._writer.command("SET", self._keys[app.id].cache(channel), payload, "PX", ttl_ms)

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
                        roster={_text(roster[i]): wire.loads(roster[i + 1])
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
            online = {_text(u) for u in reply[2]}
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

    async def _listen(self) -> None:
        pubsub = self._pubsub
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self._receive(self._buses[_text(message["channel"])], message["data"])
        except _UNREACHABLE as error:
            self._lost(error)

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
                self._keep(app_id, channel, payload, ttl_ms / 1000)

    def _keep(self, app_id: str, channel: str, payload: bytes, ttl: float) -> None:
        data = wire.loads(payload).get("data", "")
        self.hub.keep(app_id, channel, wire.frame(payload), data, ttl)

    # -- health ------------------------------------------------------------------------

    def _lost(self, error: BaseException | str) -> None:
        """Leave the cluster until Redis answers again. What is queued gets local answers
        now: the resynchronisation on return accounts for it, so none of it may run after."""
        if self.ready:
            log.error("redis unreachable (%s): serving local clients only, not ready; "
                      "reconnecting", error or type(error).__name__)
            self._awaited = dict(self._peers)
        self._link = Link.DOWN
        self._bus = _Bus.HELD
        self._dirty = True
        self._trouble.set()
        unsent = []
        for op in self._writer.take():
            if op.fallback is not None:
                op.fallback()
            elif op.script is None and op.args[0] == "PUBLISH":
                unsent.append((self._buses[op.args[1]], op.args[2]))
        # Older than anything the outbox holds: while it holds messages, new ones go there.
        self._outbox.put_back(unsent)

    async def _supervise(self) -> None:
        """Keep the node in the cluster: connect, renew the lease, reap dead nodes."""
        backoff = 0.1
        while True:
            if not self.ready:
                try:
                    await self._join_cluster()
                except _UNREACHABLE as error:
                    log.debug("redis connect failed: %s", error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
            try:
                await self._heartbeat()
            except _UNREACHABLE as error:
                self._lost(error)
                continue
            self._trouble.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wait ends, and close() then waits forever for this loop to stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._beat):
                    await self._trouble.wait()

    async def _join_cluster(self) -> None:
        """(Re)connect: subscribe to the bus, make Redis agree with this node, then serve."""
        await self._redis.ping()
        self._link = Link.JOINING
        for script in self._scripts.values():
            await self._redis.script_load(script.script)
        if self._pubsub is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await self._pubsub.aclose()
        if self._listener is not None:
            self._listener.cancel()
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(*self._buses)
        self._listener = asyncio.create_task(self._listen())
        await self._heartbeat()
        for _ in range(3):
            self._dirty = False
            for app_id in self._apps.ids:
                await self._resync(app_id)
            if not self._dirty:
                break
        for app_id in self._apps.ids:
            await self._load_cache(app_id)
        if self._listener.done():
            # The listener's _lost() changes nothing while the node is not up, so a bus
            # connection that dropped during the join would go unnoticed; a cluster client
            # closes every connection, the subscription's too, when it rediscovers the cluster.
            raise RedisConnectionError("the bus subscription ended while joining")
        self._link = Link.UP
        self._writer.wake()
        log.info("redis connected: node %s in the cluster (%s)", self.node, self._prefix)
        # The outbox goes after the resync: a node that was reaped meanwhile has announced
        # its members again before its events arrive.
        if self._flusher is not None:
            self._flusher.cancel()
        if self._outbox:
            self._flusher = asyncio.create_task(self._flush_outbox(self._awaited))
        else:
            self._bus = _Bus.OPEN
        # One refresh per rejoin; finished ones are dropped so reconnects do not pile up.
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._refresh_rosters()))

    async def _heartbeat(self) -> None:
        known, dead = await self._scripts["HEARTBEAT"](
            keys=[self._nodes], args=[self.node, self._lease_ms])
        if not known and self.ready:
            self._lost("this node's lease had lapsed and it was reaped")
            return
        for node in map(_text, dead):
            if node != self.node:
                await self._reap(node)
        pipe = self._redis.pipeline(transaction=False)
        for app_id, keys in self._keys.items():
            pipe.hset(keys.conns, self.node, self.hub.local_connection_count(app_id))
            pipe.hgetall(keys.conns)
        pipe.zrange(self._nodes, 0, -1, withscores=True)
        *replies, leases = await pipe.execute()
        for app_id, counts in zip(self._keys, replies[1::2], strict=True):
            self._remote_connections[app_id] = sum(
                int(v) for k, v in counts.items() if _text(k) != self.node)
        self._peers = {n: lease for n, lease in map(_lease, leases) if n != self.node}

    async def _flush_outbox(self, peers: dict[str, float]) -> None:
        """Send what the outbox holds once every node of ``peers`` (the other nodes before the
        outage, with their leases then) has renewed its lease: a node renews only after it has
        subscribed to the bus again, and pub/sub keeps nothing for a node not subscribed. A
        node that does not come back within a lease is dead or cut off: the outbox stops
        waiting for it, and it stops waiting before its oldest message grows too old to send.
        Messages published meanwhile queue behind in the outbox."""
        deadline = time.monotonic() + self._lease_ms / 1000
        try:
            while (peers and time.monotonic() < deadline
                   and not self._outbox.due(within=_OUTBOX_MARGIN)):
                leases = dict(map(_lease, await self._redis.zrange(
                    self._nodes, 0, -1, withscores=True)))
                peers = {n: seen for n, seen in peers.items() if leases.get(n, 0.0) <= seen}
                if peers:
                    await asyncio.sleep(_OUTBOX_POLL)
        except _UNREACHABLE as error:
            self._lost(error)
            return
        if not self.ready:
            return  # lost again: the next join sends it
        for app_id, message in self._outbox.take():
            self._writer.command("PUBLISH", self._keys[app_id].bus, message)
        self._bus = _Bus.OPEN

    async def _reap(self, node: str) -> None:
        """Undo the state of a node whose lease ran out (or this one, on a clean stop)."""
        claim = reap_claim_key(self._prefix, node)
        if not await self._redis.set(claim, self.node, nx=True, px=self._lease_ms):
            return
        log.warning("node %s is gone: removing its members and counts", node)
        for app in self._apps:
            keys = self._keys[app.id]
            reply = await self._scripts["REAP"](
                keys=[keys.channels, *keys.ledger(node), keys.users, keys.conns],
                args=[node, keys.base, keys.bus])
            self._reaped(app, *reply)
        await self._redis.zrem(self._nodes, node)

    def _reaped(self, app: AppConfig, vacated: list[Any], counts: list[Any], removed: list[Any],
                offline: list[Any]) -> None:
        """What a reaped node leaves behind: this node sends the webhooks, once."""
        hub, app_id = self.hub, app.id
        for i in range(0, len(removed), 2):
            channel, user = _text(removed[i]), _text(removed[i + 1])
            hub.deliver(app_id, channel, member_removed_frame(channel, user))
            hub.notify(app, member_record("member_removed", channel, user))
        for user in map(_text, offline):
            hub.watch_event(app_id, user, online=False)
        for i in range(0, len(counts), 2):
            channel = _text(counts[i])
            if not kind_of(channel).presence:
                hub.notify(app, count_record(channel, int(counts[i + 1])))
        for channel in map(_text, vacated):
            hub.notify(app, channel_record("channel_vacated", channel))

    # -- resynchronisation -------------------------------------------------------------

    async def _resync(self, app_id: str) -> None:
        """Make Redis hold exactly what this node holds: its ledger against its sockets."""
        keys, hub = self._keys[app_id], self.hub
        pipe = self._redis.pipeline(transaction=False)
        pipe.smembers(keys.node_ch)
        pipe.smembers(keys.node_pm)
        pipe.hgetall(keys.node_users)
        ledger_ch, ledger_pm, ledger_users = await pipe.execute()
        ledger = Ledger(
            channels=frozenset(map(_text, ledger_ch)),
            members=frozenset(_member_entry(_text(e)) for e in ledger_pm),
            users={_text(k): int(v) for k, v in ledger_users.items()})
        channels = list(hub.channels(app_id))
        users = hub.signed_in_users(app_id)
        pipe = self._redis.pipeline(transaction=False)
        for call in resync_calls(keys, self.node, ledger, channels, users):
            _queue_call(pipe, self._scripts[call.script], call)
        await pipe.execute()
        log.info("app %s resynchronised with redis: %d channel(s), %d member(s), %d user(s)",
                 app_id, len(channels), sum(len(c.members) for c in channels), len(users))

    async def _load_cache(self, app_id: str) -> None:
        """Cache channels' last events, for a node that starts or comes back."""
        keys = self._keys[app_id]
        async for key in self._redis.scan_iter(match=keys.cache_pattern, count=500):
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(key)
            pipe.pttl(key)
            payload, ttl_ms = await pipe.execute()
            if payload is not None and ttl_ms > 0:
                channel = keys.cache_channel(_text(key))
                self._keep(app_id, channel, payload, ttl_ms / 1000)

    async def _refresh_rosters(self) -> None:
        """After an outage, tell this node's presence sockets who is there now.

        Waits a lease beat so the other nodes have resynchronised too; a second
        ``subscription_succeeded`` resets pusher-js's member list (Echo calls ``here`` again).
        """
        await asyncio.sleep(self._beat)
        for app_id, keys in self._keys.items():
            for channel in list(self.hub.channels(app_id)):
                if not channel.kind.presence or not channel.subscribers:
                    continue
                roster = await self._redis.hgetall(keys.roster(channel.name))
                members = {_text(k): wire.loads(v) for k, v in roster.items()}
                self.hub.resend_roster(app_id, channel.name, members)

    # -- queries -----------------------------------------------------------------------

    def connection_count(self, app_id: str) -> int:
        return self.hub.local_connection_count(app_id) + self._remote_connections.get(app_id, 0)

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        if not self.ready:
            return await self._local.channels(app_id, prefix)
        keys = self._keys[app_id]
        names = sorted(n for n in map(_text, await self._redis.smembers(keys.channels))
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
        return [_text(u) for u in await self._redis.hkeys(self._keys[app_id].roster(name))]


    async def take(self, app_id: str, bucket: str, cost: int, limit: int) -> float | None:
        if self.ready:
            now = time.time()
            window = self._keys[app_id].rate(bucket, int(now))
            try:
                taken = await self._scripts["RATE"](keys=[window], args=[cost, limit])
            except _UNREACHABLE as error:
                self._lost(error)
            else:
                return None if taken else 1.0 - now % 1.0
        return await self._local.take(app_id, bucket, cost, limit)


def _member_entry(entry: str) -> tuple[str, str]:
    """(channel, user id) of a member ledger entry, ``channel\0user``."""
    name, _, user = entry.partition("\0")
    return name, user


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _lease(entry: Any) -> tuple[str, float]:
    """A node and its lease expiry, from ``ZRANGE {prefix}:nodes ... WITHSCORES`` (a
    ``(member, score)`` pair; redis-py types a reply as any of its shapes)."""
    return _text(entry[0]), float(entry[1])


_CANCEL_TRIES = 50
"""Cancellations sent to one task on close, 0.1 s apart, before it is left behind."""


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended. redis-py can swallow a cancellation that
    lands inside a pipeline's reply read, and the task then waits for its next command for
    ever (two adapters in one process hung their close this way): so the cancellation is
    repeated until the task is done, for at most ``_CANCEL_TRIES`` tenths of a second."""
    for _ in range(_CANCEL_TRIES):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        log.warning("a Redis adapter task did not stop when cancelled: %r", task)
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("a Redis adapter task had failed: %r", task.exception())
