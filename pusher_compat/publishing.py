"""Publishing an event from the server side: the one path of the HTTP API's ``events`` and
``batch_events`` and the dashboard's test-event form.

Every event is checked the same way whoever sends it (name length, the reserved
``pusher_internal:`` prefix, channel name, payload size), counted against the app's
``max_backend_events_per_second`` across the cluster, counted in ``api_messages``, remembered
on cache channels, fanned out through the hub and reported to its listeners (webhooks'
``api_message`` filter, the dashboard's live log). Refusals are :class:`HttpError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from . import wire
from .channels import channel_name_error, kind_of
from .config import AppConfig
from .http_errors import HttpError, retry_after
from .hub import Hub

__all__ = ["Event", "Publisher", "rate_limit"]


@dataclass(frozen=True, slots=True)
class Event:
    """One checked event to publish on one channel."""

    name: str
    channel: str
    data: str
    """The event's data as sent on the wire: a string (JSON-encoded if it was not one)."""
    socket_id: str | None = None
    """The publisher's own socket, excluded from the fan-out."""


async def rate_limit(hub: Hub, app: AppConfig, bucket: str, cost: int, limit: int) -> None:
    """Take ``cost`` from the app's per-second ``limit`` for ``bucket`` (``reads`` or
    ``events``), counted across every node; 429 with ``Retry-After`` when it is spent."""
    if not limit:
        return
    wait = await hub.adapter.take(app.id, bucket, cost, limit)
    if wait is not None:
        what = "read requests" if bucket == "reads" else "events"
        raise HttpError(429, f"Rate limit: at most {limit} {what} per second",
                        [retry_after(wait)])


class Publisher:
    """Checks and publishes server-side events of the apps served by ``hub``."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    @staticmethod
    def event(app: AppConfig, name: str, channel: str, data: Any,
              socket_id: str | None = None, max_data_bytes: int | None = None) -> Event:
        """``data`` checked as the app allows (and within ``max_data_bytes`` if given)."""
        if not name or len(name) > app.max_event_name_length:
            raise HttpError(400, f"Event name must be 1 to {app.max_event_name_length} "
                                 "characters")
        if name.startswith("pusher_internal:"):
            raise HttpError(400, "Event names starting with pusher_internal: are reserved")
        invalid = channel_name_error(channel, app.max_channel_name_length)
        if invalid:
            raise HttpError(400, invalid)
        data = wire.event_data(data)
        size = len(data.encode())
        limit = app.max_event_payload_bytes
        if max_data_bytes is not None:
            limit = min(limit, max_data_bytes)
        if size > limit:
            raise HttpError(
                413,
                f"The data content of this event exceeds the allowed maximum "
                f"({limit} bytes): it is {size} bytes",
            )
        return Event(name, channel, data, socket_id)

    async def publish(self, app: AppConfig, events: Sequence[Event],
                      source: str | None = None) -> None:
        """Publish checked ``events`` once the app's event rate allows them. ``source`` names
        a publisher other than the HTTP API (``dashboard``) to the listeners, who are then
        given the data too."""
        waiting = self.start(app, events, source)
        if waiting is not None:
            await waiting

    def start(self, app: AppConfig, events: Sequence[Event],
              source: str | None = None) -> Awaitable[None] | None:
        """:meth:`publish`, done at once (``None``) when the app has no event rate to ask:
        a request answered without any coroutine. Else the awaitable that publishes once
        the rate (counted across the cluster) allows."""
        if not app.max_backend_events_per_second:
            self._send(app, events, source)
            return None
        return self._limited(app, events, source)

    async def _limited(self, app: AppConfig, events: Sequence[Event],
                       source: str | None) -> None:
        await rate_limit(self._hub, app, "events", len(events),
                         app.max_backend_events_per_second)
        self._send(app, events, source)

    def _send(self, app: AppConfig, events: Sequence[Event], source: str | None) -> None:
        """Count, remember, fan out and report ``events``, the rate having allowed them."""
        hub = self._hub
        hub.counters(app.id).api_messages += len(events)
        for event in events:
            frame = wire.event_frame(event.name, event.data, event.channel)
            if kind_of(event.channel).cached:
                hub.remember(app, event.channel, frame, event.data)
            hub.publish(app.id, event.channel, frame, event.socket_id)
            if hub.listening:
                record: dict[str, Any] = {"name": "api_message", "channel": event.channel,
                                          "event": event.name}
                if source is not None:
                    record |= {"data": event.data, "source": source}
                hub.notify(app, record)
