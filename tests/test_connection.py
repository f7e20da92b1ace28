"""The protocol core (`Connection` + `Hub`) driven with plain strings; every test asserts the
exact frames sent (protocol.md §1-§5, §9)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import FakeClock, ListSink, Recorder, error

from pusher_compat import wire
from pusher_compat.channels import channel_name_error
from pusher_compat.config import AppConfig, ServerConfig
from pusher_compat.connection import Connection, State
from pusher_compat.hub import Hub
from pusher_compat.signatures import channel_string, sign_auth, user_string

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
APP = AppConfig(id="1", key=KEY, secret=SECRET)
# Distinctive values, so that a mix-up between the two timeouts shows.
SERVER = ServerConfig(activity_timeout=45, pong_timeout=15)
VECTOR_SOCKET = "1234.1234"

# protocol.md §4.3, full auth strings.
A1_PRIVATE = KEY + ":58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
A2_SIGNIN = KEY + ":4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
A2_USER_DATA = '{"id":"12345"}'
A4_PRESENCE = KEY + ":4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800"
A4_CHANNEL_DATA = '{"user_id":"10","user_info":{"name":"Mr. Channels"}}'
A5_PRESENCE = KEY + ":96f61cf0b64a80c5cf1852da9dea2998a90fd7fa840c4cc62212573f1c524cdf"
A5_CHANNEL_DATA = '{"user_id": "10", "user_info": {"name": "Mr. Channels"}}'
A6_ENCRYPTED = KEY + ":e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533"

NOT_SUBSCRIBED = "Cannot broadcast client event (connection not subscribed to channel {})"


# -- matchers ------------------------------------------------------------------------------


class Encoded:
    """Equal to a ``str`` holding JSON that parses to ``value`` (double-encoded ``data``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and json.loads(other) == self.value

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Encoded({self.value!r})"


class Presence(Encoded):
    """``subscription_succeeded`` data of a presence channel; ``ids`` compared in any order."""

    def __init__(self, hash_: dict[str, Any]) -> None:
        super().__init__({"presence": {"ids": sorted(hash_), "hash": hash_, "count": len(hash_)}})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str):
            return False
        parsed = json.loads(other)
        try:
            parsed["presence"]["ids"] = sorted(parsed["presence"]["ids"])
        except (KeyError, TypeError):
            return False
        return bool(parsed == self.value)


