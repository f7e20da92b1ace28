"""Webhook deliveries as records, and every count kept of them: pending, logged, settled, dropped.

:class:`~pusher_compat.webhooks.Webhooks` decides when a delivery is made, sent, retried and
given up; this module only keeps account, in a :class:`DeliveryLedger`, and does no I/O.

Memory is bounded in bytes as well as in deliveries. A :class:`Delivery`'s events are encoded
once, when its batch closes, and only those bytes are kept (each attempt wraps them with its own
``time_ms``, :meth:`Delivery.body`); pending deliveries share ``webhook_max_pending_bytes``, and
:meth:`DeliveryLedger.over_limit` says when they (or their number, ``webhook_max_pending``) are
over, so that the dispatcher drops some. A settled delivery enters its app's log with each
event's ``data`` cut to :data:`LOG_DATA_CHARS`, and each app's log keeps
``webhook_log_max_bytes``, shedding its oldest delivered entries first, then its oldest failures.
Drops are counted per app and reason (:meth:`DeliveryLedger.dropped`) and logged at most every
:data:`_DROP_LOG_SECONDS`; settled deliveries are counted as they settle.
:meth:`DeliveryLedger.totals` gives both to ``/metrics`` and the statistics, whatever the log
has shed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .config import AppConfig, ServerConfig, WebhookEndpoint
from .limits import ByteBudget
from .wire import dumps, loads

__all__ = ["DROP_ERRORS", "LOG_DATA_CHARS", "Delivery", "DeliveryLedger", "DeliveryTotals",
           "Drop", "NotReplayable", "Status"]

# The dispatcher's logger: drops are part of the story of sending webhooks.
log = logging.getLogger("pusher_compat.webhooks")

LOG_DATA_CHARS = 256
"""Characters of an event's ``data`` kept in the delivery log: enough to recognise a message,
while a flood of 10 KB client events costs the log a few hundred bytes per event."""
_DROP_LOG_SECONDS = 10.0
"""At most one warning about dropped deliveries this often; the counts are exact anyway."""


class Status(Enum):
    """Where a delivery is: ``pending`` until it settles, once, as ``delivered`` or ``failed``
    (the ``status`` of its log entry)."""

    PENDING = "pending"
    """Not sent yet, or being retried."""
    DELIVERED = "delivered"
    """Acknowledged with a 2xx."""
    FAILED = "failed"
    """Given up: retries exhausted, dropped over a limit, or cancelled at shutdown."""


class Drop(Enum):
    """Why a delivery was let go: the ``reason`` label of the dropped-deliveries metric."""

    PENDING_LIMIT = "pending_limit"
    """More than ``webhook_max_pending`` deliveries pending: one failed unsent."""
    PENDING_BYTES = "pending_bytes"
    """Pending deliveries over ``webhook_max_pending_bytes``: one failed unsent."""
    LOG_BYTES = "log_bytes"
    """A settled delivery left the log early, to keep it within ``webhook_log_max_bytes``."""


DROP_ERRORS = {
    Drop.PENDING_LIMIT: "dropped: too many pending deliveries",
    Drop.PENDING_BYTES: "dropped: pending deliveries over webhook_max_pending_bytes",
}
"""The ``last_error`` of a pending delivery dropped for that reason."""


@dataclass(slots=True, eq=False)
class Delivery:
    """One POST of one batch to one endpoint, across all its attempts."""

    id: str
    """Kept through restarts and takeovers; sent as ``X-Pusher-Compat-Delivery``."""
    seq: int
    """Creation order in this process: the log lists deliveries by it."""
    app: AppConfig
    endpoint: WebhookEndpoint
    payload: bytes
    """The events as a JSON array, encoded once: every attempt's body is sent as these bytes
    between a prefix with its ``time_ms`` and a ``}``, never joined into a copy, so they are
    what the byte budgets count."""
    client_events_only: bool
    """Made only of ``client_event``: dropped first when pending deliveries are over budget."""
    created_ms: int
    status: Status = Status.PENDING
    """Changed once, in :meth:`DeliveryLedger.settle`."""
    attempts: int = 0
    last_attempt_ms: int | None = None
    last_error: str | None = None
    response_status: int | None = None
    truncated: bool = False
    """Some event's ``data`` was cut when the delivery entered the log: it cannot be replayed."""
    task: asyncio.Task[None] | None = None
    """The dispatcher's task sending or retrying it, cancelled when it settles otherwise."""

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.endpoint.url, "status": self.status.value,
            "attempts": self.attempts, "events": loads(self.payload),
            "truncated": self.truncated,
            "created_ms": self.created_ms, "last_attempt_ms": self.last_attempt_ms,
            "last_error": self.last_error, "response_status": self.response_status,
        }

    def body(self, time_ms: int) -> tuple[bytes, bytes, bytes]:
        """The request body of an attempt at ``time_ms`` in three parts: joined, they are
        ``dumps({"time_ms": time_ms, "events": events})`` byte for byte."""
        return b'{"time_ms":%d,"events":' % time_ms, self.payload, b"}"

    def truncate(self) -> None:
        """Cut every event's ``data`` to :data:`LOG_DATA_CHARS`, for the log."""
        events = loads(self.payload)
        for event in events:
            data = event.get("data")
            if isinstance(data, str) and len(data) > LOG_DATA_CHARS:
                event["data"] = data[:LOG_DATA_CHARS]
                self.truncated = True
        if self.truncated:
            self.payload = dumps(events)


