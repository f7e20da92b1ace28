"""The Redis client a URL names: one server, TLS, a Unix socket, Sentinel or a Redis Cluster."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import SplitResult, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

__all__ = ["Client", "connect_url", "not_ok_primaries", "text"]

Client = aioredis.Redis | RedisCluster
"""A client of one Redis (plain, TLS, Unix socket, Sentinel) or of a Redis Cluster."""


def text(value: bytes | str) -> str:
    """A reply as text: the client does not decode replies (bus messages are bytes)."""
    return value.decode() if isinstance(value, bytes) else value


async def not_ok_primaries(client: Client) -> list[str]:
    """The primaries of a Redis Cluster that do not report ``cluster_state:ok`` (none for one
    Redis). A restarted primary says ``fail`` for about 2 s: meanwhile a keyed command gets
    CLUSTERDOWN, on which redis-py closes every connection, the bus subscription's too, and a
    PUBLISH it takes may not reach the other primaries' subscribers."""
    if not isinstance(client, RedisCluster):
        return []
    infos: Any = await client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
    if "cluster_state" in infos:  # one primary: redis-py returns its reply alone
        infos = {"primary": infos}
    return sorted(name for name, info in infos.items() if info.get("cluster_state") != "ok")


def connect_url(url: str) -> Client:
    """A client for ``redis://``, ``rediss://`` (TLS), ``unix://``,
    ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` or a Redis Cluster,
    ``redis+cluster://`` (``rediss+cluster://`` for TLS)
    ``[[user]:password@]host:port[,host:port...]``: any reachable node lets the client
    discover the others."""
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5,
                               "health_check_interval": 5}
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if parts.scheme in ("redis+cluster", "rediss+cluster"):
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0: "
                             "redis+cluster://host:port[,host:port...]")
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in _hosts(parts, 6379)],
            username=unquote(parts.username) if parts.username else None, password=password,
            ssl=parts.scheme == "rediss+cluster", **options)
    if parts.scheme != "redis+sentinel":
        return aioredis.Redis.from_url(url, **options)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL needs the service name: .../mymaster")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        _hosts(parts, 26379), password=password, **options)
    return cast("aioredis.Redis", sentinel.master_for(
        path[0], db=int(path[1]) if len(path) > 1 else 0, password=password, **options))


def _hosts(parts: SplitResult, default_port: int) -> list[tuple[str, int]]:
    """The ``host:port`` list of a Sentinel or Cluster URL (urlsplit reads one host only)."""
    hosts = []
    for address in parts.netloc.rpartition("@")[2].split(","):
        host, colon, port = address.rpartition(":")
        hosts.append((host, int(port)) if colon else (address, default_port))
    return hosts
