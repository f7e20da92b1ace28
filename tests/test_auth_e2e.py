"""End to end through the server's own auth endpoints, as a Laravel front end uses them.

Laravel Echo 2.5 and pusher-js 8.6 (tests/node/echo_auth_*.mjs, signin_endpoint.mjs,
watchlist.mjs) authorize with ``authEndpoint: .../broadcasting/auth`` and
``userAuthentication: {endpoint: .../broadcasting/user-auth}``, carrying a JWT in
``Authorization: Bearer`` (no custom handler). The tokens are minted here with PyJWT and
passed to the scripts as ``JWT_<NAME>``; access follows the ``[[auth.rules]]`` of ``CONFIG``
(protocol.md §4, §10.2, §10.3, §3.8, §7.8, §4.4 watchlist).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt
from conftest import ServerProcess, module_server, run_node

JWT_SECRET = "e2e-jwt-secret-that-is-long-enough-for-hs256"
MASTER_KEY_BASE64 = base64.b64encode(bytes(range(32))).decode()

CONFIG = f"""
[server]
activity_timeout = 30

[[apps]]
id = "{ServerProcess.app_id}"
key = "{ServerProcess.key}"
secret = "{ServerProcess.secret}"
client_events = true
encryption_master_key_base64 = "{MASTER_KEY_BASE64}"

[auth]
jwt_secret = "{JWT_SECRET}"
user_info_claims = ["name"]

[[auth.rules]]
pattern = "orders.{{id}}"
types = ["private"]
claim_contains = {{ orders = "{{id}}" }}

[[auth.rules]]
pattern = "chat.{{room}}"
types = ["presence"]

[[auth.rules]]
pattern = "secret.{{id}}"
types = ["encrypted"]
claim_equals = {{ sub = "{{id}}" }}

