"""Pending webhook deliveries that outlive the process: webhooks are delivered at least once.

:class:`~pusher_compat.webhooks.Webhooks` calls its store at three points: :meth:`~WebhookStore.add`
when a delivery is created, :meth:`~WebhookStore.remove` when it is acknowledged (a 2xx), expires
(``webhook_retry_seconds``) or is dropped by ``webhook_max_pending``, and
:meth:`~WebhookStore.open` on start, which hands back what a previous run left pending so that it
is resumed. A delivery keeps its id through restarts and takeovers and sends it in the
``X-Pusher-Compat-Delivery`` header: a receiver drops a duplicate by that id.

**What is kept** is the app id, the endpoint URL, the encoded events and the deadline, not
the signed body. Every attempt, resumed or not, is signed when it is sent, with the app's
current secret and a fresh ``time_ms``: validators may refuse an old ``time_ms``, and a secret
rotated during an outage would make a stored signature invalid. The events of a delivery never
change, so duplicates carry the same id and the same events.

**Backends.**

* :class:`MemoryWebhookStore`: nothing survives the process (the default, local adapter).
* :class:`SqliteWebhookStore` (``[server] webhook_store = "path"``): one row per pending
  delivery in a WAL-mode file with ``synchronous=NORMAL``, so a committed row survives
  ``kill -9`` (a power cut may lose the last commits). Changes are queued and committed in
  batches by one task, in a worker thread: the event loop never waits for the disk. A delivery
  acknowledged before its row was written is never written.
* :class:`RedisWebhookStore` (automatic on the redis adapter): each node keeps its pending
  deliveries in one hash, ``{prefix}:{webhooks}:node:{node}``, and lists itself in
  ``{prefix}:{webhooks}:owners``.
  Liveness is the adapter's: a node leaves ``{prefix}:nodes`` when it stops cleanly or when a
  survivor reaps it after its lease ran out. Every node looks at the owners each lease beat; an
  owner no longer in ``{prefix}:nodes`` is gone, and one script moves its hash into the looking
  node's own and removes it from the owners, atomically, so exactly one survivor resumes each of
  its deliveries. Every webhook key carries the ``{webhooks}`` hash tag, so the script runs on one
  shard of a Redis Cluster, and each hash expires ``webhook_retry_seconds`` plus a lease after
  its last write: nothing outlives the retry window for long. A hash per node rather than a
  stream with a consumer group: ``XAUTOCLAIM`` hands entries over by idle time, which a live
  node backing off for up to 60 s would have to keep renewing, while the adapter already
  decides, once, when a node is dead. While Redis is unreachable, new deliveries are kept in
  memory only (logged). A node reaped while it was only cut off from Redis keeps delivering what
  it holds while a survivor resumes the same deliveries: duplicates, with the same ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import wire

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

    from .adapters.base import Adapter
    from .adapters.redis import RedisAdapter
    from .config import ServerConfig

__all__ = ["MemoryWebhookStore", "RedisWebhookStore", "SqliteWebhookStore", "Stored",
           "WebhookStore", "create_store"]

log = logging.getLogger("pusher_compat.webhooks")


@dataclass(frozen=True, slots=True)
class Stored:
    """What a delivery needs to be sent again by another process."""

    id: str
    app_id: str
    url: str
    """The endpoint's URL: it names the endpoint in the app's configuration."""
    payload: bytes
    """The events, as the JSON array every attempt's body carries (encoded once)."""
    created_ms: int
    expires_ms: int
    """Wall-clock ms after which no attempt starts (``created_ms + webhook_retry_seconds``)."""

    def dumps(self) -> bytes:
        """One JSON object; the events go in as they are encoded, not decoded again."""
        head = wire.dumps({"id": self.id, "app_id": self.app_id, "url": self.url,
                           "created_ms": self.created_ms, "expires_ms": self.expires_ms})
        return head[:-1] + b',"events":' + self.payload + b"}"

    @classmethod
    def loads(cls, data: bytes | str) -> Stored:
        fields = wire.loads(data)
        return cls(str(fields["id"]), str(fields["app_id"]), str(fields["url"]),
                   wire.dumps(fields["events"]), int(fields["created_ms"]),
                   int(fields["expires_ms"]))


