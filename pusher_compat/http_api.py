"""The Pusher HTTP API: ``/apps/{app_id}/...``, signed as the official SDKs sign it, plus
our own signed endpoints under the same prefix: the webhook delivery log and
``GET /apps/{id}/statistics``.

Responses have Pusher's shapes (maps are JSON objects even when empty, success is 200 with a
JSON body); errors are :class:`~pusher_compat.http_errors.HttpError`, answered as JSON bodies
``{"error": ..., "code": status}`` saying what was wrong.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import schemas, signatures, wire
from .adapters.base import ChannelCounts
from .apps import Apps
from .channels import USER_CHANNEL_PREFIX, channel_name_error, kind_of
from .config import AppConfig, Settings
from .http_errors import HttpError, json_answer
from .hub import Hub
from .metrics import counted
from .publishing import Event, Publisher, rate_limit
from .stats_store import SqliteStore
from .webhook_log import NotReplayable
from .webhooks import Webhooks

__all__ = ["HttpApi"]

_INFO_ATTRIBUTES = frozenset({"user_count", "subscription_count"})
_DEFAULT_RANGE = 3600.0
"""Seconds before ``to`` that ``GET /apps/{id}/statistics`` covers without ``from``."""


class HttpApi:
    """Handlers of the HTTP API for the apps in ``settings``."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        clock: Callable[[], float] = time.time,
        webhooks: Webhooks | None = None,
        store: SqliteStore | None = None,
    ) -> None:
        """``clock`` gives wall-clock unix seconds (signature timestamps, the statistics'
        default range); ``webhooks`` serves the delivery log (none without it); ``store``
        holds the recorded statistics (``recording: false`` without it)."""
        self._settings = settings
        self._hub = hub
        self._webhooks = webhooks
        self._store = store
        self._clock = clock
        self._apps = Apps(settings.apps)
        self._publisher = Publisher(hub)

    def routes(self) -> list[web.RouteDef]:
        wrap = self._endpoint
        return [
            web.get("/apps/{app_id}/statistics", wrap(self.statistics)),
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
                    await rate_limit(self._hub, app, "reads", 1,
                                     app.max_read_requests_per_second)
                result = handler(app, request, body)
                if inspect.isawaitable(result):
                    result = await result
                return json_answer(result)
            except HttpError as error:
                # Answered here, not by the middleware, so that ``counted`` sees the status
                # of every refusal, in applications without the middleware too.
                return error.response()

        return counted(endpoint)

    def _authenticate(self, request: web.Request, body: bytes) -> AppConfig:
        """Find the app, verify the request signature, refuse disabled apps."""
        app_id = request.match_info.get("app_id")
        if app_id is None:
            app = self._apps.by_key(request.query.get("auth_key", ""))
            if app is None:
                raise HttpError(401, "Unknown auth_key")
        else:
            app = self._apps.by_id(app_id)
            if app is None:
                raise HttpError(404, f"Unknown app id {app_id!r}")
        url = request.rel_url
        paths = list(dict.fromkeys((url.raw_path, url.path)))
        try:
            signatures.verify_request(
                request.method, paths, request.query, body, app.key, app.secret,
                self._clock(), self._settings.server.request_timestamp_window,
            )
        except signatures.RequestSignatureError as error:
            raise HttpError(401, str(error)) from None
        disabled = Apps.disabled(app)
        if disabled:
            raise HttpError(403, disabled)
        return app

    @staticmethod
    def _body(body: bytes, schema: str) -> Any:
        try:
            value = wire.loads(body)
        except wire.TooDeep as error:
            raise HttpError(400, f"The request body is {error}") from None
        except ValueError:
            raise HttpError(400, "The request body is not valid JSON") from None
        problem = schemas.validate(schema, value)
        if problem:
            raise HttpError(400, f"Invalid request body: {problem}")
        return value

    # -- events ------------------------------------------------------------------------

    async def events(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        payload = self._body(body, "api-event")
        channels = payload["channels"] if "channels" in payload else [payload["channel"]]
        if len(channels) > app.max_channels_per_event:
            raise HttpError(
                400, f"Too many channels: {len(channels)} > {app.max_channels_per_event}"
            )
        events = [self._event(app, payload, channel) for channel in channels]
        info = self._info(payload.get("info"))
        await self._publisher.publish(app, events)
        if not info:
            return {}
        return {"channels": {e.channel: await self._counted(app, e.channel, info) for e in events}}

    async def batch_events(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        batch = self._body(body, "api-batch-events")["batch"]
        if len(batch) > app.max_batch_size:
            raise HttpError(400, f"Batch too large: {len(batch)} > {app.max_batch_size} events")
        events = [self._event(app, item, item["channel"]) for item in batch]
        infos = [self._info(item.get("info")) for item in batch]
        await self._publisher.publish(app, events)
        if not any(infos):
            return {}
        return {"batch": [await self._counted(app, e.channel, info)
                          for e, info in zip(events, infos, strict=True)]}

    @staticmethod
    def _event(app: AppConfig, item: dict[str, Any], channel: str) -> Event:
        return Publisher.event(app, item["name"], channel, item["data"], item.get("socket_id"))

    # -- channel queries ---------------------------------------------------------------

    @staticmethod
    def _info(value: str | None) -> frozenset[str]:
        info = frozenset(filter(None, (value or "").split(",")))
        unknown = info - _INFO_ATTRIBUTES - {"cache"}
        if unknown:
            raise HttpError(400, f"Unknown info attribute(s): {', '.join(sorted(unknown))}")
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
            raise HttpError(
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
            raise HttpError(400, f"user_count is only available for presence channels: {name}")
        if "cache" in info and not kind.cached:
            raise HttpError(400, f"cache is only available for cache channels: {name}")
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
            raise HttpError(400, f"Users are only available for presence channels: {name}")
        return {"users": [{"id": key} for key in await self._hub.adapter.members(app.id, name)]}

    @staticmethod
    def _check_channel(app: AppConfig, name: str) -> None:
        invalid = channel_name_error(name, app.max_channel_name_length)
        if invalid:
            raise HttpError(400, invalid)

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
            raise HttpError(400, "status must be one of pending, delivered, failed")
        log = self._webhooks.deliveries(app.id, status) if self._webhooks else []
        return {"deliveries": log}

    async def replay(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        delivery_id = request.match_info["delivery_id"]
        if self._webhooks is None:
            raise HttpError(404, f"No webhook delivery {delivery_id!r}")
        try:
            return {"delivery": await self._webhooks.replay(app.id, delivery_id)}
        except KeyError:
            raise HttpError(404, f"No webhook delivery {delivery_id!r}") from None
        except NotReplayable as error:
            raise HttpError(409, str(error)) from None

    # -- statistics --------------------------------------------------------------------

    async def statistics(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        """``GET /apps/{id}/statistics?from=&to=``: the rows recorded by this node.

        ``from`` and ``to`` are unix seconds, both inclusive; ``to`` defaults to now and
        ``from`` to an hour before ``to``. The answer is ``{"statistics": [row, ...],
        "recording": bool, "current": {"connections", "channels", "subscriptions"}}``: the
        stored rows oldest first (each a :meth:`Snapshot.row
        <pusher_compat.stats_store.Snapshot.row>`), whether this server records statistics
        at all, and the live counts of this process.
        """
        to_ts = _timestamp(request.query.get("to"), "to", self._clock())
        from_ts = _timestamp(request.query.get("from"), "from", max(0.0, to_ts - _DEFAULT_RANGE))
        if from_ts > to_ts:
            raise HttpError(400, "from must not be after to")
        rows: list[dict[str, Any]] = []
        if self._store is not None:
            rows = await asyncio.to_thread(self._store.query, app.id, from_ts, to_ts)
        channels = list(self._hub.channels(app.id))
        current = {
            "connections": self._hub.local_connection_count(app.id),
            "channels": len(channels),
            "subscriptions": sum(channel.subscription_count for channel in channels),
        }
        return {"statistics": rows, "recording": self._store is not None, "current": current}


def _timestamp(value: str | None, name: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise HttpError(400, f"{name} must be unix seconds, got {value!r}")
    return number
