"""The Redis adapter's place in the cluster: the link state, the lease, reaping dead nodes and
the outbox sent after a return.

* **Link.** :class:`Link` says whether this node is in the cluster; only :class:`ClusterLink`
  changes it: :meth:`~ClusterLink.lost` takes it down, the supervisor brings it back up.
* **Liveness.** Each node renews a lease in ``{prefix}:nodes``; a node whose lease ran out is
  *reaped* by one survivor (a ``SET NX`` claim): its ledger is undone, its members announced
  gone, webhooks sent (:func:`.redis_restore.announce_reaped`).
* **Return.** Once Redis answers again the node subscribes to the bus, makes Redis agree with
  what it holds (:func:`.redis_restore.resync`), then serves; the outbox goes out once the
  nodes it knew before the outage have renewed their leases (:class:`BusGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError

from . import redis_restore
from .redis_client import Client, not_ok_primaries, text
from .redis_keys import nodes_key, reap_claim_key
from .redis_writer import UNREACHABLE, Writer

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ..apps import Apps
    from .base import HubView
    from .outbox import Outbox
    from .redis_keys import AppKeys

__all__ = ["BusGate", "ClusterLink", "Link"]

log = logging.getLogger("pusher_compat.redis")

OUTBOX_POLL = 0.05
"""Seconds between two looks at the other nodes' leases while the outbox waits for them."""
OUTBOX_MARGIN = 0.5
"""The outbox stops waiting this long before its oldest message would be too old to send
(several polls: a loaded event loop wakes late)."""
RESYNC_ROUNDS = 3
"""Resynchronisations a join runs at most while local answers keep coming in meanwhile."""
SUBSCRIBED_WITHIN = 5.0
"""Seconds a join waits for Redis to confirm the bus subscription before it counts as failed."""


class Link(Enum):
    """This node's place in the cluster."""

    DOWN = "down"
    """Redis cannot be reached: local answers only, not ready, retrying with backoff."""
    JOINING = "joining"
    """Redis answers: subscribing to the bus and resynchronising; answers are still local."""
    JOINING_STALE = "joining-stale"
    """Joining, and a local answer was given since this resynchronisation round began: the
    round missed it, so it runs again (at most :data:`RESYNC_ROUNDS` in all)."""
    UP = "up"
    """In the cluster: commands go to Redis, answers come from it, ready."""


class BusGate(Enum):
    """Where this node's bus messages go."""

    HELD = "held"
    """Into the outbox: Redis is unreachable, or it is back and the outbox waits for the other
    nodes to be back too. Messages published meanwhile queue behind, to keep the order."""
    OPEN = "open"
    """Straight to Redis, with the scripts, in order (only while the node is up)."""


