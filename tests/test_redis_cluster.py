"""Three nodes on a Redis Cluster (``redis+cluster://``) behave as one Pusher app.

A three-shard Redis Cluster (three ``redis-server`` processes on free loopback ports, no
replicas) is shared by the module's tests and flushed before each, since forming one takes
seconds; the tests that stop it form their own. Each test starts three ``pusher-compat serve``
processes pointed at its cluster; the pusher-js fleet and the helpers of tests/test_cluster.py
drive them. The config lists another app first, whose bus lives on another shard than app
1001's: a node subscribes on the shard of its first app's bus, so app 1001's events reach the
nodes only if Redis Cluster carries them across shards.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_cluster
from conftest import ServerProcess, free_port
from helpers import Receiver
from redis.cluster import RedisCluster
from test_cluster import (
    Fleet,
    cluster_config,
    connected,
    sdk,
    start_cluster,
    until,
    with_webhooks_to,
)

from pusher_compat.adapters.redis import RedisAdapter
from pusher_compat.adapters.redis_keys import AppKeys, nodes_key
from pusher_compat.config import AppConfig
from pusher_compat.hub import Hub

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
"""The one app of the test that runs a node in process."""
KEYS = AppKeys("test", APP.id, "any-node")
"""Where that node keeps ``APP``'s keys: the hash tag, hence the shard, ignores the node."""
fleet, fleet_factory = test_cluster.fleet, test_cluster.fleet_factory
"""test_cluster's fixtures; ``fleet`` starts on this module's ``nodes``."""

SHARDS = 3
FIRST_APP = """
[[apps]]
id = "4001"
key = "first-key"
secret = "first-secret"
"""
"""Listed before app 1001, so each node's one subscription goes to this app's shard."""
CLUSTER_OUTAGE = 1.0
"""Seconds the cluster stays stopped in the outbox test: shorter than the about 2 s a restarted
cluster takes to be ``cluster_state:ok``, so node A is back before it is (its events must still
reach node B)."""


