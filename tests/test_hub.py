"""Hub-level behaviour: fan-out of pre-framed bytes, exclusion, user channels, bookkeeping."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from helpers import FakeClock, ListSink, Recorder, unframe

import pusher_compat.hub as hub_module
from pusher_compat import wire
from pusher_compat.adapters.base import Joined, Left, SignedIn, SignedOut
from pusher_compat.adapters.local import LocalAdapter
from pusher_compat.channel_state import (
    channel_record,
    count_record,
    member_added_frame,
    member_record,
    member_removed_frame,
    socket_record,
)
from pusher_compat.channels import kind_of
from pusher_compat.config import AppConfig, ServerConfig
from pusher_compat.connection import Connection, SignIn
from pusher_compat.hub import Channel, Hub, Member
from pusher_compat.hub_membership import (
    count_socket,
    forget_socket,
    presence_full,
    succeeded_frame,
)
from pusher_compat.hub_release import RELEASE_CHUNK, Releaser
from pusher_compat.signatures import channel_string, sign_auth, user_string

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
APP = AppConfig(id="1", key=KEY, secret=SECRET)
OTHER_APP = AppConfig(id="2", key="other-key", secret="other-secret")
SERVER = ServerConfig()

EVENT = wire.event_frame("price", '{"p": 1}', "news")


@pytest.fixture
def hub() -> Hub:
    return Hub()


def connect(hub: Hub, app: AppConfig = APP) -> tuple[Connection, ListSink]:
    sink = ListSink()
    conn = Connection(app, SERVER, hub, sink, clock=FakeClock())
    conn.open()
    sink.frames.clear()
    return conn, sink


def subscribe(conn: Connection, sink: ListSink, channel: str) -> None:
    auth = ""
    if channel.startswith(("private-", "presence-")):
        auth = sign_auth(conn.app.key, conn.app.secret, channel_string(conn.socket_id, channel))
    conn.receive(json.dumps({"event": "pusher:subscribe",
                             "data": {"auth": auth, "channel": channel}}))
    assert [json.loads(unframe(f))["event"] for f in sink.frames] == [
        "pusher_internal:subscription_succeeded"
    ]
    sink.frames.clear()


def send_signin(conn: Connection, user_id: str) -> None:
    """Send a validly signed ``pusher:signin`` as ``user_id``."""
    user_data = json.dumps({"id": user_id})
    auth = sign_auth(conn.app.key, conn.app.secret, user_string(conn.socket_id, user_data))
    conn.receive(json.dumps({"event": "pusher:signin",
                             "data": {"auth": auth, "user_data": user_data}}))


def signin(conn: Connection, sink: ListSink, user_id: str) -> None:
    send_signin(conn, user_id)
    assert conn.user_id == user_id
    sink.frames.clear()


def subscribers(hub: Hub, n: int, channel: str = "news") -> Iterator[tuple[Connection, ListSink]]:
    for _ in range(n):
        conn, sink = connect(hub)
        subscribe(conn, sink, channel)
        yield conn, sink


# -- publish -------------------------------------------------------------------------------


def test_publish_reaches_every_subscriber_with_the_same_bytes_object(hub: Hub) -> None:
    pairs = list(subscribers(hub, 3))
    hub.publish("1", "news", EVENT)
    for _, sink in pairs:
        assert len(sink.frames) == 1
        assert sink.frames[0] is EVENT
    assert unframe(EVENT) == '{"event":"price","channel":"news","data":"{\\"p\\": 1}"}'


@pytest.mark.parametrize("size", [0, 100, 125, 126, 65535, 65536, 70000])
def test_publish_forwards_frames_of_every_length_form_intact(hub: Hub, size: int) -> None:
    (_, sink), = subscribers(hub, 1)
    data = "x" * size
    frame = wire.event_frame("big", data, "news")
    hub.publish("1", "news", frame)
    assert [json.loads(unframe(f)) for f in sink.frames] == [
        {"event": "big", "channel": "news", "data": data}
    ]


def test_client_event_is_framed_once_for_all_receivers(hub: Hub) -> None:
    (sender, _), (_, sink_a), (_, sink_b) = subscribers(hub, 3, "private-chat")
    sender.receive('{"event":"client-x","channel":"private-chat","data":{"a":1}}')
    assert len(sink_a.frames) == len(sink_b.frames) == 1
    assert sink_a.frames[0] is sink_b.frames[0]
    assert unframe(sink_a.frames[0]) == (
        '{"event":"client-x","channel":"private-chat","data":"{\\"a\\":1}"}'
    )


def test_publish_excludes_the_given_socket_id(hub: Hub) -> None:
    (first, sink1), (_, sink2), (_, sink3) = subscribers(hub, 3)
    hub.publish("1", "news", EVENT, except_socket_id=first.socket_id)
    assert sink1.frames == []
    assert sink2.frames == [EVENT]
    assert sink3.frames == [EVENT]


def test_publish_with_unknown_except_socket_id_reaches_everyone(hub: Hub) -> None:
    pairs = list(subscribers(hub, 2))
    hub.publish("1", "news", EVENT, except_socket_id="999.999")
    assert [sink.frames for _, sink in pairs] == [[EVENT], [EVENT]]


def test_publish_reaches_only_that_channel(hub: Hub) -> None:
    (_, news), = subscribers(hub, 1, "news")
    (_, sport), = subscribers(hub, 1, "sport")
    hub.publish("1", "news", EVENT)
    assert news.frames == [EVENT]
    assert sport.frames == []


def test_publish_reaches_only_that_app(hub: Hub) -> None:
    conn, sink = connect(hub)
    subscribe(conn, sink, "news")
    other, other_sink = connect(hub, OTHER_APP)
    subscribe(other, other_sink, "news")
    hub.publish("2", "news", EVENT)
    assert sink.frames == []
    assert other_sink.frames == [EVENT]


def test_publish_to_unoccupied_channel_creates_nothing(hub: Hub) -> None:
    connect(hub)
    hub.publish("1", "empty", EVENT)
    assert hub.channel("1", "empty") is None
    assert list(hub.channels("1")) == []


def test_publish_to_user_channel_reaches_every_connection_of_that_user(hub: Hub) -> None:
    (tab1, sink1), (tab2, sink2), (other, other_sink) = connect(hub), connect(hub), connect(hub)
    signin(tab1, sink1, "7")
    signin(tab2, sink2, "7")
    signin(other, other_sink, "8")
    (_, anonymous), = subscribers(hub, 1, "news")
    frame = wire.event_frame("hello", '{"x":1}', "#server-to-user-7")
    hub.publish("1", "#server-to-user-7", frame)
    assert sink1.frames == [frame] and sink1.frames[0] is frame
    assert sink2.frames == [frame] and sink2.frames[0] is frame
    assert other_sink.frames == []
    assert anonymous.frames == []


def test_user_channel_event_reaches_a_subscribed_signed_in_socket_once(hub: Hub) -> None:
    conn, sink = connect(hub)
    signin(conn, sink, "7")
    subscribe(conn, sink, "#server-to-user-7")
    hub.publish("1", "#server-to-user-7", EVENT)
    assert sink.frames == [EVENT]


def test_publish_to_user_channel_honours_except_socket_id(hub: Hub) -> None:
    (tab1, sink1), (tab2, sink2) = connect(hub), connect(hub)
    signin(tab1, sink1, "7")
    signin(tab2, sink2, "7")
    hub.publish("1", "#server-to-user-7", EVENT, except_socket_id=tab1.socket_id)
    assert sink1.frames == []
    assert sink2.frames == [EVENT]


def test_publish_to_user_channel_skips_closed_connections(hub: Hub) -> None:
    (tab1, sink1), (tab2, sink2) = connect(hub), connect(hub)
    signin(tab1, sink1, "7")
    signin(tab2, sink2, "7")
    tab1.closed()
    hub.publish("1", "#server-to-user-7", EVENT)
    assert sink1.frames == []
    assert sink2.frames == [EVENT]
    assert hub.user_connections("1", "7") == [tab2]
    tab2.closed()
    assert hub.user_connections("1", "7") == []


def test_publish_skips_closed_connections(hub: Hub) -> None:
    (first, sink1), (_, sink2) = subscribers(hub, 2)
    first.closed()
    hub.publish("1", "news", EVENT)
    assert sink1.frames == []
    assert sink2.frames == [EVENT]


# -- channels ------------------------------------------------------------------------------


def test_channel_is_dropped_when_its_last_subscriber_unsubscribes(hub: Hub) -> None:
    (a, _), (b, _) = subscribers(hub, 2)
    a.receive('{"event":"pusher:unsubscribe","data":{"channel":"news"}}')
    channel = hub.channel("1", "news")
    assert channel is not None
    assert channel.subscription_count == 1
    b.receive('{"event":"pusher:unsubscribe","data":{"channel":"news"}}')
    assert hub.channel("1", "news") is None
    assert list(hub.channels("1")) == []


def test_channel_is_dropped_when_its_last_subscriber_closes(hub: Hub) -> None:
    (conn1, _), (conn2, _) = subscribers(hub, 2)
    conn1.closed()
    assert hub.channel("1", "news") is not None
    conn2.closed()
    assert hub.channel("1", "news") is None


def test_resubscribing_a_dropped_channel_starts_fresh(hub: Hub) -> None:
    (a, sink), = subscribers(hub, 1)
    a.receive('{"event":"pusher:unsubscribe","data":{"channel":"news"}}')
    subscribe(a, sink, "news")
    channel = hub.channel("1", "news")
    assert channel is not None
    assert list(channel.subscribers) == [a]


def test_channels_lists_occupied_channels_of_one_app(hub: Hub) -> None:
    conn, sink = connect(hub)
    subscribe(conn, sink, "news")
    subscribe(conn, sink, "private-x")
    other, other_sink = connect(hub, OTHER_APP)
    subscribe(other, other_sink, "sport")
    assert sorted(c.name for c in hub.channels("1")) == ["news", "private-x"]
    assert [c.name for c in hub.channels("2")] == ["sport"]


def test_presence_counts_are_per_user_and_per_socket(hub: Hub) -> None:
    conns = [connect(hub) for _ in range(4)]
    hub.join(conns[0][0], "presence-room", Member("1", {"name": "Ann"}))
    hub.join(conns[1][0], "presence-room", Member(1, {"name": "Ann again"}))
    hub.join(conns[2][0], "presence-room", Member("2"))
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert (channel.subscription_count, channel.user_count) == (3, 2)
    last, sink = conns[3]
    sink.take()
    hub.join(last, "presence-room", Member("1", {"name": "Ann on a third tab"}))
    assert json.loads(sink.take()[0]["data"]) == {
        "presence": {"ids": ["1", "2"], "hash": {"1": {"name": "Ann"}, "2": None}, "count": 2}
    }


# -- connections and socket ids ------------------------------------------------------------


def test_connection_count_per_app_and_overall(hub: Hub) -> None:
    assert hub.connection_count() == 0
    a, _ = connect(hub)
    connect(hub)
    c, _ = connect(hub, OTHER_APP)
    assert hub.connection_count("1") == 2
    assert hub.connection_count("2") == 1
    assert hub.connection_count("3") == 0
    assert hub.connection_count() == 3
    a.closed()
    assert (hub.connection_count("1"), hub.connection_count()) == (1, 2)
    c.close(4200, "restart")
    assert (hub.connection_count("2"), hub.connection_count()) == (0, 1)


def test_connections_iterates_every_app(hub: Hub) -> None:
    a, _ = connect(hub)
    b, _ = connect(hub, OTHER_APP)
    assert set(hub.connections()) == {a, b}


def test_new_socket_id_format(hub: Hub) -> None:
    ids = [hub.new_socket_id("1") for _ in range(200)]
    for socket_id in ids:
        assert re.fullmatch(r"[0-9]+\.[0-9]+", socket_id), socket_id
        assert re.fullmatch(r"\d+\.\d+", socket_id, re.ASCII)
    assert len(set(ids)) == 200


def test_new_socket_id_avoids_ids_of_open_connections(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, _ = connect(hub)
    taken_left, taken_right = (int(part) for part in conn.socket_id.split("."))
    values = iter([taken_left, taken_right, 5, 6])
    monkeypatch.setattr(hub_module.random, "randint", lambda a, b: next(values))
    assert hub.new_socket_id("1") == "5.6"


# -- a cluster that answers later (as the Redis adapter does) ------------------------------


class LateCluster(LocalAdapter):
    """The one-node answers, given only when the test releases them, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Callable[[], None]] = []
        self.users: dict[str, int] = {}
        """Sockets the cluster counts per signed-in user id."""

    def joined(self, app: AppConfig, channel: Channel, member: Member | None, first: bool,
               done: Callable[[Joined], None]) -> None:
        self.waiting.append(lambda: super(LateCluster, self).joined(app, channel, member,
                                                                    first, done))

    def left(self, app: AppConfig, channel: Channel, member: Member | None,
             done: Callable[[Left], None]) -> None:
        self.waiting.append(lambda: super(LateCluster, self).left(app, channel, member, done))

    def signed_in(self, app: AppConfig, user_id: str, watchlist: tuple[str, ...],
                  done: Callable[[SignedIn], None]) -> None:
        # Counted when asked, as Redis counts the socket when the script runs.
        self.users[user_id] = self.users.get(user_id, 0) + 1
        self.waiting.append(lambda: super(LateCluster, self).signed_in(app, user_id, watchlist,
                                                                       done))

    def signed_out(self, app: AppConfig, user_id: str, done: Callable[[SignedOut], None]
                   ) -> None:
        self.users[user_id] -= 1
        self.waiting.append(lambda: super(LateCluster, self).signed_out(app, user_id, done))

    def answer_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for answer in waiting:
            answer()