[[auth.rules]]
pattern = "App.Models.User.{{id}}"
types = ["private"]
claim_equals = {{ sub = "{{id}}" }}
"""

DENIED = {"type": "AuthError", "status": 403}
UNAUTHENTICATED = {"type": "AuthError", "status": 401}


def mint(secret: str = JWT_SECRET, expires_in: float = 300, **claims: Any) -> str:
    """An HS256 token with ``claims`` that expires ``expires_in`` seconds from now."""
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + int(expires_in), **claims}, secret,
                      algorithm="HS256")


# Ann's email is a claim the config does not copy into user_info.
ANN_CLAIMS: dict[str, Any] = {"sub": "ann", "name": "Ann", "email": "ann@example.com",
                              "orders": [7, 12]}
BOB_CLAIMS: dict[str, Any] = {"sub": "bob", "name": "Bob", "orders": "3 8"}


def jwt_env(**tokens: str) -> dict[str, str]:
    return {f"JWT_{name.upper()}": value for name, value in tokens.items()}


# Each script signs in and subscribes with sockets of its own, closed before it exits.
server = module_server(CONFIG)


def private_result(subscribed: bool, sent: Any = None) -> dict[str, Any]:
    if subscribed:
        return {"subscribed": True, "error": None, "received": [sent]}
    return {"subscribed": False, "error": DENIED, "received": []}


# --- Echo.private (§10.2) ------------------------------------------------------------------


def test_echo_private_channels_follow_the_rules(
    node: str, server: ServerProcess
) -> None:
    channels = ["orders.7", "orders.12", "orders.1", "orders.8",
                "App.Models.User.ann", "App.Models.User.bob"]

    result = run_node(node, server, "echo_auth_private.mjs", *channels,
                      env=jwt_env(user=mint(**ANN_CLAIMS)))

    sent = {"order": "shipped", "n": 1}
    assert result["trigger_status"] == 200
    assert result["sent"] == sent
    assert result["channels"] == {
        # claim_contains: orders [7, 12] contains "7" and "12", not "1" (no substring match).
        "orders.7": private_result(True, sent),
        "orders.12": private_result(True, sent),
        "orders.1": private_result(False),
        "orders.8": private_result(False),
        # claim_equals: sub must be the id.
        "App.Models.User.ann": private_result(True, sent),
        "App.Models.User.bob": private_result(False),
    }
    # A refused subscription is an HTTP answer, not a protocol error: the socket stays up.
    assert result["state"] == "connected"


def test_echo_private_claim_contains_splits_a_string_claim(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "echo_auth_private.mjs", "orders.8", "orders.7",
                      env=jwt_env(user=mint(**BOB_CLAIMS)))

    sent = result["sent"]
    assert result["channels"] == {
        "orders.8": private_result(True, sent),
        "orders.7": private_result(False),
    }


def test_echo_private_with_an_expired_token_gets_401(
    node: str, server: ServerProcess
) -> None:
    expired = mint(expires_in=-60, **ANN_CLAIMS)

    result = run_node(node, server, "echo_auth_private.mjs", "orders.7",
                      env=jwt_env(user=expired))

    assert result["channels"] == {
        "orders.7": {"subscribed": False, "error": UNAUTHENTICATED, "received": []},
    }
    assert result["state"] == "connected"


def test_echo_private_with_a_token_signed_by_another_secret_gets_401(
    node: str, server: ServerProcess
) -> None:
    forged = mint(secret="another-secret-that-is-long-enough-for-hs256", **ANN_CLAIMS)

    result = run_node(node, server, "echo_auth_private.mjs", "orders.7",
                      env=jwt_env(user=forged))

    assert result["channels"] == {
        "orders.7": {"subscribed": False, "error": UNAUTHENTICATED, "received": []},
    }


# --- Echo.join (§3.5, §10.2) ---------------------------------------------------------------


def test_echo_join_presence_with_user_info_from_the_claims(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "echo_auth_presence.mjs",
                      env=jwt_env(ann=mint(**ANN_CLAIMS), bob=mint(**BOB_CLAIMS)))

    ann, bob = {"name": "Ann"}, {"name": "Bob"}
    # Only the configured user_info_claims (name) are copied: no email, no orders.
    assert result["ann"] == {
        "here": [ann], "joining": [bob], "leaving": [bob], "denied": DENIED,
    }
    assert result["bob_here"] == [ann, bob]
    assert result["ann_view"] == {
        "me": {"id": "ann", "info": ann},
        "members": [{"id": "ann", "info": ann}, {"id": "bob", "info": bob}],
    }
    assert result["ann_members_after_leave"] == [{"id": "ann", "info": ann}]


# --- Echo.encryptedPrivate (§4.2) ----------------------------------------------------------


def test_echo_encrypted_private_decrypts_an_event_from_the_node_sdk(
    node: str, server: ServerProcess
) -> None:
    result = run_node(
        node, server, "echo_auth_encrypted.mjs", "secret.ann", "secret.bob",
        env={**jwt_env(user=mint(**ANN_CLAIMS)), "PUSHER_MASTER_KEY_BASE64": MASTER_KEY_BASE64},
    )

    sent = {"text": "for your eyes only", "n": 42, "nested": {"ok": True}}
    assert result["sent"] == sent
    assert result["trigger_statuses"] == [200, 200]
    assert result["channels"] == {
        "secret.ann": {"subscribed": True, "error": None, "received": [sent]},
        "secret.bob": {"subscribed": False, "error": DENIED, "received": []},
    }


# --- Sign-in, sendToUser, terminate (§3.8, §4.4, §7.8, §10.3) ------------------------------


def test_signin_through_user_auth_then_send_to_user_then_terminate(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "signin_endpoint.mjs",
                      env=jwt_env(ann=mint(**ANN_CLAIMS), bob=mint(**BOB_CLAIMS)))

    assert result["ann_user_data"] == {"id": "ann", "user_info": {"name": "Ann"}}
    assert result["bob_user_data"] == {"id": "bob", "user_info": {"name": "Bob"}}
    assert result["user_channel"] == "#server-to-user-ann"
    assert result["send_status"] == 200
    assert result["ann_notes"] == [result["sent"]]
    assert result["bob_notes"] == []
    assert result["terminate_status"] == 200
    # 4009 is a "refused" close code: pusher-js goes to disconnected and stays there.
    assert result["ann_states"] == ["connecting", "connected", "disconnected"]
    # pusher-js reports the pusher:error frame and the close frame (twice: as a PusherError
    # and as a WebSocketError); every one of them must carry 4009.
    assert {(e["type"], e["code"]) for e in result["ann_errors"]} == {
        ("PusherError", 4009), ("WebSocketError", 4009),
    }
    assert result["bob_state"] == "connected"


def test_signin_with_a_numeric_sub_gets_a_string_user_id(
    node: str, server: ServerProcess
) -> None:
    result = run_node(
        node, server, "signin_endpoint.mjs",
        env=jwt_env(ann=mint(sub=42, name="Ann"), bob=mint(**BOB_CLAIMS)),
    )

    # pusher-js drops a sign-in whose user_data.id is not a string.
    assert result["ann_user_data"] == {"id": "42", "user_info": {"name": "Ann"}}
    assert result["user_channel"] == "#server-to-user-42"
    assert result["ann_notes"] == [result["sent"]]
    assert result["terminate_status"] == 200
    assert result["ann_states"] == ["connecting", "connected", "disconnected"]


def test_echo_signin_with_an_expired_token_gets_signin_error_401(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "echo_auth_signin_refused.mjs",
                      env=jwt_env(user=mint(expires_in=-60, **ANN_CLAIMS)))

    assert result == {
        "errors": [UNAUTHENTICATED],
        "signin_success": 0,
        "user_data": None,
        "state": "connected",
    }


def test_echo_signin_with_a_token_without_sub_gets_signin_error_401(
    node: str, server: ServerProcess
) -> None:
    result = run_node(node, server, "echo_auth_signin_refused.mjs",
                      env=jwt_env(user=mint(name="Nobody")))

    assert result["errors"] == [UNAUTHENTICATED]
    assert result["signin_success"] == 0


# --- Watchlist (§4.4) ----------------------------------------------------------------------


def test_watchlist_reports_bob_online_then_offline(
    node: str, server: ServerProcess
) -> None:
    ann = mint(**ANN_CLAIMS, watchlist=["bob", "carol"])

    result = run_node(node, server, "watchlist.mjs",
                      env=jwt_env(ann=ann, bob=mint(**BOB_CLAIMS)))

    # /broadcasting/user-auth copies the token's watchlist claim into the signed user_data.
    assert result["ann_user_data"] == {
        "id": "ann", "user_info": {"name": "Ann"}, "watchlist": ["bob", "carol"],
    }
    assert result["bob_user_data"] == {"id": "bob", "user_info": {"name": "Bob"}}
    assert result["initial"] == [{"name": "offline", "user_ids": ["bob", "carol"]}]
    assert result["after_bob_signin"] == [{"name": "online", "user_ids": ["bob"]}]
    assert result["after_bob_disconnect"] == [{"name": "offline", "user_ids": ["bob"]}]
