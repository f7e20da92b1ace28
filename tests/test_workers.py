"""``serve --workers 2``: one supervisor, two worker processes on one port, one server.

Each test's server is a real supervisor with two real workers sharing state through a
``redis-server`` of the test's own. The kernel (``SO_REUSEPORT``) decides which worker takes a
connection, so the tests connect until each worker holds one, and tell the workers apart by
which process holds the server end of a connection (``/proc``, as ``ss -p`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, ROOT, RedisServer, ServerProcess, python_sdk, start_server

from pusher_compat.client import Client, ClientError, connect
from pusher_compat.config import ServerConfig, Settings
from pusher_compat.workers import restart_delay, worker_settings

LEASE = 1
"""node_lease_seconds: a killed worker's members are removed within LEASE * 1.25."""
READY = "with 2 workers"
"""In the supervisor's "listening on" line, logged once both workers listen."""


def workers_config(redis: RedisServer) -> str:
    return DEFAULT_CONFIG.replace("[server]", f"""[server]
workers = 2
adapter = "redis"
redis_url = "{redis.url}"
node_lease_seconds = {LEASE}
drain_seconds = 0.2
""")


def start_workers(redis: RedisServer, directory: Path) -> ServerProcess:
    return start_server(workers_config(redis), directory, ready=READY)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two workers for the tests that only read: each uses channels and users of its own."""
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    server = start_workers(redis, tmp_path_factory.mktemp("workers"))
    yield server
    server.stop()
    redis.stop()


@pytest.fixture
def supervised(tmp_path: Path, redis_server: RedisServer) -> Iterator[ServerProcess]:
    """Two workers of this test's own, for the tests that kill or stop them."""
    server = start_workers(redis_server, tmp_path)
    yield server
    server.stop()


