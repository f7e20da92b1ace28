"""Every Redis key name the Redis adapter (and its scripts) use, in one place.

An app's keys share its ``{app}`` hash tag, so each script touches one Redis Cluster slot.
Keys that belong to the deployment, not to an app (the node leases, reap claims), carry the
prefix only.
"""

from __future__ import annotations

__all__ = ["AppKeys", "nodes_key", "reap_claim_key"]


def nodes_key(prefix: str) -> str:
    """The sorted set of node leases: node name scored by its lease expiry (Redis ms)."""
    return f"{prefix}:nodes"


def reap_claim_key(prefix: str, node: str) -> str:
    """Claimed (``SET NX``) by the one survivor that undoes a dead node's state."""
    return f"{prefix}:reap:{node}"


class AppKeys:
    """Key names of one app as seen from one node (``node``'s own ledger)."""

    __slots__ = ("base", "bus", "channels", "conns", "node_ch", "node_pm", "node_users",
                 "users")

    def __init__(self, prefix: str, app_id: str, node: str) -> None:
        self.base = f"{prefix}:{{{app_id}}}"
        """The app's prefix, hash tag included; the REAP script builds channel keys from it."""
        self.bus = f"{self.base}:bus"
        """The pub/sub channel every node of the app listens to."""
        self.channels = f"{self.base}:channels"
        """Set of the app's occupied channels, cluster-wide."""
        self.users = f"{self.base}:users"
        """Hash: signed-in user id to sockets, cluster-wide."""
        self.conns = f"{self.base}:conns"
        """Hash: node to its open connections of the app."""
        self.node_ch, self.node_pm, self.node_users = self.ledger(node)
        """This node's ledger: what it told Redis it holds (channels, members, users)."""

    def ledger(self, node: str) -> tuple[str, str, str]:
        """A node's ledger: its channels, its ``channel\\0user`` members, its users' sockets."""
        return (f"{self.base}:node:{node}:ch", f"{self.base}:node:{node}:pm",
                f"{self.base}:node:{node}:users")

    def sockets(self, channel: str) -> str:
        """Hash: node to its sockets in ``channel``."""
        return f"{self.base}:ch:{channel}"

    def roster(self, channel: str) -> str:
        """Hash: presence member id to its ``user_info`` (JSON)."""
        return f"{self.base}:pm:{channel}"

    def channel(self, name: str) -> list[str]:
        """KEYS of :data:`.lua.JOIN` and :data:`.lua.LEAVE`."""
        return [self.sockets(name), self.channels, self.node_ch, self.roster(name),
                f"{self.base}:pr:{name}", self.node_pm]

    def user_keys(self) -> list[str]:
        """KEYS of :data:`.lua.USERS`."""
        return [self.users, self.node_users]

    def cache(self, channel: str) -> str:
        """A cache channel's last event, expiring with it."""
        return f"{self.base}:cache:{channel}"

    @property
    def cache_pattern(self) -> str:
        """``SCAN`` pattern of every cache key of the app."""
        return self.cache("*")

    def cache_channel(self, key: str) -> str:
        """The channel of a key :attr:`cache_pattern` matched."""
        return key.split(":cache:", 1)[1]

    def rate(self, bucket: str, second: int) -> str:
        """A shared rate limit's counter for one second."""
        return f"{self.base}:rate:{bucket}:{second}"
