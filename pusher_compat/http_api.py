"""The Pusher HTTP API: ``/apps/{app_id}/...``, signed as the official SDKs sign it.

Responses have Pusher's shapes (maps are JSON objects even when empty, success is 200 with a
JSON body); errors are JSON bodies ``{"error": ..., "code": status}`` saying what was wrong.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from . import schemas, signatures, wire
from .adapters.base import ChannelCounts
from .channels import USER_CHANNEL_PREFIX, channel_name_error, kind_of
from .config import AppConfig, Settings
from .http_errors import json_error
from .hub import Hub
from .metrics import counted
from .stats import StatisticsApi
from .webhooks import NotReplayable

__all__ = ["HttpApi"]

_INFO_ATTRIBUTES = frozenset({"user_count", "subscription_count"})


class DeliveryLog(Protocol):
    """What the API reads of the webhook dispatcher."""

    def deliveries(self, app_id: str, status: str | None = None) -> list[dict[str, Any]]: ...

    async def replay(self, app_id: str, delivery_id: str) -> dict[str, Any]: ...


class ApiError(Exception):
    """An HTTP API error: answered with ``status`` and a JSON body naming the problem."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def response(self) -> web.Response:
        headers = []
        if self.retry_after is not None:
            headers.append(("Retry-After", str(max(1, math.ceil(self.retry_after)))))
        return json_error(self.status, self.message, headers)


@dataclass(frozen=True, slots=True)
class _Event:
    """One validated event to publish on one channel."""

    name: str
    channel: str
    data: str
    socket_id: str | None
    info: frozenset[str]


def _json(value: Any) -> web.Response:
    return web.Response(body=wire.dumps(value), content_type="application/json")


