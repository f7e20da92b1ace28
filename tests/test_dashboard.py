"""The dashboard in headless Chromium: log in, watch a client connect, see a triggered event in
the debug console, send a test event from the form that a WebSocket client receives.

The server is ``create_app`` with ``dashboard_password`` set, on a free loopback port in the
test's own event loop; Playwright's async API drives Debian's Chromium. The screenshot is saved as
``artifacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from helpers import FakeClock, ManualScheduler, WsClient, eventually, signed_query
from playwright.async_api import Browser, Page, async_playwright, expect

from pusher_compat.config import AppConfig, ConfigError, ServerConfig, Settings, load_settings
from pusher_compat.dashboard import COOKIE, MAX_SESSIONS, SESSION_SECONDS, Dashboard
from pusher_compat.dashboard.sessions import Sessions
from pusher_compat.http_errors import json_errors
from pusher_compat.hub import Hub
from pusher_compat.limits import FailureThrottle
from pusher_compat.server import create_app, listen

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = ROOT / "artifacts" / "dashboard.png"
TIMEOUT_MS = 10_000

APP_ID, KEY, SECRET = "1001", "app-key", "app-secret"
PASSWORD = "correct horse battery staple"


class Server:
    """``create_app`` with the dashboard wired in, listening on ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def trigger(self, session: aiohttp.ClientSession, channel: str, event: str,
                      data: str) -> None:
        """Publish through the signed HTTP API, as a backend would."""
        path = f"/apps/{APP_ID}/events"
        body = json.dumps({"name": event, "channel": channel, "data": data}).encode()
        params = signed_query("POST", path, KEY, SECRET, body)
        async with session.post(self.url + path, params=params, data=body,
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200, await response.text()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    settings = Settings(server=ServerConfig(activity_timeout=30, dashboard_password=PASSWORD),
                        apps=(AppConfig(id=APP_ID, key=KEY, secret=SECRET),))
    runner = await listen(create_app(settings), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        yield Server(f"http://{host}:{port}")
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    """A fresh context's page; console errors and failed requests go to ``errors``."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Offline: anything not served by the dashboard itself would be an outside request.
    page.on("request", lambda r: None if r.url.startswith(url) else errors.append(r.url))
    await page.goto(url + "/dashboard")
    return page


async def login(page: Page, password: str) -> None:
    await page.fill("#password", password)
    await page.click("#login")


async def test_dashboard_end_to_end(server: Server, browser: Browser) -> None:
    errors: list[str] = []
    page = await open_page(browser, server.url, errors)
    await expect(page.locator("#password")).to_be_visible()

    await login(page, "wrong password")
    await expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    errors.clear()  # the browser logs the refused login's 401 as an error
    await login(page, PASSWORD)
    await expect(page.locator("#connections")).to_have_text("0")
    await page.goto(server.url + "/dashboard?refresh=100")  # poll ten times a second
    await expect(page.locator("#connections")).to_have_text("0")

    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{server.url.replace('http', 'ws')}/app/{KEY}?protocol=7")
        client = await WsClient.handshake(ws)
        await client.send("pusher:subscribe", {"channel": "news"})
        frame = await client.frame()
        assert frame["event"] == "pusher_internal:subscription_succeeded"

        await expect(page.locator("#connections")).to_have_text("1")
        row = page.locator('#channels tr[data-channel="news"]')
        await expect(row.locator(".subscriptions")).to_have_text("1")
        log = page.locator("#log tbody")
        await expect(log.locator('tr[data-kind="connection"]')).to_contain_text(client.socket_id)
        await expect(log.locator('tr[data-kind="subscription"]').first).to_contain_text("news")

        await server.trigger(session, "news", "breaking", '{"headline":"dashboards"}')
        assert (await client.frame())["event"] == "breaking"
        await expect(log.locator('tr[data-event="breaking"]')).to_contain_text("api_message")

        await page.fill("#trigger-channel", "news")
        await page.fill("#trigger-event", "hello")
        await page.fill("#trigger-data", '{"from":"the dashboard"}')
        await page.click("#trigger-send")
        await expect(page.locator("#trigger-status")).to_have_text("sent")
        received = await client.frame()
        assert received == {"event": "hello", "channel": "news",
                            "data": '{"from":"the dashboard"}'}
        await expect(log.locator('tr[data-event="hello"]')).to_contain_text("dashboard")

        # The live charts have samples with the connection in them (sampled once a second).
        connected_samples = (
            f"fetch('/dashboard/api/{APP_ID}/series').then((r) => r.json())"
            ".then((series) => series.samples.filter((s) => s.connections === 1).length)"
        )
        await eventually(lambda: page.evaluate(connected_samples), lambda n: n > 0)

        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        await ws.close()

    await expect(page.locator("#connections")).to_have_text("0")
    await expect(log.locator("tr", has_text="connection_closed")).to_have_count(1)
    assert errors == []


async def test_api_requires_the_session_cookie(server: Server) -> None:
    # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP address host.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        for method, path in [("GET", "/dashboard/api/apps"),
                             ("GET", f"/dashboard/api/{APP_ID}/channels"),
                             ("GET", f"/dashboard/api/{APP_ID}/events?after=0"),
                             ("GET", f"/dashboard/api/{APP_ID}/series"),
                             ("POST", f"/dashboard/api/{APP_ID}/trigger")]:
            async with session.request(method, server.url + path) as response:
                assert response.status == 401, path
        jar = session.cookie_jar
        async with session.post(server.url + "/dashboard/login",
                                data={"password": "nope"}) as response:
            assert response.status == 401
        assert not any(c.key == COOKIE for c in jar)
        forged = {COOKIE: f"{int(time.time()) + 60}.{'0' * 64}"}
        async with session.get(server.url + "/dashboard/api/apps", cookies=forged) as response:
            assert response.status == 401
        async with session.post(server.url + "/dashboard/login",
                                data={"password": PASSWORD}) as response:
            assert response.status == 200  # followed the redirect to the page
        cookie = next(c for c in jar if c.key == COOKIE)
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with session.get(server.url + "/dashboard/api/apps") as response:
            body: dict[str, Any] = await response.json()
            assert [a["id"] for a in body["apps"]] == [APP_ID]
        async with session.post(server.url + f"/dashboard/api/{APP_ID}/trigger",
                                data={"channel": "news", "event": "x"}) as response:
            assert response.status == 415  # no cross-site form posts
        async with session.post(server.url + f"/dashboard/api/{APP_ID}/trigger",
                                json={"channel": "bad name!", "event": "x"}) as response:
            assert response.status == 400
        async with session.get(server.url + "/dashboard/api/nope/channels") as response:
            assert response.status == 404
        async with session.get(server.url + "/dashboard/static/app.js") as response:
            assert response.status == 200


async def test_samples_are_taken_at_start_and_every_interval() -> None:
    app = AppConfig(id=APP_ID, key=KEY, secret=SECRET)
    timers = ManualScheduler()
    dashboard = Dashboard(Settings(apps=(app,)), Hub(), PASSWORD, sample_interval=1.0,
                          wall_clock=lambda: WALL_TIME, scheduler=timers)
    await dashboard.start()
    await timers.advance(0.5)
    assert len(dashboard._samples[APP_ID]) == 1
    await timers.advance(0.5)
    await timers.advance(1.0)
    await dashboard.close()
    assert list(dashboard._samples[APP_ID]) == [
        {"time": WALL_TIME, "connections": 0, "messages": 0}] * 3


def test_event_log_is_bounded_and_polled_by_sequence() -> None:
    app = AppConfig(id=APP_ID, key=KEY, secret=SECRET)
    dashboard = Dashboard(Settings(apps=(app,)), Hub(), PASSWORD)
    for i in range(600):
        dashboard.channel_event(app, {"name": "client_event", "channel": "c", "event": str(i)})
    events = list(dashboard._events[APP_ID])
    assert len(events) == 500
    assert events[-1]["event"] == "599"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


# -- login throttling, sessions, query values ------------------------------------------------

WALL_TIME = 1_700_000_000.0
"""The unix time of the dashboards ``make_dashboard`` makes: what their event log stamps."""

LOGIN_PAGE_STATUS = {"right": 303, "wrong": 401, "locked": 429}


class DashboardClient:
    """A dashboard on a real aiohttp test server, with its clock in the test's hand."""

    def __init__(self, client: TestClient, clock: FakeClock, hub: Hub) -> None:
        self.client = client
        self.clock = clock
        self.hub = hub

    async def login(self, password: str, local_address: str = "127.0.0.1"
                    ) -> aiohttp.ClientResponse:
        """POST the login form from ``local_address`` (any of 127.0.0.0/8), not following
        the redirect; the body is read."""
        connector = aiohttp.TCPConnector(local_addr=(local_address, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            response = await session.post(self.client.make_url("/dashboard/login"),
                                          data={"password": password}, allow_redirects=False)
            await response.read()
            return response

    async def get(self, path: str, session: str | None) -> aiohttp.ClientResponse:
        cookies = {COOKIE: session} if session is not None else None
        response = await self.client.get(path, cookies=cookies)
        await response.read()
        return response

    async def trigger(self, session: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST the test-event form's JSON; the status and the JSON answer."""
        response = await self.client.post(f"/dashboard/api/{APP_ID}/trigger", json=body,
                                          cookies={COOKIE: session})
        return response.status, await response.json()


@pytest.fixture
def make_dashboard(aiohttp_client: Any) -> Any:
    async def make(throttle: FailureThrottle | None = None,
                   server: ServerConfig | None = None) -> DashboardClient:
        clock = FakeClock()
        settings = Settings(server=server or ServerConfig(),
                            apps=(AppConfig(id=APP_ID, key=KEY, secret=SECRET),))
        dashboard = Dashboard(settings, None, PASSWORD, clock=clock, throttle=throttle,
                              wall_clock=lambda: WALL_TIME)
        hub = dashboard.hub = Hub(listeners=[dashboard])
        app = web.Application(middlewares=[json_errors])  # as server.py builds it
        app.add_routes(dashboard.routes())
        return DashboardClient(await aiohttp_client(app), clock, hub)

    return make


def session_of(response: aiohttp.ClientResponse) -> str:
    return response.cookies[COOKIE].value


async def test_trigger_refuses_reserved_pusher_internal_event_names_as_the_api_does(
    make_dashboard: Any
) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    answer = await dashboard.trigger(session, {"channel": "news",
                                               "event": "pusher_internal:member_added"})
    assert answer == (400, {"error": "Event names starting with pusher_internal: are reserved",
                            "code": 400})
    assert dashboard.hub.counters(APP_ID).api_messages == 0


async def test_trigger_refuses_data_over_the_form_cap_with_the_apis_413(
    make_dashboard: Any
) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    answer = await dashboard.trigger(session, {"channel": "news", "event": "hello",
                                               "data": "x" * 10241})
    assert answer == (413, {"error": "The data content of this event exceeds the allowed "
                                     "maximum (10240 bytes): it is 10241 bytes", "code": 413})


async def test_trigger_publishes_and_logs_the_event_with_its_source(make_dashboard: Any
                                                                    ) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    answer = await dashboard.trigger(session, {"channel": "news", "event": "hello",
                                               "data": {"a": 1}})
    events = await dashboard.get(f"/dashboard/api/{APP_ID}/events", session)
    assert answer == (200, {"ok": True})
    assert dashboard.hub.counters(APP_ID).api_messages == 1
    assert (await events.json())["events"] == [
        {"seq": 1, "time": WALL_TIME, "name": "api_message", "channel": "news",
         "event": "hello", "data": '{"a":1}', "source": "dashboard"},
    ]


async def test_concurrent_wrong_passwords_are_evaluated_only_until_the_address_is_locked(
    make_dashboard: Any
) -> None:
    dashboard = await make_dashboard()
    async with asyncio.timeout(60):
        answers = await asyncio.gather(*(dashboard.login("guess") for _ in range(400)))
    statuses = [response.status for response in answers]
    # Five guesses were compared with the password; the other 395 were refused unread.
    assert (statuses.count(401), statuses.count(429)) == (5, 395)
    assert {r.headers["Retry-After"] for r in answers if r.status == 429} == {"1"}


async def test_backoff_doubles_per_failure_and_the_right_password_waits_too(
    make_dashboard: Any
) -> None:
    dashboard = await make_dashboard()
    for _ in range(5):
        assert (await dashboard.login("guess")).status == 401
    locked = await dashboard.login(PASSWORD)
    assert (locked.status, locked.headers["Retry-After"]) == (429, "1")
    assert "Too many failed logins: try again in 1 s." in await locked.text()
    dashboard.clock.advance(1)
    assert (await dashboard.login("guess")).status == 401
    assert (await dashboard.login(PASSWORD)).headers["Retry-After"] == "2"
    dashboard.clock.advance(2)
    assert (await dashboard.login(PASSWORD)).status == 303
    assert (await dashboard.login("guess")).status == 401  # success ended the backoff


async def test_one_address_failing_does_not_lock_out_another(make_dashboard: Any) -> None:
    dashboard = await make_dashboard()
    for _ in range(6):
        await dashboard.login("guess", "127.0.0.2")
    assert (await dashboard.login("guess", "127.0.0.2")).status == 429
    assert (await dashboard.login(PASSWORD, "127.0.0.3")).status == 303


async def test_failures_from_many_addresses_lock_every_address(make_dashboard: Any) -> None:
    dashboard = await make_dashboard(FailureThrottle(overall=3, overall_window=60))
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert (await dashboard.login("guess", address)).status == 401
    locked = await dashboard.login(PASSWORD, "127.0.0.5")
    assert (locked.status, locked.headers["Retry-After"]) == (429, "60")
    dashboard.clock.advance(60)
    assert (await dashboard.login(PASSWORD, "127.0.0.5")).status == 303


async def test_logout_revokes_the_session_on_the_server(make_dashboard: Any) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    assert (await dashboard.get("/dashboard/api/apps", session)).status == 200
    response = await dashboard.client.post("/dashboard/logout", cookies={COOKIE: session},
                                           allow_redirects=False)
    assert response.status == 303
    stale = await dashboard.get("/dashboard/api/apps", session)
    assert (stale.status, await stale.json()) == (
        401, {"error": "Log in to the dashboard first", "code": 401}
    )


async def test_a_session_ends_after_its_lifetime(make_dashboard: Any) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    dashboard.clock.advance(SESSION_SECONDS - 1)
    assert (await dashboard.get("/dashboard/api/apps", session)).status == 200
    dashboard.clock.advance(1)
    assert (await dashboard.get("/dashboard/api/apps", session)).status == 401


async def test_the_session_cookie_is_secure_only_when_configured_or_over_tls(
    make_dashboard: Any
) -> None:
    plain = await make_dashboard()
    assert not (await plain.login(PASSWORD)).cookies[COOKIE]["secure"]
    behind_proxy = await make_dashboard(server=ServerConfig(dashboard_cookie_secure=True))
    cookie = (await behind_proxy.login(PASSWORD)).cookies[COOKIE]
    assert (cookie["secure"], cookie["httponly"], cookie["samesite"]) == (True, True, "Strict")


async def test_the_session_cookie_is_secure_when_the_server_serves_tls_itself(
    certificate: tuple[Path, Path]
) -> None:
    settings = Settings(server=ServerConfig(dashboard_password=PASSWORD),
                        apps=(AppConfig(id=APP_ID, key=KEY, secret=SECRET),))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    runner = await listen(create_app(settings), "127.0.0.1", 0, context)
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"https://{host}:{port}/dashboard/login", data={"password": PASSWORD},
            allow_redirects=False, ssl=False,
        ) as response:
            assert response.status == 303
            assert response.cookies[COOKIE]["secure"] is True
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("after", ["²", "٣", "-1", "1e3", "", " 1", "9" * 19, "9" * 5000])
async def test_events_after_anything_but_a_sequence_number_is_400(
    make_dashboard: Any, after: str
) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    response = await dashboard.client.get(f"/dashboard/api/{APP_ID}/events",
                                          params={"after": after}, cookies={COOKIE: session})
    assert (response.status, await response.json()) == (400, {
        "error": "after must be an event sequence number (1 to 18 digits 0-9)", "code": 400,
    })


async def test_events_after_a_sequence_number_lists_the_later_ones(make_dashboard: Any) -> None:
    dashboard = await make_dashboard()
    session = session_of(await dashboard.login(PASSWORD))
    response = await dashboard.get(f"/dashboard/api/{APP_ID}/events?after={'9' * 18}", session)
    assert (response.status, await response.json()) == (200, {"events": []})


def test_sessions_are_bounded_and_the_oldest_ends_first() -> None:
    sessions = Sessions(lifetime=60, capacity=2)
    first, second, third = (sessions.create(now) for now in (1.0, 2.0, 3.0))
    assert [sessions.valid(t, 4.0) for t in (first, second, third)] == [False, True, True]
    assert len(sessions) == 2


def test_expired_sessions_are_dropped_when_a_new_one_starts() -> None:
    sessions = Sessions(lifetime=60, capacity=MAX_SESSIONS)
    sessions.create(0.0)
    sessions.create(30.0)
    sessions.create(61.0)
    assert len(sessions) == 2


def test_dashboard_cookie_secure_is_read_from_the_server_section(tmp_path: Path) -> None:
    path = tmp_path / "pusher-compat.toml"
    path.write_text('[server]\ndashboard_password = "pw"\ndashboard_cookie_secure = true\n')
    assert load_settings(path, env={}).server.dashboard_cookie_secure is True
    path.write_text('[server]\ndashboard_cookie_secure = "yes"\n')
    with pytest.raises(ConfigError, match=r"server\.dashboard_cookie_secure must be bool"):
        load_settings(path, env={})
