"""Making Redis and this node's sockets agree again: after an outage (the node's ledger against
its sockets, the channels' cached events, the presence rosters) and after a node died (what
it leaves behind is announced once, by the node that reaped it).

The diff itself is the pure :func:`.resync.resync_calls`; these functions read Redis, run
the calls and tell the hub.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .. import wire
from ..channel_state import channel_record, count_record, member_record, member_removed_frame
from ..channels import kind_of
from .redis_client import Client, text
from .redis_writer import queue_script
from .resync import Ledger, resync_calls

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from ..config import AppConfig
    from .base import HubView
    from .redis_keys import AppKeys

__all__ = ["announce_reaped", "keep", "load_cache", "refresh_rosters", "resync"]

log = logging.getLogger("pusher_compat.redis")


def keep(hub: HubView, app_id: str, channel: str, payload: bytes, ttl: float) -> None:
    """Cache a channel's last event (a bus message's payload) on this node."""
    data = wire.loads(payload).get("data", "")
    hub.keep(app_id, channel, wire.frame(payload), data, ttl)


async def resync(client: Client, scripts: dict[str, AsyncScript], keys: AppKeys, node: str,
                 hub: HubView, app_id: str) -> None:
    """Make Redis hold exactly what this node holds: its ledger against its sockets."""
    pipe = client.pipeline(transaction=False)
    pipe.smembers(keys.node_ch)
    pipe.smembers(keys.node_pm)
    pipe.hgetall(keys.node_users)
    ledger_ch, ledger_pm, ledger_users = await pipe.execute()
    ledger = Ledger(
        channels=frozenset(map(text, ledger_ch)),
        members=frozenset(_member_entry(text(e)) for e in ledger_pm),
        users={text(k): int(v) for k, v in ledger_users.items()})
    channels = list(hub.channels(app_id))
    users = hub.signed_in_users(app_id)
    pipe = client.pipeline(transaction=False)
    for call in resync_calls(keys, node, ledger, channels, users):
        queue_script(pipe, scripts[call.script], call.keys, call.args)
    await pipe.execute()
    log.info("app %s resynchronised with redis: %d channel(s), %d member(s), %d user(s)",
             app_id, len(channels), sum(len(c.members) for c in channels), len(users))


async def load_cache(client: Client, keys: AppKeys, hub: HubView, app_id: str) -> None:
    """Cache channels' last events, for a node that starts or comes back."""
    async for key in client.scan_iter(match=keys.cache_pattern, count=500):
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        payload, ttl_ms = await pipe.execute()
        if payload is not None and ttl_ms > 0:
            keep(hub, app_id, keys.cache_channel(text(key)), payload, ttl_ms / 1000)


async def refresh_rosters(client: Client, keys: dict[str, AppKeys], hub: HubView) -> None:
    """Tell this node's presence sockets who is there now: a second
    ``subscription_succeeded`` resets pusher-js's member list (Echo calls ``here`` again)."""
    for app_id, app_keys in keys.items():
        for channel in list(hub.channels(app_id)):
            if not channel.kind.presence or not channel.subscribers:
                continue
            roster = await client.hgetall(app_keys.roster(channel.name))
            members = {text(k): wire.loads(v) for k, v in roster.items()}
            hub.resend_roster(app_id, channel.name, members)


def announce_reaped(hub: HubView, app: AppConfig, vacated: list[Any], counts: list[Any],
                    removed: list[Any], offline: list[Any]) -> None:
    """What a reaped node leaves behind (the ``REAP`` script's reply): this node tells its
    sockets and sends the webhooks, once for the cluster."""
    app_id = app.id
    for i in range(0, len(removed), 2):
        channel, user = text(removed[i]), text(removed[i + 1])
        hub.deliver(app_id, channel, member_removed_frame(channel, user))
        hub.notify(app, member_record("member_removed", channel, user))
    for user in map(text, offline):
        hub.watch_event(app_id, user, online=False)
    for i in range(0, len(counts), 2):
        channel = text(counts[i])
        if not kind_of(channel).presence:
            hub.notify(app, count_record(channel, int(counts[i + 1])))
    for channel in map(text, vacated):
        hub.notify(app, channel_record("channel_vacated", channel))


def _member_entry(entry: str) -> tuple[str, str]:
    """(channel, user id) of a member ledger entry, ``channel\\0user``."""
    name, _, user = entry.partition("\0")
    return name, user