Resume = Callable[[list[Stored]], None]
"""Takes deliveries to send again: left by a previous run, or taken over from a dead node."""


class WebhookStore(Protocol):
    """Where pending deliveries are kept until acknowledged or expired."""

    async def open(self, resume: Resume) -> None:
        """Start; pass ``resume`` what is left pending (on Redis, also later takeovers)."""

    def add(self, delivery: Stored) -> None:
        """Keep a new pending delivery; never blocks."""

    def remove(self, delivery_id: str) -> None:
        """Forget a delivery: acknowledged, expired or dropped; never blocks."""

    async def close(self) -> None:
        """Write what is queued and stop; what is still pending stays for the next run."""


class MemoryWebhookStore:
    """Keeps nothing: pending deliveries end with the process."""

    async def open(self, resume: Resume) -> None:
        pass

    def add(self, delivery: Stored) -> None:
        pass

    def remove(self, delivery_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


class _Batched:
    """Queues changes and writes them in batches, one batch at a time, from one task."""

    def __init__(self) -> None:
        self._queued: dict[str, Stored | None] = {}
        """Changes not written yet by delivery id: the delivery to add, or ``None`` to remove."""
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    def add(self, delivery: Stored) -> None:
        self._queued[delivery.id] = delivery
        self._wake.set()

    def remove(self, delivery_id: str) -> None:
        if self._queued.get(delivery_id) is not None:
            del self._queued[delivery_id]  # never written: nothing to delete
        else:
            self._queued[delivery_id] = None
            self._wake.set()

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_queued())

    async def _write_queued(self) -> None:
        while not (self._closing and not self._queued):
            await self._wake.wait()
            self._wake.clear()
            while self._queued:
                batch, self._queued = self._queued, {}
                try:
                    await self._write(batch)
                except Exception:  # the writer must outlive one bad batch
                    log.exception("%d webhook delivery change(s) not saved", len(batch))

    async def _write(self, batch: dict[str, Stored | None]) -> None:
        raise NotImplementedError

    async def _stop_writer(self) -> None:
        """Let the writer finish what is queued, then end it."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None


class SqliteWebhookStore(_Batched):
    """Pending deliveries in a SQLite file, for a node restarted on the same disk."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._db: sqlite3.Connection | None = None
        """Used by one worker thread at a time: the open, then the writer's batches."""

    async def open(self, resume: Resume) -> None:
        self._db = await asyncio.to_thread(self._connect)
        left = await asyncio.to_thread(self._load)
        self._start_writer()
        if left:
            log.info("resuming %d pending webhook deliveries from %s", len(left), self._path)
            resume(left)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS webhook_deliveries "
                   "(id TEXT PRIMARY KEY, delivery BLOB NOT NULL)")
        return db

    def _load(self) -> list[Stored]:
        assert self._db is not None
        rows = self._db.execute("SELECT delivery FROM webhook_deliveries ORDER BY rowid")
        return [Stored.loads(row[0]) for row in rows]

    async def _write(self, batch: dict[str, Stored | None]) -> None:
        await asyncio.to_thread(self._commit, batch)

    def _commit(self, batch: dict[str, Stored | None]) -> None:
        assert self._db is not None
        added = [(d.id, d.dumps()) for d in batch.values() if d is not None]
        removed = [(i,) for i, d in batch.items() if d is None]
        with contextlib.closing(self._db.cursor()) as cursor:
            cursor.execute("BEGIN")
            cursor.executemany("INSERT OR REPLACE INTO webhook_deliveries VALUES (?, ?)", added)
            cursor.executemany("DELETE FROM webhook_deliveries WHERE id = ?", removed)
            cursor.execute("COMMIT")

    async def close(self) -> None:
        await self._stop_writer()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None


