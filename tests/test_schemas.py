"""The protocol schemas: which frames and request bodies the server accepts structurally.

Good examples are real frames and bodies as pusher-js, Laravel Echo and the Node, Python and
PHP HTTP SDKs send them (taken from the team's protocol notes, protocol.md sections 2-7).
Bodies that an SDK serialises with its own spacing are written as the raw bytes on the wire
and parsed, like the server does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pusher_compat import schemas
from pusher_compat.schemas import validate

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "protocol"
SCHEMA_FILES = sorted(PROTOCOL_DIR.glob("*.json"))

PRIVATE_AUTH = (
    "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
)
PRESENCE_AUTH = (
    "278d425bdf160c739803:4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800"
)
SIGNIN_AUTH = (
    "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
)


def good(name: str, case: str, instance: Any) -> Any:
    """A table row: ``instance`` is valid against schema ``name``."""
    return pytest.param(name, instance, id=f"{name}/{case}")


def bad(name: str, case: str, instance: Any, mentions: str) -> Any:
    """A table row: ``instance`` is invalid, and the message contains ``mentions``."""
    return pytest.param(name, instance, mentions, id=f"{name}/{case}")


GOOD = [
    # Any client frame, as pusher-js / Echo send them.
    good("client-message", "ping", {"event": "pusher:ping", "data": {}}),
    good("client-message", "pong", {"event": "pusher:pong", "data": {}}),
    good("client-message", "no-data", {"event": "pusher:ping"}),
    good(
        "client-message",
        "subscribe-public",
        {"event": "pusher:subscribe", "data": {"auth": "", "channel": "my-channel"}},
    ),
    good(
        "client-message",
        "subscribe-data-as-json-string",
        {"event": "pusher:subscribe", "data": '{"auth":"","channel":"my-channel"}'},
    ),
    good(
        "client-message",
        "unsubscribe",
        {"event": "pusher:unsubscribe", "data": {"channel": "my-channel"}},
    ),
    good(
        "client-message",
        "signin",
        {"event": "pusher:signin", "data": {"auth": SIGNIN_AUTH, "user_data": '{"id":"12345"}'}},
    ),
    good(
        "client-message",
        "whisper",
        {"event": "client-typing", "data": {"name": "Ann"}, "channel": "private-chat.1"},
    ),
    good(
        "client-message",
        "extra-members",
        {"event": "client-typing", "channel": "presence-chat.1", "data": {}, "user_id": "10"},
    ),
    # data of pusher:subscribe.
    good("pusher-subscribe", "public", {"auth": "", "channel": "my-channel"}),
    good("pusher-subscribe", "public-without-auth", {"channel": "my-channel"}),
    good("pusher-subscribe", "private", {"auth": PRIVATE_AUTH, "channel": "private-foobar"}),
    good(
        "pusher-subscribe",
        "presence-node-sdk-channel-data",
        {
            "auth": PRESENCE_AUTH,
            "channel_data": '{"user_id":"10","user_info":{"name":"Mr. Channels"}}',
            "channel": "presence-foobar",
        },
    ),
    good(
        "pusher-subscribe",
        "presence-python-sdk-channel-data",
        {
            "auth": PRESENCE_AUTH,
            "channel_data": '{"user_id": "10", "user_info": {"name": "Mr. Channels"}}',
            "channel": "presence-foobar",
        },
    ),
    good(
        "pusher-subscribe",
        "presence-signed-in-user",
        {"auth": PRESENCE_AUTH, "channel": "presence-foobar"},
    ),
    good("pusher-subscribe", "user-channel", {"auth": "", "channel": "#server-to-user-1"}),
    # data of pusher:unsubscribe.
    good("pusher-unsubscribe", "public", {"channel": "my-channel"}),
    good("pusher-unsubscribe", "presence", {"channel": "presence-foobar"}),
    # data of pusher:signin.
    good("pusher-signin", "node-sdk", {"auth": SIGNIN_AUTH, "user_data": '{"id":"12345"}'}),
    good(
        "pusher-signin",
        "python-sdk-with-user-info-and-watchlist",
        {
            "auth": SIGNIN_AUTH,
            "user_data": '{"id": "12345", "user_info": {"name": "Ann"}, "watchlist": ["2"]}',
        },
    ),
    # Whole client-* frames.
    good(
        "client-event",
        "whisper-object-data",
        {"event": "client-typing", "data": {"name": "Ann"}, "channel": "private-chat.1"},
    ),
    good(
        "client-event",
        "string-data",
        {"event": "client-typing", "data": '{"name":"Ann"}', "channel": "presence-chat.1"},
    ),
    good("client-event", "no-data", {"event": "client-ping", "channel": "private-chat.1"}),
    good(
        "client-event",
        "client-supplied-user-id",
        {"event": "client-typing", "data": {}, "channel": "presence-chat.1", "user_id": "99"},
    ),
    # POST /apps/{app_id}/events bodies.
    good(
        "api-event",
        "docs-example",
        json.loads('{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'),
    ),
    good(
        "api-event",
        "node-sdk",
        json.loads('{"name":"foo","data":"{\\"some\\":\\"data\\"}","channels":["project-3"]}'),
    ),
    good(
        "api-event",
        "python-sdk-single-channel-as-list",
        json.loads(
            '{"name": "foo", "channels": ["project-3"], "data": "{\\"some\\": \\"data\\"}"}'
        ),
    ),
    good(
        "api-event",
        "php-sdk-single-channel",
        {"name": "my-event", "data": '{"message":"hello world"}', "channel": "my-channel"},
    ),
    good(
        "api-event",
        "laravel-to-others",
        {
            "name": "App\\Events\\OrderShipped",
            "data": '{"order":{"id":1},"socket":"1234.1234"}',
            "channel": "private-orders.1",
            "socket_id": "1234.1234",
        },
    ),
    good(
        "api-event",
        "several-channels-with-info",
        {
            "name": "foo",
            "data": "{}",
            "channels": ["presence-foobar", "another"],
            "info": "user_count,subscription_count",
        },
    ),
    good(
        "api-event",
        "node-send-to-user",
        {"name": "ev", "data": "{}", "channels": ["#server-to-user-12345"]},
    ),
    good(
        "api-event",
        "php-send-to-user",
        {"name": "ev", "data": "{}", "channel": "#server-to-user-12345"},
    ),
    good(
        "api-event",
        "encrypted-data",
        {
            "name": "secret",
            "channels": ["private-encrypted-foobar"],
            "data": '{"nonce":"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIz","ciphertext":"/NBKaQun06fH"}',
        },
    ),
    good("api-event", "empty-string-data", {"name": "foo", "data": "", "channel": "my-channel"}),
    good(
        "api-event",
        "non-string-data",
        {"name": "foo", "data": {"some": "data"}, "channel": "my-channel"},
    ),
    good(
        "api-event",
        "extra-members",
        {"name": "foo", "data": "x", "channel": "my-channel", "async": True},
    ),
    # POST /apps/{app_id}/batch_events bodies.
    good(
        "api-batch-events",
        "node-sdk",
        {
            "batch": [
                {"channel": "my-channel", "name": "ev1", "data": '{"a":1}'},
                {"channel": "presence-foobar", "name": "ev2", "data": '{"b":2}'},
            ]
        },
    ),
    good(
        "api-batch-events",
        "python-sdk",
        json.loads('{"batch": [{"channel": "my-channel", "name": "ev", "data": "{\\"a\\": 1}"}]}'),
    ),
    good(
        "api-batch-events",
        "socket-id-and-info",
        {
            "batch": [
                {
                    "name": "new-order",
                    "channel": "private-orders",
                    "data": '{"id":7}',
                    "socket_id": "1234.1234",
                    "info": "subscription_count",
                },
                {"name": "price-updated", "channel": "cache-prices", "data": '{"p":1}'},
            ]
        },
    ),
    # POST .../users/{user_id}/terminate_connections bodies.
    good("api-terminate-connections", "sdk-empty-object", {}),
    good("api-terminate-connections", "python-sdk-raw-body", json.loads("{}")),
]

BAD = [
    bad("client-message", "missing-event", {"data": {}}, "'event' is a required property"),
    bad("client-message", "empty-event", {"event": "", "data": {}}, "$.event"),
    bad("client-message", "event-not-a-string", {"event": 5}, "$.event"),
    bad(
        "client-message",
        "channel-not-a-string",
        {"event": "client-typing", "channel": ["private-chat.1"]},
        "$.channel",
    ),
    bad("client-message", "array-frame", ["pusher:ping", {}], "$: "),
    bad("client-message", "null-frame", None, "$: None is not of type 'object'"),
    bad("pusher-subscribe", "missing-channel", {"auth": ""}, "'channel' is a required property"),
    bad("pusher-subscribe", "channel-not-a-string", {"auth": "", "channel": 5}, "$.channel"),
    bad("pusher-subscribe", "null-auth", {"auth": None, "channel": "private-x"}, "$.auth"),
    bad(
        "pusher-subscribe",
        "channel-data-not-stringified",
        {"auth": PRESENCE_AUTH, "channel": "presence-foobar", "channel_data": {"user_id": "10"}},
        "$.channel_data",
    ),
    bad(
        "pusher-subscribe",
        "data-left-as-json-string",
        '{"auth":"","channel":"my-channel"}',
        "is not of type 'object'",
    ),
    bad("pusher-unsubscribe", "missing-channel", {}, "'channel' is a required property"),
    bad("pusher-unsubscribe", "null-channel", {"channel": None}, "$.channel"),
    bad("pusher-unsubscribe", "bare-channel-name", "my-channel", "$: 'my-channel'"),
    bad(
        "pusher-signin",
        "missing-auth",
        {"user_data": '{"id":"12345"}'},
        "'auth' is a required property",
    ),
    bad("pusher-signin", "missing-user-data", {"auth": SIGNIN_AUTH}, "'user_data'"),
    bad(
        "pusher-signin",
        "user-data-not-stringified",
        {"auth": SIGNIN_AUTH, "user_data": {"id": "12345"}},
        "$.user_data",
    ),
    bad("pusher-signin", "auth-not-a-string", {"auth": 1, "user_data": "{}"}, "$.auth"),
    bad(
        "client-event",
        "no-client-prefix",
        {"event": "typing", "channel": "private-chat.1"},
        "$.event: 'typing' does not match '^client-'",
    ),
    bad(
        "client-event",
        "pusher-event",
        {"event": "pusher:subscribe", "channel": "private-chat.1"},
        "$.event",
    ),
    bad(
        "client-event",
        "prefix-is-case-sensitive",
        {"event": "Client-typing", "channel": "private-chat.1"},
        "$.event",
    ),
    bad(
        "client-event",
        "missing-channel",
        {"event": "client-typing", "data": {}},
        "'channel' is a required property",
    ),
    bad("client-event", "missing-event", {"channel": "private-chat.1"}, "'event'"),
    bad(
        "client-event",
        "channel-not-a-string",
        {"event": "client-typing", "channel": None},
        "$.channel",
    ),
    bad("api-event", "neither-channel-nor-channels", {"name": "foo", "data": "x"}, "'channels'"),
    bad(
        "api-event",
        "both-channel-and-channels",
        {"name": "foo", "data": "x", "channel": "a", "channels": ["b"]},
        "'channels'",
    ),
    bad(
        "api-event",
        "empty-channels",
        {"name": "foo", "data": "x", "channels": []},
        "$.channels: [] should be non-empty",
    ),
    bad(
        "api-event",
        "channels-not-a-list",
        {"name": "foo", "data": "x", "channels": "my-channel"},
        "$.channels",
    ),
    bad(
        "api-event",
        "channels-item-not-a-string",
        {"name": "foo", "data": "x", "channels": ["a", 2]},
        "$.channels[1]",
    ),
    bad(
        "api-event", "channel-not-a-string", {"name": "foo", "data": "x", "channel": 1}, "$.channel"
    ),
    bad("api-event", "missing-name", {"data": "x", "channel": "a"}, "'name' is a required"),
    bad("api-event", "name-not-a-string", {"name": 1, "data": "x", "channel": "a"}, "$.name"),
    bad("api-event", "missing-data", {"name": "foo", "channel": "a"}, "'data' is a required"),
    bad(
        "api-event",
        "malformed-socket-id",
        {"name": "foo", "data": "x", "channel": "a", "socket_id": "abc"},
        "$.socket_id",
    ),
    bad(
        "api-event",
        "socket-id-without-dot",
        {"name": "foo", "data": "x", "channel": "a", "socket_id": "12341234"},
        "$.socket_id",
    ),
    bad(
        "api-event",
        "socket-id-not-ascii-digits",
        {"name": "foo", "data": "x", "channel": "a", "socket_id": "\u0661\u0662.\u0663\u0664"},
        "$.socket_id",
    ),
    bad(
        "api-event",
        "socket-id-a-number",
        {"name": "foo", "data": "x", "channel": "a", "socket_id": 1234.1234},
        "$.socket_id",
    ),
    bad(
        "api-event",
        "info-a-list",
        {"name": "foo", "data": "x", "channel": "a", "info": ["user_count"]},
        "$.info",
    ),
    bad("api-event", "body-a-list", [{"name": "foo", "data": "x", "channel": "a"}], "$: "),
    bad("api-batch-events", "missing-batch", {}, "'batch' is a required property"),
    bad("api-batch-events", "empty-batch", {"batch": []}, "$.batch: [] should be non-empty"),
    bad(
        "api-batch-events",
        "batch-not-a-list",
        {"batch": {"name": "ev", "channel": "a", "data": "x"}},
        "$.batch",
    ),
    bad(
        "api-batch-events",
        "item-missing-channel",
        {"batch": [{"name": "ev", "channel": "a", "data": "x"}, {"name": "ev", "data": "x"}]},
        "$.batch[1]: 'channel' is a required property",
    ),
    bad(
        "api-batch-events",
        "item-with-channels-list",
        {"batch": [{"name": "ev", "channels": ["a"], "data": "x"}]},
        "'channel' is a required property",
    ),
    bad(
        "api-batch-events",
        "item-channel-not-a-string",
        {"batch": [{"name": "ev", "channel": ["a"], "data": "x"}]},
        "$.batch[0].channel",
    ),
    bad(
        "api-batch-events",
        "item-missing-name",
        {"batch": [{"channel": "a", "data": "x"}]},
        "'name' is a required property",
    ),
    bad(
        "api-batch-events",
        "item-missing-data",
        {"batch": [{"name": "ev", "channel": "a"}]},
        "'data' is a required property",
    ),
    bad(
        "api-batch-events",
        "item-malformed-socket-id",
        {"batch": [{"name": "ev", "channel": "a", "data": "x", "socket_id": "1234"}]},
        "$.batch[0].socket_id",
    ),
    bad("api-batch-events", "item-not-an-object", {"batch": ["ev"]}, "$.batch[0]"),
    bad("api-terminate-connections", "empty-list", [], "$: [] is not of type 'object'"),
    bad("api-terminate-connections", "empty-string", "", "$: "),
]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.stem)
def test_every_schema_file_is_a_valid_draft_2020_12_schema(path: Path) -> None:
    Draft202012Validator.check_schema(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.stem)
def test_every_schema_declares_its_dialect_id_title_and_description(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://pusher-compat.dev/protocol/{path.stem}.json"
    assert schema["title"]
    assert schema["description"]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.stem)
def test_the_examples_inside_every_schema_are_valid(path: Path) -> None:
    examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
    assert examples
    for example in examples:
        assert validate(path.stem, example) is None


def test_there_is_a_schema_for_every_client_message_and_api_body() -> None:
    assert {path.stem for path in SCHEMA_FILES} == {
        "client-message",
        "pusher-subscribe",
        "pusher-unsubscribe",
        "pusher-signin",
        "client-event",
        "api-event",
        "api-batch-events",
        "api-terminate-connections",
        "socket-id",
    }


@pytest.mark.parametrize("socket_id", ["1." + "1" * 21, "1" * 100_000 + ".1", "1.1\n", "²³.1"])
@pytest.mark.parametrize(
    ("name", "body"),
    [("api-event", {"name": "ev", "channel": "a", "data": "x"}),
     ("api-batch-events", {"batch": [{"name": "ev", "channel": "a", "data": "x"}]})],
    ids=["event", "batch"],
)
def test_api_bodies_refuse_the_socket_ids_that_socket_id_json_refuses(
    name: str, body: dict[str, Any], socket_id: str
) -> None:
    item = body["batch"][0] if name == "api-batch-events" else body
    item["socket_id"] = socket_id
    assert validate("socket-id", socket_id) is not None
    message = validate(name, body)
    assert message is not None
    assert "socket_id" in message
    assert "does not match '^[0-9]{1,20}" in message


def test_a_socket_id_of_twenty_digits_each_is_valid_and_twenty_one_is_not() -> None:
    assert validate("socket-id", "9" * 20 + "." + "9" * 20) is None
    assert validate("socket-id", "9" * 21 + ".9") is not None


def test_a_reference_to_a_sibling_schema_file_is_inlined_without_its_root_keywords() -> None:
    documents = {"id.json": {"$schema": "x", "$id": "y", "type": "string"}}
    root = {"properties": {"id": {"description": "an id", "$ref": "id.json"}}}
    assert schemas._inline_refs(root, root, (), documents) == {
        "properties": {"id": {"type": "string"}}
    }


@pytest.mark.parametrize(("name", "instance"), GOOD)
def test_accepts_what_real_clients_and_sdks_send(name: str, instance: Any) -> None:
    assert validate(name, instance) is None


@pytest.mark.parametrize(("name", "instance", "mentions"), BAD)
def test_rejects_with_a_message_naming_the_offending_field(
    name: str, instance: Any, mentions: str
) -> None:
    message = validate(name, instance)
    assert message is not None
    assert mentions in message


def test_the_message_is_the_json_path_then_what_is_wrong() -> None:
    body = {
        "batch": [
            {"name": "ev", "channel": "a", "data": "x"},
            {"name": "ev", "channel": 5, "data": "x"},
        ]
    }
    assert validate("api-batch-events", body) == "$.batch[1].channel: 5 is not of type 'string'"


def test_a_problem_with_the_instance_itself_is_reported_at_the_root() -> None:
    assert validate("pusher-subscribe", "my-channel") == "$: 'my-channel' is not of type 'object'"


def test_missing_both_channel_and_channels_names_each_alternative() -> None:
    message = validate("api-event", {"name": "foo", "data": "x"})
    assert message is not None
    assert "'channel' is a required property" in message
    assert "'channels' is a required property" in message


def test_a_long_offending_value_is_cut_short_in_the_message() -> None:
    message = validate("client-event", {"event": "typing" + "x" * 10_000, "channel": "private-a"})
    assert message is not None
    assert message.startswith("$.event: 'typingxxx")
    assert message.endswith("... does not match '^client-'")
    assert len(message) < 200


def test_the_message_is_a_single_line() -> None:
    message = validate("client-event", {"event": "typing\nmore", "channel": "private-a"})
    assert message is not None
    assert "\n" not in message


def test_an_unknown_schema_name_raises_key_error() -> None:
    with pytest.raises(KeyError, match="pusher-nope"):
        validate("pusher-nope", {})


def test_schema_files_are_read_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert validate("client-message", {"event": "pusher:ping"}) is None

    def no_more_reading() -> Path:
        raise AssertionError("schema folder read again")

    monkeypatch.setattr(schemas, "_protocol_dir", no_more_reading)
    assert validate("api-terminate-connections", {}) is None


def test_local_references_are_inlined_when_the_schemas_are_compiled() -> None:
    root = {"items": {"$ref": "#/$defs/event"},
            "$defs": {"event": {"type": "object", "properties": {"x": {"$ref": "#/$defs/x"}}},
                      "x": {"type": "string"}}}
    inlined = schemas._inline_refs(root, root, ())
    assert inlined["items"] == {"type": "object", "properties": {"x": {"type": "string"}}}


def test_a_reference_with_sibling_keywords_or_in_a_cycle_is_kept() -> None:
    root = {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "properties": {"a": {"$ref": "#/$defs/node", "minItems": 1},
                           "b": {"$ref": "#/$defs/node"}}}
    inlined = schemas._inline_refs(root, root, ())
    assert inlined["properties"]["a"] == {"$ref": "#/$defs/node", "minItems": 1}
    assert inlined["properties"]["b"] == {"type": "array", "items": {"$ref": "#/$defs/node"}}
    assert Draft202012Validator(inlined).is_valid({"b": [[[[]]]]})
    assert not Draft202012Validator(inlined).is_valid({"b": [[["x"]]]})


# -- the compiled check: the same verdicts as jsonschema --------------------------------------
#
# validate() decides valid/invalid with a check compiled from each schema, and asks jsonschema
# only to word the error. These tests hold the two verdicts equal: on the schemas' examples, on
# the tables above, on arbitrary JSON values, on mutations of valid instances, and, for the
# compiler itself, on generated schemas.

SCHEMA_NAMES = [path.stem for path in SCHEMA_FILES]

# Property names of every schema, so that generated objects hit the members the schemas check.
MEMBER_NAMES = sorted(
    {"batch", "name", "data", "channel", "channels", "socket_id", "info", "event", "auth",
     "channel_data", "user_data", "user_id", "async", ""}
)

# Values at the edges of what the schemas tell apart.
EDGE_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 0.0, -2.0, 1.5, 2**70, 1e300, "", "x", "client-",
    "client-typing", "Client-typing", "pusher:ping", "1234.1234", "1.1\n", "\u00b2\u00b3.1",
    "\u0661.\u0662", "1." + "1" * 21, "9" * 20 + "." + "9" * 20, "client-" + "x" * 5_000,
    "x" * 10_000, [], {}, [""], ["a", "b"], {"channel": "a"},
]

_keys = st.sampled_from(MEMBER_NAMES) | st.text(max_size=6)
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
            | st.text(max_size=20) | st.sampled_from(EDGE_VALUES))
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=12,
)


def nest(depth: int, leaf: Any, in_objects: bool) -> Any:
    """``leaf`` inside ``depth`` levels of one-member objects or one-item arrays."""
    for _ in range(depth):
        leaf = {"channel": leaf} if in_objects else [leaf]
    return leaf


deep_values = st.builds(nest, st.integers(1, 60), _scalars, st.booleans())

# The schemas' examples and the table rows above: the starting points of the mutations.
STARTS: list[Any] = [
    *(example for path in SCHEMA_FILES
      for example in json.loads(path.read_text(encoding="utf-8"))["examples"]),
    *(row.values[1] for row in GOOD + BAD),
]

# Each instance is checked against every schema: one generated value, nine verdicts.
PARITY = settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


def assert_same_verdicts(instance: Any) -> None:
    """The compiled check of every schema agrees with jsonschema on ``instance``."""
    for name in SCHEMA_NAMES:
        schema = schemas._schema(name)
        assert schema.check(instance) is schema.validator.is_valid(instance), (name, instance)


def containers(value: Any) -> Iterator[dict[str, Any] | list[Any]]:
    """``value`` and every object or array inside it."""
    if isinstance(value, dict | list):
        yield value
        for child in value.values() if isinstance(value, dict) else value:
            yield from containers(child)


def mutate(instance: Any, data: st.DataObject) -> Any:
    """``instance`` with one member or item replaced, dropped or added (or, when it holds
    none, another value altogether). Changes ``instance`` in place."""
    places = list(containers(instance))
    if not places:
        return data.draw(json_values)
    place = data.draw(st.sampled_from(places))
    action = data.draw(st.sampled_from(["replace", "drop", "add"]))
    # A copy: the strategies hand out the very lists and dicts of EDGE_VALUES.
    value = copy.deepcopy(data.draw(json_values | deep_values))
    if isinstance(place, dict):
        if action == "add" or not place:
            place[data.draw(_keys)] = value
            return instance
        key = data.draw(st.sampled_from(sorted(place)))
        if action == "drop":
            del place[key]
        else:
            place[key] = value
        return instance
    if action == "add" or not place:
        place.insert(data.draw(st.integers(0, len(place))), value)
        return instance
    index = data.draw(st.integers(0, len(place) - 1))
    if action == "drop":
        del place[index]
    else:
        place[index] = value
    return instance


def test_the_compiled_check_agrees_with_jsonschema_on_examples_and_tables() -> None:
    for instance in STARTS:
        assert_same_verdicts(instance)


@PARITY
@given(instance=json_values | deep_values)
def test_the_compiled_check_agrees_with_jsonschema_on_any_json_value(instance: Any) -> None:
    assert_same_verdicts(instance)


@PARITY
@given(data=st.data())
def test_the_compiled_check_agrees_with_jsonschema_on_mutated_instances(
    data: st.DataObject
) -> None:
    instance = copy.deepcopy(data.draw(st.sampled_from(STARTS)))
    for _ in range(data.draw(st.integers(1, 3))):
        instance = mutate(instance, data)
    assert_same_verdicts(instance)


def test_the_compiled_check_follows_jsonschema_on_integers_and_booleans() -> None:
    check = schemas._compile({"type": "integer"}, "test")
    assert [check(value) for value in (1, 1.0, -0.0, 1.5, True, False, "1")] == [
        True, True, True, False, False, False, False]
    number = schemas._compile({"type": "number"}, "test")
    assert [number(value) for value in (1, 1.5, True)] == [True, True, False]
    one = schemas._compile({"enum": [1, [True], {"a": 1.0}]}, "test")
    assert [one(value) for value in (1.0, True, [1], [True], {"a": 1})] == [
        True, False, False, True, True]


# Schemas built from the keywords the compiler implements, to hold its verdicts equal to
# jsonschema's beyond what protocol/ uses today.
_TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]
_small_values = st.recursive(
    st.none() | st.booleans() | st.sampled_from([0, 1, 1.0, 2, -1, 1.5, "", "a", "1"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner,
                                                                 max_size=2),
    max_leaves=4,
)
_leaf_keywords = {
    "type": st.sampled_from(_TYPES) | st.lists(st.sampled_from(_TYPES), min_size=1, max_size=3,
                                               unique=True),
    "required": st.lists(st.sampled_from("abc"), max_size=2, unique=True),
    "minItems": st.integers(0, 2),
    "maxItems": st.integers(0, 3),
    "minLength": st.integers(0, 2),
    "maxLength": st.integers(0, 3),
    "pattern": st.sampled_from(["^a", "a$", "^[0-9]{1,2}\\.[0-9]$(?!\\n)", "", "b+"]),
    "const": _small_values,
    "enum": st.lists(_small_values, min_size=1, max_size=3),
    "title": st.just("annotation"),
}


def keywords(strategies: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Subschemas of up to three of ``strategies``' keywords, each with a value drawn from it."""
    one_keyword = st.one_of([value.map(lambda drawn, key=key: {key: drawn})
                             for key, value in strategies.items()])
    return st.lists(one_keyword, max_size=3).map(lambda parts: {k: v for part in parts
                                                                for k, v in part.items()})


