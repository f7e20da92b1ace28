"""The copy-ready examples under clients/, each run (or, where nothing can run it, checked).

* ``clients/python/trigger.py`` and ``clients/node/trigger.mjs`` trigger against a real
  server; a :mod:`pusher_compat.client` subscriber must receive the event.
* ``clients/chat.html``: two Chromium pages chat through client events on a private channel
  signed by the server's ``/broadcasting/auth``; a backend message arrives through the SDK.
* Laravel: ``.env.example`` keys are exactly what ``config/broadcasting.php`` and
  ``resources/js/echo.js`` read; ``php -l`` and an evaluation of the config with a stub
  ``env()`` when ``php`` is installed; ``echo.js`` itself runs under Node (Vite's
  ``import.meta.env`` filled from ``.env.example``) and receives a Laravel-style event.
* React/Vue components: no JSX or Vue compiler is installed (node_modules has only the
  Pusher clients), so the JSX file gets textual checks of the Echo calls it makes and
  balanced brackets; the Vue file's ``<script setup>`` is syntax-checked by ``node --check``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
import test_browser
from conftest import ROOT, ServerProcess, python_sdk
from playwright.sync_api import Browser, expect

from pusher_compat.client import connect

CLIENTS = ROOT / "clients"
LARAVEL = CLIENTS / "laravel"

# The browser fixtures of test_browser.py, shared: headless Chromium and a static origin
# serving /clients and /node_modules.
browser = test_browser.browser
static_origin = test_browser.static_origin


def pusher_env(server: ServerProcess, **overrides: str) -> dict[str, str]:
    return {**os.environ, "PUSHER_APP_ID": server.app_id, "PUSHER_APP_KEY": server.key,
            "PUSHER_APP_SECRET": server.secret, "PUSHER_HOST": server.host,
            "PUSHER_PORT": str(server.port), "PUSHER_SCHEME": "http", **overrides}


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- trigger scripts -------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["python", "node"])
async def test_trigger_script_reaches_a_subscriber(script: str, server: ServerProcess) -> None:
    if script == "python":
        argv = [sys.executable, str(CLIENTS / "python" / "trigger.py")]
    else:
        node = shutil.which("node")
        assert node, "node is required (see README: npm ci)"
        argv = [node, str(CLIENTS / "node" / "trigger.mjs")]
    async with connect(server.url, server.key) as client:
        await client.subscribe("private-orders.17",
                               auth=client.sign_private("private-orders.17", server.secret))
        code, out, err = await run(*argv, "private-orders.17", "order-shipped",
                                   '{"id": 17, "by": "script"}', env=pusher_env(server))
        assert code == 0, err
        answer = json.loads(out.strip().splitlines()[-1])
        assert answer == ({} if script == "python" else {"status": 200, "body": {}})
        event = await client.next_event(channel="private-orders.17", timeout=5)
        assert (event.event, event.data) == ("order-shipped", {"id": 17, "by": "script"})

        # The defaults: channel orders, event order-shipped, {"id": 17}.
        await client.subscribe("orders")
        code, _, err = await run(*argv, env=pusher_env(server))
        assert code == 0, err
        event = await client.next_event(channel="orders", timeout=5)
        assert (event.event, event.data) == ("order-shipped", {"id": 17})

    # A wrong secret: the server refuses (401), the script says so and exits 1.
    code, out, err = await run(*argv, env=pusher_env(server, PUSHER_APP_SECRET="wrong"))
    assert code == 1, (out, err)
    assert "trigger failed" in err


# -- the plain pusher-js chat page -----------------------------------------------------------

JWT_SECRET = "chat-page-jwt-secret-long-enough-for-hs256"


def chat_config(origin: str) -> str:
    return f"""
[[apps]]
id = "{ServerProcess.app_id}"
key = "{ServerProcess.key}"
secret = "{ServerProcess.secret}"

[auth]
jwt_secret = "{JWT_SECRET}"
allowed_origins = ["{origin}"]

