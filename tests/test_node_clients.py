"""End-to-end tests driven by the unmodified npm clients under Node.

Each test runs one scenario script from ``tests/node`` (pusher-js 8.6.0, laravel-echo 2.5.0
and the ``pusher`` 5.3.4 Node SDK, pinned in package.json) against a real server process
and checks the observations the script printed. Section numbers refer to the protocol
notes (protocol.md); "row N" to its implementation checklist (§13).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import ServerProcess, module_server, run_node

ANN = {"name": "Ann"}
BOB = {"name": "Bob"}

# The default test app (the credentials ServerProcess assumes) with client events off.
CLIENT_EVENTS_OFF = f"""
[[apps]]
id = "{ServerProcess.app_id}"
key = "{ServerProcess.key}"
secret = "{ServerProcess.secret}"
client_events = false
"""


# Every script uses channels of its own and closes its sockets before it exits.
server = module_server()


def run_once(script: str) -> Callable[..., dict[str, Any]]:
    """A module fixture: what ``script`` observed in one run, for the tests that each check
    one part of it (running it again per test proves nothing more)."""

    @pytest.fixture(scope="module")
    def observed(node: str, server: ServerProcess) -> dict[str, Any]:
        return run_node(node, server, script)

    return observed


private_channel = run_once("private_channel.mjs")
presence = run_once("presence.mjs")
client_events_presence = run_once("client_events_presence.mjs")
trigger_info = run_once("trigger_info.mjs")
trigger_batch = run_once("trigger_batch.mjs")
signin = run_once("signin.mjs")


# --- Connection (§1, rows 1, 2, 4) ---------------------------------------------------------


def test_pusher_js_connects_with_a_numeric_socket_id(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "connect.mjs")

    assert result["state"] == "connected"
    assert re.fullmatch(r"\d+\.\d+", result["socket_id"]), result["socket_id"]


def test_each_connection_gets_a_different_socket_id(node: str, server: ServerProcess) -> None:
    first = run_node(node, server, "connect.mjs")["socket_id"]
    second = run_node(node, server, "connect.mjs")["socket_id"]

    assert first != second


@pytest.fixture(scope="module")
def refused(node: str, server: ServerProcess) -> dict[str, dict[str, Any]]:
    """``refused_connection.mjs`` for an unknown and a disabled app key, run side by side:
    each waits 1.5 s to see that pusher-js does not retry."""
    keys = ("no-such-key", "disabled-key")
    with ThreadPoolExecutor(len(keys)) as pool:
        runs = [pool.submit(run_node, node, server, "refused_connection.mjs",
                            env={"PUSHER_APP_KEY": key}) for key in keys]
        return {key: run.result() for key, run in zip(keys, runs, strict=True)}


def test_unknown_app_key_is_refused_with_4001_and_not_retried(
    refused: dict[str, dict[str, Any]],
) -> None:
    result = refused["no-such-key"]

    assert result["states"] == ["connecting", "disconnected"]
    assert result["error_codes"], "pusher-js reported no error"
    assert set(result["error_codes"]) == {4001}
    assert result["socket_id"] is None


def test_disabled_app_is_refused_with_4003_and_not_retried(
    refused: dict[str, dict[str, Any]],
) -> None:
    result = refused["disabled-key"]

    assert result["states"] == ["connecting", "disconnected"]
    assert result["error_codes"], "pusher-js reported no error"
    assert set(result["error_codes"]) == {4003}
    assert result["socket_id"] is None


# --- Public, private and encrypted channels (§3, §4, rows 8, 9, 10) ------------------------


def test_public_channel_receives_an_event_triggered_with_the_node_sdk(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "public_channel.mjs")

    assert result["subscription_succeeded"] == 1
    assert result["trigger_status"] == 200
    assert result["received"] == [{"data": result["sent"]}]
    assert result["sent"]["note"] == "ünïcødé"


def test_private_channel_with_a_valid_signature_is_subscribed(
    private_channel: dict[str, Any]
) -> None:
    result = private_channel

    assert result["valid_subscribed"] is True
    assert result["received"] == [{"ok": True}]


def test_tampered_private_signature_gets_subscription_error_401(
    private_channel: dict[str, Any]
) -> None:
    result = private_channel

    assert result["tampered_subscribed"] is False
    assert len(result["tampered_errors"]) == 1
    assert result["tampered_errors"][0]["status"] == 401
    assert result["tampered_errors"][0]["type"] == "AuthError"
    # Not added to the channel: the event sent to both channels reached only the valid one.
    assert result["tampered_received"] == 0


def test_tampered_private_signature_keeps_the_connection_open(
    private_channel: dict[str, Any]
) -> None:
    result = private_channel

    assert result["state"] == "connected"
    assert result["same_socket"] is True
    # Any connection-level error is a plain pusher:error, never a close code.
    assert all(e["type"] == "PusherError" for e in result["connection_errors"])


def test_encrypted_channel_event_is_decrypted_by_pusher_js(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "encrypted_channel.mjs")

    assert result["trigger_status"] == 200
    assert result["received"] == [result["sent"]]
    assert result["sent"] == {"text": "for your eyes only", "n": 42, "nested": {"ok": True}}


# --- Presence (§3.3, §3.5, rows 11, 12) -----------------------------------------------------


def test_presence_subscription_reports_count_me_and_members(
    presence: dict[str, Any]
) -> None:
    result = presence

    assert result["bob_on_join"] == {
        "count": 1,
        "me": {"id": "2", "info": BOB},
        "members": [{"id": "2", "info": BOB}],
    }
    assert result["ann_tab2_on_join"] == {
        "count": 2,
        "me": {"id": "1", "info": ANN},
        "members": [{"id": "1", "info": ANN}, {"id": "2", "info": BOB}],
    }


def test_presence_member_added_is_sent_once_per_user(presence: dict[str, Any]) -> None:
    result = presence

    assert result["bob_after_joins"] == {
        "events": [{"event": "added", "id": "1", "info": ANN}],
        "count": 2,
    }
    # Ann's first tab is not told about Ann's second tab.
    assert result["ann_tab1_events"] == []


def test_presence_member_removed_only_when_the_users_last_socket_closes(
    presence: dict[str, Any]
) -> None:
    result = presence

    added = {"event": "added", "id": "1", "info": ANN}
    assert result["bob_after_first_close"] == {"events": [added], "count": 2}
    assert result["bob_final"] == {
        "events": [added, {"event": "removed", "id": "1", "info": ANN}],
        "count": 1,
        "members": [{"id": "2", "info": BOB}],
    }


def test_presence_users_endpoint_lists_each_user_once(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "presence_users.mjs")

    assert result["empty"] == {"status": 200, "body": {"users": []}}
    assert result["status"] == 200
    assert result["body"] == {"users": [{"id": "1"}, {"id": "2"}]}


# --- Client events (§5, rows 16, 17) ----------------------------------------------------------


def test_presence_client_event_reaches_others_with_the_senders_user_id(
    client_events_presence: dict[str, Any]
) -> None:
    result = client_events_presence

    assert result["accepted"] is True
    expected = [{"data": result["sent"], "user_id": "1"}]
    assert result["other"] == expected
    # Another socket of the same user is a different connection: it gets the event too.
    assert result["same_user"] == expected
    assert result["sender_errors"] == []


def test_client_event_is_never_echoed_to_the_sender(client_events_presence: dict[str, Any]) -> None:
    result = client_events_presence

    assert result["other"], "the event was not delivered at all"
    assert result["sender"] == []


def test_client_event_on_a_public_channel_is_rejected(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "client_event_rejected.mjs", "public-chat")

    assert result["other_received"] == []
    assert len(result["errors"]) == 1
    assert result["errors"][0]["type"] == "PusherError"
    assert result["errors"][0]["message"]
    assert result["state"] == "connected"
    assert result["same_socket"] is True


def test_client_event_flood_is_rate_limited_with_4301(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "client_event_rate_limit.mjs")

    received = result["received"]
    assert 5 <= len(received) <= 11, received
    assert received == list(range(len(received))), "the first events should be the ones let through"
    assert len(result["error_codes"]) >= 9, result["error_codes"]
    assert set(result["error_codes"]) == {4301}
    assert result["state"] == "connected"
    assert result["same_socket"] is True


def test_client_events_are_refused_with_4301_when_the_app_disables_them(
    node: str, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(CLIENT_EVENTS_OFF)
    result = run_node(node, server, "client_event_rejected.mjs", "private-chat")

    assert result["other_received"] == []
    assert [e["code"] for e in result["errors"]] == [4301]
    assert result["state"] == "connected"
    assert result["same_socket"] is True


# --- Unsubscribing (§3.7, row 14) -------------------------------------------------------------


def test_unsubscribed_channel_is_no_longer_listed(
    node: str, server_factory: Callable[..., ServerProcess]
) -> None:
    # GET /channels lists the whole app: a server of its own, with no other script's channels.
    result = run_node(node, server_factory(), "unsubscribe.mjs", "unsubscribe")

    assert result["before"] == ["leaves-soon", "stays-here"]
    assert result["after"] == ["stays-here"]


def test_closing_the_socket_unsubscribes_its_channels(
    node: str, server_factory: Callable[..., ServerProcess]
) -> None:
    # GET /channels lists the whole app: a server of its own, with no other script's channels.
    result = run_node(node, server_factory(), "unsubscribe.mjs", "disconnect")

    assert result["before"] == ["leaves-soon", "stays-here"]
    assert result["after"] == ["stays-here"]


# --- HTTP API through the Node SDK (§7, rows 22, 23, 24) -----------------------------------


def test_trigger_with_socket_id_skips_that_socket(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "trigger_excluding_socket.mjs")

    assert result["excluded_received"] == ["for-everyone"]
    assert result["other_received"] == ["not-for-sender", "for-everyone"]


def test_trigger_with_info_returns_channel_counts(trigger_info: dict[str, Any]) -> None:
    result = trigger_info

    assert result["public"] == {
        "status": 200,
        "body": {"channels": {"counted": {"subscription_count": 2}}},
    }
    assert result["presence"] == {
        "status": 200,
        "body": {"channels": {"presence-counted": {"user_count": 2}}},
    }
    assert result["without_info"] == {"status": 200, "body": {}}


def test_trigger_asking_user_count_of_public_and_presence_channels_delivers_and_counts(
    trigger_info: dict[str, Any]
) -> None:
    result = trigger_info

    assert result["mixed"] == {
        "status": 200,
        "body": {"channels": {
            "my-channel": {"subscription_count": 1},
            "presence-my-channel": {"user_count": 0, "subscription_count": 0},
        }},
        "delivered": [{"data": {"n": 1}}],
    }


def test_trigger_batch_of_ten_is_accepted_and_fully_delivered(
    trigger_batch: dict[str, Any]
) -> None:
    result = trigger_batch

    assert result["status_10"] == 200
    assert sorted(result["received"]) == sorted([f"ok-{i}", i] for i in range(10))


def test_trigger_batch_of_eleven_is_refused_with_400(trigger_batch: dict[str, Any]) -> None:
    result = trigger_batch

    assert result["status_11"] == 400
    assert not [event for event, _ in result["received"] if event.startswith("too-many")]


def test_event_data_over_10240_bytes_is_refused_with_413(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "trigger_size_limit.mjs")

    assert result["status_10240"] == 200
    assert result["received"] == [10240]
    assert result["status_10241"] == 413
    assert result["status_20k_object"] == 413


# --- Sign-in and server-to-user events (§3.8, §4.4, §7.8, rows 18, 19) --------------------


def test_signin_sets_user_data_and_subscribes_the_user_channel(
    signin: dict[str, Any]
) -> None:
    result = signin

    ann = {"id": "ann-1", "user_info": ANN}
    assert result["user_data"] == [ann, ann, {"id": "bob-2"}]
    assert result["user_channel"] == "#server-to-user-ann-1"
    assert result["signin_success_events"] == 1


def test_send_to_user_reaches_every_socket_of_that_user_only(
    signin: dict[str, Any]
) -> None:
    result = signin

    assert result["send_status"] == 200
    assert result["ann_tab1"] == [result["sent"]]
    assert result["ann_tab2"] == [result["sent"]]
    assert result["bob"] == []
    assert result["anonymous"] == []


# --- Laravel Echo (§10, row 11 and Echo conventions) --------------------------------------


def test_echo_listen_receives_a_namespaced_laravel_event(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "echo_listen.mjs")

    assert result["trigger_status"] == 200
    assert result["received"] == [result["sent"]]


def test_echo_whisper_reaches_the_other_private_channel_listener(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "echo_whisper.mjs")

    assert result["listener_whispers"] == [result["sent"]]
    assert result["sender_whispers"] == []


def test_echo_presence_here_joining_and_leaving(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "echo_presence.mjs")

    assert result["ann"] == {"here": [ANN], "joining": [BOB], "leaving": [BOB]}
    assert result["bob_here"] == [ANN, BOB]


def test_pusher_js_sees_cache_miss_and_the_cached_event(node: str, server: ServerProcess) -> None:
    result = run_node(node, server, "cache_channel.mjs")

    assert result == {
        "trigger_status": 200,
        "cache_miss": 1,
        "replayed": [{"data": {"p": 1}}],
        "prices_cache_miss": 0,
    }


def test_oversized_message_reaches_pusher_js_as_close_1009(
    node: str, server: ServerProcess
) -> None:
    # The oracle for what test_websocket checks on the wire: pusher-js reports the close
    # code and its reason as a connection error (1006 would mean the close frame was lost).
    result = run_node(node, server, "oversized_message.mjs")

    assert result["error_codes"][0] == 1009, result
    assert result["reasons"][0] == "Message over 65536 bytes"
