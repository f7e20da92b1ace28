"""A real browser: clients/echo-presence.html in Debian's Chromium, driven by Playwright.

The page (Laravel Echo + pusher-js from their npm packages' browser builds) is served from a
small aiohttp static server on its own loopback port, so its calls to the pusher-compat
server's ``/broadcasting/auth`` are cross-origin and go through the CORS preflight that
``[auth] allowed_origins`` answers. Two browser contexts log in as Ann and Bob with JWTs,
join one presence room, and exchange a server event, a whisper and a departure.

The screenshot is saved as ``artifacts/browser-presence.png``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import jwt
import pytest
from aiohttp import web
from conftest import ROOT, ServerProcess, python_sdk
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "artifacts"
SCREENSHOT = ARTIFACTS / "browser-presence.png"
TIMEOUT_MS = 10_000

JWT_SECRET = "browser-jwt-secret-that-is-long-enough-for-hs256"
ROOM = "chat.lobby"


def config(origin: str) -> str:
    return f"""
[server]
activity_timeout = 30

[[apps]]
id = "{ServerProcess.app_id}"
key = "{ServerProcess.key}"
secret = "{ServerProcess.secret}"
client_events = true

[auth]
jwt_secret = "{JWT_SECRET}"
user_info_claims = ["name"]
allowed_origins = ["{origin}"]

[[auth.rules]]
pattern = "chat.{{room}}"
types = ["presence"]
"""


def mint(sub: str, name: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "name": name, "iat": now, "exp": now + 300}, JWT_SECRET,
                      algorithm="HS256")


@pytest.fixture
def static_origin() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` serving /clients/ and /node_modules/ from the repository,
    run by aiohttp on its own event loop in a thread (the test itself stays synchronous)."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_static("/clients", ROOT / "clients")
    app.router.add_static("/node_modules", ROOT / "node_modules")
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    host, port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def page_url(origin: str, server: ServerProcess, token: str) -> str:
    query = urlencode({"host": server.host, "port": server.port, "key": server.key,
                       "room": ROOM})
    return f"{origin}/clients/echo-presence.html?{query}#{urlencode({'token': token})}"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium; every ``expect()`` waits at most ``TIMEOUT_MS``."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        expect.set_options(timeout=None)  # back to Playwright's default


def open_page(browser: Browser, url: str, log: list[str]) -> Page:
    """``url`` in a new context (its own storage: one person per context), console logged."""
    page = browser.new_context(viewport={"width": 1000, "height": 640}).new_page()

    def on_console(message: ConsoleMessage) -> None:
        log.append(f"[{message.type}] {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: log.append(f"[pageerror] {error}"))
    page.goto(url)
    return page


@contextmanager
def console_on_failure(log: list[str]) -> Iterator[None]:
    """Add the pages' console output to an assertion that fails inside."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- browser console ---\n" + "\n".join(log)) from None


def test_two_browsers_share_a_presence_room(
    server_factory: Callable[..., ServerProcess], static_origin: str, browser: Browser
) -> None:
    server = server_factory(config(static_origin))
    sdk = python_sdk(server)
    log: list[str] = []

    with console_on_failure(log):
        ann = open_page(browser, page_url(static_origin, server, mint("ann", "Ann")), log)
        expect(ann.locator("#status")).to_have_text("connected")
        expect(ann.locator("#members li")).to_have_text(["Ann"])

        bob = open_page(browser, page_url(static_origin, server, mint("bob", "Bob")), log)
        expect(bob.locator("#members li")).to_have_text(["Ann", "Bob"])
        expect(ann.locator("#members li")).to_have_text(["Ann", "Bob"])
        # The member ids are the tokens' sub claims.
        ids = ann.locator("#members li").evaluate_all("items => items.map(li => li.dataset.userId)")
        assert ids == ["ann", "bob"]

        # A server event, triggered with the Python HTTP SDK, reaches both pages.
        sdk.trigger(f"presence-{ROOM}", "message", {"text": "hello from the server"})
        shown = '.message {"text":"hello from the server"}'
        expect(ann.locator("#events li")).to_have_text([shown])
        expect(bob.locator("#events li")).to_have_text([shown])

        # A whisper from Bob's page reaches Ann's, and is not echoed back to Bob.
        expect(bob.locator("#whisper-send")).to_be_enabled()
        bob.fill("#whisper-text", "hi Ann")
        bob.click("#whisper-send")
        expect(ann.locator("#whispers li")).to_have_text(["Bob: hi Ann"])
        expect(bob.locator("#whispers li")).to_have_text(["You: hi Ann"])
        expect(bob.locator("#whisper-text")).to_have_value("")

        # Bob closes his tab: the server sends member_removed, Echo's leaving() fires.
        bob.close()
        expect(ann.locator("#members li")).to_have_text(["Ann"])
        expect(ann.locator("#events li")).to_have_text([shown])
        expect(ann.locator("#error")).to_have_text("")

        ARTIFACTS.mkdir(exist_ok=True)
        ann.screenshot(path=str(SCREENSHOT), full_page=True)

    assert SCREENSHOT.is_file()
    assert SCREENSHOT.stat().st_size > 0
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [line for line in log if line.startswith("[pageerror]")], "\n".join(log)


def test_a_page_from_an_origin_not_allowed_cannot_join(
    server_factory: Callable[..., ServerProcess], static_origin: str, browser: Browser
) -> None:
    # allowed_origins names another origin: the browser's CORS preflight for
    # /broadcasting/auth is refused, so pusher-js never gets a signature.
    server = server_factory(config("http://app.example.com"))
    log: list[str] = []

    with console_on_failure(log):
        ann = open_page(browser, page_url(static_origin, server, mint("ann", "Ann")), log)
        expect(ann.locator("#status")).to_have_text("connected")
        expect(ann.locator("#error")).to_contain_text(f"Could not join {ROOM}")
        expect(ann.locator("#members li")).to_have_count(0)
        expect(ann.locator("#whisper-send")).to_be_disabled()
