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
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import schemas, signatures, wire
from .adapters.base import ChannelCounts
from .api_transport import ApiRequest, Reply
from .apps import Apps
from .channels import USER_CHANNEL_PREFIX, channel_name_error, kind_of
from .config import AppConfig, Settings
from .http_errors import HttpError, error_body, json_answer
from .hub import Hub
from .metrics import ApiCallCounter, counted
from .publishing import Event, Publisher, rate_limit
from .stats_store import SqliteStore
from .webhook_log import NotReplayable
from .webhooks import Webhooks

__all__ = ["HttpApi"]

log = logging.getLogger("pusher_compat")

_INFO_ATTRIBUTES = frozenset({"user_count", "subscription_count"})
_NO_INFO: frozenset[str] = frozenset()
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
        api_calls: ApiCallCounter | None = None,
    ) -> None:
        """``clock`` gives wall-clock unix seconds (signature timestamps, the statistics'
        default range); ``webhooks`` serves the delivery log (none without it); ``store``
        holds the recorded statistics (``recording: false`` without it); ``api_calls``
        counts the answers of the lean transport (the aiohttp routes are ``counted``)."""
        self._settings = settings
        self._hub = hub
        self._webhooks = webhooks
        self._store = store
        self._clock = clock
        self._apps = Apps(settings.apps)
        self._publisher = Publisher(hub)
        self._api_calls = api_calls
        self._hot: dict[str, HttpApi.Handler] = {
            "events": self.events, "batch_events": self.batch_events}
        """The routes the lean transport serves, by the last segment of their path."""

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

    Handler = Callable[[AppConfig, ApiRequest], Any]
    """A route's handler: its answer (a JSON value), or an awaitable of it."""

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Any]:
        """``handler`` as an aiohttp route: the request adapted to an :class:`ApiRequest`."""
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.read()
                url = request.rel_url
                result = self._serve(handler, ApiRequest(
                    request.method, url.raw_path, url.path, request.query, body,
                    request.match_info))
                if inspect.isawaitable(result):
                    result = await result
                return json_answer(result)
            except HttpError as error:
                # Answered here, not by the middleware, so that ``counted`` sees the status
                # of every refusal, in applications without the middleware too.
                return error.response()

        return counted(endpoint)

    def answer(self, route: str, request: ApiRequest) -> Reply | Awaitable[Reply]:
        """The lean transport's hot routes (:class:`~pusher_compat.api_transport.HotRoutes`):
        ``route`` is ``events`` or ``batch_events``. The same path as the aiohttp routes',
        answered and counted as :func:`~pusher_compat.metrics.counted` counts those."""
        try:
            result = self._serve(self._hot[route], request)
        except HttpError as error:
            return self.refuse(request, error)
        except Exception:
            return self._crashed(request)
        if inspect.iscoroutine(result):
            return self._answer_later(request, result)
        return self._reply(request, 200, wire.dumps(result))

    async def _answer_later(self, request: ApiRequest, result: Awaitable[Any]) -> Reply:
        try:
            return self._reply(request, 200, wire.dumps(await result))
        except HttpError as error:
            return self.refuse(request, error)
        except Exception:
            return self._crashed(request)

    def refuse(self, request: ApiRequest, error: HttpError) -> Reply:
        """``error`` as the answer to ``request``: the body :func:`json_error` gives."""
        return self._reply(request, error.status, error_body(error.status, error.message),
                           error.headers)

    def _crashed(self, request: ApiRequest) -> Reply:
        """A handler's crash, answered as :func:`json_errors` answers it (a bug: logged)."""
        log.exception("error handling %s %s", request.method, request.path)
        return self._reply(request, 500, error_body(500, "Internal server error"))

    def _reply(self, request: ApiRequest, status: int, body: bytes,
               headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        if self._api_calls is not None:
            self._api_calls.record(request.params.get("app_id", ""), status)
        return Reply(status, body, headers)

    def _serve(self, handler: Handler, request: ApiRequest) -> Any:
        """Every request's one path: authenticated, read rate taken for a ``GET``, then
        ``handler``'s answer (or an awaitable of it)."""
        app = self._authenticate(request)
        if request.method == "GET" and app.max_read_requests_per_second:
            return self._read(handler, app, request)
        return handler(app, request)

    async def _read(self, handler: Handler, app: AppConfig, request: ApiRequest) -> Any:
        await rate_limit(self._hub, app, "reads", 1, app.max_read_requests_per_second)
        result = handler(app, request)
        return await result if inspect.isawaitable(result) else result

    def _authenticate(self, request: ApiRequest) -> AppConfig:
        """Find the app, verify the request signature, refuse disabled apps."""
        app_id = request.params.get("app_id")
        if app_id is None:
            app = self._apps.by_key(request.query.get("auth_key", ""))
            if app is None:
                raise HttpError(401, "Unknown auth_key")
        else:
            app = self._apps.by_id(app_id)
            if app is None:
                raise HttpError(404, f"Unknown app id {app_id!r}")
        paths = [request.raw_path, request.path]
        if paths[0] == paths[1]:
            del paths[1]
        try:
            signatures.verify_request(
                request.method, paths, request.query, request.body, app.key, app.secret,
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

    def events(self, app: AppConfig, request: ApiRequest) -> Any:
        payload = self._body(request.body, "api-event")
        channels = payload["channels"] if "channels" in payload else [payload["channel"]]
        if len(channels) > app.max_channels_per_event:
            raise HttpError(
                400, f"Too many channels: {len(channels)} > {app.max_channels_per_event}"
            )
        events = [self._event(app, payload, channel) for channel in channels]
        info = self._info(payload.get("info"))
        waiting = self._publisher.start(app, events)
        if waiting is None and not info:
            return {}  # answered at once: no coroutine for the usual publish
        return self._events_answer(app, events, info, waiting)

    async def _events_answer(self, app: AppConfig, events: list[Event], info: frozenset[str],
                             waiting: Awaitable[None] | None) -> Any:
        if waiting is not None:
            await waiting
        if not info:
            return {}
        return {"channels": {e.channel: await self._counted(app, e.channel, info) for e in events}}

    def batch_events(self, app: AppConfig, request: ApiRequest) -> Any:
        batch = self._body(request.body, "api-batch-events")["batch"]
        if len(batch) > app.max_batch_size:
            raise HttpError(400, f"Batch too large: {len(batch)} > {app.max_batch_size} events")
        events = [self._event(app, item, item["channel"]) for item in batch]
        infos = [self._info(item.get("info")) for item in batch]
        waiting = self._publisher.start(app, events)
        if waiting is None and not any(infos):
            return {}
        return self._batch_answer(app, events, infos, waiting)

    async def _batch_answer(self, app: AppConfig, events: list[Event],
                            infos: list[frozenset[str]], waiting: Awaitable[None] | None) -> Any:
        if waiting is not None:
            await waiting
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
        if not value:
            return _NO_INFO  # the usual publish: no attributes asked
        info = frozenset(filter(None, value.split(",")))
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

    async def channels(self, app: AppConfig, request: ApiRequest) -> Any:
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

    async def channel(self, app: AppConfig, request: ApiRequest) -> Any:
        name = request.params["channel"]
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

    async def users(self, app: AppConfig, request: ApiRequest) -> Any:
        name = request.params["channel"]
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

    def terminate_connections(self, app: AppConfig, request: ApiRequest) -> Any:
        if request.body:
            self._body(request.body, "api-terminate-connections")
        self._hub.terminate(app, request.params["user_id"])
        return {}

    # -- webhook deliveries ------------------------------------------------------------

    def deliveries(self, app: AppConfig, request: ApiRequest) -> Any:
        status = request.query.get("status")
        if status not in (None, "pending", "delivered", "failed"):
            raise HttpError(400, "status must be one of pending, delivered, failed")
        log = self._webhooks.deliveries(app.id, status) if self._webhooks else []
        return {"deliveries": log}

    async def replay(self, app: AppConfig, request: ApiRequest) -> Any:
        delivery_id = request.params["delivery_id"]
        if self._webhooks is None:
            raise HttpError(404, f"No webhook delivery {delivery_id!r}")
        try:
            return {"delivery": await self._webhooks.replay(app.id, delivery_id)}
        except KeyError:
            raise HttpError(404, f"No webhook delivery {delivery_id!r}") from None
        except NotReplayable as error:
            raise HttpError(409, str(error)) from None

    # -- statistics --------------------------------------------------------------------

    async def statistics(self, app: AppConfig, request: ApiRequest) -> Any:
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
