"""Adapters: how a node shares its state with the others (see :mod:`.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Adapter
from .local import LocalAdapter

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Adapter", "LocalAdapter", "create_adapter"]


def create_adapter(settings: Settings | None = None) -> Adapter:
    """The adapter ``settings.server.adapter`` names; without settings (a hub built on its
    own, as in tests), the one-node adapter. The one place that chooses an adapter."""
    if settings is None:
        return LocalAdapter()
    server = settings.server
    if server.adapter == "redis":
        from .redis import RedisAdapter

        return RedisAdapter(settings.apps, server.redis_url, server.redis_prefix,
                            server.node_lease_seconds,
                            outbox_max_bytes=server.redis_outbox_max_bytes,
                            outbox_max_age=server.redis_outbox_max_age_seconds)
    return LocalAdapter()