[[auth.rules]]
pattern = "chat.{{room}}"
types = ["private"]
"""


def chat_url(origin: str, server: ServerProcess, sub: str, name: str, room: str) -> str:
    now = int(time.time())
    token = jwt.encode({"sub": sub, "iat": now, "exp": now + 300}, JWT_SECRET, algorithm="HS256")
    return (f"{origin}/clients/chat.html?host={server.host}&port={server.port}"
            f"&key={server.key}&room={room}&name={name}#token={token}")


def test_chat_page_in_two_browsers(server_factory: Callable[..., ServerProcess],
                                   static_origin: str, browser: Browser) -> None:
    server = server_factory(chat_config(static_origin))
    log: list[str] = []
    with test_browser.console_on_failure(log):
        ann = test_browser.open_page(browser, chat_url(static_origin, server, "1", "Ann",
                                                       "lobby"), log)
        bob = test_browser.open_page(browser, chat_url(static_origin, server, "2", "Bob",
                                                       "lobby"), log)
        for page in (ann, bob):
            expect(page.locator("#status")).to_have_text("connected")
            expect(page.locator("#send")).to_be_enabled()

        ann.fill("#text", "hello Bob")
        ann.click("#send")
        expect(bob.locator("#messages li")).to_have_text(["Ann: hello Bob"])
        expect(ann.locator("#messages li")).to_have_text(["You: hello Bob"])
        expect(ann.locator("#text")).to_have_value("")

        bob.fill("#text", "hi Ann")
        bob.press("#text", "Enter")
        expect(ann.locator("#messages li")).to_have_text(["You: hello Bob", "Bob: hi Ann"])

        # A backend message through the HTTP API reaches both pages.
        sdk = python_sdk(server)
        sdk.trigger("private-chat.lobby", "message", {"name": "Bot", "text": "welcome"})
        expect(bob.locator("#messages li.server")).to_have_text(["Bot: welcome"])
        expect(ann.locator("#messages li.server")).to_have_text(["Bot: welcome"])
        for page in (ann, bob):
            expect(page.locator("#error")).to_have_text("")
    assert not [line for line in log if line.startswith("[pageerror]")], "\n".join(log)


def test_chat_page_without_a_valid_token_cannot_join(
        server_factory: Callable[..., ServerProcess], static_origin: str,
        browser: Browser) -> None:
    server = server_factory(chat_config(static_origin))
    log: list[str] = []
    url = chat_url(static_origin, server, "1", "Ann", "lobby").replace("token=", "token=x")
    with test_browser.console_on_failure(log):
        page = test_browser.open_page(browser, url, log)
        expect(page.locator("#status")).to_have_text("connected")
        expect(page.locator("#error")).to_contain_text("Could not join lobby")
        expect(page.locator("#send")).to_be_disabled()


# -- Laravel ---------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """A .env as Laravel (vlucas/phpdotenv) reads it: quotes stripped, ${VAR} expanded."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"bad .env line: {line}"
        value = value.strip()
        if value[:1] == '"':
            value = value[1:value.index('"', 1)]
        else:
            value = value.split(" #", 1)[0].strip()
        values[name] = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], value)
    return values


def php_env_names() -> set[str]:
    return set(re.findall(r"env\('([A-Z0-9_]+)'", (LARAVEL / "config/broadcasting.php")
                          .read_text()))


def vite_names() -> set[str]:
    return set(re.findall(r"import\.meta\.env\.(VITE_\w+)",
                          (LARAVEL / "resources/js/echo.js").read_text()))


def test_laravel_env_keys_match_what_the_config_reads() -> None:
    env = read_dotenv(LARAVEL / ".env.example")
    read = php_env_names()
    # Every variable the config reads is set (BROADCAST_DRIVER: the pre-11 fallback name).
    assert read - {"BROADCAST_DRIVER"} <= set(env), read - set(env)
    # Every PUSHER_/REVERB_ line is read by the config; every VITE_ line by echo.js.
    server_side = {k for k in env if k.startswith(("PUSHER_", "REVERB_"))}
    assert server_side <= read, server_side - read
    assert {k for k in env if k.startswith("VITE_")} == vite_names()
    assert env["BROADCAST_CONNECTION"] == "pusher"
    assert env["VITE_PUSHER_APP_KEY"] == env["PUSHER_APP_KEY"]
    for prefix in ("PUSHER_APP", "REVERB_APP"):
        assert env[f"{prefix}_ID"].isdigit(), "the Python SDK accepts numeric app ids only"
    assert {env["PUSHER_PORT"], env["REVERB_PORT"]} == {"6001"}


PHP = shutil.which("php")


@pytest.mark.skipif(PHP is None, reason="php is not installed (apt-get install php-cli): "
                    "broadcasting.php checked by the key comparison only")