@dataclass(frozen=True, slots=True)
class DeliveryTotals:
    """One app's deliveries as ``/metrics`` and the statistics read them."""

    delivered: int
    """Deliveries acknowledged so far (running total)."""
    failed: int
    """Deliveries given up so far: retries exhausted, dropped, or cancelled at shutdown."""
    pending: int
    """Deliveries not settled yet, now."""
    dropped: dict[str, int]
    """Deliveries dropped so far, by reason (a :class:`Drop` value)."""


class NotReplayable(Exception):
    """The logged delivery's events were truncated: sending them again would send other data."""


@dataclass(slots=True)
class _AppLog:
    """One app's settled deliveries, at most ``size`` of each status and ``budget`` bytes."""

    size: int
    budget: ByteBudget
    """Bytes of the kept (truncated) payloads."""
    delivered: deque[Delivery] = field(default_factory=deque)
    failed: deque[Delivery] = field(default_factory=deque)
    """Failures kept apart, so that a flood of successes does not push them out of sight."""

    def keep(self, delivery: Delivery) -> list[Delivery]:
        """Add a settled delivery; return those evicted to stay within the byte budget: the
        oldest delivered first, then the oldest failed, always keeping one entry, so that a
        delivery alone over budget is still visible."""
        delivery.truncate()
        kept = self.failed if delivery.status is Status.FAILED else self.delivered
        kept.append(delivery)
        self.budget.add(len(delivery.payload))
        if len(kept) > self.size:
            self._evict(kept)
        evicted: list[Delivery] = []
        while self.budget.over and len(self.delivered) + len(self.failed) > 1:
            evicted.append(self._evict(self.delivered if self.delivered else self.failed))
        return evicted

    def _evict(self, kept: deque[Delivery]) -> Delivery:
        oldest = kept.popleft()
        self.budget.remove(len(oldest.payload))
        return oldest