class ClusterLink:
    """Keeps one node in the cluster: connects, renews its lease, reaps dead nodes, takes the
    link down when Redis fails and brings it back, then sends the outbox."""

    def __init__(self, client: Client, node: str, prefix: str, lease_seconds: float, apps: Apps,
                 keys: dict[str, AppKeys], scripts: dict[str, AsyncScript],
                 hub: Callable[[], HubView], receive: Callable[[str, bytes], None],
                 outbox: Outbox) -> None:
        self.node = node
        """This node's name in the lease set, the ledgers and bus origins."""
        self._redis = client
        self._prefix = prefix
        """Key prefix, for the log line and the reap claims."""
        self._lease_ms = int(lease_seconds * 1000)
        self._beat = max(0.2, lease_seconds / 4)
        """Seconds between two lease renewals."""
        self._nodes = nodes_key(prefix)
        self._apps = apps
        self._keys = keys
        self._buses = {app_keys.bus: app_id for app_id, app_keys in keys.items()}
        """Bus channel to app id, for the subscription's messages."""
        self._scripts = scripts
        self._hub = hub
        """The hub, once the adapter is bound (the link starts after that)."""
        self._receive = receive
        """Handles one bus message: (app id, data)."""
        self.outbox = outbox
        """Bus messages waiting while :attr:`bus` is held."""
        self.writer = Writer(client, lambda: self.up, self.lost)
        """The one way commands reach Redis; it sends only while the link is up."""
        self.state = Link.DOWN
        """Changed only here: :meth:`lost`, :meth:`_join` and :meth:`answered_locally`."""
        self.bus = BusGate.HELD
        """Opened after a join once the outbox is sent; held again by :meth:`lost`."""
        self._wake = asyncio.Event()
        """Cuts the supervisor's wait between two beats short when the link is lost. Not state
        (that is :attr:`state`): only a wake-up, cleared once a heartbeat succeeded."""
        self.remote_connections: dict[str, int] = {}
        """Per app, the other nodes' connections at the last heartbeat."""
        self._tasks: list[asyncio.Task[None]] = []
        """The supervisor, the writer and the last roster refresh."""
        self._pubsub: Any = None
        """The bus subscription of the current join."""
        self._listener: asyncio.Task[None] | None = None
        """Reads :attr:`_pubsub`."""
        self._subscribed = asyncio.Event()
        """Set by :meth:`_listen` once Redis has confirmed every bus channel of the current
        join's subscription; a join waits for it before it renews the lease (which tells the
        other nodes' outboxes that this node hears the bus)."""
        self._flusher: asyncio.Task[None] | None = None
        """Sends the outbox once the other nodes are back (see :meth:`_flush_outbox`)."""
        self._peers: dict[str, float] = {}
        """The other nodes and their lease expiries (Redis ms) at the last heartbeat."""
        self._awaited: dict[str, float] = {}
        """:attr:`_peers` when Redis was lost (a heartbeat while joining may read an emptied
        Redis): the outbox waits for each of them to renew its lease."""

    @property
    def up(self) -> bool:
        return self.state is Link.UP

    def answered_locally(self) -> None:
        """A call got a local answer: a resynchronisation running now missed it."""
        if self.state is Link.JOINING:
            self.state = Link.JOINING_STALE

    def post(self, app_id: str, message: bytes) -> None:
        """Publish a bus message in order with the scripts, or hold it in the outbox."""
        if self.bus is BusGate.OPEN:
            self.writer.command("PUBLISH", self._keys[app_id].bus, message)
        else:
            self.outbox.add(app_id, message)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise()),
                       asyncio.create_task(self.writer.run())]

    async def stop(self) -> None:
        """Flush what is queued, give back this node's share of the state, stop."""
        if self.up:
            self.writer.wake()
            for _ in range(100):
                if not self.writer.pending:
                    break
                await asyncio.sleep(0.01)
        for task in [*self._tasks, *filter(None, [self._listener, self._flusher])]:
            await _cancelled(task)
        if self.up:
            with contextlib.suppress(*UNREACHABLE):
                await self._reap(self.node)
        if self._pubsub is not None:
            with contextlib.suppress(*UNREACHABLE):
                await self._pubsub.aclose()
        self.outbox.clear()

    async def live_nodes(self) -> set[str]:
        """Nodes not reaped yet: a node leaves this set only once its state was undone."""
        nodes = cast("list[bytes]", await self._redis.zrange(self._nodes, 0, -1))
        return set(map(text, nodes))

    def lost(self, error: BaseException | str) -> None:
        """Leave the cluster until Redis answers again. What is queued gets local answers
        now: the resynchronisation on return accounts for it, so none of it may run after."""
        if self.up:
            log.error("redis unreachable (%s): serving local clients only, not ready; "
                      "reconnecting", error or type(error).__name__)
            self._awaited = dict(self._peers)
        self.state = Link.DOWN
        self.bus = BusGate.HELD
        self._wake.set()
        unsent = []
        for op in self.writer.take():
            if op.fallback is not None:
                op.fallback()
            elif op.script is None and op.args[0] == "PUBLISH":
                unsent.append((self._buses[op.args[1]], op.args[2]))
        # Older than anything the outbox holds: while it holds messages, new ones go there.
        self.outbox.put_back(unsent)

    async def _supervise(self) -> None:
        """Keep the node in the cluster: connect, renew the lease, reap dead nodes."""
        backoff = 0.1
        while True:
            if not self.up:
                try:
                    await self._join()
                except UNREACHABLE as error:
                    log.debug("redis connect failed: %s", error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.1
            try:
                await self._heartbeat()
            except UNREACHABLE as error:
                self.lost(error)
                continue
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the wait ends, and close() then waits forever for this loop to stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._beat):
                    await self._wake.wait()

    async def _join(self) -> None:
        """(Re)connect: subscribe to the bus, make Redis agree with this node, then serve."""
        await self._redis.ping()
        not_ok = await not_ok_primaries(self._redis)
        if not_ok:
            # A primary still restarting would drop the subscription, or an outbox's events.
            raise RedisConnectionError(f"redis cluster not ok yet on {', '.join(not_ok)}")
        self.state = Link.JOINING
        for script in self._scripts.values():
            await self._redis.script_load(script.script)
        if self._pubsub is not None:
            with contextlib.suppress(*UNREACHABLE):
                await self._pubsub.aclose()
        if self._listener is not None:
            self._listener.cancel()
        self._pubsub = self._redis.pubsub()
        self._subscribed = asyncio.Event()
        await self._pubsub.subscribe(*self._buses)
        self._listener = asyncio.create_task(self._listen())
        await self._confirmed(self._listener)
        await self._heartbeat()
        hub = self._hub()
        for _ in range(RESYNC_ROUNDS):
            self.state = Link.JOINING
            for app_id in self._apps.ids:
                await redis_restore.resync(self._redis, self._scripts, self._keys[app_id],
                                           self.node, hub, app_id)
            if self.state is Link.JOINING:
                break
        for app_id in self._apps.ids:
            await redis_restore.load_cache(self._redis, self._keys[app_id], hub, app_id)
        if self._listener.done():
            # The listener's lost() changes nothing while the node is not up, so a bus
            # connection that dropped during the join would go unnoticed; a cluster client
            # closes every connection, the subscription's too, when it rediscovers the cluster.
            raise RedisConnectionError("the bus subscription ended while joining")
        self.state = Link.UP
        self.writer.wake()
        log.info("redis connected: node %s in the cluster (%s)", self.node, self._prefix)
        # The outbox goes after the resync: a node that was reaped meanwhile has announced
        # its members again before its events arrive.
        if self._flusher is not None:
            self._flusher.cancel()
        if self.outbox:
            self._flusher = asyncio.create_task(self._flush_outbox(self._awaited))
        else:
            self.bus = BusGate.OPEN
        # One refresh per rejoin; finished ones are dropped so reconnects do not pile up.
        self._tasks = [t for t in self._tasks if not t.done()]
        self._tasks.append(asyncio.create_task(self._refresh_rosters()))

    async def _confirmed(self, listener: asyncio.Task[None]) -> None:
        """Wait until Redis has confirmed the bus subscription that ``listener`` reads."""
        confirmed = asyncio.create_task(self._subscribed.wait())
        try:
            await asyncio.wait({confirmed, listener}, timeout=SUBSCRIBED_WITHIN,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            confirmed.cancel()
        if not self._subscribed.is_set():
            raise RedisConnectionError("redis did not confirm the bus subscription")

    async def _listen(self) -> None:
        pubsub, subscribed = self._pubsub, self._subscribed
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    self._receive(self._buses[text(message["channel"])], message["data"])
                elif message["type"] == "subscribe" and message["data"] == len(self._buses):
                    subscribed.set()  # the count of channels subscribed: the last one
        except UNREACHABLE as error:
            self.lost(error)

    async def _heartbeat(self) -> None:
        known, dead = await self._scripts["HEARTBEAT"](
            keys=[self._nodes], args=[self.node, self._lease_ms])
        if not known and self.up:
            self.lost("this node's lease had lapsed and it was reaped")
            return
        for node in map(text, dead):
            if node != self.node:
                await self._reap(node)
        hub = self._hub()
        pipe = self._redis.pipeline(transaction=False)
        for app_id, keys in self._keys.items():
            pipe.hset(keys.conns, self.node, hub.local_connection_count(app_id))
            pipe.hgetall(keys.conns)
        pipe.zrange(self._nodes, 0, -1, withscores=True)
        *replies, leases = await pipe.execute()
        for app_id, counts in zip(self._keys, replies[1::2], strict=True):
            self.remote_connections[app_id] = sum(
                int(v) for k, v in counts.items() if text(k) != self.node)
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
                   and not self.outbox.due(within=OUTBOX_MARGIN)):
                leases = dict(map(_lease, await self._redis.zrange(
                    self._nodes, 0, -1, withscores=True)))
                peers = {n: seen for n, seen in peers.items() if leases.get(n, 0.0) <= seen}
                if peers:
                    await asyncio.sleep(OUTBOX_POLL)
        except UNREACHABLE as error:
            self.lost(error)
            return
        if not self.up:
            return  # lost again: the next join sends it
        for app_id, message in self.outbox.take():
            self.writer.command("PUBLISH", self._keys[app_id].bus, message)
        self.bus = BusGate.OPEN

    async def _reap(self, node: str) -> None:
        """Undo the state of a node whose lease ran out (or this one, on a clean stop)."""
        claim = reap_claim_key(self._prefix, node)
        if not await self._redis.set(claim, self.node, nx=True, px=self._lease_ms):
            return
        log.warning("node %s is gone: removing its members and counts", node)
        hub = self._hub()
        for app in self._apps:
            keys = self._keys[app.id]
            reply = await self._scripts["REAP"](
                keys=[keys.channels, *keys.ledger(node), keys.users, keys.conns],
                args=[node, keys.base, keys.bus])
            redis_restore.announce_reaped(hub, app, *reply)
        await self._redis.zrem(self._nodes, node)

    async def _refresh_rosters(self) -> None:
        """After an outage, tell this node's presence sockets who is there now; waits a lease
        beat first so the other nodes have resynchronised too."""
        await asyncio.sleep(self._beat)
        await redis_restore.refresh_rosters(self._redis, self._keys, self._hub())


def _lease(entry: Any) -> tuple[str, float]:
    """A node and its lease expiry, from ``ZRANGE {prefix}:nodes ... WITHSCORES`` (a
    ``(member, score)`` pair; redis-py types a reply as any of its shapes)."""
    return text(entry[0]), float(entry[1])


_CANCEL_TRIES = 50
"""Cancellations sent to one task on stop, 0.1 s apart, before it is left behind."""


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