class RedisClusterServers:
    """Throw-away cluster-mode ``redis-server`` processes, one primary per shard, without
    persistence, on free loopback ports."""

    def __init__(self, directory: Path) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            pytest.fail("redis-server and redis-cli are required: apt-get install -y "
                        "redis-server (.ci/run does)")
        self.server, self.cli, self.directory = server, cli, directory
        ports: set[int] = set()
        while len(ports) < 2 * SHARDS:  # a client port and a cluster bus port per shard
            ports.add(free_port())
        free = list(ports)
        self.ports, self.bus_ports = free[:SHARDS], free[SHARDS:]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """What cluster_config puts in ``redis_url``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> None:
        """Start the servers; the first time, also make them one cluster (later they find
        each other again through their cluster config files)."""
        created = (self.directory / f"nodes-{self.ports[0]}.conf").exists()
        self.processes = [self._spawn(shard) for shard in range(SHARDS)]
        for port in self.ports:
            self._until(lambda port=port: self._cli(port, "PING") == "PONG", f"{port} up")
        if not created:
            done = subprocess.run(
                [self.cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=30, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
        for shard, port in enumerate(self.ports):
            self._until(lambda shard=shard: self.ok(shard), f"{port} in a healthy cluster")

    def restart_primary(self, shard: int) -> None:
        """Stop one primary and start it again; returns once it answers, while it still says
        ``cluster_state:fail`` (a restarted primary does for about 2 s)."""
        process = self.processes[shard]
        process.terminate()
        process.wait(10)
        self.processes[shard] = self._spawn(shard)
        port = self.ports[shard]
        self._until(lambda: self._cli(port, "PING") == "PONG", f"{port} up")

    def ok(self, shard: int) -> bool:
        """Whether the primary of ``shard`` reports ``cluster_state:ok``."""
        return "cluster_state:ok" in self._cli(self.ports[shard], "CLUSTER", "INFO")

    def _spawn(self, shard: int) -> subprocess.Popen[bytes]:
        """Start the primary of ``shard`` (it finds the cluster through its config file)."""
        port, bus_port = self.ports[shard], self.bus_ports[shard]
        return subprocess.Popen(
            [self.server, "--bind", "127.0.0.1", "--port", str(port),
             "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
             "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.directory / f"redis-{port}.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def shard_of(self, key: str) -> str:
        """The address of the primary that holds ``key``."""
        with RedisCluster(host="127.0.0.1", port=self.ports[0]) as client:
            return str(client.get_node_from_key(key).name)

    def flush(self) -> None:
        """Delete every key on every shard; the cluster's shape (slots, config) stays."""
        for port in self.ports:
            assert self._cli(port, "FLUSHALL") == "OK", f"FLUSHALL on {port}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _cli(self, port: int, *command: str) -> str:
        done = subprocess.run([self.cli, "-h", "127.0.0.1", "-p", str(port), *command],
                              capture_output=True, text=True, timeout=5, check=False)
        return done.stdout.strip()

    def _until(self, predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert all(p.poll() is None for p in self.processes), "a redis-server exited"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


def formed(directory: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster in ``directory``, stopped afterwards (also when starting it failed)."""
    cluster = RedisClusterServers(directory)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[RedisClusterServers]:
    """The module's Redis Cluster, for the tests that leave it running."""
    yield from formed(tmp_path_factory.mktemp("redis-cluster"))


@pytest.fixture
def redis_cluster(shared_redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The module's Redis Cluster, emptied of what earlier tests' nodes wrote."""
    shared_redis_cluster.flush()
    return shared_redis_cluster


@pytest.fixture
def own_redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of this test's own, for a test that stops it: no later test depends on
    a restart having gone well."""
    directory = tmp_path / "redis-cluster"
    directory.mkdir()
    yield from formed(directory)


async def nodes_on(server_factory: Callable[..., ServerProcess],
                   redis_cluster: RedisClusterServers) -> list[ServerProcess]:
    """Three nodes on ``redis_cluster``."""
    assert redis_cluster.shard_of("test:{4001}:bus") != redis_cluster.shard_of(
        "test:{1001}:bus"), "the two apps' buses must live on different shards"
    # cluster_config reads only ``url`` of the Redis it is given.
    config = FIRST_APP + cluster_config(redis_cluster)  # type: ignore[arg-type]
    return await start_cluster(server_factory, config)


@pytest.fixture
async def nodes(server_factory: Callable[..., ServerProcess],
                redis_cluster: RedisClusterServers) -> list[ServerProcess]:
    """Three nodes on the module's cluster; the ``fleet`` fixture of test_cluster connects to
    them."""
    return await nodes_on(server_factory, redis_cluster)


# The same specification as on one Redis, run here on this module's ``nodes``.
test_event_triggered_on_one_node_reaches_every_node_once_in_order = (
    test_cluster.test_event_triggered_on_one_node_reaches_every_node_once_in_order)
test_presence_roster_and_member_events_are_the_same_on_every_node = (
    test_cluster.test_presence_roster_and_member_events_are_the_same_on_every_node)


async def test_channels_api_answers_for_the_whole_cluster_from_any_node(
        nodes: list[ServerProcess], fleet: Fleet) -> None:
    """The channels of an app span the shards' keys: every node lists them all (on one
    Redis, tests/test_redis_hubs.py checks the same counts in process)."""
    for client, node in (("a", nodes[0]), ("b", nodes[1]), ("b2", nodes[1])):
        await connected(fleet, client, node)
        await fleet.subscribed(client, "news")
    await fleet.subscribed("a", "sport")
    for node in nodes:
        api = sdk(node)
        listing = await asyncio.to_thread(api.channels_info, None, ["subscription_count"])
        assert listing == {"channels": {"news": {"subscription_count": 3},
                                        "sport": {"subscription_count": 1}}}
        info = await asyncio.to_thread(api.channel_info, "news", ["subscription_count"])
        assert info == {"occupied": True, "subscription_count": 3}
    fleet.send("unsubscribe", id="a", channel="sport")
    await until(lambda: sdk(nodes[2]).channel_info("sport")["occupied"] is False,
                "sport vacated")


async def test_events_and_presence_come_back_after_the_redis_cluster_restarts(
        server_factory: Callable[..., ServerProcess], own_redis_cluster: RedisClusterServers,
        fleet_factory: Callable[[ServerProcess], Any]) -> None:
    nodes = await nodes_on(server_factory, own_redis_cluster)
    await test_cluster.assert_the_cluster_recovers_from_a_redis_restart(
        nodes, await fleet_factory(nodes[0]), own_redis_cluster)


async def test_events_published_while_the_redis_cluster_is_down_reach_other_nodes_after(
        server_factory: Callable[..., ServerProcess], own_redis_cluster: RedisClusterServers
        ) -> None:
    await test_cluster.assert_events_published_while_redis_is_down_arrive_once_it_is_back(
        await nodes_on(server_factory, own_redis_cluster), own_redis_cluster,
        CLUSTER_OUTAGE)


async def test_a_node_joins_the_redis_cluster_only_once_every_primary_is_ok(
        own_redis_cluster: RedisClusterServers) -> None:
    """A restarted primary says ``cluster_state:fail`` for about 2 s; a node that joined then
    could have its bus subscription closed by the client (on a CLUSTERDOWN reply) or its
    outbox's events go unheard. The primary restarted here holds none of the node's keys, so
    only that check keeps the node out until it is ok."""
    held = {own_redis_cluster.shard_of(key) for key in (nodes_key("test"), KEYS.bus)}
    spare = next(shard for shard, port in enumerate(own_redis_cluster.ports)
                 if f"127.0.0.1:{port}" not in held)
    own_redis_cluster.restart_primary(spare)
    assert not own_redis_cluster.ok(spare)
    adapter = RedisAdapter((APP,), own_redis_cluster.url, "test", lease_seconds=5)
    Hub(adapter=adapter)
    try:
        await adapter.start()
        await until(lambda: adapter.ready, "the node in the cluster", timeout=10)
        assert own_redis_cluster.ok(spare)
    finally:
        await adapter.close()


async def test_a_killed_nodes_pending_webhooks_are_delivered_by_one_survivor(
        server_factory: Callable[..., ServerProcess], redis_cluster: RedisClusterServers,
        receiver: Receiver) -> None:
    config = FIRST_APP + cluster_config(
        redis_cluster, "webhook_batch_seconds = 0.001")  # type: ignore[arg-type]
    cluster = await start_cluster(server_factory, with_webhooks_to(receiver, config))
    store = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True)
    await test_cluster.assert_a_gone_nodes_pending_webhooks_are_taken_over(
        cluster, store, receiver, signal.SIGKILL, -9)