class HttpApi:
    """Handlers of the HTTP API for the apps in ``settings``."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        clock: Callable[[], float] = time.time,
        webhooks: DeliveryLog | None = None,
        statistics: StatisticsApi | None = None,
    ) -> None:
        self._statistics = statistics
        self._settings = settings
        self._hub = hub
        self._webhooks = webhooks
        self._clock = clock
        self._by_id = {app.id: app for app in settings.apps}
        self._by_key = {app.key: app for app in settings.apps}

    def routes(self) -> list[web.RouteDef]:
        wrap = self._endpoint
        statistics = self._statistics
        return [
            *([web.get("/apps/{app_id}/statistics", wrap(statistics.statistics))]
              if statistics is not None else []),
            web.post("/apps/{app_id}/events", wrap(self.events)),
            web.post("/apps/{app_id}/batch_events", wrap(self.batch_events)),
            web.get("/apps/{app_id}/channels", wrap(self.channels)),
            web.get("/apps/{app_id}/channels/{channel}", wrap(self.channel)),
            web.get("/apps/{app_id}/channels/{channel}/users", wrap(self.users)),
            web.post("/apps/{app_id}/users/{user_id}/terminate_connections",
                     wrap(self.terminate_connections)),
            # pusher==3.3.4 sends and signs this path without the /apps/{id} prefix.
            web.post("/users/{user_id}/terminate_connections", wrap(self.terminate_connections)),
            web.get("/apps/{app_id}/webhooks/deliveries", wrap(self.deliveries)),
            web.post("/apps/{app_id}/webhooks/deliveries/{delivery_id}/replay",
                     wrap(self.replay)),
        ]

    # -- request plumbing --------------------------------------------------------------

    Handler = Callable[[AppConfig, web.Request, bytes], Any]

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Any]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.read()
                app = self._authenticate(request, body)
                if request.method == "GET":
                    await self._limit(app, "reads", 1, app.max_read_requests_per_second)
                result = handler(app, request, body)
                if inspect.isawaitable(result):
                    result = await result
                return _json(result)
            except ApiError as error:
                return error.response()

        return counted(endpoint)

    def _authenticate(self, request: web.Request, body: bytes) -> AppConfig:
        """Find the app, verify the request signature, refuse disabled apps."""
        app_id = request.match_info.get("app_id")
        if app_id is None:
            app = self._by_key.get(request.query.get("auth_key", ""))
            if app is None:
                raise ApiError(401, "Unknown auth_key")
        else:
            app = self._by_id.get(app_id)
            if app is None:
                raise ApiError(404, f"Unknown app id {app_id!r}")
        url = request.rel_url
        paths = list(dict.fromkeys((url.raw_path, url.path)))
        try:
            signatures.verify_request(
                request.method, paths, request.query, body, app.key, app.secret,
                self._clock(), self._settings.server.request_timestamp_window,
            )
        except signatures.RequestSignatureError as error:
            raise ApiError(401, str(error)) from None
        if not app.enabled:
            raise ApiError(403, f"App {app.id!r} is disabled")
        return app

    async def _limit(self, app: AppConfig, bucket: str, cost: int, limit: int) -> None:
        """A per-second limit of the app, counted across every node."""
        if not limit:
            return
        retry_after = await self._hub.adapter.take(app.id, bucket, cost, limit)
        if retry_after is not None:
            what = "read requests" if bucket == "reads" else "events"
            raise ApiError(429, f"Rate limit: at most {limit} {what} per second", retry_after)

    @staticmethod
    def _body(body: bytes, schema: str) -> Any:
        try:
            value = wire.loads(body)
        except wire.TooDeep as error:
            raise ApiError(400, f"The request body is {error}") from None
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON") from None
        problem = schemas.validate(schema, value)
        if problem:
            raise ApiError(400, f"Invalid request body: {problem}")
        return value

    # -- events ------------------------------------------------------------------------

    async def events(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        payload = self._body(body, "api-event")
        channels = payload["channels"] if "channels" in payload else [payload["channel"]]
        if len(channels) > app.max_channels_per_event:
            raise ApiError(
                400, f"Too many channels: {len(channels)} > {app.max_channels_per_event}"
            )
        events = [self._event(app, payload, channel) for channel in channels]
        await self._publish(app, events)
        info = events[0].info
        if not info:
            return {}
        return {"channels": {e.channel: await self._counted(app, e.channel, info) for e in events}}

    async def batch_events(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        batch = self._body(body, "api-batch-events")["batch"]
        if len(batch) > app.max_batch_size:
            raise ApiError(400, f"Batch too large: {len(batch)} > {app.max_batch_size} events")
        events = [self._event(app, item, item["channel"]) for item in batch]
        await self._publish(app, events)
        if not any(e.info for e in events):
            return {}
        return {"batch": [await self._counted(app, e.channel, e.info) for e in events]}

    def _event(self, app: AppConfig, item: dict[str, Any], channel: str) -> _Event:
        name: str = item["name"]
        if not name or len(name) > app.max_event_name_length:
            raise ApiError(400, f"Event name must be 1 to {app.max_event_name_length} characters")
        if name.startswith("pusher_internal:"):
            raise ApiError(400, "Event names starting with pusher_internal: are reserved")
        invalid = channel_name_error(channel, app.max_channel_name_length)
        if invalid:
            raise ApiError(400, invalid)
        data = item["data"]
        if not isinstance(data, str):
            data = wire.dumps(data).decode()
        size = len(data.encode())
        if size > app.max_event_payload_bytes:
            raise ApiError(
                413,
                f"The data content of this event exceeds the allowed maximum "
                f"({app.max_event_payload_bytes} bytes): it is {size} bytes",
            )
        return _Event(name, channel, data, item.get("socket_id"), self._info(item.get("info")))

    async def _publish(self, app: AppConfig, events: list[_Event]) -> None:
        await self._limit(app, "events", len(events), app.max_backend_events_per_second)
        self._hub.counters(app.id).api_messages += len(events)
        for event in events:
            frame = wire.event_frame(event.name, event.data, event.channel)
            if kind_of(event.channel).cached:
                self._hub.remember(app, event.channel, frame, event.data)
            self._hub.publish(app.id, event.channel, frame, event.socket_id)
            if self._hub.listening:
                self._hub.notify(app, {"name": "api_message", "channel": event.channel,
                                       "event": event.name})

    # -- channel queries ---------------------------------------------------------------

    @staticmethod
    def _info(value: str | None) -> frozenset[str]:
        info = frozenset(filter(None, (value or "").split(",")))
        unknown = info - _INFO_ATTRIBUTES - {"cache"}
        if unknown:
            raise ApiError(400, f"Unknown info attribute(s): {', '.join(sorted(unknown))}")
        return info

    async def _counted(self, app: AppConfig, name: str, info: frozenset[str]) -> dict[str, Any]:
        """The ``info`` attributes of one channel published to, cluster-wide.

        Pusher answers ``user_count`` for presence channels only and leaves it out for the
        others rather than refusing the publish: one request may name both kinds.
        """
        if not kind_of(name).presence:
            info = info - {"user_count"}
        return self._attributes(await self._hub.adapter.channel(app.id, name), info)

    @staticmethod
    def _attributes(counts: ChannelCounts | None, info: frozenset[str]) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if "user_count" in info:
            attributes["user_count"] = counts.user_count if counts else 0
        if "subscription_count" in info:
            attributes["subscription_count"] = counts.subscription_count if counts else 0
        return attributes

    async def channels(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        prefix = request.query.get("filter_by_prefix", "")
        info = self._info(request.query.get("info")) & _INFO_ATTRIBUTES
        if "user_count" in info and not prefix.startswith("presence-"):
            raise ApiError(
                400, "user_count requires filter_by_prefix to start with presence-"
            )
        occupied = await self._hub.adapter.channels(app.id, prefix)
        return {
            "channels": {
                name: self._attributes(counts, info)
                for name, counts in occupied.items()
                if not name.startswith(USER_CHANNEL_PREFIX)
            }
        }

    async def channel(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        name = request.match_info["channel"]
        self._check_channel(app, name)
        info = self._info(request.query.get("info"))
        kind = kind_of(name)
        if "user_count" in info and not kind.presence:
            raise ApiError(400, f"user_count is only available for presence channels: {name}")
        if "cache" in info and not kind.cached:
            raise ApiError(400, f"cache is only available for cache channels: {name}")
        counts = await self._hub.adapter.channel(app.id, name)
        response = {"occupied": counts is not None, **self._attributes(counts, info)}
        if "cache" in info:
            hit = self._hub.cached(app.id, name)
            response["cache"] = (
                {"data": hit[0].data, "ttl": max(1, round(hit[1]))} if hit else None
            )
        return response

    async def users(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        name = request.match_info["channel"]
        self._check_channel(app, name)
        if not kind_of(name).presence:
            raise ApiError(400, f"Users are only available for presence channels: {name}")
        return {"users": [{"id": key} for key in await self._hub.adapter.members(app.id, name)]}

    @staticmethod
    def _check_channel(app: AppConfig, name: str) -> None:
        invalid = channel_name_error(name, app.max_channel_name_length)
        if invalid:
            raise ApiError(400, invalid)

    # -- users -------------------------------------------------------------------------

    def terminate_connections(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        if body:
            self._body(body, "api-terminate-connections")
        self._hub.terminate(app, request.match_info["user_id"])
        return {}

    # -- webhook deliveries ------------------------------------------------------------

    def deliveries(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        status = request.query.get("status")
        if status not in (None, "pending", "delivered", "failed"):
            raise ApiError(400, "status must be one of pending, delivered, failed")
        log = self._webhooks.deliveries(app.id, status) if self._webhooks else []
        return {"deliveries": log}

    async def replay(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        delivery_id = request.match_info["delivery_id"]
        if self._webhooks is None:
            raise ApiError(404, f"No webhook delivery {delivery_id!r}")
        try:
            return {"delivery": await self._webhooks.replay(app.id, delivery_id)}
        except KeyError:
            raise ApiError(404, f"No webhook delivery {delivery_id!r}") from None
        except NotReplayable as error:
            raise ApiError(409, str(error)) from None