def worker_pids(server: ServerProcess) -> set[int]:
    """The supervisor's children: its workers."""
    tasks = Path(f"/proc/{server.process.pid}/task")
    return {int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


def worker_holding(client: Client, pids: set[int]) -> int:
    """The worker whose socket's peer is ``client``'s end of the connection."""
    port = client.ws.get_extra_info("sockname")[1]
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                inodes.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                return pid
    raise AssertionError(f"no worker holds the connection from port {port}")


async def one_on_each_worker(stack: contextlib.AsyncExitStack, server: ServerProcess
                             ) -> list[Client]:
    """Connect until each worker holds one of the connections (the kernel picks at random:
    40 tries are all on one worker once in 2^39); the first client of each worker."""
    pids = worker_pids(server)
    assert len(pids) == 2, pids
    held: dict[int, Client] = {}
    for _ in range(40):
        client = await stack.enter_async_context(connect(server.url, server.key))
        held.setdefault(worker_holding(client, pids), client)
        if len(held) == len(pids):
            return list(held.values())
    raise AssertionError(f"every connection went to worker {list(held)}")


async def events_until(client: Client, channel: str, last: str) -> list[tuple[str, object]]:
    """``(event, data)`` of every event of ``channel`` up to the one named ``last``."""
    seen: list[tuple[str, object]] = []
    while not seen or seen[-1][0] != last:
        event = await client.next_event(channel, timeout=10)
        seen.append((event.event, event.data))
    return seen


# -- two workers are one server --------------------------------------------------------------


async def test_a_user_connected_to_both_workers_is_one_presence_member(
        shared: ServerProcess) -> None:
    api = python_sdk(shared)
    async with contextlib.AsyncExitStack() as stack:
        first, second = await one_on_each_worker(stack, shared)
        for client in (first, second):
            auth, data = client.sign_presence("presence-both", shared.secret, "7", {"n": "ann"})
            await client.subscribe("presence-both", auth=auth, channel_data=data)
        assert second.members["presence-both"] == {"7": {"n": "ann"}}
        for _ in range(4):  # each request is answered by either worker
            users = await asyncio.to_thread(api.users_info, "presence-both")
            assert users == {"users": [{"id": "7"}]}
            info = await asyncio.to_thread(api.channel_info, "presence-both", ["user_count"])
            assert info == {"occupied": True, "user_count": 1}


async def test_a_client_event_reaches_the_other_worker_once(shared: ServerProcess) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sender, receiver = await one_on_each_worker(stack, shared)
        for client in (sender, receiver):
            await client.subscribe("private-chat", auth=client.sign_private("private-chat",
                                                                            shared.secret))
        await sender.trigger("private-chat", "client-typing", {"who": "ann"})
        await sender.trigger("private-chat", "client-done", {})
        assert await events_until(receiver, "private-chat", "client-done") == [
            ("client-typing", {"who": "ann"}), ("client-done", {})]


async def test_an_api_event_reaches_the_clients_of_both_workers_once(
        shared: ServerProcess) -> None:
    api = python_sdk(shared)
    async with contextlib.AsyncExitStack() as stack:
        clients = await one_on_each_worker(stack, shared)
        for client in clients:
            await client.subscribe("orders")
        for n in range(3):
            await asyncio.to_thread(api.trigger, "orders", "shipped", {"n": n})
        await asyncio.to_thread(api.trigger, "orders", "done", {})
        for client in clients:
            assert await events_until(client, "orders", "done") == [
                ("shipped", {"n": 0}), ("shipped", {"n": 1}), ("shipped", {"n": 2}),
                ("done", {})]


async def test_the_channels_api_lists_the_channels_of_both_workers(
        shared: ServerProcess) -> None:
    api = python_sdk(shared)
    async with contextlib.AsyncExitStack() as stack:
        first, second = await one_on_each_worker(stack, shared)
        await first.subscribe("split-one")
        await second.subscribe("split-two")
        await second.subscribe("split-one")
        for _ in range(4):  # each request is answered by either worker
            answer = await asyncio.to_thread(api.channels_info, "split-",
                                             ["subscription_count"])
            assert answer == {"channels": {"split-one": {"subscription_count": 2},
                                           "split-two": {"subscription_count": 1}}}


# -- the supervisor ------------------------------------------------------------------------


async def test_a_killed_worker_is_replaced_and_its_members_removed(
        supervised: ServerProcess) -> None:
    async with contextlib.AsyncExitStack() as stack:
        staying, leaving = await one_on_each_worker(stack, supervised)
        for client, user in ((staying, "1"), (leaving, "2")):
            auth, data = client.sign_presence("presence-room", supervised.secret, user)
            await client.subscribe("presence-room", auth=auth, channel_data=data)
        await staying.next_event("presence-room", "pusher_internal:member_added")
        pids = worker_pids(supervised)
        killed = worker_holding(leaving, pids)
        os.kill(killed, signal.SIGKILL)
        gone = await staying.next_event("presence-room", "pusher_internal:member_removed",
                                        timeout=LEASE * 1.25 + 10)
        assert gone.data == {"user_id": "2"}
        assert staying.members["presence-room"] == {"1": None}
    deadline = time.monotonic() + 20
    while len(now := worker_pids(supervised)) < 2 or killed in now:
        assert time.monotonic() < deadline, f"no worker replaced {killed}: {now}"
        await asyncio.sleep(0.05)
    assert (pids - {killed}) < now
    assert any("worker was killed by SIGKILL" in line and f"pid={killed}" in line
               for line in supervised.log)


async def test_sigterm_drains_every_worker_then_the_supervisor_exits_0(
        supervised: ServerProcess) -> None:
    async with contextlib.AsyncExitStack() as stack:
        clients = await one_on_each_worker(stack, supervised)
        pids = worker_pids(supervised)
        assert await asyncio.to_thread(supervised.stop) == 0
        for client in clients:
            with pytest.raises(ClientError) as closed:
                await client.next_event("never", timeout=5)
            assert closed.value.code == 4200
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_workers_without_the_redis_adapter_is_an_error_at_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pusher_compat", "serve", "--workers", "2", "--port", "0"],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env={**os.environ})
    assert result.returncode == 2
    assert result.stderr == (
        "pusher-compat: configuration error: environment: server.workers = 2 needs the redis "
        "adapter, through which workers share channels, presence and events: set --adapter "
        "redis and --redis-url URL (or adapter and redis_url in [server])\n")


def test_a_crash_loop_is_restarted_ever_later_up_to_30_seconds() -> None:
    assert [restart_delay(n) for n in range(9)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_each_worker_has_a_metrics_port_and_statistics_file_of_its_own() -> None:
    settings = Settings(server=ServerConfig(metrics_port=9601, stats_path="/var/lib/stats.db",
                                            workers=2, adapter="redis"))
    second = worker_settings(settings, 2).server
    assert (second.metrics_port, second.stats_path) == (9602, "/var/lib/stats-worker2.db")
