"""Webhook dispatch: batching, the leave delay, retries with backoff, signing and sending.

The hub reports channel-state changes through :meth:`Webhooks.channel_event` (a
:class:`~pusher_compat.hub.HubListener`). Events are gathered per app for
``webhook_batch_seconds`` and POSTed once per (endpoint, batch) as
``{"time_ms": ..., "events": [...]}``, signed as every Pusher SDK validator expects
(protocol.md §8). ``channel_vacated``/``member_removed`` wait ``webhook_leave_delay_seconds``
first, and a quick return cancels both the leave and the return, as Pusher does. Failed
requests are retried with exponential backoff for ``webhook_retry_seconds``. Nothing here
blocks the event loop, and every queue is bounded.

Each delivery is accounted in a :class:`~pusher_compat.webhook_log.DeliveryLedger`: pending
deliveries within ``webhook_max_pending`` and ``webhook_max_pending_bytes`` (past either, this
dispatcher fails some unsent: those made only of ``client_event`` first, then the oldest), the
delivery log of settled ones, and the delivered/failed/dropped totals that ``/metrics`` and the
statistics read through :meth:`Webhooks.totals`.

Timers (the batch window, the leave delay, retry backoff) run on an injected
:class:`~pusher_compat.scheduling.Scheduler`, so tests move time on instead of waiting.

Pending deliveries are kept in a :mod:`~pusher_compat.webhook_store` until acknowledged or
expired, and resumed from it on start (or taken over from a dead node): each carries its id in
``X-Pusher-Compat-Delivery``, and is delivered at least once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .apps import Apps
from .config import AppConfig, ServerConfig, WebhookEndpoint
from .scheduling import Cancellable, LoopScheduler, Scheduler
from .signatures import webhook_signature
from .webhook_log import DROP_ERRORS, Delivery, DeliveryLedger, DeliveryTotals, Status
from .webhook_store import MemoryWebhookStore, Stored, WebhookStore
from .wire import dumps, loads

__all__ = ["Webhooks"]

log = logging.getLogger("pusher_compat.webhooks")

_MAX_BACKOFF_SECONDS = 60.0
_MAX_BATCH_EVENTS = 1000
"""A batch this full is sent at once, so a flood of client events cannot grow it unbounded."""
_LEAVES = {"channel_vacated": "channel_occupied", "member_removed": "member_added"}
_RETURNS = {back: leave for leave, back in _LEAVES.items()}
_SHUTDOWN = "cancelled: server shutting down"
Event = dict[str, Any]


@dataclass(slots=True)
class _Batch:
    """Events of one app waiting for the batch window to close."""

    app: AppConfig
    # Insertion-ordered; a ``subscription_count`` is keyed by its channel so that a newer
    # count replaces the older one (and moves to the end, where it happened).
    events: dict[object, Event] = field(default_factory=dict)
    timer: Cancellable | None = None


class Webhooks:
    """Sends every app's webhooks to its configured endpoints (a ``HubListener``).

    :meth:`channel_event` takes events from the hub; :meth:`deliveries` and :meth:`replay`
    serve the delivery log. Events reported before :meth:`start` or after :meth:`close` are
    dropped.
    """

    def __init__(
        self,
        server: ServerConfig,
        clock: Callable[[], float] = time.time,
        retry_base_seconds: float = 1.0,
        store: WebhookStore | None = None,
        apps: tuple[AppConfig, ...] = (),
        scheduler: Scheduler | None = None,
    ) -> None:
        """``clock`` gives wall-clock seconds for ``time_ms`` and the log's timestamps;
        ``retry_base_seconds`` is the first backoff delay (doubled per attempt, capped at
        60 s); ``store`` keeps pending deliveries (default: memory only); ``apps`` are those
        whose stored deliveries may be resumed; ``scheduler`` times the batch window, the
        leave delay and the retries (default: the event loop's)."""
        self._server = server
        self._store: WebhookStore = store if store is not None else MemoryWebhookStore()
        self._apps = Apps(apps)
        self._clock = clock
        self._scheduler: Scheduler = scheduler if scheduler is not None else LoopScheduler()
        self._retry_base = retry_base_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop delivery tasks run on, from :meth:`start` until :meth:`close`: events are
        accepted only while it is set."""
        self._session: aiohttp.ClientSession | None = None
        self._batches: dict[str, _Batch] = {}
        # Held leaves by (name, app id, channel[, user id]); insertion order is due order,
        # since every leave waits the same delay, so one timer serves them all.
        self._held: dict[tuple[str, ...], tuple[float, AppConfig, Event]] = {}
        self._held_timer: Cancellable | None = None
        self._ledger = DeliveryLedger(server, clock)
        """Pending deliveries, the delivery log and the totals."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys = itertools.count()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client session; from now on events are accepted."""
        self._loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=self._server.webhook_timeout_seconds)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self._store.open(self._resume)

    async def close(self) -> None:
        """Stop: drop unsent batches and held events, cancel retries, close the session.

        Deliveries still pending are marked failed (``cancelled: server shutting down``) here
        but stay in the store, for the next run (or, on Redis, a survivor) to resume.
        """
        self._loop = None
        for batch in self._batches.values():
            if batch.timer is not None:
                batch.timer.cancel()
        self._batches.clear()
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self._held.clear()
        for delivery in self._ledger.pending():
            self._settle(delivery, Status.FAILED, _SHUTDOWN)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._store.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- events in -------------------------------------------------------------------------

    def channel_event(self, app: AppConfig, event: Event) -> None:
        """Take one webhook event object; never raises, never blocks."""
        try:
            self._take(app, event)
        except Exception:  # the hub's subscribe/unsubscribe path must not fail because of us
            log.exception("webhook event %r of app %s dropped", event.get("name"), app.id)

    def _take(self, app: AppConfig, event: Event) -> None:
        if self._loop is None or not app.webhooks:
            return
        name = event["name"]
        if name in _RETURNS and self._held.pop(_held_key(app, event, _RETURNS[name]), None
                                               ) is not None:
            return  # a quick return: neither the leave nor the return is reported
        if not any(endpoint.wants(event) for endpoint in app.webhooks):
            return
        if name in _LEAVES:
            self._hold(app, event)
        else:
            self._add(app, event)

    def _hold(self, app: AppConfig, event: Event) -> None:
        key = _held_key(app, event, event["name"])
        due = self._scheduler.time() + self._server.webhook_leave_delay_seconds
        self._held.pop(key, None)  # keep insertion order == due order
        self._held[key] = (due, app, event)
        if self._held_timer is None:
            self._held_timer = self._scheduler.call_at(due, self._release)

    def _release(self) -> None:
        """Move every held event whose delay is over into its app's batch."""
        self._held_timer = None
        now = self._scheduler.time()
        while self._held:
            key, (due, app, event) = next(iter(self._held.items()))
            if due > now:
                self._held_timer = self._scheduler.call_at(due, self._release)
                return
            del self._held[key]
            self._add(app, event)

    def _add(self, app: AppConfig, event: Event) -> None:
        batch = self._batches.get(app.id)
        if batch is None:
            batch = self._batches[app.id] = _Batch(app)
            batch.timer = self._scheduler.call_later(
                self._server.webhook_batch_seconds, self._flush, app.id
            )
        batch.app = app
        if event["name"] == "subscription_count":
            key: object = ("subscription_count", event["channel"])
            batch.events.pop(key, None)
        else:
            key = next(self._keys)
        batch.events[key] = event
        if len(batch.events) >= _MAX_BATCH_EVENTS:
            self._flush(app.id)

    def _flush(self, app_id: str) -> None:
        """Close the app's batch: one delivery per endpoint that wants any of its events."""
        batch = self._batches.pop(app_id, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        events = list(batch.events.values())
        for endpoint in batch.app.webhooks:
            wanted = [event for event in events if endpoint.wants(event)]
            if wanted:
                client_only = all(event["name"] == "client_event" for event in wanted)
                delivery = self._new_delivery(batch.app, endpoint, dumps(wanted), client_only)
                if delivery.status is Status.PENDING:
                    self._spawn(delivery, self._send(delivery))

    # -- deliveries ------------------------------------------------------------------------

    def _new_delivery(
        self, app: AppConfig, endpoint: WebhookEndpoint, payload: bytes, client_only: bool
    ) -> Delivery:
        """Register a pending delivery of the encoded events ``payload`` and keep it in the
        store, then drop pending deliveries past the limits (maybe this one: check its status
        before sending)."""
        delivery = Delivery(uuid.uuid4().hex, next(self._keys), app, endpoint, payload,
                             client_only, self._now_ms())
        expires_ms = delivery.created_ms + round(self._server.webhook_retry_seconds * 1000)
        self._store.add(Stored(delivery.id, app.id, endpoint.url, payload, delivery.created_ms,
                               expires_ms))
        self._register(delivery)
        return delivery

    def _register(self, delivery: Delivery) -> None:
        """Make a delivery pending, then drop pending deliveries past the limits."""
        self._ledger.add(delivery)
        self._shed_pending()

    def _resume(self, stored: list[Stored]) -> None:
        """Send again deliveries from the store (a previous run's, or a dead node's), under
        their own ids, until their original deadline."""
        if self._loop is None:
            return
        for entry in stored:
            if self._ledger.is_pending(entry.id):
                continue  # this process is sending it already
            app = self._apps.by_id(entry.app_id)
            hooks = app.webhooks if app is not None else ()
            endpoint = next((e for e in hooks if e.url == entry.url), None)
            left_ms = entry.expires_ms - self._now_ms()
            if app is None or endpoint is None or left_ms <= 0:
                log.warning("stored webhook %s to %s not resumed: %s", entry.id, entry.url,
                            "expired" if left_ms <= 0 else "endpoint no longer configured")
                self._store.remove(entry.id)
                continue
            client_only = all(e["name"] == "client_event" for e in loads(entry.payload))
            delivery = Delivery(entry.id, next(self._keys), app, endpoint, entry.payload,
                                 client_only, entry.created_ms)
            self._register(delivery)
            if delivery.status is Status.PENDING:
                deadline = self._scheduler.time() + left_ms / 1000
                self._spawn(delivery, self._send(delivery, deadline))

    def _shed_pending(self) -> None:
        """Fail pending deliveries while over ``webhook_max_pending`` or its byte budget:
        client-event-only deliveries first, then the oldest."""
        while (reason := self._ledger.over_limit()) is not None:
            victim = self._ledger.first_to_drop()
            self._settle(victim, Status.FAILED, DROP_ERRORS[reason])
            self._ledger.count_drop(victim, reason)

    def _spawn(self, delivery: Delivery, work: Coroutine[Any, Any, None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(work)
        delivery.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle(self, delivery: Delivery, status: Status, error: str | None = None) -> None:
        """Finish a pending delivery (once); cancel its retries unless it settles itself."""
        if not self._ledger.settle(delivery, status, error):
            return
        if error != _SHUTDOWN:  # acknowledged, expired or dropped; else left for the next run
            self._store.remove(delivery.id)
        task = delivery.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        delivery.task = None

    async def _send(self, delivery: Delivery, deadline: float | None = None) -> None:
        """First attempt, then retries until delivered or the retry window (or ``deadline``,
        loop time) is over."""
        if deadline is None:
            deadline = self._scheduler.time() + self._server.webhook_retry_seconds
        if await self._attempt(delivery):
            self._settle(delivery, Status.DELIVERED)
        else:
            await self._retry(delivery, deadline)

    async def _retry(self, delivery: Delivery, deadline: float) -> None:
        """Back off and try again; no attempt starts after ``deadline`` (scheduler time)."""
        while True:
            delay = self._backoff(delivery.attempts)
            if self._scheduler.time() + delay > deadline:
                self._settle(delivery, Status.FAILED)
                return
            await self._scheduler.sleep(delay)
            if await self._attempt(delivery):
                self._settle(delivery, Status.DELIVERED)
                return

    def _backoff(self, attempts: int) -> float:
        """1, 2, 4 ... base units capped at 60 s, with ±20 % jitter so that many failing
        deliveries to one endpoint do not retry in lockstep."""
        delay = min(_MAX_BACKOFF_SECONDS, self._retry_base * 2.0 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    async def _attempt(self, delivery: Delivery) -> bool:
        """POST once, signed afresh (validators refuse a ``time_ms`` older than 300 s)."""
        if self._session is None:
            raise RuntimeError("Webhooks.start() was not called")
        app, endpoint = delivery.app, delivery.endpoint
        delivery.attempts += 1
        delivery.last_attempt_ms = self._now_ms()
        body = delivery.body(delivery.last_attempt_ms)
        # The protocol headers come last: an endpoint's extra headers cannot break validation.
        headers = {
            **dict(endpoint.headers),
            "Content-Type": "application/json",  # exactly: pusher-http-node compares it
            # With the length known, aiohttp sends the parts as they are, not chunked.
            "Content-Length": str(sum(len(part) for part in body)),
            "X-Pusher-Key": app.key,
            "X-Pusher-Signature": webhook_signature(app.secret, *body),
            # The same on every attempt, resumed or not: receivers drop duplicates by it.
            "X-Pusher-Compat-Delivery": delivery.id,
        }
        try:
            # Redirects are not followed: a 3xx is a failure (and aiohttp would turn the POST
            # into a GET for 301/302).
            async with self._session.post(
                endpoint.url, data=_parts(body), headers=headers, allow_redirects=False
            ) as response:
                delivery.response_status = response.status
                if 200 <= response.status < 300:
                    delivery.last_error = None
                    return True
                reason = f"HTTP {response.status}"
        except TimeoutError:
            delivery.response_status = None
            reason = f"timeout after {self._server.webhook_timeout_seconds} s"
        except Exception as exc:  # refused, reset, bad URL...: all just a failed attempt
            delivery.response_status = None
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        delivery.last_error = reason
        log.warning("webhook to %s failed (attempt %d): %s",
                    endpoint.url, delivery.attempts, reason)
        return False

    # -- the delivery log ------------------------------------------------------------------

    def deliveries(self, app_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """The app's pending and recent deliveries, oldest first, optionally only those in
        ``status`` (``pending``, ``delivered`` or ``failed``)."""
        return self._ledger.entries(app_id, Status(status) if status is not None else None)

    def dropped(self, app_id: str) -> dict[str, int]:
        """Deliveries of the app dropped so far, by reason (a
        :class:`~pusher_compat.webhook_log.Drop` value)."""
        return self._ledger.dropped(app_id)

    def totals(self, app_id: str) -> DeliveryTotals:
        """The app's settled deliveries so far, those pending now and the drops."""
        return self._ledger.totals(app_id)

    async def replay(self, app_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a logged delivery's events again, now, as a new delivery signed afresh.

        Waits for the first attempt only; if it fails, the new delivery is retried in the
        background as any other. Returns the new delivery's entry; ``KeyError`` if the app
        has no delivery ``delivery_id`` in its log,
        :class:`~pusher_compat.webhook_log.NotReplayable` if its events were truncated there.
        """
        original = self._ledger.replayable(app_id, delivery_id)
        delivery = self._new_delivery(original.app, original.endpoint, original.payload,
                                      original.client_events_only)
        if delivery.status is not Status.PENDING:  # dropped at once: over the pending limits
            return delivery.entry()
        deadline = self._scheduler.time() + self._server.webhook_retry_seconds
        if await self._attempt(delivery):
            self._settle(delivery, Status.DELIVERED)
        elif delivery.status is Status.PENDING:  # not dropped meanwhile by the pending limit
            self._spawn(delivery, self._retry(delivery, deadline))
        return delivery.entry()

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)


async def _parts(body: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    """The body's parts as aiohttp streams a request body."""
    for part in body:
        yield part


def _held_key(app: AppConfig, event: Event, leave: str) -> tuple[str, ...]:
    """Key of the held ``leave`` event matching ``event``'s channel (and user, for members)."""
    if leave == "member_removed":
        return (leave, app.id, event["channel"], str(event.get("user_id")))
    return (leave, app.id, event["channel"])
