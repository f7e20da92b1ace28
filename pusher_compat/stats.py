"""Statistics: per-app snapshots every interval, written to the :mod:`~pusher_compat.stats_store`.

The hot path only bumps :class:`~pusher_compat.hub.Counters`; :class:`StatisticsLogger` reads
them once per interval (pull, not push) and stores one row per app:

* ``connections_peak``: the most connections open at once during the interval (the logger
  restarts the hub's peak at the current count after reading it);
* ``connections``, ``channels``, ``subscriptions``: what was open at the end of the interval;
* ``ws_messages_in``, ``ws_bytes_in``, ``ws_messages_out``, ``ws_bytes_out``,
  ``api_messages``: how much the running totals grew during the interval;
* ``webhooks_delivered``, ``webhooks_failed``: deliveries settled in the interval (the
  growth of :meth:`Webhooks.totals <pusher_compat.webhooks.Webhooks.totals>`).

Rows are read back through ``GET /apps/{id}/statistics`` (the HTTP API) and ``pusher-compat
stats`` (the CLI). Statistics are per process: each node of a Redis cluster records its own
connections and traffic, and the endpoint answers with the rows of the node asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .stats_store import Snapshot, SqliteStore

if TYPE_CHECKING:
    from .hub import Hub
    from .webhooks import Webhooks

__all__ = ["StatisticsLogger"]

log = logging.getLogger("pusher_compat.stats")

_TOTALS = ("ws_messages_in", "ws_bytes_in", "ws_messages_out", "ws_bytes_out", "api_messages")


class StatisticsLogger:
    """Every ``interval`` seconds, one :class:`Snapshot` per app written to ``store``.

    The first interval starts when the logger is made; counters are running totals since the
    hub was made, so the logger should be made with the hub (at server start).
    """

    def __init__(
        self,
        hub: Hub,
        webhooks: Webhooks | None,
        store: SqliteStore,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        retention_seconds: float = 0.0,
    ) -> None:
        """``clock`` gives wall-clock unix seconds (the rows' ``time``);
        ``retention_seconds`` > 0 deletes older rows after each write."""
        if interval <= 0:
            raise ValueError("the statistics interval must be positive")
        self._hub = hub
        self._store = store
        self._interval = interval
        self._clock = clock
        self._retention = retention_seconds
        self._webhooks = webhooks
        self._last_time = clock()
        self._previous: dict[str, tuple[int, ...]] = {}

    def snapshot(self) -> list[Snapshot]:
        """Read every app's counters now; restart the peaks at the current connection count."""
        now = self._clock()
        seconds = now - self._last_time
        self._last_time = now
        snapshots = []
        for app_id in self._hub.app_ids():
            counters = self._hub.counters(app_id)
            webhooks = self._webhooks.totals(app_id) if self._webhooks is not None else None
            totals = (
                *(getattr(counters, name) for name in _TOTALS),
                webhooks.delivered if webhooks else 0, webhooks.failed if webhooks else 0,
            )
            previous = self._previous.get(app_id, (0,) * len(totals))
            self._previous[app_id] = totals
            deltas = [now_ - before for now_, before in zip(totals, previous, strict=True)]
            connections = self._hub.local_connection_count(app_id)
            peak = max(counters.connections_peak, connections)
            counters.connections_peak = connections
            channels = list(self._hub.channels(app_id))
            snapshots.append(Snapshot(
                app_id, round(now, 3), round(seconds, 3), peak, connections, len(channels),
                sum(channel.subscription_count for channel in channels), *deltas,
            ))
        return snapshots

    async def record(self) -> list[Snapshot]:
        """Take a snapshot and write it (in a worker thread); prune past the retention."""
        snapshots = self.snapshot()
        cutoff = self._clock() - self._retention if self._retention > 0 else None
        await asyncio.to_thread(self._write, snapshots, cutoff)
        return snapshots

    def _write(self, snapshots: list[Snapshot], cutoff: float | None) -> None:
        self._store.write(snapshots)
        if cutoff is not None:
            self._store.prune(cutoff)

    async def run(self) -> None:
        """Record every ``interval`` seconds until cancelled; a failed write is logged."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self._interval, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self.record()
            except Exception:
                log.exception("statistics not recorded")

    async def stop(self) -> None:
        """Record the last, partial interval (call after cancelling :meth:`run`)."""
        try:
            await self.record()
        except Exception:
            log.exception("last statistics not recorded")