generated_schemas = st.recursive(
    st.booleans() | keywords(_leaf_keywords),
    lambda inner: keywords({
        **_leaf_keywords,
        "properties": st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
        "items": inner,
        "oneOf": st.lists(inner, min_size=1, max_size=3),
    }),
    max_leaves=6,
)
_instances_for_generated = st.recursive(
    _small_values | st.sampled_from(["aa", "ab", "12.3", "12.3\n", "bbb", 3, 2.0]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(schema=generated_schemas, instances=st.lists(_instances_for_generated, max_size=8))
def test_the_compiler_agrees_with_jsonschema_on_generated_schemas(
    schema: Any, instances: list[Any]
) -> None:
    check, reference = schemas._compile(schema, "test"), Draft202012Validator(schema)
    for instance in instances:
        assert check(instance) is reference.is_valid(instance), (schema, instance)


# Schemas whose $ref stays a reference (beside other keywords, or in a cycle).
REFERENCING = [
    {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
     "$ref": "#/$defs/node"},
    {"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
     "properties": {"a": {"$ref": "#/$defs/node", "minItems": 1}}},
    {"type": "object", "required": ["v"],
     "properties": {"v": {"type": "integer"}, "next": {"$ref": "#"}}},
    {"$defs": {"a/b~c": {"type": "string", "pattern": "^client-"}},
     "properties": {"a": {"$ref": "#/$defs/a~1b~0c"}}},
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/oneOf/0"}}]},
]
_linked_values = st.recursive(
    st.sampled_from([None, 1, 1.0, True, "client-x", "x", {}, []]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "v", "next"]), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None, database=None)
@given(instance=_linked_values)
def test_the_compiler_follows_local_references_and_their_cycles(instance: Any) -> None:
    for schema in REFERENCING:
        check = schemas._compile(schema, "test")
        assert check(instance) is Draft202012Validator(schema).is_valid(instance), schema


def test_an_unimplemented_keyword_is_refused_naming_it_and_where_it_is() -> None:
    schema = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
    with pytest.raises(schemas.UnsupportedSchema) as refused:
        schemas._compile(schema, "protocol/x.json")
    assert str(refused.value) == (
        "protocol/x.json#/properties/email: the compiled validation does not implement "
        "'format' (it implements $defs, $ref, const, enum, items, maxItems, maxLength, "
        "minItems, minLength, oneOf, pattern, properties, required, type); implement it in "
        "schemas.py before using it"
    )


@pytest.mark.parametrize(
    "schema",
    [{"anyOf": [{"type": "string"}]}, {"additionalProperties": False},
     {"prefixItems": [{"type": "string"}]}, {"items": {"unevaluatedProperties": False}},
     {"$defs": {"unused": {"minimum": 1}}}, {"properties": {"a": {"$id": "other.json"}}},
     {"propertyNames": {"pattern": "^a"}}],
    ids=["anyOf", "additionalProperties", "prefixItems", "nested", "in-unused-defs",
         "id-below-the-root", "propertyNames"],
)
def test_every_keyword_the_compiler_does_not_implement_is_refused(schema: Any) -> None:
    with pytest.raises(schemas.UnsupportedSchema, match="does not implement"):
        schemas._compile(schema, "test")


@pytest.mark.parametrize(
    ("ref", "problem"),
    [("other.json", "the compiled validation does not follow $ref 'other.json': only a JSON "
      "pointer within the schema (#/...) or a sibling schema file that can be inlined (a $ref "
      "beside annotations only, outside a cycle)"),
     ("#anchor", "the compiled validation does not follow $ref '#anchor'"),
     ("#/$defs/missing", "$ref '#/$defs/missing' points at nothing")],
    ids=["other-file", "anchor", "nowhere"],
)
def test_a_reference_the_compiler_cannot_follow_is_refused(ref: str, problem: str) -> None:
    with pytest.raises(schemas.UnsupportedSchema) as refused:
        schemas._compile({"properties": {"a": {"$ref": ref}}}, "test")
    assert str(refused.value).startswith(f"test#/properties/a/$ref: {problem}")


def test_annotations_are_accepted_and_change_nothing() -> None:
    check = schemas._compile(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://x/y.json",
         "title": "t", "description": "d", "examples": [1], "$comment": "c", "type": "string"},
        "test",
    )
    assert check("x")
    assert not check(1)


def test_a_schema_folder_with_an_unimplemented_keyword_fails_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ok.json").write_text('{"type": "object"}', encoding="utf-8")
    (tmp_path / "odd.json").write_text('{"type": "string", "format": "uuid"}', encoding="utf-8")
    monkeypatch.setattr(schemas, "_protocol_dir", lambda: tmp_path)
    with pytest.raises(schemas.UnsupportedSchema, match=r"^protocol/odd\.json#: .*'format'"):
        schemas._load_all()