@pytest.fixture
def late() -> tuple[Hub, LateCluster]:
    cluster = LateCluster()
    return Hub(adapter=cluster), cluster


def test_presence_subscription_succeeds_when_the_cluster_answers(
        late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, sink = connect(hub)
    hub.join(conn, "presence-room", Member("1", {"name": "Ann"}))
    assert sink.frames == []
    cluster.answer_all()
    assert [json.loads(unframe(f))["event"] for f in sink.frames] == [
        "pusher_internal:subscription_succeeded"]


def test_events_before_the_answer_do_not_reach_a_pending_subscriber(
        late: tuple[Hub, LateCluster]) -> None:
    hub, _ = late
    conn, sink = connect(hub)
    hub.join(conn, "presence-room", Member("1"))
    hub.publish("1", "presence-room", EVENT)
    assert sink.frames == []


def test_leaving_before_the_answer_leaves_nothing_behind(
        late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, sink = connect(hub)
    hub.join(conn, "presence-room", Member("1"))
    hub.leave(conn, "presence-room")
    cluster.answer_all()
    assert sink.frames == []
    assert hub.channel("1", "presence-room") is None
    assert conn.channels == {}


def test_a_refusal_after_leaving_is_not_undone_twice(late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_presence_members=1)
    first, _ = connect(hub, app)
    hub.join(first, "presence-room", Member("1"))
    cluster.answer_all()
    second, sink = connect(hub, app)
    hub.join(second, "presence-room", Member("2"))
    hub.leave(second, "presence-room")
    cluster.answer_all()  # refused (the channel is full) after it left
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert (channel.local_sockets, channel.sockets_per_member) == (1, {"1": 1})
    assert sink.frames == []


def test_a_second_signin_while_one_is_pending_is_refused_and_counted_nowhere(
        late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, sink = connect(hub)
    send_signin(conn, "7")
    send_signin(conn, "7")  # both in one TCP read: the cluster has not answered the first
    assert [json.loads(unframe(f)) for f in sink.frames] == [{
        "event": "pusher:error",
        "data": {"code": 4009, "message": "A sign-in is already pending on this connection: "
                                          "this one is ignored"},
    }]
    assert conn.signin is SignIn.SIGNING_IN
    assert cluster.users == {"7": 1}


def test_a_pending_signin_is_signed_in_once_when_the_cluster_answers(
        late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, sink = connect(hub)
    send_signin(conn, "7")
    send_signin(conn, "7")
    sink.frames.clear()
    cluster.answer_all()
    assert [json.loads(unframe(f))["event"] for f in sink.frames] == ["pusher:signin_success"]
    assert (conn.signin, conn.user_id) == (SignIn.SIGNED_IN, "7")
    assert hub.user_connections("1", "7") == [conn]


def test_a_double_signin_leaves_no_count_after_close(late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, _ = connect(hub)
    send_signin(conn, "7")
    send_signin(conn, "7")
    cluster.answer_all()
    conn.closed()
    cluster.answer_all()
    assert cluster.users == {"7": 0}
    assert hub.user_connections("1", "7") == []


def test_signing_in_as_a_then_b_while_a_is_pending_leaves_nothing_of_b_behind(
        late: tuple[Hub, LateCluster]) -> None:
    hub, cluster = late
    conn, _ = connect(hub)
    send_signin(conn, "a")
    send_signin(conn, "b")
    cluster.answer_all()
    assert (conn.signin, conn.user_id) == (SignIn.SIGNED_IN, "a")
    assert hub.user_connections("1", "b") == []
    conn.closed()
    cluster.answer_all()
    assert cluster.users == {"a": 0}
    assert hub.user_connections("1", "a") == []


def test_a_presence_join_not_yet_answered_counts_toward_the_channel_limit(
        late: tuple[Hub, LateCluster]) -> None:
    hub, _ = late
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_channels_per_connection=1)
    conn, sink = connect(hub, app)
    hub.join(conn, "presence-room", Member("1"))
    conn.receive('{"event":"pusher:subscribe","data":{"channel":"news"}}')
    assert [json.loads(unframe(f))["data"]["type"] for f in sink.frames[:1]] == [
        "LimitReached"]
    assert hub.channel("1", "news") is None


# -- releasing a closed socket over several loop iterations --------------------------------


UNCAPPED = AppConfig(id="1", key=KEY, secret=SECRET, max_channels_per_connection=0,
                     max_subscriptions_per_second=0)


@dataclass
class Loop:
    """A ``defer`` for the hub: callbacks wait until the test runs the next iteration."""

    waiting: list[Callable[[], None]] = field(default_factory=list)

    def __call__(self, callback: Callable[[], None]) -> None:
        self.waiting.append(callback)

    def step(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()


@pytest.fixture
def loop() -> Loop:
    return Loop()


def holding(hub: Hub, count: int, prefix: str = "c") -> tuple[Connection, ListSink]:
    """A connection subscribed to ``count`` public channels."""
    conn, sink = connect(hub, UNCAPPED)
    for index in range(count):
        hub.join(conn, f"{prefix}{index}", None)
    sink.frames.clear()
    return conn, sink


def occupied(hub: Hub) -> int:
    return sum(1 for _ in hub.channels("1"))


def test_a_socket_with_few_channels_is_released_at_once(loop: Loop) -> None:
    hub = Hub(defer=loop)
    conn, _ = holding(hub, RELEASE_CHUNK)
    conn.closed()
    assert (occupied(hub), hub.releasing, loop.waiting) == (0, 0, [])


def test_a_socket_with_many_channels_is_released_a_chunk_per_loop_iteration(
        loop: Loop) -> None:
    hub = Hub(defer=loop)
    conn, _ = holding(hub, 2 * RELEASE_CHUNK + 1)
    conn.closed()
    assert (occupied(hub), len(loop.waiting)) == (RELEASE_CHUNK + 1, 1)
    loop.step()
    assert (occupied(hub), len(loop.waiting)) == (1, 1)
    loop.step()
    assert (occupied(hub), hub.releasing, loop.waiting) == (0, 0, [])
    assert conn.channels == {}


def test_a_socket_being_released_is_no_longer_open_and_receives_nothing(loop: Loop) -> None:
    hub = Hub(defer=loop)
    conn, sink = holding(hub, RELEASE_CHUNK + 1)
    conn.closed()
    assert hub.local_connection_count("1") == 0
    last = f"c{RELEASE_CHUNK}"
    assert hub.channel("1", last) is not None
    hub.publish("1", last, EVENT)
    assert sink.frames == []


def test_channels_are_left_in_subscription_order(loop: Loop) -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder], defer=loop)
    conn, _ = holding(hub, RELEASE_CHUNK + 2)
    recorder.events.clear()
    conn.closed()
    loop.step()
    vacated = [e["channel"] for e in recorder.events if e["name"] == "channel_vacated"]
    assert vacated == [f"c{index}" for index in range(RELEASE_CHUNK + 2)]


def test_connection_closed_is_told_after_the_last_channel_is_left(loop: Loop) -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder], defer=loop)
    conn, _ = holding(hub, RELEASE_CHUNK + 1)
    conn.closed()
    assert "connection_closed" not in [e["name"] for e in recorder.events]
    loop.step()
    assert recorder.events[-2:] == [
        {"name": "channel_vacated", "channel": f"c{RELEASE_CHUNK}"},
        {"name": "connection_closed", "socket_id": conn.socket_id},
    ]


def test_presence_members_of_a_released_socket_are_announced_removed(loop: Loop) -> None:
    hub = Hub(defer=loop)
    conn, _ = holding(hub, RELEASE_CHUNK)
    hub.join(conn, "presence-room", Member("1"))
    other, other_sink = connect(hub)
    hub.join(other, "presence-room", Member("2"))
    other_sink.frames.clear()
    conn.closed()
    assert other_sink.frames == []
    loop.step()
    assert [json.loads(unframe(f)) for f in other_sink.frames] == [{
        "event": "pusher_internal:member_removed", "channel": "presence-room",
        "data": '{"user_id":"1"}'}]


def test_a_signed_in_socket_goes_offline_after_its_channels(loop: Loop) -> None:
    hub = Hub(defer=loop)
    conn, sink = connect(hub, UNCAPPED)
    signin(conn, sink, "7")
    for index in range(RELEASE_CHUNK + 1):
        hub.join(conn, f"c{index}", None)
    conn.closed()
    assert hub.signed_in_users("1") == {"7": 1}
    loop.step()
    assert hub.signed_in_users("1") == {}


def test_sockets_closed_meanwhile_wait_their_turn_with_one_pass_scheduled(loop: Loop) -> None:
    hub = Hub(defer=loop)
    big, _ = holding(hub, 2 * RELEASE_CHUNK, "big")
    small, _ = holding(hub, 1, "small")
    big.closed()
    small.closed()
    assert (hub.releasing, len(loop.waiting)) == (2, 1)
    assert hub.channel("1", "small0") is not None
    loop.step()  # the big one's last chunk takes the whole iteration
    assert (hub.releasing, occupied(hub), len(loop.waiting)) == (1, 1, 1)
    loop.step()
    assert (hub.releasing, occupied(hub), loop.waiting) == (0, 0, [])


def test_a_released_socket_keeps_no_table_sized_for_its_channels(loop: Loop) -> None:
    """Deleting keys never shrinks a dict: the emptied one is cleared, so that a closed
    connection something still refers to does not pin megabytes."""
    hub = Hub(defer=loop)
    conn, _ = holding(hub, 2 * RELEASE_CHUNK)
    conn.closed()
    loop.step()
    assert sys.getsizeof(conn.channels) == sys.getsizeof({})


@dataclass(eq=False)
class Closed:
    """What the releaser reads of a closed connection: the channels it holds (and a name for
    the test)."""

    name: str
    channels: dict[str, Member | None]


def test_the_releaser_leaves_the_oldest_socket_first_and_tells_each_release_once(
        loop: Loop) -> None:
    left: list[tuple[str, str]] = []
    released: list[tuple[str, int]] = []
    releaser = Releaser(lambda conn, name: left.append((conn.name, name)),
                        lambda conn, held: released.append((conn.name, held)), loop)
    big = Closed("big", {f"b{index}": None for index in range(RELEASE_CHUNK + 1)})
    small = Closed("small", {"s0": None})
    releaser.release(big)
    releaser.release(small)
    assert (len(left), released, releaser.pending, len(loop.waiting)) == (
        RELEASE_CHUNK, [], 2, 1)
    loop.step()
    assert left[-2:] == [("big", f"b{RELEASE_CHUNK}"), ("small", "s0")]
    assert (released, releaser.pending, loop.waiting) == (
        [("big", RELEASE_CHUNK + 1), ("small", 1)], 0, [])


def test_membership_counts_each_members_sockets_and_gives_the_member_back_at_its_last() -> None:
    channel = Channel("presence-a", kind_of("presence-a"))
    ann = Member("1", {"name": "Ann"})
    assert (count_socket(channel, ann), count_socket(channel, ann)) == (True, False)
    channel.members[ann.key] = ann
    assert count_socket(channel, None) is False
    assert (channel.local_sockets, channel.sockets_per_member) == (3, {"1": 2})
    assert forget_socket(channel, ann) is None
    assert forget_socket(channel, Member("1")) is ann
    assert (channel.local_sockets, channel.sockets_per_member, channel.members) == (1, {}, {})


def test_subscription_answers_are_built_as_pusher_js_reads_them() -> None:
    channel = Channel("presence-a", kind_of("presence-a"))
    assert unframe(succeeded_frame(Channel("news", kind_of("news")), None)) == (
        '{"event":"pusher_internal:subscription_succeeded","channel":"news","data":"{}"}')
    assert unframe(succeeded_frame(channel, {"1": {"name": "Ann"}})) == (
        '{"event":"pusher_internal:subscription_succeeded","channel":"presence-a",'
        '"data":"{\\"presence\\":{\\"ids\\":[\\"1\\"],'
        '\\"hash\\":{\\"1\\":{\\"name\\":\\"Ann\\"}},\\"count\\":1}}"}')
    reached = "The maximum number of members in a presence channel (100) has been reached"
    assert [unframe(frame) for frame in presence_full(channel, 100).to_frames()] == [
        '{"event":"pusher:subscription_error","channel":"presence-a","data":'
        f'{{"type":"LimitReached","error":"{reached}","status":4100}}}}',
        f'{{"event":"pusher:error","data":{{"code":null,"message":"{reached}"}}}}',
    ]


def test_member_frames_are_built_as_pusher_js_reads_them() -> None:
    assert unframe(member_added_frame("presence-a", Member(7, {"name": "Ann"}))) == (
        '{"event":"pusher_internal:member_added","channel":"presence-a",'
        '"data":"{\\"user_id\\":7,\\"user_info\\":{\\"name\\":\\"Ann\\"}}"}')
    assert unframe(member_removed_frame("presence-a", 7)) == (
        '{"event":"pusher_internal:member_removed","channel":"presence-a",'
        '"data":"{\\"user_id\\":7}"}')


def test_listener_records_carry_exactly_their_fields() -> None:
    assert channel_record("channel_vacated", "news") == {
        "name": "channel_vacated", "channel": "news"}
    assert member_record("member_added", "presence-a", "7") == {
        "name": "member_added", "channel": "presence-a", "user_id": "7"}
    assert count_record("news", 3) == {
        "name": "subscription_count", "channel": "news", "subscription_count": 3}
    assert socket_record("connection_opened", "1.2") == {
        "name": "connection_opened", "socket_id": "1.2"}
