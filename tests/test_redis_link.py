"""The Redis adapter's link state and what it does on its own, without Redis: local answers
while joining, losing Redis with calls and bus messages still queued, where a bus message goes,
and what a reaped node's leftovers tell this node's sockets and listeners."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from helpers import FakeClock, ListSink, Recorder, unframe
from redis.exceptions import ConnectionError as RedisConnectionError

from pusher_compat.adapters.outbox import Outbox
from pusher_compat.adapters.redis_keys import AppKeys
from pusher_compat.adapters.redis_link import BusGate, ClusterLink, Link
from pusher_compat.adapters.redis_restore import announce_reaped
from pusher_compat.adapters.redis_writer import Op
from pusher_compat.apps import Apps
from pusher_compat.config import AppConfig, ServerConfig
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub, Member

APP = AppConfig(id="1", key="278d425bdf160c739803", secret="7ad3773142a6692b25b8")
KEYS = AppKeys("pc", APP.id, "n1")


@pytest.fixture
def link() -> ClusterLink:
    """A link that has not contacted Redis: its client never connects (a redis-py client
    connects on its first command, and none of these tests sends one)."""
    hub = Hub()
    return ClusterLink(aioredis.Redis(), "n1", "pc", 10.0, Apps((APP,)), {APP.id: KEYS}, {},
                       lambda: hub, lambda app_id, data: None, Outbox(1 << 20, 10.0))


async def test_a_join_fails_when_the_bus_subscription_ends_before_redis_confirms_it(
        link: ClusterLink) -> None:
    ended = asyncio.create_task(asyncio.sleep(0))
    with pytest.raises(RedisConnectionError, match="redis did not confirm the bus subscription"):
        await link._confirmed(ended)


def test_a_link_starts_down_with_its_bus_held(link: ClusterLink) -> None:
    assert (link.state, link.bus, link.up) == (Link.DOWN, BusGate.HELD, False)


def test_a_local_answer_while_joining_makes_the_resynchronisation_run_again(
        link: ClusterLink) -> None:
    link.state = Link.JOINING
    link.answered_locally()
    assert link.state is Link.JOINING_STALE


def test_a_local_answer_while_down_leaves_the_link_down(link: ClusterLink) -> None:
    link.answered_locally()
    assert link.state is Link.DOWN


def test_a_bus_message_waits_in_the_outbox_while_the_bus_is_held(link: ClusterLink) -> None:
    link.post(APP.id, b"m1")
    assert (link.writer.pending, link.outbox.take()) == (0, [(APP.id, b"m1")])


def test_a_bus_message_is_published_in_order_with_the_scripts_while_the_bus_is_open(
        link: ClusterLink) -> None:
    link.state, link.bus = Link.UP, BusGate.OPEN
    link.post(APP.id, b"m1")
    [op] = link.writer.take()
    assert (op.script, op.args, len(link.outbox)) == (None, ["PUBLISH", KEYS.bus, b"m1"], 0)


def test_losing_redis_answers_queued_calls_locally_and_keeps_unsent_bus_messages_in_order(
        link: ClusterLink) -> None:
    link.state, link.bus = Link.UP, BusGate.OPEN
    answered: list[str] = []
    link.post(APP.id, b"m1")
    link.writer.queue(Op(None, [], ["SET", "k", b"v"], None, lambda: answered.append("set")))
    link.post(APP.id, b"m2")
    link.outbox.add(APP.id, b"m3")  # published after the loss, while the bus was held
    link.lost("connection reset")
    assert (link.state, link.bus, link.writer.pending) == (Link.DOWN, BusGate.HELD, 0)
    assert answered == ["set"]
    assert link.outbox.take() == [(APP.id, b"m1"), (APP.id, b"m2"), (APP.id, b"m3")]


def test_a_reaped_nodes_leftovers_reach_this_nodes_sockets_and_listeners() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    sink = ListSink()
    conn = Connection(APP, ServerConfig(), hub, sink, clock=FakeClock())
    conn.open()
    hub.join(conn, "presence-room", Member("1"))
    sink.frames.clear()
    recorder.events.clear()
    announce_reaped(hub, APP, vacated=[b"presence-gone"], counts=[b"news", b"2"],
                    removed=[b"presence-room", b"9"], offline=[b"9"])
    assert [json.loads(unframe(f)) for f in sink.frames] == [{
        "event": "pusher_internal:member_removed", "channel": "presence-room",
        "data": '{"user_id":"9"}'}]
    assert recorder.events == [
        {"name": "member_removed", "channel": "presence-room", "user_id": "9"},
        {"name": "subscription_count", "channel": "news", "subscription_count": 2},
        {"name": "channel_vacated", "channel": "presence-gone"},
    ]


def test_a_reaped_nodes_presence_counts_send_no_subscription_count() -> None:
    recorder = Recorder()
    announce_reaped(Hub(listeners=[recorder]), APP, vacated=[], counts=[b"presence-room", b"1"],
                    removed=[], offline=[])
    assert recorder.events == []
