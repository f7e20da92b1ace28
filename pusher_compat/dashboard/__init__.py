"""The web dashboard: live charts, channels, a debug console and a test-event form.

Served under ``/dashboard`` when ``[server] dashboard_password`` is set. Logging in with the
password starts a server-side session (:mod:`.sessions`; a restart logs everyone out, logging
out ends it) whose token is an HttpOnly, ``SameSite=Strict`` cookie, ``Secure`` over TLS or with
``dashboard_cookie_secure``; every ``/dashboard/api/`` route answers 401 without it. Failed
logins are throttled per client address and overall
(:class:`~pusher_compat.limits.FailureThrottle`): a locked-out attempt is answered 429 with
``Retry-After`` before its password is looked at. The page itself is plain HTML, CSS and
JavaScript from ``static/``: no CDN, no build step.

The :class:`Dashboard` is a :class:`~pusher_compat.hub.HubListener`: it keeps the last
:data:`EVENT_LOG_SIZE` events of each app (connections, subscriptions, client and API events)
for the browser to poll, and a background task samples connections and messages per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..apps import Apps
from ..config import AppConfig, Settings
from ..http_errors import HttpError, json_answer
from ..hub import Hub
from ..limits import FailureThrottle
from ..publishing import Publisher
from ..scheduling import LoopScheduler, Scheduler
from ..stats_store import SqliteStore
from .sessions import Sessions

__all__ = ["EVENT_LOG_SIZE", "SAMPLE_COUNT", "Dashboard"]

STATIC = Path(__file__).resolve().parent / "static"
EVENT_LOG_SIZE = 500
"""Events kept per app for the live log."""
SAMPLE_COUNT = 300
"""Per-second samples kept per app for the live charts (five minutes)."""
COOKIE = "pusher_compat_dashboard"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000
"""Sessions kept at once; a login past it ends the oldest."""
_HISTORY_SECONDS = 24 * 3600
_MAX_TRIGGER_DATA = 10240
# ``after`` of the event log: ASCII digits only (``int`` also takes "²" and "٣", or raises on
# them), and few enough that parsing stays cheap.
_SEQ_RE = re.compile(r"[0-9]{1,18}")

log = logging.getLogger("pusher_compat")


def _see_other(location: str) -> web.Response:
    """A 303 redirect, as a plain response so that it can carry a cookie."""
    return web.Response(status=303, headers={"Location": location})


class Dashboard:
    """Serves the dashboard and listens to the hub for its live event log."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub | None,
        password: str,
        store: SqliteStore | None = None,
        sample_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        throttle: FailureThrottle | None = None,
        wall_clock: Callable[[], float] = time.time,
        scheduler: Scheduler | None = None,
    ) -> None:
        """``hub`` may be ``None`` and assigned to :attr:`hub` later, when the hub has to be
        built with this dashboard among its listeners. ``store`` holds the recorded statistics
        shown as history; ``None`` shows live samples only. ``clock`` times sessions and
        failed logins; ``throttle`` limits failed logins (the defaults of
        :class:`FailureThrottle` without it). ``wall_clock`` gives the unix seconds that
        stamp logged events and samples and end the statistics history; ``scheduler`` times
        the sampling (default: the event loop's)."""
        if not password:
            raise ValueError("the dashboard needs a password")
        self.hub = hub
        self._settings = settings
        self._password = password
        self._store = store
        self._interval = sample_interval
        self._apps = Apps(settings.apps)
        self._clock = clock
        self._wall_clock = wall_clock
        self._scheduler: Scheduler = scheduler if scheduler is not None else LoopScheduler()
        self._throttle = throttle or FailureThrottle()
        self._sessions = Sessions(SESSION_SECONDS, MAX_SESSIONS)
        self._cookie_secure = settings.server.dashboard_cookie_secure
        self._seq = itertools.count(1)
        self._events: dict[str, deque[dict[str, Any]]] = {
            app_id: deque(maxlen=EVENT_LOG_SIZE) for app_id in self._apps.ids
        }
        self._samples: dict[str, deque[dict[str, float]]] = {
            app_id: deque(maxlen=SAMPLE_COUNT) for app_id in self._apps.ids
        }
        self._last_totals: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- hub listener ------------------------------------------------------------------

    def channel_event(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Record one hub event in the app's log, stamped with a sequence number and time."""
        log = self._events.get(app.id)
        if log is None:
            return
        entry = {"seq": next(self._seq), "time": self._wall_clock(), **event}
        data = entry.get("data")
        if isinstance(data, str) and len(data) > 2000:
            entry["data"] = data[:2000] + "…"
        log.append(entry)

    # -- sampling ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start sampling connections and messages once per ``sample_interval``."""
        if self._task is None:
            self.sample()
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._scheduler.sleep(self._interval)
            self.sample()

    def sample(self) -> None:
        """Append one sample per app: open connections and messages since the last sample."""
        hub = self.hub
        if hub is None:
            return
        now = self._wall_clock()
        for app_id, samples in self._samples.items():
            counters = hub.counters(app_id)
            total = counters.ws_messages_in + counters.ws_messages_out + counters.api_messages
            previous = self._last_totals.get(app_id, total)
            self._last_totals[app_id] = total
            samples.append({
                "time": now,
                "connections": hub.local_connection_count(app_id),
                "messages": max(0, total - previous),
            })

    # -- sessions ----------------------------------------------------------------------

    def _signed_in(self, request: web.Request) -> bool:
        return self._sessions.valid(request.cookies.get(COOKIE, ""), self._clock())

    def _require(self, request: web.Request) -> None:
        if not self._signed_in(request):
            raise HttpError(401, "Log in to the dashboard first")

    def _app(self, request: web.Request) -> AppConfig:
        self._require(request)
        app = self._apps.by_id(request.match_info["app_id"])
        if app is None:
            raise HttpError(404, "Unknown app")
        return app

    def _hub(self) -> Hub:
        if self.hub is None:
            raise HttpError(503, "The dashboard is not attached to a hub")
        return self.hub

    # -- routes ------------------------------------------------------------------------

    def routes(self) -> list[web.AbstractRouteDef]:
        """The dashboard's routes: pages, JSON API and static files."""
        return [
            web.get("/dashboard", self.page),
            web.get("/dashboard/", self.page),
            web.post("/dashboard/login", self.login),
            web.post("/dashboard/logout", self.logout),
            web.get("/dashboard/api/apps", self.apps),
            web.get("/dashboard/api/{app_id}/channels", self.channels),
            web.get("/dashboard/api/{app_id}/events", self.events),
            web.get("/dashboard/api/{app_id}/series", self.series),
            web.get("/dashboard/api/{app_id}/history", self.history),
            web.post("/dashboard/api/{app_id}/trigger", self.trigger),
            web.static("/dashboard/static", STATIC),
        ]

    @staticmethod
    def _html(name: str, status: int = 200, error: str = "") -> web.Response:
        text = (STATIC / name).read_text().replace("{{error}}", error)
        response = web.Response(text=text, status=status, content_type="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
        )
        return response

    async def page(self, request: web.Request) -> web.Response:
        """The dashboard when signed in, the login form otherwise."""
        if self._signed_in(request):
            return self._html("index.html")
        return self._html("login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the form's password; on success start a session and go to the page.

        Reading the form is the only await: the throttle is asked, the password compared and
        the outcome recorded in one step of the event loop, so concurrent guesses are counted
        one after the other and cannot all slip in before the first is recorded.
        """
        form = await request.post()
        address, now = request.remote or "", self._clock()
        wait = self._throttle.retry_after(address, now)
        if wait > 0:
            log.debug("dashboard: login from %s refused: %.0f s of backoff left", address, wait)
            response = self._html(
                "login.html", status=429,
                error='<p class="error" role="alert">Too many failed logins: try again in '
                      f"{math.ceil(wait)} s.</p>")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        given = form.get("password")
        if not isinstance(given, str) or not hmac.compare_digest(
            given.encode(), self._password.encode()
        ):
            self._failed_login(address, now)
            return self._html("login.html", status=401,
                              error='<p class="error" role="alert">Wrong password.</p>')
        self._throttle.succeeded(address)
        response = _see_other("/dashboard")
        response.set_cookie(
            COOKIE, self._sessions.create(now), max_age=SESSION_SECONDS, path="/dashboard",
            httponly=True, samesite="Strict", secure=self._cookie_secure or request.secure,
        )
        return response

    def _failed_login(self, address: str, now: float) -> None:
        failures = self._throttle.failed(address, now)
        wait = self._throttle.retry_after(address, now)
        if wait > 0:
            log.warning("dashboard: %d failed logins from %s: logins refused for %.0f s",
                        failures, address, wait)
        else:
            log.info("dashboard: wrong password from %s", address)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the session (the cookie is worthless from now on) and forget the cookie."""
        self._sessions.revoke(request.cookies.get(COOKIE, ""))
        response = _see_other("/dashboard")
        response.del_cookie(COOKIE, path="/dashboard")
        return response

    async def apps(self, request: web.Request) -> web.Response:
        """The configured apps, with their open connection counts."""
        self._require(request)
        hub = self._hub()
        return json_answer({"apps": [
            {"id": app.id, "key": app.key, "enabled": app.enabled,
             "connections": hub.local_connection_count(app.id)}
            for app in self._apps
        ]})

    async def channels(self, request: web.Request) -> web.Response:
        """Occupied channels: type, subscriptions and, for presence, the members."""
        app = self._app(request)
        hub = self._hub()
        channels = []
        for channel in sorted(hub.channels(app.id), key=lambda c: c.name):
            item: dict[str, Any] = {
                "name": channel.name, "type": channel.kind.name,
                "subscription_count": channel.subscription_count,
            }
            if channel.kind.presence:
                item["user_count"] = channel.user_count
                item["members"] = [
                    {"user_id": m.user_id, "user_info": m.user_info}
                    for m in channel.members.values()
                ]
            channels.append(item)
        return json_answer({"connections": hub.local_connection_count(app.id),
                            "channels": channels})

    async def events(self, request: web.Request) -> web.Response:
        """Logged events with ``seq`` greater than ``after`` (all kept ones without it)."""
        app = self._app(request)
        after_text = request.query.get("after", "0")
        if not _SEQ_RE.fullmatch(after_text):
            raise HttpError(400, "after must be an event sequence number (1 to 18 digits 0-9)")
        after = int(after_text)
        events = [e for e in self._events[app.id] if e["seq"] > after]
        return json_answer({"events": events})

    async def series(self, request: web.Request) -> web.Response:
        """The live per-second samples, oldest first."""
        app = self._app(request)
        return json_answer({"interval": self._interval,
                            "samples": list(self._samples[app.id])})

    async def history(self, request: web.Request) -> web.Response:
        """Recorded statistics of the last day (``recorded: false`` when none are kept)."""
        app = self._app(request)
        if self._store is None:
            return json_answer({"recorded": False, "rows": []})
        now = self._wall_clock()
        rows = await asyncio.to_thread(self._store.query, app.id, now - _HISTORY_SECONDS, now)
        return json_answer({"recorded": True, "rows": rows})

    async def trigger(self, request: web.Request) -> web.Response:
        """Publish a test event (JSON ``channel``, ``event``, ``data``) to the app's clients."""
        app = self._app(request)
        hub = self._hub()
        if request.content_type != "application/json":
            # A cross-site form cannot send JSON without a CORS preflight, which fails here.
            raise HttpError(415, "Send JSON")
        try:
            body = await request.json()
        except ValueError:
            raise HttpError(400, "Invalid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "Expected a JSON object")
        channel, name, data = body.get("channel"), body.get("event"), body.get("data", "")
        if not isinstance(channel, str) or not isinstance(name, str) or not name:
            raise HttpError(400, "channel and event are required strings")
        # The HTTP API's checks and path, with the form's own cap on the data.
        publisher = Publisher(hub)
        event = publisher.event(app, name, channel, data, max_data_bytes=_MAX_TRIGGER_DATA)
        await publisher.publish(app, [event], source="dashboard")
        return json_answer({"ok": True})
