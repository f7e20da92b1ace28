"""Shared fixtures: a real server process, and Node scripts that drive it with real clients."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pusher
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import GatewayTestServer, RawSocket, Receiver

from pusher_compat.config import load_settings
from pusher_compat.server import create_app

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"

DEFAULT_CONFIG = """
[server]
activity_timeout = 30

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
client_events = true

[[apps]]
id = "disabled-id"
key = "disabled-key"
secret = "disabled-secret"
enabled = false
"""


def webhook_config(url: str, event_types: str, server: str = "", app: str = "") -> str:
    """The config of the default test app ``1001`` posting webhooks of ``event_types`` (a
    TOML list) to ``url``; ``server`` holds the lines of ``[server]``, ``app`` more lines of
    the app."""
    return f"""
[server]
{server}

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
{app}

[[apps.webhooks]]
url = "{url}"
event_types = {event_types}
"""


_LISTEN_RE = re.compile(r"listening on https?://[^:]+:(\d+)")


@dataclass
class ServerAddress:
    """Where a server with the default test apps listens on loopback, and the app the
    clients use: what the SDK, Node and PHP helpers need of a server."""

    port: int

    host = "127.0.0.1"
    app_id = "1001"
    key = "app-key"
    secret = "app-secret"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(
        self, key: str | None = None, query: str = "protocol=7&client=js&version=8.6.0"
    ) -> str:
        return f"ws://{self.host}:{self.port}/app/{key or self.key}?{query}"


@dataclass
class ServerProcess(ServerAddress):
    """A ``pusher-compat serve`` child process listening on a free loopback port."""

    process: subprocess.Popen[str]
    log: list[str]

    def rss_kib(self) -> int:
        """Resident memory of the server process now (``VmRSS``), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:"))
                   .split()[1])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit code; after ``timeout`` seconds, kill (-9).
        The default outlasts the server's own bounded shutdown (drain, then at most 10 s for
        closing sockets and 10 s for requests), so a slow machine is not mistaken for a hang;
        a kill prints the log's tail, which the failing test's report then shows."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                print(f"killed after {timeout} s; the server's last lines:\n"
                      + "".join(self.log[-30:]), file=sys.stderr)
        return self.process.returncode


def start_server(config_text: str, tmp_path: Path, *extra: str,
                 open_files: int | None = None, ready: str = "") -> ServerProcess:
    """Start the server on port 0 and wait until it logs the port it took (on a line holding
    ``ready`` too: a supervisor's line, not its first worker's). ``open_files``: the child's
    own RLIMIT_NOFILE (soft and hard), ours untouched."""
    config = tmp_path / "pusher-compat.toml"
    config.write_text(textwrap.dedent(config_text))

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    process = subprocess.Popen(
        [sys.executable, "-m", "pusher_compat", "serve", "--host", "127.0.0.1", "--port", "0",
         "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_open_files if open_files is not None else None,
    )
    assert process.stdout is not None
    log: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        log.append(line)
        match = _LISTEN_RE.search(line)
        if match and ready in line:
            server = ServerProcess(port=int(match.group(1)), process=process, log=log)
            _drain(process, log)
            return server
    process.kill()
    raise RuntimeError("server did not start:\n" + "".join(log))


def _drain(process: subprocess.Popen[str], log: list[str]) -> None:
    """Keep reading the child's output so it never blocks on a full pipe."""
    import threading

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)

    threading.Thread(target=pump, daemon=True).start()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with a given TOML config; all are stopped after the test."""
    started: list[ServerProcess] = []

    def factory(config_text: str = DEFAULT_CONFIG, *extra: str,
                open_files: int | None = None) -> ServerProcess:
        sub = tmp_path / f"server{len(started)}"
        sub.mkdir()
        server = start_server(config_text, sub, *extra, open_files=open_files)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A server with the default test apps: ``1001``/``app-key``/``app-secret`` (numeric id:
    the Python SDK refuses any other) and the disabled ``disabled-key``."""
    return server_factory()


def module_server(config_text: str = DEFAULT_CONFIG) -> Callable[..., Iterator[ServerProcess]]:
    """A module-scoped fixture: one server with ``config_text`` for all the tests of a module
    (``server = module_server()``), for tests that only read from it: each must use
    channels, users and sockets of its own, so none sees what another did."""

    @pytest.fixture(scope="module")
    def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
        server = start_server(config_text, tmp_path_factory.mktemp("module-server"))
        yield server
        server.stop()

    return shared


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[GatewayTestServer]:
    """The default test apps served in this process through the real listener: the same
    transport, gateway and routes as :func:`server`, without starting a process."""
    config = tmp_path / "served.toml"
    config.write_text(DEFAULT_CONFIG)
    async with GatewayTestServer(create_app(load_settings(config, env={}))) as test_server:
        yield test_server


