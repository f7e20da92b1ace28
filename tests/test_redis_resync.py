"""The resynchronisation diff and the Redis key names, pure: a ledger and local state in, the
exact script calls out."""

from __future__ import annotations

from pusher_compat import wire
from pusher_compat.adapters import bus
from pusher_compat.adapters.redis_keys import AppKeys, nodes_key, reap_claim_key
from pusher_compat.adapters.resync import NO_LIMIT, Ledger, ScriptCall, resync_calls
from pusher_compat.channel_state import Channel, Member
from pusher_compat.channels import kind_of

NODE = "n1"
KEYS = AppKeys("pc", "1001", NODE)
NOTHING = Ledger(channels=frozenset(), members=frozenset(), users={})


def channel(name: str, sockets: int, *members: Member) -> Channel:
    held = Channel(name, kind_of(name), local_sockets=sockets)
    for member in members:
        held.members[member.key] = member
    return held


def test_key_names_carry_the_apps_hash_tag() -> None:
    assert nodes_key("pc") == "pc:nodes"
    assert reap_claim_key("pc", "n2") == "pc:reap:n2"
    assert KEYS.bus == "pc:{1001}:bus"
    assert KEYS.channel("presence-a") == [
        "pc:{1001}:ch:presence-a", "pc:{1001}:channels", "pc:{1001}:node:n1:ch",
        "pc:{1001}:pm:presence-a", "pc:{1001}:pr:presence-a", "pc:{1001}:node:n1:pm"]
    assert KEYS.ledger("n2") == ("pc:{1001}:node:n2:ch", "pc:{1001}:node:n2:pm",
                                 "pc:{1001}:node:n2:users")
    assert KEYS.user_keys() == ["pc:{1001}:users", "pc:{1001}:node:n1:users"]
    assert KEYS.cache("cache-x") == "pc:{1001}:cache:cache-x"
    assert KEYS.cache_channel(KEYS.cache("cache-x:y")) == "cache-x:y"
    assert KEYS.rate("api", 17) == "pc:{1001}:rate:api:17"


def test_nothing_held_and_nothing_in_the_ledger_needs_no_call() -> None:
    assert resync_calls(KEYS, NODE, NOTHING, [], {}) == []


def test_a_channel_held_is_joined_again_with_this_nodes_socket_count() -> None:
    assert resync_calls(KEYS, NODE, NOTHING, [channel("news", 3)], {}) == [
        ScriptCall("JOIN", KEYS.channel("news"),
                   [NODE, "news", 3, "", b"", NO_LIMIT, KEYS.bus, b""])]


def test_a_channel_in_the_ledger_but_no_longer_held_is_left() -> None:
    ledger = Ledger(channels=frozenset({"news"}), members=frozenset(), users={})
    assert resync_calls(KEYS, NODE, ledger, [], {}) == [
        ScriptCall("LEAVE", KEYS.channel("news"), [NODE, "news", 0, "", KEYS.bus, b""])]


def test_a_member_gone_while_redis_was_away_is_left_and_announced() -> None:
    ledger = Ledger(channels=frozenset({"presence-a"}),
                    members=frozenset({("presence-a", "u1")}), users={})
    removed = bus.event(NODE.encode(), "presence-a", wire.dumps(
        {"event": "pusher_internal:member_removed", "channel": "presence-a",
         "data": '{"user_id":"u1"}'}))
    assert resync_calls(KEYS, NODE, ledger, [channel("presence-a", 1)], {})[0] == ScriptCall(
        "LEAVE", KEYS.channel("presence-a"), [NODE, "presence-a", 1, "u1", KEYS.bus, removed])


def test_a_member_held_is_joined_again_without_a_member_limit() -> None:
    member = Member(7, {"name": "Ann"})
    added = bus.event(NODE.encode(), "presence-a", wire.dumps(
        {"event": "pusher_internal:member_added", "channel": "presence-a",
         "data": '{"user_id":7,"user_info":{"name":"Ann"}}'}))
    assert resync_calls(KEYS, NODE, NOTHING, [channel("presence-a", 2, member)], {}) == [
        ScriptCall("JOIN", KEYS.channel("presence-a"),
                   [NODE, "presence-a", 2, "7", b'{"name":"Ann"}', NO_LIMIT, KEYS.bus, added]),
        ScriptCall("JOIN", KEYS.channel("presence-a"),
                   [NODE, "presence-a", 2, "", b"", NO_LIMIT, KEYS.bus, b""])]


def test_signed_in_users_are_corrected_by_the_difference_of_socket_counts() -> None:
    ledger = Ledger(channels=frozenset(), members=frozenset(), users={"gone": 2, "more": 1})
    assert resync_calls(KEYS, NODE, ledger, [], {"more": 3, "new": 1, "same": 0}) == [
        ScriptCall("USERS", KEYS.user_keys(),
                   ["gone", -2, KEYS.bus, b"w\0n1\0gone\x001", b"w\0n1\0gone\x000"]),
        ScriptCall("USERS", KEYS.user_keys(),
                   ["more", 2, KEYS.bus, b"w\0n1\0more\x001", b"w\0n1\0more\x000"]),
        ScriptCall("USERS", KEYS.user_keys(),
                   ["new", 1, KEYS.bus, b"w\0n1\0new\x001", b"w\0n1\0new\x000"])]