class DeliveryLedger:
    """Every delivery this process holds: the pending ones within their budgets, each app's log
    of settled ones, and the running totals of settled and dropped deliveries."""

    def __init__(self, server: ServerConfig, clock: Callable[[], float]) -> None:
        """``server`` gives the limits; ``clock`` (wall-clock seconds) times the drop
        warnings."""
        self._server = server
        self._clock = clock
        self._pending: dict[str, Delivery] = {}
        """Deliveries not settled yet, by id, oldest first."""
        self._pending_bytes = ByteBudget(server.webhook_max_pending_bytes)
        """Bytes of the pending deliveries' payloads."""
        self._pending_client: dict[str, Delivery] = {}
        """The pending deliveries made only of client events, oldest first: dropped first."""
        self._logs: dict[str, _AppLog] = {}
        """Each app's settled deliveries, by app id."""
        self._dropped: dict[str, dict[Drop, int]] = {}
        """Deliveries dropped so far, by app id and reason."""
        self._settled: dict[str, dict[Status, int]] = {}
        """Deliveries settled so far, by app id and status: counted as they settle, not read
        back from the bounded log, so none is missed however fast the log turns over."""
        self._drops_unreported = 0
        """Drops counted since the last warning."""
        self._drops_reported_at = float("-inf")
        """When (``clock`` time) the last warning about drops was logged."""

    # -- pending deliveries ----------------------------------------------------------------

    def is_pending(self, delivery_id: str) -> bool:
        return delivery_id in self._pending

    def pending(self) -> list[Delivery]:
        """Every pending delivery, oldest first."""
        return list(self._pending.values())

    def add(self, delivery: Delivery) -> None:
        """Count a new delivery as pending (maybe over a limit: see :meth:`over_limit`)."""
        self._pending[delivery.id] = delivery
        self._pending_bytes.add(len(delivery.payload))
        if delivery.client_events_only:
            self._pending_client[delivery.id] = delivery

    def over_limit(self) -> Drop | None:
        """Which limit pending deliveries are over now, if any: ``webhook_max_pending`` (at
        least 1) first, then ``webhook_max_pending_bytes``."""
        if len(self._pending) > max(1, self._server.webhook_max_pending):
            return Drop.PENDING_LIMIT
        if self._pending_bytes.over:
            return Drop.PENDING_BYTES
        return None

    def first_to_drop(self) -> Delivery:
        """The pending delivery to let go first: the oldest made only of client events, as a
        chat message matters less than a ``member_removed``, else the oldest."""
        return next(iter((self._pending_client or self._pending).values()))

    def settle(self, delivery: Delivery, status: Status, error: str | None = None) -> bool:
        """Move a pending delivery into its app's log as ``status`` (delivered or failed) and
        count it; ``False`` if it had settled already."""
        if delivery.status is not Status.PENDING:
            return False
        delivery.status = status
        if error is not None:
            delivery.last_error = error
        settled = self._settled.setdefault(delivery.app.id, {})
        settled[status] = settled.get(status, 0) + 1
        del self._pending[delivery.id]
        self._pending_bytes.remove(len(delivery.payload))
        self._pending_client.pop(delivery.id, None)
        for evicted in self._app_log(delivery.app.id).keep(delivery):
            self.count_drop(evicted, Drop.LOG_BYTES)
        return True

    def count_drop(self, delivery: Delivery, reason: Drop) -> None:
        """Count a dropped delivery; warn at once, then at most every _DROP_LOG_SECONDS."""
        counts = self._dropped.setdefault(delivery.app.id, {})
        counts[reason] = counts.get(reason, 0) + 1
        self._drops_unreported += 1
        now = self._clock()
        if now - self._drops_reported_at < _DROP_LOG_SECONDS:
            return
        log.warning(
            "webhook deliveries dropped since the last report: %d; latest: app %s, %d bytes "
            "of events to %s (%s; limits: webhook_max_pending %d, webhook_max_pending_bytes "
            "%d, webhook_log_max_bytes %d)",
            self._drops_unreported, delivery.app.id, len(delivery.payload),
            delivery.endpoint.url, reason.value, self._server.webhook_max_pending,
            self._server.webhook_max_pending_bytes, self._server.webhook_log_max_bytes)
        self._drops_unreported = 0
        self._drops_reported_at = now

    # -- the log and the totals ------------------------------------------------------------

    def entries(self, app_id: str, status: Status | None = None) -> list[dict[str, Any]]:
        """The app's pending and logged deliveries as the API lists them, oldest first,
        optionally only those in ``status``."""
        return [d.entry() for d in self._logged(app_id) if status is None or d.status is status]

    def replayable(self, app_id: str, delivery_id: str) -> Delivery:
        """The app's pending or logged delivery ``delivery_id``, to be sent again: ``KeyError``
        if there is none, :class:`NotReplayable` if its events were truncated in the log."""
        delivery = next((d for d in self._logged(app_id) if d.id == delivery_id), None)
        if delivery is None:
            raise KeyError(delivery_id)
        if delivery.truncated:
            raise NotReplayable(
                f"Webhook delivery {delivery_id!r} was logged with its event data truncated "
                f"to {LOG_DATA_CHARS} characters and cannot be replayed")
        return delivery

    def _logged(self, app_id: str) -> list[Delivery]:
        """The app's pending deliveries and its log, oldest first."""
        pending = [d for d in self._pending.values() if d.app.id == app_id]
        app_log = self._logs.get(app_id)
        settled = [*app_log.delivered, *app_log.failed] if app_log is not None else []
        return sorted((*pending, *settled), key=lambda d: d.seq)

    def dropped(self, app_id: str) -> dict[str, int]:
        """Deliveries of the app dropped so far, by reason (a :class:`Drop` value)."""
        return {reason.value: count for reason, count in self._dropped.get(app_id, {}).items()}

    def totals(self, app_id: str) -> DeliveryTotals:
        """The app's settled deliveries so far, those pending now and the drops."""
        settled = self._settled.get(app_id, {})
        pending = sum(1 for d in self._pending.values() if d.app.id == app_id)
        return DeliveryTotals(settled.get(Status.DELIVERED, 0), settled.get(Status.FAILED, 0),
                              pending,
                              self.dropped(app_id))

    def _app_log(self, app_id: str) -> _AppLog:
        app_log = self._logs.get(app_id)
        if app_log is None:
            budget = ByteBudget(self._server.webhook_log_max_bytes)
            app_log = self._logs[app_id] = _AppLog(self._server.webhook_log_size, budget)
        return app_log