@pytest.fixture
def served_address(served: GatewayTestServer) -> ServerAddress:
    """:func:`served` for the helpers written for :func:`server` (SDKs, Node scripts): the
    same apps in this process, for tests that need no process of their own."""
    return ServerAddress(served.port)


@pytest.fixture
async def raw(served: GatewayTestServer) -> AsyncIterator[RawSocket]:
    """A raw TCP client of :func:`served`."""
    client = await RawSocket.connect(served.host, served.port)
    yield client
    client.writer.close()


@pytest.fixture(scope="session")
def node() -> str:
    """Path to ``node`` with the pinned npm clients installed (``npm ci``)."""
    exe = shutil.which("node")
    if exe is None or not (ROOT / "node_modules").is_dir():
        pytest.fail("node and the npm clients are required: run `npm ci` in the project root")
    return exe


def run_node(
    node: str, server: ServerAddress, script: str, *args: str, timeout: float = 60,
    env: dict[str, str] | None = None,
) -> dict:
    """Run ``tests/node/<script>`` against ``server``; return its last stdout line as JSON.

    Scripts read the server address from ``PUSHER_HOST``/``PUSHER_PORT`` and the app from
    ``PUSHER_APP_ID``/``PUSHER_APP_KEY``/``PUSHER_APP_SECRET``, and print one JSON object.
    """
    result = subprocess.run(
        [node, str(NODE_DIR / script), *args],
        capture_output=True, text=True, timeout=timeout, env=_client_env(server, env), cwd=ROOT,
    )
    assert result.returncode == 0, (
        f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
        + ("".join(server.log[-30:]) if isinstance(server, ServerProcess) else "")
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing; stderr:\n{result.stderr}"
    return json.loads(lines[-1])


def _client_env(server: ServerAddress, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client script: the server address and the app it uses."""
    return {
        **os.environ,
        "PUSHER_HOST": server.host,
        "PUSHER_PORT": str(server.port),
        "PUSHER_APP_ID": server.app_id,
        "PUSHER_APP_KEY": server.key,
        "PUSHER_APP_SECRET": server.secret,
        **(env or {}),
    }


@pytest.fixture(scope="session")
def php_sdk() -> str:
    """``php`` with the official PHP SDK at ``$PUSHER_PHP_SDK`` (``.ci/run`` sets it)."""
    exe = shutil.which("php")
    sdk = os.environ.get("PUSHER_PHP_SDK")
    if not sdk:
        pytest.skip("PUSHER_PHP_SDK is not set: no pusher-php-server to test with")
    if not (Path(sdk) / "src" / "Pusher.php").is_file():
        pytest.fail(f"PUSHER_PHP_SDK={sdk} holds no src/Pusher.php (pusher-php-server)")
    if exe is None:
        pytest.fail("php is required with PUSHER_PHP_SDK: apt-get install php-cli php-curl "
                    "php-guzzlehttp-guzzle php-psr-log")
    return exe


def run_php(php: str, server: ServerAddress, method: str, *args: object,
            timeout: float = 60) -> dict:
    """Call ``Pusher\\Pusher::<method>(*args)`` of the PHP SDK against ``server`` through
    ``tests/php/trigger.php``; return its JSON line (``result``, or ``error`` and ``status``)."""
    result = subprocess.run(
        [php, str(ROOT / "tests" / "php" / "trigger.php"), method, json.dumps(args)],
        capture_output=True, text=True, timeout=timeout, env=_client_env(server), cwd=ROOT,
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"trigger.php printed nothing ({result.returncode}); stderr:\n{result.stderr}"
    return json.loads(lines[-1])


def python_sdk(server: ServerAddress, **options: Any) -> pusher.Pusher:
    """The official Python SDK configured for ``server``'s app (``options``: more of its
    constructor's arguments, e.g. an encryption master key)."""
    return pusher.Pusher(app_id=server.app_id, key=server.key, secret=server.secret,
                         host=server.host, port=server.port, ssl=False, **options)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pusher-compat test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, directory: Path, tls: tuple[Path, Path] | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is required: apt-get install -y redis-server (.ci/run does)")
        self.exe = exe
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.tls = tls
        """(certificate, key): serve TLS only, with this self-signed certificate."""

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls:
            cert, key = map(str, self.tls)
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert,
                      "--tls-key-file", key, "--tls-ca-cert-file", cert,
                      "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [self.exe, "--bind", "127.0.0.1", *listen, "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not listen within 10 s"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, stopped afterwards."""
    directory = tmp_path / "redis"
    directory.mkdir()
    redis = RedisServer(directory)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
async def receiver(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Receiver:
    """A webhook endpoint on a loopback port of the test's own loop."""
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recorder.handle)
    recorder.server = await aiohttp_server(app)
    return recorder
