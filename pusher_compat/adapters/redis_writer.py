"""The Redis adapter's one writer: script calls and commands leave in the order they were
queued, pipelined, many per round trip. Its replies go to each call's ``done``; when Redis
fails the batch stays queued and the adapter is told (it answers what is queued locally).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import ClusterDownError, NoScriptError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ["BATCH", "GONE", "UNREACHABLE", "Op", "Writer", "queue_script"]

log = logging.getLogger("pusher_compat.redis")

BATCH = 512
"""Commands per pipeline round trip."""
UNREACHABLE = (RedisError, RedisClusterException, OSError)
"""What failing to reach Redis raises: a cluster client raises RedisClusterException (not a
RedisError) when no node of the cluster answers."""
GONE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, NoScriptError)
"""Pipeline replies that mean Redis, not the command, failed: a cluster pipeline returns a
shard's lost connection as a reply instead of raising it, and NOSCRIPT means a server lost
its script cache (a restart or failover) without this node noticing."""


def queue_script(pipe: Any, script: AsyncScript, keys: list[str], args: list[Any]) -> None:
    """Queue a script call by its SHA: a cluster pipeline blocks the ``evalsha`` method that
    ``Script`` objects call. No pipeline then loads a missing script, so scripts are loaded
    when a node joins and a NOSCRIPT reply makes it rejoin (see :data:`GONE`)."""
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


class Op:
    """One script call (or, without a script, one plain command: ``args``): ``done`` gets its
    reply, ``fallback`` runs when Redis cannot answer."""

    __slots__ = ("args", "done", "fallback", "keys", "script")

    def __init__(self, script: AsyncScript | None, keys: list[str], args: list[Any],
                 done: Callable[[Any], None] | None, fallback: Callable[[], None] | None) -> None:
        self.script, self.keys, self.args = script, keys, args
        self.done, self.fallback = done, fallback


class Writer:
    """Sends queued :class:`Op` s in order while ``is_up()``; ``lost(error)`` when Redis fails."""

    def __init__(self, client: Any, is_up: Callable[[], bool],
                 lost: Callable[[BaseException], None]) -> None:
        self._redis = client
        self._is_up = is_up
        """Whether the adapter's link is up: only then may commands leave."""
        self._lost = lost
        """Called with the error when a batch could not reach Redis (the batch stays queued)."""
        self._ops: deque[Op] = deque()
        """Queued, oldest first."""
        self._wake = asyncio.Event()
        """Set when there may be something to send."""

    @property
    def pending(self) -> int:
        return len(self._ops)

    def queue(self, op: Op) -> None:
        self._ops.append(op)
        self._wake.set()

    def command(self, *args: Any) -> None:
        """Queue a plain command (``PUBLISH``, ``SET``...), in order with the scripts."""
        self.queue(Op(None, [], list(args), None, None))

    def wake(self) -> None:
        """Look at the queue again (the link came up)."""
        self._wake.set()

    def take(self) -> deque[Op]:
        """Everything queued, which the writer forgets (the link went down)."""
        ops, self._ops = self._ops, deque()
        return ops

    async def run(self) -> None:
        """The writer's loop: queued commands leave in order, many per round trip."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops and self._is_up():
                batch = [self._ops.popleft() for _ in range(min(len(self._ops), BATCH))]
                try:
                    replies = await self._execute(batch)
                except UNREACHABLE as error:
                    self._ops.extendleft(reversed(batch))
                    self._lost(error)
                    break
                for op, reply in zip(batch, replies, strict=True):
                    if isinstance(reply, Exception):
                        log.error("redis script failed: %s", reply)
                        if op.fallback is not None:
                            op.fallback()
                    elif op.done is not None:
                        op.done(reply)

    async def _execute(self, batch: list[Op]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for op in batch:
            if op.script is None:
                pipe.execute_command(*op.args)
            else:
                queue_script(pipe, op.script, op.keys, op.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, GONE):
                raise reply
        return replies
