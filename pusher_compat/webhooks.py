"""Webhook delivery: batching, the leave delay, retries and a replayable delivery log.

The hub reports channel-state changes through :meth:`Webhooks.channel_event` (a
:class:`~pusher_compat.hub.HubListener`). Events are gathered per app for
``webhook_batch_seconds`` and POSTed once per (endpoint, batch) as
``{"time_ms": ..., "events": [...]}``, signed as every Pusher SDK validator expects
(protocol.md §8). ``channel_vacated``/``member_removed`` wait ``webhook_leave_delay_seconds``
first, and a quick return cancels both the leave and the return, as Pusher does. Failed
requests are retried with exponential backoff for ``webhook_retry_seconds``. Nothing here
blocks the event loop, and every queue is bounded.

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
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .config import AppConfig, ServerConfig, WebhookEndpoint
from .signatures import webhook_signature
from .webhook_store import MemoryWebhookStore, Stored, WebhookStore
from .wire import dumps, loads

__all__ = ["Webhooks"]

log = logging.getLogger("pusher_compat.webhooks")

_MAX_BACKOFF_SECONDS = 60.0
_MAX_BATCH_EVENTS = 1000
"""A batch this full is sent at once, so a flood of client events cannot grow it unbounded."""
_LEAVES = {"channel_vacated": "channel_occupied", "member_removed": "member_added"}
_RETURNS = {back: leave for leave, back in _LEAVES.items()}
_DROPPED = "dropped: too many pending deliveries"
_SHUTDOWN = "cancelled: server shutting down"

Event = dict[str, Any]


@dataclass(slots=True, eq=False)
class _Delivery:
    """One POST of one batch to one endpoint, across all its attempts."""

    id: str
    seq: int
    app: AppConfig
    endpoint: WebhookEndpoint
    events: list[Event]
    created_ms: int
    status: str = "pending"
    attempts: int = 0
    last_attempt_ms: int | None = None
    last_error: str | None = None
    response_status: int | None = None
    task: asyncio.Task[None] | None = None

    def entry(self) -> dict[str, Any]:
        return {
            "id": self.id, "url": self.endpoint.url, "status": self.status,
            "attempts": self.attempts, "events": list(self.events),
            "created_ms": self.created_ms, "last_attempt_ms": self.last_attempt_ms,
            "last_error": self.last_error, "response_status": self.response_status,
        }


@dataclass(slots=True)
class _Batch:
    """Events of one app waiting for the batch window to close."""

    app: AppConfig
    # Insertion-ordered; a ``subscription_count`` is keyed by its channel so that a newer
    # count replaces the older one (and moves to the end, where it happened).
    events: dict[object, Event] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _AppLog:
    log: deque[_Delivery]
    failed: deque[_Delivery]
    """Failures kept apart, so that a flood of successes does not push them out of sight."""


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
    ) -> None:
        """``clock`` gives wall-clock seconds for ``time_ms`` and the log's timestamps;
        ``retry_base_seconds`` is the first backoff delay (doubled per attempt, capped at
        60 s); ``store`` keeps pending deliveries (default: memory only); ``apps`` are those
        whose stored deliveries may be resumed."""
        self._server = server
        self._store: WebhookStore = store if store is not None else MemoryWebhookStore()
        self._apps = {app.id: app for app in apps}
        self._clock = clock
        self._retry_base = retry_base_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._batches: dict[str, _Batch] = {}
        # Held leaves by (name, app id, channel[, user id]); insertion order is due order,
        # since every leave waits the same delay, so one timer serves them all.
        self._held: dict[tuple[str, ...], tuple[float, AppConfig, Event]] = {}
        self._held_timer: asyncio.TimerHandle | None = None
        self._pending: dict[str, _Delivery] = {}
        self._logs: dict[str, _AppLog] = {}
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
        for delivery in list(self._pending.values()):
            self._settle(delivery, "failed", _SHUTDOWN)
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
        if name in _RETURNS and self._held.pop(_held_key(app, event, _RETURNS[name]), None):
            return  # a quick return: neither the leave nor the return is reported
        if not any(endpoint.wants(event) for endpoint in app.webhooks):
            return
        if name in _LEAVES:
            self._hold(app, event)
        else:
            self._add(app, event)

    def _hold(self, app: AppConfig, event: Event) -> None:
        assert self._loop is not None
        key = _held_key(app, event, event["name"])
        due = self._loop.time() + self._server.webhook_leave_delay_seconds
        self._held.pop(key, None)  # keep insertion order == due order
        self._held[key] = (due, app, event)
        if self._held_timer is None:
            self._held_timer = self._loop.call_at(due, self._release)

    def _release(self) -> None:
        """Move every held event whose delay is over into its app's batch."""
        assert self._loop is not None
        self._held_timer = None
        now = self._loop.time()
        while self._held:
            key, (due, app, event) = next(iter(self._held.items()))
            if due > now:
                self._held_timer = self._loop.call_at(due, self._release)
                return
            del self._held[key]
            self._add(app, event)

    def _add(self, app: AppConfig, event: Event) -> None:
        assert self._loop is not None
        batch = self._batches.get(app.id)
        if batch is None:
            batch = self._batches[app.id] = _Batch(app)
            batch.timer = self._loop.call_later(
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
                delivery = self._new_delivery(batch.app, endpoint, wanted)
                self._spawn(delivery, self._send(delivery))

    # -- deliveries ------------------------------------------------------------------------

    def _new_delivery(
        self, app: AppConfig, endpoint: WebhookEndpoint, events: list[Event]
    ) -> _Delivery:
        """Register a new pending delivery and keep it in the store."""
        delivery = _Delivery(
            uuid.uuid4().hex, next(self._keys), app, endpoint, events, self._now_ms()
        )
        self._register(delivery)
        expires_ms = delivery.created_ms + round(self._server.webhook_retry_seconds * 1000)
        self._store.add(Stored(delivery.id, app.id, endpoint.url, dumps(events),
                               delivery.created_ms, expires_ms))
        return delivery

    def _register(self, delivery: _Delivery) -> None:
        """Make a delivery pending and logged, failing the oldest pending one past the limit."""
        while self._pending and len(self._pending) >= max(1, self._server.webhook_max_pending):
            oldest = next(iter(self._pending.values()))
            log.warning("webhook to %s %s", oldest.endpoint.url, _DROPPED)
            self._settle(oldest, "failed", _DROPPED)
        self._pending[delivery.id] = delivery
        self._app_log(delivery.app.id).log.append(delivery)

    def _resume(self, stored: list[Stored]) -> None:
        """Send again deliveries from the store (a previous run's, or a dead node's), under
        their own ids, until their original deadline."""
        loop = self._loop
        if loop is None:
            return
        for entry in stored:
            if entry.id in self._pending:
                continue  # this process is sending it already
            app = self._apps.get(entry.app_id)
            hooks = app.webhooks if app is not None else ()
            endpoint = next((e for e in hooks if e.url == entry.url), None)
            left_ms = entry.expires_ms - self._now_ms()
            if app is None or endpoint is None or left_ms <= 0:
                log.warning("stored webhook %s to %s not resumed: %s", entry.id, entry.url,
                            "expired" if left_ms <= 0 else "endpoint no longer configured")
                self._store.remove(entry.id)
                continue
            delivery = _Delivery(entry.id, next(self._keys), app, endpoint, loads(entry.payload),
                                 entry.created_ms)
            self._register(delivery)
            self._spawn(delivery, self._send(delivery, loop.time() + left_ms / 1000))

    def _spawn(self, delivery: _Delivery, work: Coroutine[Any, Any, None]) -> None:
        loop = self._loop or asyncio.get_running_loop()
        task = loop.create_task(work)
        delivery.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle(self, delivery: _Delivery, status: str, error: str | None = None) -> None:
        """Finish a pending delivery (once); cancel its retries unless it settles itself."""
        if delivery.status != "pending":
            return
        delivery.status = status
        if error is not None:
            delivery.last_error = error
        self._pending.pop(delivery.id, None)
        if error != _SHUTDOWN:  # acknowledged, expired or dropped; else left for the next run
            self._store.remove(delivery.id)
        if status == "failed":
            self._app_log(delivery.app.id).failed.append(delivery)
        task = delivery.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        delivery.task = None

    async def _send(self, delivery: _Delivery, deadline: float | None = None) -> None:
        """First attempt, then retries until delivered or the retry window (or ``deadline``,
        loop time) is over."""
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._server.webhook_retry_seconds
        if await self._attempt(delivery):
            self._settle(delivery, "delivered")
        else:
            await self._retry(delivery, deadline)

    async def _retry(self, delivery: _Delivery, deadline: float) -> None:
        """Back off and try again; no attempt starts after ``deadline`` (loop time)."""
        loop = asyncio.get_running_loop()
        while True:
            delay = self._backoff(delivery.attempts)
            if loop.time() + delay > deadline:
                self._settle(delivery, "failed")
                return
            await asyncio.sleep(delay)
            if await self._attempt(delivery):
                self._settle(delivery, "delivered")
                return

    def _backoff(self, attempts: int) -> float:
        """1, 2, 4 ... base units capped at 60 s, with ±20 % jitter so that many failing
        deliveries to one endpoint do not retry in lockstep."""
        delay = min(_MAX_BACKOFF_SECONDS, self._retry_base * 2 ** (attempts - 1))
        return delay * random.uniform(0.8, 1.2)

    async def _attempt(self, delivery: _Delivery) -> bool:
        """POST once, signed afresh (validators refuse a ``time_ms`` older than 300 s)."""
        if self._session is None:
            raise RuntimeError("Webhooks.start() was not called")
        app, endpoint = delivery.app, delivery.endpoint
        delivery.attempts += 1
        delivery.last_attempt_ms = self._now_ms()
        body = dumps({"time_ms": delivery.last_attempt_ms, "events": delivery.events})
        # The protocol headers come last: an endpoint's extra headers cannot break validation.
        headers = {
            **dict(endpoint.headers),
            "Content-Type": "application/json",  # exactly: pusher-http-node compares it
            "X-Pusher-Key": app.key,
            "X-Pusher-Signature": webhook_signature(app.secret, body),
            # The same on every attempt, resumed or not: receivers drop duplicates by it.
            "X-Pusher-Compat-Delivery": delivery.id,
        }
        try:
            # Redirects are not followed: a 3xx is a failure (and aiohttp would turn the POST
            # into a GET for 301/302).
            async with self._session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
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
        """The app's recent deliveries, oldest first, optionally only those in ``status``
        (``pending``, ``delivered`` or ``failed``)."""
        return [d.entry() for d in self._logged(app_id) if status is None or d.status == status]

    async def replay(self, app_id: str, delivery_id: str) -> dict[str, Any]:
        """Send a logged delivery's events again, now, as a new delivery signed afresh.

        Waits for the first attempt only; if it fails, the new delivery is retried in the
        background as any other. Returns the new delivery's entry; ``KeyError`` if the app
        has no delivery ``delivery_id`` in its log.
        """
        original = next((d for d in self._logged(app_id) if d.id == delivery_id), None)
        if original is None:
            raise KeyError(delivery_id)
        delivery = self._new_delivery(original.app, original.endpoint, original.events)
        deadline = asyncio.get_running_loop().time() + self._server.webhook_retry_seconds
        if await self._attempt(delivery):
            self._settle(delivery, "delivered")
        elif delivery.status == "pending":  # not dropped meanwhile by the pending limit
            self._spawn(delivery, self._retry(delivery, deadline))
        return delivery.entry()

    def _logged(self, app_id: str) -> list[_Delivery]:
        """The app's log and its kept failures, merged without duplicates, oldest first."""
        app_log = self._logs.get(app_id)
        if app_log is None:
            return []
        unique = {d.id: d for d in (*app_log.log, *app_log.failed)}
        return sorted(unique.values(), key=lambda d: d.seq)

    def _app_log(self, app_id: str) -> _AppLog:
        app_log = self._logs.get(app_id)
        if app_log is None:
            size = self._server.webhook_log_size
            app_log = self._logs[app_id] = _AppLog(deque(maxlen=size), deque(maxlen=size))
        return app_log

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)


def _held_key(app: AppConfig, event: Event, leave: str) -> tuple[str, ...]:
    """Key of the held ``leave`` event matching ``event``'s channel (and user, for members)."""
    if leave == "member_removed":
        return (leave, app.id, event["channel"], str(event.get("user_id")))
    return (leave, app.id, event["channel"])