ADOPT = """
-- Take over a gone node's pending deliveries, once: only the caller whose SREM removed the node
-- from the owners moves its hash.
-- KEYS: owners, the gone node's hash, this node's hash. ARGV: gone node, ttl ms, this node.
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local moved = redis.call('HGETALL', KEYS[2])
for i = 1, #moved, 2 do redis.call('HSET', KEYS[3], moved[i], moved[i + 1]) end
redis.call('DEL', KEYS[2])
if #moved > 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[1], ARGV[3])
end
return moved
"""


class RedisWebhookStore(_Batched):
    """Pending deliveries in Redis, taken over by a survivor when their node is gone."""

    def __init__(self, adapter: RedisAdapter, prefix: str, retry_seconds: float,
                 lease_seconds: float) -> None:
        super().__init__()
        self._adapter = adapter
        self._redis = adapter.client
        self._base = f"{prefix}:{{webhooks}}"
        self._owners = f"{self._base}:owners"
        self._mine = self._hash(adapter.node)
        # A hash lives as long as a delivery written into it last may be retried, plus a lease
        # for a survivor to take it over.
        self._ttl_ms = int((retry_seconds + lease_seconds) * 1000)
        self._beat = max(0.2, lease_seconds / 4)
        self._adopt = self._redis.register_script(ADOPT)
        self._resume: Resume | None = None
        self._watcher: asyncio.Task[None] | None = None

    def _hash(self, node: str) -> str:
        return f"{self._base}:node:{node}"

    async def open(self, resume: Resume) -> None:
        self._resume = resume
        self._start_writer()
        self._watcher = asyncio.create_task(self._watch())

    async def _write(self, batch: dict[str, Stored | None]) -> None:
        from .adapters.redis_writer import UNREACHABLE

        added: dict[FieldT, EncodableT] = {
            i: d.dumps() for i, d in batch.items() if d is not None}
        removed = [i for i, d in batch.items() if d is None]
        pipe = self._redis.pipeline(transaction=False)
        if added:
            pipe.hset(self._mine, mapping=added)
            pipe.pexpire(self._mine, self._ttl_ms)
            pipe.sadd(self._owners, self._adapter.node)
        if removed:
            pipe.hdel(self._mine, *removed)
        try:
            await pipe.execute()
        except UNREACHABLE as error:
            log.warning("redis unreachable: %d webhook delivery change(s) kept in memory only "
                        "(%s)", len(batch), error)

    async def _watch(self) -> None:
        """Take over the deliveries of gone nodes, once per lease beat."""
        from .adapters.redis_writer import UNREACHABLE

        while True:
            try:
                await self._adopt_orphans()
            except UNREACHABLE as error:
                log.debug("webhook takeover check failed: %s", error)
            await asyncio.sleep(self._beat)

    async def _adopt_orphans(self) -> None:
        if not self._adapter.ready:
            return  # this node may itself be the one reaped
        owners = {o.decode() if isinstance(o, bytes) else o
                  for o in await self._redis.smembers(self._owners)}
        gone = owners - await self._adapter.live_nodes() - {self._adapter.node}
        for node in gone:
            moved = await self._adopt(keys=[self._owners, self._hash(node), self._mine],
                                      args=[node, self._ttl_ms, self._adapter.node])
            if moved and self._resume is not None:
                log.warning("node %s is gone: resuming its %d pending webhook deliveries",
                            node, len(moved) // 2)
                self._resume([Stored.loads(value) for value in moved[1::2]])

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self._stop_writer()


def create_store(server: ServerConfig, adapter: Adapter) -> WebhookStore:
    """Redis on the redis adapter; else the SQLite file ``webhook_store`` names, or memory."""
    if server.adapter == "redis":
        from .adapters.redis import RedisAdapter

        assert isinstance(adapter, RedisAdapter)
        if server.webhook_store:
            log.warning("webhook_store %s is not used: on the redis adapter pending webhooks "
                        "are kept in Redis", server.webhook_store)
        return RedisWebhookStore(adapter, server.redis_prefix, server.webhook_retry_seconds,
                          server.node_lease_seconds)
    if server.webhook_store:
        return SqliteWebhookStore(server.webhook_store)
    return MemoryWebhookStore()