class Prefix:
    """Equal to a ``str`` starting with ``prefix`` (messages worded by jsonschema)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self.prefix)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Prefix({self.prefix!r})"


# -- expected frames -----------------------------------------------------------------------


def succeeded(channel: str, data: Any = "{}") -> dict[str, Any]:
    return {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}



def refused(channel: str, type_: str, message: Any, status: int) -> list[dict[str, Any]]:
    """The two frames of a refused subscription (protocol.md §3.4 recommendation)."""
    return [
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": type_, "error": message, "status": status},
        },
        error(None, message),
    ]


def bad_signature(socket_id: str, channel: str, auth: str, channel_data: str | None = None
                  ) -> list[dict[str, Any]]:
    string = channel_string(socket_id, channel, channel_data)
    message = f"Invalid signature: Expected HMAC SHA256 hex digest of {string}, but got {auth}"
    return refused(channel, "AuthError", message, 401)


def member_added(channel: str, user_id: Any, user_info: Any) -> dict[str, Any]:
    return {
        "event": "pusher_internal:member_added",
        "channel": channel,
        "data": Encoded({"user_id": user_id, "user_info": user_info}),
    }


def member_removed(channel: str, user_id: Any) -> dict[str, Any]:
    return {
        "event": "pusher_internal:member_removed",
        "channel": channel,
        "data": Encoded({"user_id": user_id}),
    }


PONG = {"event": "pusher:pong", "data": "{}"}
PING = {"event": "pusher:ping", "data": "{}"}


# -- driving a connection ------------------------------------------------------------------


@dataclass
class Client:
    conn: Connection
    sink: ListSink = field(repr=False)

    @property
    def socket_id(self) -> str:
        return self.conn.socket_id

    def send(self, message: Any) -> None:
        """Send ``message``: a ``str`` as is, anything else JSON-encoded."""
        self.conn.receive(message if isinstance(message, str) else json.dumps(message))

    def take(self) -> list[Any]:
        return self.sink.take()

    def subscribe(self, channel: str, auth: str | None = None,
                  channel_data: str | None = None) -> None:
        data: dict[str, Any] = {"auth": auth or "", "channel": channel}
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send({"event": "pusher:subscribe", "data": data})

    def subscribe_signed(self, channel: str, channel_data: str | None = None) -> None:
        """Subscribe with a correct signature for this socket."""
        string = channel_string(self.socket_id, channel, channel_data)
        self.subscribe(channel, sign_auth(KEY, SECRET, string), channel_data)

    def join(self, channel: str, user_id: Any, user_info: Any = None) -> None:
        """Join a presence channel as ``user_id`` (``user_info`` left out when ``None``)."""
        member: dict[str, Any] = {"user_id": user_id}
        if user_info is not None:
            member["user_info"] = user_info
        self.subscribe_signed(channel, json.dumps(member, separators=(",", ":")))

    def signin(self, user_data: str) -> None:
        auth = sign_auth(KEY, SECRET, user_string(self.socket_id, user_data))
        self.send({"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}})

    def unsubscribe(self, channel: str) -> None:
        self.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    def trigger(self, channel: str, event: str = "client-x", data: Any = None, **extra: Any
                ) -> None:
        self.send({"event": event, "channel": channel, "data": data, **extra})


def connect(hub: Hub, *, app: AppConfig = APP, clock: FakeClock | None = None,
            socket_id: str | None = None, keep_handshake: bool = False) -> Client:
    """Open a connection; by default its handshake frame is consumed."""
    sink = ListSink()
    conn = Connection(app, SERVER, hub, sink, clock=clock or FakeClock())
    if socket_id is not None:
        conn.socket_id = socket_id
    conn.open()
    client = Client(conn, sink)
    if not keep_handshake:
        assert [m["event"] for m in client.take()] == ["pusher:connection_established"]
    return client


@pytest.fixture
def hub() -> Hub:
    return Hub()


# -- handshake -----------------------------------------------------------------------------


def test_first_frame_is_connection_established_with_string_data(hub: Hub) -> None:
    client = connect(hub, keep_handshake=True)
    [message] = client.take()
    assert isinstance(message["data"], str)
    assert message == {
        "event": "pusher:connection_established",
        "data": Encoded({"socket_id": client.socket_id, "activity_timeout": 45}),
    }
    assert re.fullmatch(r"\d+\.\d+", client.socket_id)


def test_handshake_frame_text_is_compact_json(hub: Hub) -> None:
    client = connect(hub, keep_handshake=True, socket_id=VECTOR_SOCKET)
    assert client.sink.texts() == [
        '{"event":"pusher:connection_established",'
        '"data":"{\\"socket_id\\":\\"1234.1234\\",\\"activity_timeout\\":45}"}'
    ]


def test_open_registers_connection_in_hub(hub: Hub) -> None:
    connect(hub)
    connect(hub)
    assert hub.connection_count("1") == 2


def test_connections_get_distinct_socket_ids(hub: Hub) -> None:
    ids = {connect(hub).socket_id for _ in range(50)}
    assert len(ids) == 50


# -- ping / pong and malformed input -------------------------------------------------------


def test_ping_is_answered_with_pong(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:ping","data":{}}')
    assert client.sink.texts() == ['{"event":"pusher:pong","data":"{}"}']


def test_ping_with_string_data_is_answered_with_pong(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:ping","data":"{}"}')
    assert client.take() == [PONG]


def test_ping_without_data_is_answered_with_pong(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:ping"}')
    assert client.take() == [PONG]


def test_pong_is_accepted_silently(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:pong","data":{}}')
    assert client.take() == []
    assert client.sink.closes == []


def test_malformed_json_gets_error_with_null_code_and_connection_survives(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:ping",')
    assert client.take() == [error(None, "Invalid JSON: the message could not be parsed")]
    client.send('{"event":"pusher:ping","data":{}}')
    assert client.take() == [PONG]
    assert client.sink.closes == []


@pytest.mark.parametrize("text", ["[]", '"pusher:ping"', "42", "null", "true"])
def test_non_object_message_gets_error(hub: Hub, text: str) -> None:
    client = connect(hub)
    client.send(text)
    assert client.take() == [error(None, Prefix("Invalid message: $: "))]
    assert client.sink.closes == []


@pytest.mark.parametrize("text", ['{"data":{}}', '{"event":""}', '{"event":7}'])
def test_message_without_valid_event_gets_error(hub: Hub, text: str) -> None:
    client = connect(hub)
    client.send(text)
    assert client.take() == [error(None, Prefix("Invalid message: "))]
    assert client.sink.closes == []


def test_unknown_pusher_event_gets_error(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher:bogus","data":{}}')
    assert client.take() == [error(None, "Unknown event 'pusher:bogus'")]
    assert client.sink.closes == []


def test_pusher_internal_event_from_client_gets_error(hub: Hub) -> None:
    client = connect(hub)
    client.send('{"event":"pusher_internal:member_added","data":{}}')
    assert client.take() == [error(None, "Unknown event 'pusher_internal:member_added'")]


def test_subscribe_data_as_json_string_is_accepted(hub: Hub) -> None:
    client = connect(hub)
    client.send({"event": "pusher:subscribe",
                 "data": json.dumps({"auth": "", "channel": "my-channel"})})
    assert client.take() == [succeeded("my-channel")]
    assert client.conn.channels == {"my-channel": None}


def test_subscribe_without_channel_gets_error(hub: Hub) -> None:
    client = connect(hub)
    client.send({"event": "pusher:subscribe", "data": {"auth": ""}})
    assert client.take() == [error(None, Prefix("Invalid pusher:subscribe: "))]
    assert client.conn.channels == {}


# -- public and private subscriptions ------------------------------------------------------


def test_public_subscribe_succeeds_with_empty_object_data(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("my-channel")
    assert client.sink.texts() == [
        '{"event":"pusher_internal:subscription_succeeded","channel":"my-channel","data":"{}"}'
    ]
    channel = hub.channel("1", "my-channel")
    assert channel is not None
    assert list(channel.subscribers) == [client.conn]


def test_resubscribe_resends_success_without_duplicating_membership(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("my-channel")
    client.subscribe("my-channel")
    assert client.take() == [succeeded("my-channel"), succeeded("my-channel")]
    channel = hub.channel("1", "my-channel")
    assert channel is not None
    assert channel.subscription_count == 1


def test_private_subscribe_with_a1_vector_succeeds(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe("private-foobar", A1_PRIVATE)
    assert client.take() == [succeeded("private-foobar")]
    assert client.conn.channels == {"private-foobar": None}


def test_private_subscribe_with_bad_signature_is_refused_and_socket_stays_open(
    hub: Hub,
) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    auth = KEY + ":" + "0" * 64
    client.subscribe("private-foobar", auth)
    assert client.take() == [
        {
            "event": "pusher:subscription_error",
            "channel": "private-foobar",
            "data": {
                "type": "AuthError",
                "error": "Invalid signature: Expected HMAC SHA256 hex digest of "
                         f"1234.1234:private-foobar, but got {auth}",
                "status": 401,
            },
        },
        {
            "event": "pusher:error",
            "data": {
                "code": None,
                "message": "Invalid signature: Expected HMAC SHA256 hex digest of "
                           f"1234.1234:private-foobar, but got {auth}",
            },
        },
    ]
    assert client.sink.closes == []
    assert client.conn.state is State.OPEN
    assert client.conn.channels == {}
    assert hub.channel("1", "private-foobar") is None
    client.send('{"event":"pusher:ping","data":{}}')
    assert client.take() == [PONG]


def test_private_subscribe_signed_for_another_socket_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("private-foobar", A1_PRIVATE)  # signed for 1234.1234
    assert client.take() == bad_signature(client.socket_id, "private-foobar", A1_PRIVATE)


def test_private_subscribe_with_another_apps_key_is_refused(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    auth = "otherkey:" + A1_PRIVATE.split(":")[1]
    client.subscribe("private-foobar", auth)
    assert client.take() == bad_signature(VECTOR_SOCKET, "private-foobar", auth)


def test_private_subscribe_with_empty_auth_is_refused(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe("private-foobar", "")
    assert client.take() == bad_signature(VECTOR_SOCKET, "private-foobar", "")
    assert client.sink.closes == []


def test_private_subscribe_without_auth_member_is_refused(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.send({"event": "pusher:subscribe", "data": {"channel": "private-foobar"}})
    assert client.take() == bad_signature(VECTOR_SOCKET, "private-foobar", "")
    assert client.sink.closes == []


def test_private_encrypted_subscribe_with_a6_vector_succeeds(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe("private-encrypted-foobar", A6_ENCRYPTED)
    assert client.take() == [succeeded("private-encrypted-foobar")]


@pytest.mark.parametrize(
    "channel",
    ["private-encrypted-foobar", "private-encrypted-cache-foobar", "private-cache-foobar",
     "presence-foobar", "presence-cache-foobar"],
)
def test_auth_requiring_channel_without_auth_is_refused(hub: Hub, channel: str) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe(channel)
    assert client.take() == bad_signature(VECTOR_SOCKET, channel, "")
    assert client.conn.channels == {}


@pytest.mark.parametrize(
    "channel", ["cachefoobar", "privatefoobar", "presencefoobar"]
)
def test_public_style_channels_need_no_auth(hub: Hub, channel: str) -> None:
    client = connect(hub)
    client.subscribe(channel)
    assert client.take() == [succeeded(channel)]


@pytest.mark.parametrize(
    "channel",
    ["", "bad name", "a" * 201, "foo#bar", "#foo", "caf\u00e9", "a/b", "a*", "a:b",
     "#server-to-user-"],
)
def test_invalid_channel_name_is_refused_with_invalid_channel(hub: Hub, channel: str) -> None:
    client = connect(hub)
    client.subscribe(channel)
    message = channel_name_error(channel, 200)
    assert message
    assert client.take() == refused(channel, "InvalidChannel", message, 4009)
    assert client.sink.closes == []
    assert client.conn.channels == {}


def test_channel_name_of_200_characters_is_accepted(hub: Hub) -> None:
    client = connect(hub)
    name = "a" * 200
    client.subscribe(name)
    assert client.take() == [succeeded(name)]


def test_invalid_private_channel_name_is_refused_before_auth(hub: Hub) -> None:
    client = connect(hub)
    name = "private-" + "a" * 193
    client.subscribe(name)
    message = channel_name_error(name, 200)
    assert message
    assert client.take() == refused(name, "InvalidChannel", message, 4009)


# -- presence ------------------------------------------------------------------------------


def test_presence_subscribe_with_a4_vector_lists_self(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe("presence-foobar", A4_PRESENCE, A4_CHANNEL_DATA)
    [message] = client.take()
    assert message == succeeded(
        "presence-foobar",
        Encoded({"presence": {"ids": ["10"], "hash": {"10": {"name": "Mr. Channels"}},
                              "count": 1}}),
    )


def test_presence_channel_data_with_spaces_verifies_a5(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.subscribe("presence-foobar", A5_PRESENCE, A5_CHANNEL_DATA)
    assert client.take() == [
        succeeded("presence-foobar", Presence({"10": {"name": "Mr. Channels"}}))
    ]


def test_presence_signature_over_other_channel_data_is_refused(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    # A4's signature, with channel_data re-serialised (spaces): must not verify.
    client.subscribe("presence-foobar", A4_PRESENCE, A5_CHANNEL_DATA)
    assert client.take() == bad_signature(
        VECTOR_SOCKET, "presence-foobar", A4_PRESENCE, A5_CHANNEL_DATA
    )


def test_presence_second_user_is_announced_to_first_only(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1", {"name": "Ann"})
    ann.take()
    bob.join("presence-room", "2", {"name": "Bob"})
    assert bob.take() == [
        succeeded("presence-room", Presence({"1": {"name": "Ann"}, "2": {"name": "Bob"}}))
    ]
    assert ann.take() == [member_added("presence-room", "2", {"name": "Bob"})]


def test_presence_member_added_frame_text(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    ann.take()
    bob.join("presence-room", "2", {"name": "Bob"})
    assert ann.sink.texts() == [
        '{"event":"pusher_internal:member_added","channel":"presence-room",'
        '"data":"{\\"user_id\\":\\"2\\",\\"user_info\\":{\\"name\\":\\"Bob\\"}}"}'
    ]


def test_presence_same_user_on_two_sockets_is_one_member(hub: Hub) -> None:
    ann, tab1, tab2 = connect(hub), connect(hub), connect(hub)
    ann.join("presence-room", "1", {"name": "Ann"})
    tab1.join("presence-room", "2", {"name": "Bob"})
    ann.take()
    tab2.join("presence-room", "2", {"name": "Bob"})
    assert tab2.take() == [
        succeeded("presence-room", Presence({"1": {"name": "Ann"}, "2": {"name": "Bob"}}))
    ]
    assert ann.take() == []
    assert tab1.take() == [  # its own subscription_succeeded, nothing for its twin
        succeeded("presence-room", Presence({"1": {"name": "Ann"}, "2": {"name": "Bob"}}))
    ]
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert (channel.user_count, channel.subscription_count) == (2, 3)


def test_presence_member_removed_only_when_last_socket_unsubscribes(hub: Hub) -> None:
    ann, tab1, tab2 = connect(hub), connect(hub), connect(hub)
    ann.join("presence-room", "1")
    tab1.join("presence-room", "2")
    tab2.join("presence-room", "2")
    ann.take()
    tab1.unsubscribe("presence-room")
    assert ann.take() == []
    tab2.unsubscribe("presence-room")
    assert ann.take() == [member_removed("presence-room", "2")]
    assert tab1.take()[1:] == [] and tab2.take()[1:] == []


def test_presence_member_removed_only_when_last_socket_closes(hub: Hub) -> None:
    ann, tab1, tab2 = connect(hub), connect(hub), connect(hub)
    ann.join("presence-room", "1")
    tab1.join("presence-room", "2")
    tab2.join("presence-room", "2")
    ann.take()
    tab1.conn.closed()
    assert ann.take() == []
    tab2.conn.closed()
    assert ann.take() == [member_removed("presence-room", "2")]
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert list(channel.members) == ["1"]


def test_presence_numeric_user_id_is_kept_as_number(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    ann.take()
    bob.join("presence-room", 11, {"name": "Bob"})
    [added] = ann.take()
    assert added == member_added("presence-room", 11, {"name": "Bob"})
    assert json.loads(added["data"])["user_id"] == 11
    assert isinstance(json.loads(added["data"])["user_id"], int)
    bob.unsubscribe("presence-room")
    [removed] = ann.take()
    assert removed == member_removed("presence-room", 11)
    assert isinstance(json.loads(removed["data"])["user_id"], int)


def test_presence_numeric_and_string_ids_are_the_same_member(hub: Hub) -> None:
    ann, tab1, tab2 = connect(hub), connect(hub), connect(hub)
    ann.join("presence-room", "1")
    tab1.join("presence-room", 11)
    ann.take()
    tab2.join("presence-room", "11")
    assert ann.take() == []
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert channel.user_count == 2


def test_presence_without_channel_data_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe_signed("presence-room")  # valid signature over socket_id:channel
    assert client.take() == refused(
        "presence-room", "AuthError",
        "Presence channels need channel_data or a signed-in user", 401,
    )
    assert client.sink.closes == []
    assert hub.channel("1", "presence-room") is None


@pytest.mark.parametrize(
    "channel_data",
    ["not json", "[]", '"10"', "{}", '{"user_id":""}', '{"user_id":null}',
     '{"user_id":true}', '{"user_id":1.5}', '{"user_id":{"a":1}}'],
)
def test_presence_invalid_channel_data_is_refused(hub: Hub, channel_data: str) -> None:
    client = connect(hub)
    client.subscribe_signed("presence-room", channel_data)
    assert client.take() == refused(
        "presence-room", "AuthError", "channel_data must be a JSON object with a user_id", 401
    )
    assert client.conn.channels == {}


def test_presence_user_info_over_1024_bytes_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.join("presence-room", "1", "x" * 1023)  # JSON: 1025 bytes with the quotes
    assert client.take() == refused(
        "presence-room", "LimitReached",
        "user_info is 1025 bytes, over the 1024 bytes allowed", 4301,
    )
    assert hub.channel("1", "presence-room") is None


def test_presence_user_info_of_1024_bytes_is_accepted(hub: Hub) -> None:
    client = connect(hub)
    client.join("presence-room", "1", "x" * 1022)
    assert client.take() == [succeeded("presence-room", Presence({"1": "x" * 1022}))]


def test_presence_member_limit_refuses_the_next_distinct_member(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_presence_members=2)
    ann, bob, cid = connect(hub, app=app), connect(hub, app=app), connect(hub, app=app)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2")
    ann.take()
    bob.take()
    cid.join("presence-room", "3")
    assert cid.take() == refused(
        "presence-room", "LimitReached",
        "The maximum number of members in a presence channel (2) has been reached", 4100,
    )
    assert ann.take() == [] and bob.take() == []
    assert cid.sink.closes == []
    assert cid.conn.channels == {}


def test_presence_default_limit_refuses_the_101st_member(hub: Hub) -> None:
    members = [connect(hub) for _ in range(100)]
    for i, member in enumerate(members):
        member.join("presence-big", str(i))
    late = connect(hub)
    late.join("presence-big", "100")
    assert late.take() == refused(
        "presence-big", "LimitReached",
        "The maximum number of members in a presence channel (100) has been reached", 4100,
    )
    channel = hub.channel("1", "presence-big")
    assert channel is not None
    assert channel.user_count == 100


def test_presence_member_limit_admits_another_socket_of_a_member(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_presence_members=2)
    ann, bob, bob2 = connect(hub, app=app), connect(hub, app=app), connect(hub, app=app)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2")
    bob2.join("presence-room", "2")
    assert bob2.take() == [succeeded("presence-room", Presence({"1": None, "2": None}))]


def test_presence_member_without_user_info_is_null_in_hash(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2", {"name": "Bob"})
    assert bob.take() == [
        succeeded("presence-room", Presence({"1": None, "2": {"name": "Bob"}}))
    ]


def test_presence_resubscribe_does_not_reannounce_member(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2")
    ann.take()
    bob.take()
    bob.join("presence-room", "2")
    assert bob.take() == [succeeded("presence-room", Presence({"1": None, "2": None}))]
    assert ann.take() == []


def test_presence_resubscribe_then_one_unsubscribe_removes_the_member(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2")
    bob.join("presence-room", "2")
    ann.take()
    bob.unsubscribe("presence-room")
    assert ann.take() == [member_removed("presence-room", "2")]
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert (channel.subscription_count, channel.user_count) == (1, 1)


# -- per-socket subscription limits ---------------------------------------------------------


def channel_limit_refused(channel: str, limit: int) -> list[dict[str, Any]]:
    message = (f"Channel limit reached: a connection may be subscribed to at most {limit} "
               "channels")
    return [{"event": "pusher:subscription_error", "channel": channel,
             "data": {"type": "LimitReached", "error": message, "status": 4300}},
            error(4300, message)]


def rate_limit_refused(channel: str, limit: int) -> list[dict[str, Any]]:
    message = f"Subscription rate limit reached: at most {limit} subscriptions per second"
    return [{"event": "pusher:subscription_error", "channel": channel,
             "data": {"type": "LimitReached", "error": message, "status": 4301}},
            error(4301, message)]


CAPPED = AppConfig(id="1", key=KEY, secret=SECRET, max_channels_per_connection=2,
                   max_subscriptions_per_second=0)


def test_subscription_past_channel_limit_is_refused_with_4300(hub: Hub) -> None:
    client = connect(hub, app=CAPPED)
    client.subscribe("a")
    client.subscribe("b")
    client.take()
    client.subscribe("c")
    assert client.take() == channel_limit_refused("c", 2)
    assert hub.channel("1", "c") is None
    assert list(client.conn.channels) == ["a", "b"]


def test_socket_past_channel_limit_stays_usable(hub: Hub) -> None:
    client = connect(hub, app=CAPPED)
    for channel in ("a", "b", "c"):
        client.subscribe(channel)
    client.take()
    client.send({"event": "pusher:ping", "data": {}})
    client.unsubscribe("a")
    client.subscribe("c")
    assert client.take() == [PONG, succeeded("c")]
    assert client.conn.state is State.OPEN


def test_resubscribing_a_held_channel_at_the_channel_limit_succeeds(hub: Hub) -> None:
    client = connect(hub, app=CAPPED)
    client.subscribe("a")
    client.subscribe("b")
    client.take()
    client.subscribe("b")
    assert client.take() == [succeeded("b")]


def test_channel_limit_is_checked_before_the_signature(hub: Hub) -> None:
    client = connect(hub, app=CAPPED)
    client.subscribe("a")
    client.subscribe("b")
    client.take()
    client.subscribe("private-c", KEY + ":" + "0" * 64)
    assert client.take() == channel_limit_refused("private-c", 2)


def test_default_channel_limit_admits_1000_channels_and_refuses_the_1001st(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    for index in range(1000):
        if index % 100 == 0:
            clock.advance(1.0)  # stay under the default 100 subscriptions per second
        client.subscribe(f"c{index}")
    assert client.take() == [succeeded(f"c{index}") for index in range(1000)]
    clock.advance(1.0)
    client.subscribe("c1000")
    assert client.take() == channel_limit_refused("c1000", 1000)


def test_subscription_past_rate_limit_is_refused_with_4301(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_subscriptions_per_second=2)
    client = connect(hub, app=app)
    client.subscribe("a")
    client.subscribe("b")
    client.subscribe("c")
    assert client.take() == [succeeded("a"), succeeded("b"), *rate_limit_refused("c", 2)]
    assert hub.channel("1", "c") is None


def test_subscription_rate_limit_admits_again_in_the_next_second(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_subscriptions_per_second=1)
    clock = FakeClock()
    client = connect(hub, app=app, clock=clock)
    client.subscribe("a")
    client.subscribe("b")
    client.take()
    clock.advance(1.0)
    client.subscribe("b")
    assert client.take() == [succeeded("b")]


def test_refused_subscriptions_count_toward_the_rate_limit(hub: Hub) -> None:
    """Every subscribe message costs, signed or not: a flood of bad signatures is throttled
    before any HMAC is computed."""
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_subscriptions_per_second=1)
    client = connect(hub, app=app)
    client.subscribe("private-a", KEY + ":" + "0" * 64)
    client.take()
    client.subscribe("b")
    assert client.take() == rate_limit_refused("b", 1)


def test_only_the_first_limit_refusal_of_a_socket_is_logged(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pusher_compat")
    client = connect(hub, app=CAPPED)
    for channel in ("a", "b", "c", "d"):
        client.subscribe(channel)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [
        f"socket {client.socket_id} of app 1: subscription refused (Channel limit reached: a "
        "connection may be subscribed to at most 2 channels); later refusals on this socket "
        "are not logged"]


def test_zero_limits_mean_unlimited(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, max_channels_per_connection=0,
                    max_subscriptions_per_second=0)
    client = connect(hub, app=app)
    for index in range(1500):
        client.subscribe(f"c{index}")
    assert client.take() == [succeeded(f"c{index}") for index in range(1500)]


# -- unsubscribe ---------------------------------------------------------------------------


def test_unsubscribe_is_silent_and_leaves_the_channel(hub: Hub) -> None:
    client, other = connect(hub), connect(hub)
    client.subscribe("my-channel")
    other.subscribe("my-channel")
    client.take()
    client.unsubscribe("my-channel")
    assert client.take() == []
    assert client.conn.channels == {}
    channel = hub.channel("1", "my-channel")
    assert channel is not None
    assert list(channel.subscribers) == [other.conn]


def test_unsubscribe_twice_is_a_silent_no_op(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("my-channel")
    client.take()
    client.unsubscribe("my-channel")
    client.unsubscribe("my-channel")
    assert client.take() == []
    assert client.sink.closes == []
    assert hub.channel("1", "my-channel") is None


def test_unsubscribe_unknown_channel_is_a_no_op(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("my-channel")
    client.take()
    client.unsubscribe("never-joined")
    assert client.take() == []
    assert client.conn.channels == {"my-channel": None}


def test_unsubscribed_socket_stops_receiving_events(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("my-channel")
    client.take()
    client.unsubscribe("my-channel")
    hub.publish("1", "my-channel", b"\x81\x02{}")
    assert client.take() == []


# -- client events -------------------------------------------------------------------------


def private_pair(hub: Hub, channel: str = "private-chat", app: AppConfig = APP,
                 clock: FakeClock | None = None) -> tuple[Client, Client]:
    sender, receiver = connect(hub, app=app, clock=clock), connect(hub, app=app, clock=clock)
    sender.subscribe_signed(channel)
    receiver.subscribe_signed(channel)
    assert sender.take() == [succeeded(channel)]
    assert receiver.take() == [succeeded(channel)]
    return sender, receiver


def test_client_event_object_data_is_json_encoded_for_others(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-typing", {"name": "Ann", "n": [1, 2]})
    assert receiver.sink.texts() == [
        '{"event":"client-typing","channel":"private-chat",'
        '"data":"{\\"name\\":\\"Ann\\",\\"n\\":[1,2]}"}'
    ]


def test_client_event_string_data_is_forwarded_as_is(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-typing", '{"name": "Ann"}  ')
    assert receiver.take() == [
        {"event": "client-typing", "channel": "private-chat", "data": '{"name": "Ann"}  '}
    ]


def test_client_event_is_not_echoed_to_the_sender(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-typing", {"a": 1})
    assert sender.take() == []
    assert len(receiver.take()) == 1


def test_client_event_reaches_every_other_subscriber(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    third = connect(hub)
    third.subscribe_signed("private-chat")
    third.take()
    sender.trigger("private-chat", "client-x", "hi")
    expected = [{"event": "client-x", "channel": "private-chat", "data": "hi"}]
    assert receiver.take() == expected
    assert third.take() == expected


def test_client_event_on_private_channel_has_no_user_id(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-x", {"a": 1}, user_id="forged")
    assert receiver.take() == [
        {"event": "client-x", "channel": "private-chat", "data": '{"a":1}'}
    ]


def test_client_event_on_presence_channel_adds_sender_user_id(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    bob.join("presence-room", 2)
    ann.take()
    bob.take()
    ann.trigger("presence-room", "client-typing", {"a": 1})
    assert bob.sink.texts() == [
        '{"event":"client-typing","channel":"presence-room","data":"{\\"a\\":1}",'
        '"user_id":"1"}'
    ]
    bob.trigger("presence-room", "client-typing", "x")
    assert ann.take() == [
        {"event": "client-typing", "channel": "presence-room", "data": "x", "user_id": 2}
    ]


def test_client_event_on_presence_channel_overwrites_client_user_id(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    bob.join("presence-room", "2")
    ann.take()
    bob.take()
    ann.trigger("presence-room", "client-typing", {"a": 1}, user_id="2")
    assert bob.take() == [
        {"event": "client-typing", "channel": "presence-room", "data": '{"a":1}',
         "user_id": "1"}
    ]


def test_client_event_reaches_other_sockets_of_the_same_user(hub: Hub) -> None:
    tab1, tab2 = connect(hub), connect(hub)
    tab1.join("presence-room", "1")
    tab2.join("presence-room", "1")
    tab1.take()
    tab2.take()
    tab1.trigger("presence-room", "client-x", "hi")
    assert tab2.take() == [
        {"event": "client-x", "channel": "presence-room", "data": "hi", "user_id": "1"}
    ]
    assert tab1.take() == []


@pytest.mark.parametrize("channel", ["my-channel", "cache-news"])
def test_client_event_on_public_channel_is_rejected(hub: Hub, channel: str) -> None:
    sender, receiver = connect(hub), connect(hub)
    sender.subscribe(channel)
    receiver.subscribe(channel)
    sender.take()
    receiver.take()
    sender.trigger(channel, "client-x", {"a": 1})
    assert sender.take() == [
        error(None, f"Cannot broadcast client event on {channel}: client events are only "
                    "allowed on private and presence channels")
    ]
    assert receiver.take() == []
    assert sender.sink.closes == []


def test_client_event_on_encrypted_channel_is_rejected(hub: Hub) -> None:
    sender, receiver = private_pair(hub, "private-encrypted-chat")
    sender.trigger("private-encrypted-chat", "client-x", {"a": 1})
    assert sender.take() == [
        error(None, "Cannot broadcast client event on private-encrypted-chat: client events "
                    "are only allowed on private and presence channels")
    ]
    assert receiver.take() == []


def test_client_event_on_unsubscribed_channel_is_rejected(hub: Hub) -> None:
    sender, receiver = connect(hub), connect(hub)
    receiver.subscribe_signed("private-chat")
    receiver.take()
    sender.trigger("private-chat", "client-x", {"a": 1})
    assert sender.take() == [
        error(None, "Cannot broadcast client event (connection not subscribed to channel "
                    "private-chat)")
    ]
    assert receiver.take() == []
    assert sender.sink.closes == []


def test_client_event_after_unsubscribe_is_rejected(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.unsubscribe("private-chat")
    sender.trigger("private-chat", "client-x", "hi")
    assert sender.take() == [error(None, NOT_SUBSCRIBED.format("private-chat"))]
    assert receiver.take() == []


def test_client_event_is_rejected_when_app_disables_client_events(hub: Hub) -> None:
    app = AppConfig(id="1", key=KEY, secret=SECRET, client_events=False)
    sender, receiver = private_pair(hub, app=app)
    sender.trigger("private-chat", "client-x", {"a": 1})
    assert sender.take() == [error(4301, "The app does not have client messaging enabled.")]
    assert receiver.take() == []
    assert sender.sink.closes == []


def test_client_event_over_payload_limit_is_rejected(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-x", "x" * 10241)
    assert sender.take() == [error(4301, "Event data is over 10240 bytes")]
    assert receiver.take() == []
    assert sender.sink.closes == []


def test_client_event_at_payload_limit_is_delivered_byte_for_byte(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    data = "\u00e9" * 5120  # 10240 bytes of UTF-8: a 16-bit length frame
    sender.trigger("private-chat", "client-x", data)
    assert receiver.take() == [{"event": "client-x", "channel": "private-chat", "data": data}]
    assert sender.take() == []


def test_client_event_name_over_200_characters_is_rejected(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "client-" + "x" * 194, "hi")
    assert sender.take() == [error(4301, "Event name is longer than 200 characters")]
    assert receiver.take() == []


def test_client_event_eleventh_within_a_second_is_dropped(hub: Hub) -> None:
    clock = FakeClock()
    sender, receiver = private_pair(hub, clock=clock)
    for i in range(10):
        clock.advance(0.05)
        sender.trigger("private-chat", "client-x", str(i))
    assert sender.take() == []
    assert [m["data"] for m in receiver.take()] == [str(i) for i in range(10)]
    clock.advance(0.05)
    sender.trigger("private-chat", "client-x", "10")
    assert sender.take() == [
        error(4301, "Client event rate limit reached: at most 10 events per second; "
                    "event dropped")
    ]
    assert receiver.take() == []
    assert sender.sink.closes == []


def test_client_events_flow_again_one_second_later(hub: Hub) -> None:
    clock = FakeClock()
    sender, receiver = private_pair(hub, clock=clock)
    for i in range(11):
        sender.trigger("private-chat", "client-x", str(i))
    receiver.take()
    sender.take()
    clock.advance(1.0)
    sender.trigger("private-chat", "client-x", "later")
    assert sender.take() == []
    assert receiver.take() == [{"event": "client-x", "channel": "private-chat", "data": "later"}]


def test_non_client_event_name_from_client_is_rejected(hub: Hub) -> None:
    sender, receiver = private_pair(hub)
    sender.trigger("private-chat", "my-event", "hi")
    assert sender.take() == [error(None, "Unknown event 'my-event'")]
    assert receiver.take() == []


# -- sign-in -------------------------------------------------------------------------------


def test_signin_with_a2_vector_succeeds(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    client.send({"event": "pusher:signin",
                 "data": {"auth": A2_SIGNIN, "user_data": A2_USER_DATA}})
    # protocol.md §4.4: object form, user_data the exact string the client sent.
    assert client.take() == [
        {"event": "pusher:signin_success", "data": {"user_data": '{"id":"12345"}'}}
    ]
    assert client.conn.user_id == "12345"
    assert hub.user_connections("1", "12345") == [client.conn]


def test_signin_with_bad_signature_gets_4009_and_socket_stays_open(hub: Hub) -> None:
    client = connect(hub, socket_id=VECTOR_SOCKET)
    bad = KEY + ":" + "f" * 64
    client.send({"event": "pusher:signin", "data": {"auth": bad, "user_data": A2_USER_DATA}})
    assert client.take() == [
        error(4009, 'Invalid signature for sign-in over 1234.1234::user::{"id":"12345"}')
    ]
    assert client.sink.closes == []
    assert client.conn.state is State.OPEN
    assert client.conn.user_id is None
    client.send('{"event":"pusher:ping","data":{}}')
    assert client.take() == [PONG]


def test_signin_signed_for_another_socket_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.send({"event": "pusher:signin",
                 "data": {"auth": A2_SIGNIN, "user_data": A2_USER_DATA}})
    [message] = client.take()
    assert message == error(
        4009, f'Invalid signature for sign-in over {client.socket_id}::user::{{"id":"12345"}}'
    )
    assert client.conn.user_id is None


@pytest.mark.parametrize("user_data", ['{"name":"x"}', '{"id":""}', "[]", "nope", '{"id":true}'])
def test_signin_without_a_valid_id_is_refused(hub: Hub, user_data: str) -> None:
    client = connect(hub)
    client.signin(user_data)
    assert client.take() == [error(4009, "user_data must be a JSON object with an id")]
    assert client.conn.user_id is None
    assert client.sink.closes == []


def test_signin_as_another_user_after_signin_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.signin('{"id":"1"}')
    client.take()
    client.signin('{"id":"2"}')
    assert client.take() == [error(4009, "The connection is signed in as another user")]
    assert client.conn.user_id == "1"
    assert hub.user_connections("1", "2") == []
    assert hub.user_connections("1", "1") == [client.conn]


def test_signin_again_as_the_same_user_succeeds(hub: Hub) -> None:
    client = connect(hub)
    client.signin('{"id":"1"}')
    client.signin('{"id":"1","user_info":{"name":"Ann"}}')
    assert client.take() == [
        {"event": "pusher:signin_success", "data": {"user_data": '{"id":"1"}'}},
        {"event": "pusher:signin_success",
         "data": {"user_data": '{"id":"1","user_info":{"name":"Ann"}}'}},
    ]
    assert hub.user_connections("1", "1") == [client.conn]


def test_presence_subscribe_without_channel_data_uses_signed_in_identity(hub: Hub) -> None:
    ann, bob = connect(hub), connect(hub)
    ann.join("presence-room", "1")
    ann.take()
    bob.signin('{"id":"12345","user_info":{"name":"Bob"}}')
    bob.take()
    bob.subscribe_signed("presence-room")  # signature over socket_id:channel only
    assert bob.take() == [
        succeeded("presence-room", Presence({"1": None, "12345": {"name": "Bob"}}))
    ]
    assert ann.take() == [member_added("presence-room", "12345", {"name": "Bob"})]
    bob.trigger("presence-room", "client-x", "hi")
    assert ann.take() == [
        {"event": "client-x", "channel": "presence-room", "data": "hi", "user_id": "12345"}
    ]


def test_user_channel_subscription_succeeds_for_that_signed_in_user(hub: Hub) -> None:
    client = connect(hub)
    client.signin('{"id":"7"}')
    client.take()
    client.subscribe("#server-to-user-7")
    assert client.take() == [succeeded("#server-to-user-7")]


def test_user_channel_subscription_for_another_user_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.signin('{"id":"7"}')
    client.take()
    client.subscribe("#server-to-user-8")
    assert client.take() == refused(
        "#server-to-user-8", "AuthError", "A user channel needs a sign-in as that user", 403
    )
    assert client.sink.closes == []


def test_user_channel_subscription_without_signin_is_refused(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("#server-to-user-7")
    assert client.take() == refused(
        "#server-to-user-7", "AuthError", "A user channel needs a sign-in as that user", 403
    )


# -- liveness ------------------------------------------------------------------------------


def test_no_ping_before_activity_timeout(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(44.9)
    client.conn.check_activity()
    assert client.take() == []


def test_ping_is_sent_after_activity_timeout_of_silence(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(45)
    client.conn.check_activity()
    assert client.sink.texts() == ['{"event":"pusher:ping","data":"{}"}']
    client.take()
    clock.advance(5)
    client.conn.check_activity()
    assert client.take() == []  # one ping per silence, not one per check


def test_received_frame_resets_the_activity_timer(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(40)
    client.send('{"event":"pusher:pong","data":{}}')
    clock.advance(40)
    client.conn.check_activity()
    assert client.take() == []
    clock.advance(5)
    client.conn.check_activity()
    assert client.take() == [PING]


def test_malformed_frame_also_counts_as_activity(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(40)
    client.send("garbage")
    client.take()
    clock.advance(40)
    client.conn.check_activity()
    assert client.take() == []


def test_touch_counts_as_activity(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(40)
    client.conn.touch()  # a WebSocket-level ping or pong
    clock.advance(40)
    client.conn.check_activity()
    assert client.take() == []


def test_answer_to_ping_prevents_the_pong_timeout(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(45)
    client.conn.check_activity()
    assert client.take() == [PING]
    clock.advance(10)
    client.send('{"event":"pusher:pong","data":{}}')
    clock.advance(10)
    client.conn.check_activity()
    assert client.take() == []
    assert client.sink.closes == []


def test_no_close_before_pong_timeout(hub: Hub) -> None:
    clock = FakeClock()
    client = connect(hub, clock=clock)
    clock.advance(45)
    client.conn.check_activity()
    client.take()
    clock.advance(14.9)
    client.conn.check_activity()
    assert client.take() == []
    assert client.sink.closes == []


def test_unanswered_ping_closes_with_4201_and_leaves_the_hub(hub: Hub) -> None:
    clock = FakeClock()
    silent = connect(hub, clock=clock)
    other = connect(hub, clock=clock)
    silent.join("presence-room", "1")
    other.join("presence-room", "2")
    silent.take()
    other.take()
    clock.advance(45)
    silent.conn.check_activity()
    assert silent.take() == [PING]
    clock.advance(15)
    silent.conn.check_activity()
    assert silent.take() == [error(4201, "Pong reply not received")]
    assert silent.sink.closes == [(4201, "Pong reply not received")]
    assert silent.conn.state is State.CLOSED
    assert hub.connection_count("1") == 1
    assert other.take() == [member_removed("presence-room", "1")]
    channel = hub.channel("1", "presence-room")
    assert channel is not None
    assert list(channel.subscribers) == [other.conn]
    clock.advance(100)
    silent.conn.check_activity()
    assert silent.take() == []
    assert len(silent.sink.closes) == 1


# -- close ---------------------------------------------------------------------------------


def test_close_records_the_code_and_leaves_the_hub(hub: Hub) -> None:
    client, other = connect(hub), connect(hub)
    client.join("presence-room", "1")
    other.join("presence-room", "2")
    other.take()
    client.conn.close(4200, "Server restarting")
    assert client.sink.closes == [(4200, "Server restarting")]
    assert client.conn.state is State.CLOSED
    assert hub.connection_count("1") == 1
    assert other.take() == [member_removed("presence-room", "1")]


def test_close_is_idempotent(hub: Hub) -> None:
    client, other = connect(hub), connect(hub)
    client.join("presence-room", "1")
    other.join("presence-room", "2")
    other.take()
    client.conn.close(4200, "bye")
    client.conn.close(4009, "again")
    client.conn.closed()
    assert client.sink.closes == [(4200, "bye")]
    assert other.take() == [member_removed("presence-room", "1")]


def test_closed_is_idempotent(hub: Hub) -> None:
    client, other = connect(hub), connect(hub)
    client.join("presence-room", "1")
    other.join("presence-room", "2")
    other.take()
    client.conn.closed()
    client.conn.closed()
    assert other.take() == [member_removed("presence-room", "1")]
    assert client.sink.closes == []  # the peer closed: nothing to send
    assert hub.connection_count("1") == 1


def test_closed_connection_ignores_input(hub: Hub) -> None:
    client = connect(hub)
    client.conn.closed()
    client.send('{"event":"pusher:ping","data":{}}')
    client.subscribe("my-channel")
    client.send("garbage")
    assert client.take() == []
    assert client.conn.channels == {}
    assert hub.channel("1", "my-channel") is None


def test_closed_connection_drops_out_of_every_channel(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("a")
    client.subscribe_signed("private-b")
    client.signin('{"id":"9"}')
    client.conn.closed()
    assert hub.channel("1", "a") is None
    assert hub.channel("1", "private-b") is None
    assert hub.user_connections("1", "9") == []
    assert hub.connection_count() == 0


# -- watchlist and sign-in deadline ---------------------------------------------------------


def watchlist_events(*events: tuple[str, list[str]]) -> dict[str, Any]:
    return {
        "event": "pusher_internal:watchlist_events",
        "data": Encoded({"events": [{"name": n, "user_ids": ids} for n, ids in events]}),
    }


def signin_success(user_data: str) -> dict[str, Any]:
    return {"event": "pusher:signin_success", "data": {"user_data": user_data}}


def test_signin_with_watchlist_reports_who_is_online_and_who_is_not(hub: Hub) -> None:
    bob = connect(hub)
    bob.signin('{"id":"bob"}')
    ann = connect(hub)
    ann.signin('{"id":"ann","watchlist":["bob","cid"]}')
    assert ann.take() == [
        signin_success('{"id":"ann","watchlist":["bob","cid"]}'),
        watchlist_events(("online", ["bob"]), ("offline", ["cid"])),
    ]


def test_watched_user_signing_in_is_announced_online_once(hub: Hub) -> None:
    ann = connect(hub)
    ann.signin('{"id":"ann","watchlist":["bob"]}')
    ann.take()
    first, second = connect(hub), connect(hub)
    first.signin('{"id":"bob"}')
    second.signin('{"id":"bob"}')
    assert ann.take() == [watchlist_events(("online", ["bob"]))]


def test_watched_user_is_announced_offline_when_its_last_socket_closes(hub: Hub) -> None:
    ann = connect(hub)
    ann.signin('{"id":"ann","watchlist":["bob"]}')
    first, second = connect(hub), connect(hub)
    first.signin('{"id":"bob"}')
    second.signin('{"id":"bob"}')
    ann.take()
    first.conn.closed()
    assert ann.take() == []
    second.conn.closed()
    assert ann.take() == [watchlist_events(("offline", ["bob"]))]


def test_closed_watcher_is_told_nothing_more(hub: Hub) -> None:
    ann = connect(hub)
    ann.signin('{"id":"ann","watchlist":["bob"]}')
    ann.take()
    ann.conn.closed()
    connect(hub).signin('{"id":"bob"}')
    assert ann.take() == []


def test_watchlist_over_100_ids_keeps_the_first_100_and_warns_4302(hub: Hub) -> None:
    ann = connect(hub)
    ids = [str(i) for i in range(101)]
    user_data = json.dumps({"id": "ann", "watchlist": ids}, separators=(",", ":"))
    ann.signin(user_data)
    assert ann.take() == [
        signin_success(user_data),
        error(4302, "Watchlist has 101 user ids: only the first 100 are watched"),
        watchlist_events(("offline", ids[:100])),
    ]
    assert ann.conn.watchlist == tuple(ids[:100])


def test_watchlist_keeps_only_user_ids_as_broadcasting_user_auth_does(hub: Hub) -> None:
    ann = connect(hub)
    user_data = '{"id":"ann","watchlist":["8",9,true,false,"",1.5,{"id":3},null,"8"]}'
    ann.signin(user_data)
    assert ann.take() == [signin_success(user_data), watchlist_events(("offline", ["8", "9"]))]
    assert ann.conn.watchlist == ("8", "9")


def test_connection_not_signed_in_within_the_deadline_is_closed_4009(hub: Hub) -> None:
    clock = FakeClock()
    app = AppConfig(id="1", key=KEY, secret=SECRET, user_authentication_timeout=30)
    client = connect(hub, app=app, clock=clock)
    clock.advance(29)
    client.conn.check_activity()
    assert (client.take(), client.sink.closes) == ([], [])
    clock.advance(1)
    client.conn.check_activity()
    assert client.take() == [error(4009, "Connection not signed in within 30 seconds")]
    assert client.sink.closes == [(4009, "Connection not signed in within 30 seconds")]
    assert hub.connection_count("1") == 0


def test_signed_in_connection_outlives_the_deadline(hub: Hub) -> None:
    clock = FakeClock()
    app = AppConfig(id="1", key=KEY, secret=SECRET, user_authentication_timeout=30)
    client = connect(hub, app=app, clock=clock)
    client.signin('{"id":"1"}')
    client.take()
    clock.advance(31)
    client.conn.check_activity()
    assert (client.take(), client.sink.closes) == ([], [])


# -- cache channels ------------------------------------------------------------------------


def cache_miss(channel: str) -> dict[str, Any]:
    return {"event": "pusher:cache_miss", "channel": channel}


def remember(hub: Hub, channel: str, data: str, app: AppConfig = APP) -> bytes:
    frame = wire.event_frame("price", data, channel)
    hub.remember(app, channel, frame, data)
    return frame


def test_cache_channel_without_event_sends_cache_miss_after_success(hub: Hub) -> None:
    client = connect(hub)
    client.subscribe("cache-prices")
    assert client.take() == [succeeded("cache-prices"), cache_miss("cache-prices")]


def test_cache_channel_replays_last_event_right_after_success(hub: Hub) -> None:
    remember(hub, "cache-prices", '{"p":1}')
    remember(hub, "cache-prices", '{"p":2}')
    client = connect(hub)
    client.subscribe("cache-prices")
    assert client.take() == [
        succeeded("cache-prices"),
        {"event": "price", "channel": "cache-prices", "data": '{"p":2}'},
    ]


@pytest.mark.parametrize(
    "channel", ["private-cache-x", "private-encrypted-cache-x", "presence-cache-x"]
)
def test_every_cache_variant_replays_its_last_event(hub: Hub, channel: str) -> None:
    remember(hub, channel, "v")
    client = connect(hub)
    if channel.startswith("presence-"):
        client.join(channel, "1")
    else:
        client.subscribe_signed(channel)
    assert client.take()[1:] == [{"event": "price", "channel": channel, "data": "v"}]


def test_cached_event_expires_after_its_ttl() -> None:
    clock = FakeClock()
    hub = Hub(clock=clock)
    app = AppConfig(id="1", key=KEY, secret=SECRET, cache_ttl_seconds=60)
    remember(hub, "cache-prices", "v", app)
    clock.advance(59)
    assert hub.cached("1", "cache-prices") is not None
    clock.advance(1)
    assert hub.cached("1", "cache-prices") is None
    client = connect(hub, app=app)
    client.subscribe("cache-prices")
    assert client.take() == [succeeded("cache-prices"), cache_miss("cache-prices")]


def test_prune_cache_frees_expired_events_only() -> None:
    clock = FakeClock()
    hub = Hub(clock=clock)
    short = AppConfig(id="1", key=KEY, secret=SECRET, cache_ttl_seconds=10)
    long = AppConfig(id="2", key="k2", secret="s2", cache_ttl_seconds=100)
    remember(hub, "cache-a", "a", short)
    remember(hub, "cache-b", "b", long)
    clock.advance(10)
    hub.prune_cache()
    assert hub.cached("1", "cache-a") is None
    assert hub.cached("2", "cache-b") is not None
    assert hub._state("1").cache == {}


def test_cache_miss_is_reported_to_the_listener() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    connect(hub).subscribe("cache-prices")
    assert {"name": "cache_miss", "channel": "cache-prices"} in recorder.events


def test_resubscribing_a_cache_channel_does_not_replay_again(hub: Hub) -> None:
    remember(hub, "cache-prices", "v")
    client = connect(hub)
    client.subscribe("cache-prices")
    client.take()
    client.subscribe("cache-prices")
    assert client.take() == [succeeded("cache-prices")]


# -- channel-state events for webhooks -----------------------------------------------------


def test_listener_hears_occupied_count_and_vacated_for_a_public_channel() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    first, second = connect(hub), connect(hub)
    first.subscribe("news")
    second.subscribe("news")
    first.unsubscribe("news")
    second.conn.closed()
    assert recorder.webhook_events() == [
        {"name": "channel_occupied", "channel": "news"},
        {"name": "subscription_count", "channel": "news", "subscription_count": 1},
        {"name": "subscription_count", "channel": "news", "subscription_count": 2},
        {"name": "subscription_count", "channel": "news", "subscription_count": 1},
        {"name": "subscription_count", "channel": "news", "subscription_count": 0},
        {"name": "channel_vacated", "channel": "news"},
    ]


def test_listener_hears_members_once_per_user_on_presence() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    tab1, tab2 = connect(hub), connect(hub)
    tab1.join("presence-room", 7)
    tab2.join("presence-room", 7)
    tab1.conn.closed()
    tab2.conn.closed()
    assert recorder.webhook_events() == [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "7"},
        {"name": "member_removed", "channel": "presence-room", "user_id": "7"},
        {"name": "channel_vacated", "channel": "presence-room"},
    ]


def test_listener_hears_client_events_with_sender_and_user() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    sender, receiver = connect(hub), connect(hub)
    sender.join("presence-room", "1")
    receiver.join("presence-room", "2")
    recorder.events.clear()
    sender.trigger("presence-room", "client-typing", {"a": 1})
    assert recorder.events == [{
        "name": "client_event", "channel": "presence-room", "event": "client-typing",
        "data": '{"a":1}', "socket_id": sender.socket_id, "user_id": "1",
    }]


def test_listener_hears_nothing_of_user_channels(hub: Hub) -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    client = connect(hub)
    client.signin('{"id":"1"}')
    client.subscribe("#server-to-user-1")
    client.conn.closed()
    assert recorder.webhook_events() == []


def test_listener_hears_connections_open_and_close() -> None:
    recorder = Recorder()
    hub = Hub(listeners=[recorder])
    client = connect(hub)
    client.conn.closed()
    assert recorder.events == [
        {"name": "connection_opened", "socket_id": client.socket_id},
        {"name": "connection_closed", "socket_id": client.socket_id},
    ]


def test_every_listener_hears_every_event() -> None:
    first, second = Recorder(), Recorder()
    hub = Hub(listeners=[first, second])
    connect(hub).subscribe("news")
    assert first.events == second.events
    assert len(first.events) == 3  # opened, occupied, count


# -- counters for statistics and metrics ---------------------------------------------------


def test_counters_add_up_messages_in_and_out_and_the_peak(hub: Hub) -> None:
    first, second = connect(hub), connect(hub)
    first.subscribe("news")
    second.subscribe("news")
    frame = wire.event_frame("e", "{}", "news")
    hub.publish("1", "news", frame)
    first.conn.closed()
    counters = hub.counters("1")
    sent = [*first.sink.frames, *second.sink.frames]  # handshakes were taken by connect()
    handshakes = sum(len(wire.event_frame(
        "pusher:connection_established",
        {"socket_id": client.socket_id, "activity_timeout": SERVER.activity_timeout},
    )) for client in (first, second))
    assert counters.ws_messages_in == 2
    assert counters.ws_bytes_in == 2 * len('{"event": "pusher:subscribe", "data": {"auth": "", '
                                           '"channel": "news"}}')
    assert len(sent) == 4
    assert counters.ws_messages_out == 2 + len(sent)
    assert counters.ws_bytes_out == handshakes + sum(len(f) for f in sent)
    assert counters.connections_peak == 2
    assert hub.connection_count("1") == 1