def test_laravel_broadcasting_php_lints_and_evaluates(tmp_path: Path) -> None:
    assert PHP is not None
    config = LARAVEL / "config/broadcasting.php"
    lint = subprocess.run([PHP, "-l", str(config)], capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    env = read_dotenv(LARAVEL / ".env.example")
    (tmp_path / "env.json").write_text(json.dumps(env))
    # Laravel's env() helper, minus its casts we do not rely on; then the file as Laravel
    # loads it (`return [...]`), dumped as JSON.
    (tmp_path / "eval.php").write_text(f"""<?php
$ENV = json_decode(file_get_contents({json.dumps(str(tmp_path / 'env.json'))}), true);
function env($key, $default = null) {{ global $ENV; return $ENV[$key] ?? $default; }}
echo json_encode(require {json.dumps(str(config))});
""")
    result = subprocess.run([PHP, str(tmp_path / "eval.php")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["default"] == "pusher"
    connections = loaded["connections"]
    assert connections["pusher"]["driver"] == "pusher"
    assert connections["reverb"]["driver"] == "reverb"
    for name in ("pusher", "reverb"):
        connection = connections[name]
        assert (connection["key"], connection["secret"], connection["app_id"]) == (
            "app-key", "app-secret", "1001")
        options = connection["options"]
        assert (options["host"], str(options["port"]), options["scheme"]) == (
            "127.0.0.1", "6001", "http")
        assert options["useTLS"] is False


ECHO_WRAPPER = """
globalThis.window = globalThis;
globalThis.__viteEnv = JSON.parse(process.env.VITE_ENV);
await import('./echo.js');
const received = [];
let subscribed = false;
window.Echo.channel('orders')
  .subscribed(() => { subscribed = true; console.log(JSON.stringify({ subscribed })); })
  .listen('OrderShipped', (event) => {
    console.log(JSON.stringify({ event }));
    window.Echo.disconnect();
    process.exit(0);
  });
setTimeout(() => { console.error('timed out, subscribed=' + subscribed); process.exit(2); },
           15000);
"""


async def test_laravel_echo_js_runs_and_receives_an_event(
        server: ServerProcess, node: str, tmp_path: Path) -> None:
    source = (LARAVEL / "resources/js/echo.js").read_text()
    assert "import.meta.env" in source
    (tmp_path / "echo.js").write_text(source.replace("import.meta.env", "globalThis.__viteEnv"))
    (tmp_path / "main.mjs").write_text(ECHO_WRAPPER)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules")
    env = read_dotenv(LARAVEL / ".env.example")
    vite = {k: v for k, v in env.items() if k.startswith("VITE_")}
    vite.update(VITE_PUSHER_HOST=server.host, VITE_PUSHER_PORT=str(server.port))
    process = await asyncio.create_subprocess_exec(
        node, "main.mjs", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "VITE_ENV": json.dumps(vite)})
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert json.loads(line or b"{}") == {"subscribed": True}, line
        # What `event(new OrderShipped($order))` sends through the pusher driver.
        sdk = python_sdk(server)
        await asyncio.to_thread(sdk.trigger, "orders", "App\\Events\\OrderShipped",
                                {"order": {"id": 17}})
        out, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1]) == {
        "event": {"order": {"id": 17}}}


# -- React and Vue components ----------------------------------------------------------------

ECHO_CALLS = [r"\.join\(", r"\.here\(", r"\.joining\(", r"\.leaving\(", r"\.error\(",
              r"\.listen\('MessageSent'", r"\.listenForWhisper\('typing'",
              r"\.whisper\('typing'", r"\.leave\("]


def strip_strings_and_comments(code: str) -> str:
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.DOTALL)
    return re.sub(r"'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`", "''", code)


def balanced(code: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in strip_strings_and_comments(code):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_balance_check_catches_a_missing_brace() -> None:
    assert balanced("f(() => { a[1]; })")
    assert not balanced("f(() => { a[1]; )")
    assert balanced("x = '}'; // )")


def test_react_component_makes_the_echo_calls() -> None:
    code = (CLIENTS / "react" / "PresenceChannel.jsx").read_text()
    assert code.lstrip().startswith("//"), "a header comment says how to use it"
    assert re.search(r"^import \{[^}]*useEffect[^}]*\} from 'react';", code, re.MULTILINE)
    assert re.search(r"^export default function PresenceChannel\(", code, re.MULTILINE)
    body = strip_strings_and_comments(code)
    for call in ECHO_CALLS:
        assert re.search(call, code), f"no {call} in the React component"
    # Subscribes in an effect and leaves in its cleanup.
    effect = body[body.index("useEffect("):]
    assert re.search(r"return \(\) => \{[^}]*echo\.leave\(name\)", effect)
    assert balanced(code)


def test_vue_component_script_parses_and_makes_the_echo_calls(node: str,
                                                               tmp_path: Path) -> None:
    code = (CLIENTS / "vue" / "PresenceChannel.vue").read_text()
    assert code.lstrip().startswith("<!--"), "a header comment says how to use it"
    template = re.search(r"<template>(.*)</template>", code, re.DOTALL)
    script = re.search(r"<script setup>(.*?)</script>", code, re.DOTALL)
    assert template and script
    for call in ECHO_CALLS:
        assert re.search(call, script.group(1)), f"no {call} in the Vue component"
    assert "onBeforeUnmount" in script.group(1) and "onMounted" in script.group(1)
    # Every name the template uses is defined by the script.
    for name in ("members", "messages", "typing", "error", "whisperTyping"):
        assert name in template.group(1) and re.search(rf"\b(const|function) {name}\b",
                                                       script.group(1)), name
    module = tmp_path / "script.mjs"
    module.write_text(script.group(1))
    result = subprocess.run([node, "--check", str(module)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    module.write_text(script.group(1).replace("onMounted(() => {", "onMounted(() => {{", 1))
    broken = subprocess.run([node, "--check", str(module)], capture_output=True, text=True,
                            timeout=30)
    assert broken.returncode != 0, "node --check accepts a broken script"


def test_every_example_starts_with_how_to_use_it() -> None:
    headers = {"chat.html": "<!doctype html>\n<!--", "chat.js": "//",
               "python/trigger.py": "#!/usr/bin/env python3\n\"\"\"",
               "node/trigger.mjs": "//", "laravel/.env.example": "#",
               "laravel/config/broadcasting.php": "<?php\n\n/*",
               "laravel/resources/js/echo.js": "//"}
    for name, start in headers.items():
        assert (CLIENTS / name).read_text().startswith(start), name
