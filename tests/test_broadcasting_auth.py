"""``/broadcasting/auth`` and ``/broadcasting/user-auth``: rules, config, tokens, answers, CORS.

Signed answers are checked against the protocol.md §4.3 vectors (the Pusher docs' app
``278d425bdf160c739803`` and socket ``1234.1234``) and against the server's own checks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import ListSink
from jwt.utils import base64url_encode

from pusher_compat import signatures
from pusher_compat.auth_config import AuthConfig, check_auth, parse_auth_config
from pusher_compat.auth_rules import Rule, match
from pusher_compat.broadcasting_auth import BroadcastingAuth
from pusher_compat.config import AppConfig, ConfigError, ServerConfig
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub

ClientFactory = Callable[..., Awaitable[TestClient]]

KEY = "278d425bdf160c739803"
MASTER_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
APP = AppConfig(id="3", key=KEY, secret="7ad3773142a6692b25b8",
                encryption_master_key_base64=MASTER_KEY)
OTHER = AppConfig(id="4", key="other-key", secret="other-secret")
SECRET = "a-test-secret-that-is-32-bytes-long!"
SOCKET = "1234.1234"

A1 = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
A2 = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
A4 = "4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800"
A6 = "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533"
SHARED_SECRET = "Uedy6frF2/3cz/oMziDQ0pGdahMvE50/N0xZ8eKYEIg="

ANY_FOOBAR = Rule(pattern="foobar")
CONFIG = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,))


def token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token for user 10 that expires in five minutes, as auth.require_claims wants."""
    claims = {"sub": "10", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(claims, secret, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def make_client(aiohttp_client: ClientFactory) -> Callable[..., Awaitable[TestClient]]:
    async def make(config: AuthConfig = CONFIG, apps: tuple[AppConfig, ...] = (APP,)) -> Any:
        app = web.Application()
        app.add_routes(BroadcastingAuth(apps, config).routes())
        return await aiohttp_client(app)

    return make


async def post(client: TestClient, channel: str | None, headers: dict[str, str] | None = None,
               path: str = "/broadcasting/auth", socket_id: str = SOCKET,
               **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """POST form-encoded as pusher-js does; return the status and the parsed JSON body."""
    data = {"socket_id": socket_id}
    if channel is not None:
        data["channel_name"] = channel
    headers = bearer(token()) if headers is None else headers
    response = await client.post(path, data=data, headers=headers, **kwargs)
    return response.status, await response.json()


# -- match ---------------------------------------------------------------------------------


def test_match_binds_a_parameter_that_a_claim_must_equal() -> None:
    rules = [Rule("App.Models.User.{id}", claim_equals={"sub": "{id}"})]
    assert match(rules, "private-App.Models.User.7", {"sub": "7"}) is True
    assert match(rules, "private-App.Models.User.8", {"sub": "7"}) is False


def test_match_compares_an_int_claim_by_its_string_form() -> None:
    rules = [Rule("App.Models.User.{id}", claim_equals={"sub": "{id}"})]
    assert match(rules, "private-App.Models.User.7", {"sub": 7}) is True


def test_match_treats_pattern_dots_as_literal() -> None:
    rules = [Rule("App.Models.User.{id}")]
    assert match(rules, "private-AppXModels.User.7", {}) is False


def test_match_parameter_spans_exactly_one_segment() -> None:
    rules = [Rule("orders.{id}")]
    assert match(rules, "private-orders.7", {}) is True
    assert match(rules, "private-orders.7.8", {}) is False
    assert match(rules, "private-orders.", {}) is False


def test_match_strips_every_kind_prefix() -> None:
    rules = [Rule("orders.{id}")]
    for channel in ("private-orders.1", "presence-orders.1", "private-encrypted-orders.1",
                    "private-cache-orders.1", "presence-cache-orders.1",
                    "private-encrypted-cache-orders.1"):
        assert match(rules, channel, {}) is True, channel


def test_match_never_admits_public_channels() -> None:
    assert match([Rule("orders.{id}")], "orders.1", {}) is False


def test_match_types_limit_a_rule_to_its_channel_types() -> None:
    rules = [Rule("chat.{room}", types=("presence",))]
    assert match(rules, "presence-chat.1", {}) is True
    assert match(rules, "private-chat.1", {}) is False
    assert match(rules, "private-encrypted-chat.1", {}) is False


def test_match_encrypted_type_covers_only_encrypted_channels() -> None:
    rules = [Rule("vault.{id}", types=("encrypted",))]
    assert match(rules, "private-encrypted-vault.1", {}) is True
    assert match(rules, "private-vault.1", {}) is False


def test_match_claim_contains_finds_a_parameter_in_a_list_of_ints() -> None:
    rules = [Rule("orders.{orderId}", claim_contains={"orders": "{orderId}"})]
    assert match(rules, "private-orders.12", {"orders": [3, 12]}) is True
    assert match(rules, "private-orders.1", {"orders": [3, 12]}) is False


def test_match_claim_contains_splits_a_string_claim_on_spaces() -> None:
    rules = [Rule("admin", claim_contains={"scope": "admin"})]
    assert match(rules, "private-admin", {"scope": "read admin"}) is True
    assert match(rules, "private-admin", {"scope": "read administrator"}) is False


def test_match_claim_equals_a_literal_value() -> None:
    rules = [Rule("staff", claim_equals={"role": "staff"})]
    assert match(rules, "private-staff", {"role": "staff"}) is True
    assert match(rules, "private-staff", {"role": "guest"}) is False


def test_match_missing_claim_denies() -> None:
    rules = [Rule("staff", claim_equals={"role": "staff"})]
    assert match(rules, "private-staff", {}) is False


def test_match_dotted_claim_reaches_into_nested_objects() -> None:
    rules = [Rule("staff", claim_contains={"realm_access.roles": "staff"})]
    assert match(rules, "private-staff", {"realm_access": {"roles": ["staff"]}}) is True


def test_match_rule_without_conditions_admits_any_user() -> None:
    assert match([Rule("chat.{room}")], "presence-chat.lobby", {"sub": "1"}) is True


def test_match_first_matching_rule_decides() -> None:
    rules = [Rule("orders.{id}", claim_equals={"role": "admin"}), Rule("orders.{id}")]
    assert match(rules, "private-orders.1", {"role": "user"}) is False


def test_match_skips_rules_of_other_types_before_deciding() -> None:
    rules = [Rule("orders.{id}", types=("presence",), claim_equals={"role": "admin"}),
             Rule("orders.{id}")]
    assert match(rules, "private-orders.1", {"role": "user"}) is True


def test_match_without_a_matching_rule_denies() -> None:
    assert match([Rule("orders.{id}")], "private-invoices.1", {}) is False
    assert match([], "private-orders.1", {}) is False


# -- parse_auth_config ---------------------------------------------------------------------

DOCSTRING_TOML = """
[auth]
jwt_secret = "change-me"
[[auth.rules]]
pattern = "orders.{orderId}"
types = ["private"]
claim_contains = { orders = "{orderId}" }
[[auth.rules]]
pattern = "App.Models.User.{id}"
claim_equals = { sub = "{id}" }
[[auth.rules]]
pattern = "chat.{room}"
types = ["presence"]
"""


def test_parse_reads_the_documented_toml() -> None:
    config = parse_auth_config(tomllib.loads(DOCSTRING_TOML)["auth"], "f.toml")
    assert config.jwt_secret == "change-me"
    assert config.algorithms == ("HS256",)
    assert [(r.pattern, r.types, dict(r.claim_equals), dict(r.claim_contains))
            for r in config.rules] == [
        ("orders.{orderId}", ("private",), {}, {"orders": "{orderId}"}),
        ("App.Models.User.{id}", (), {"sub": "{id}"}, {}),
        ("chat.{room}", ("presence",), {}, {}),
    ]


def test_parse_converts_lists_and_leeway() -> None:
    config = parse_auth_config(
        {"jwt_secret": SECRET, "allowed_origins": ["*"], "user_info_claims": ["name", "email"],
         "leeway": 5},
        "f.toml",
    )
    assert config.allowed_origins == ("*",)
    assert config.user_info_claims == ("name", "email")
    assert config.leeway == 5.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"jwt_secret": SECRET, "secret": "x"}, "f.toml: unknown key 'auth.secret' (known: "),
        ({"jwt_secret": 5}, "f.toml: auth.jwt_secret must be a string, got 5"),
        ({"jwt_secret": SECRET, "leeway": -1},
         "f.toml: auth.leeway must be a non-negative number, got -1"),
        ({"jwt_secret": SECRET, "algorithms": "HS256"},
         "f.toml: auth.algorithms must be an array of strings, got 'HS256'"),
        ({"jwt_secret": SECRET, "rules": {"pattern": "x"}},
         "f.toml: auth.rules must be an array of tables ([[auth.rules]])"),
        ({"jwt_secret": SECRET, "rules": [{"pattern": "a"}, {"pattern": "orders.{id"}]},
         "f.toml: auth.rules[1].pattern 'orders.{id' has unbalanced braces"),
        ({"jwt_secret": SECRET, "rules": [{"pattern": "orders.{}"}]},
         "f.toml: auth.rules[0].pattern 'orders.{}' has an invalid parameter name {}"),
        ({"jwt_secret": SECRET, "rules": [{"pattern": "a.{x}.{x}"}]},
         "f.toml: auth.rules[0].pattern 'a.{x}.{x}' uses a parameter twice"),
        ({"jwt_secret": SECRET, "rules": [{"types": ["private"]}]},
         "f.toml: auth.rules[0].pattern is required (a string like 'orders.{id}')"),
        ({"jwt_secret": SECRET, "rules": [{"pattern": "a", "when": 1}]},
         "f.toml: unknown key 'auth.rules[0].when' (known: "),
        ({"jwt_secret": SECRET,
          "rules": [{"pattern": "orders.{id}", "claim_equals": {"sub": "{user}"}}]},
         "f.toml: auth.rules[0].claim_equals.sub references {user}, which the pattern "
         "'orders.{id}' does not have"),
        ({"jwt_secret": SECRET,
          "rules": [{"pattern": "orders.{id}", "claim_contains": {"orders": ["{id}"]}}]},
         "f.toml: auth.rules[0].claim_contains.orders must be a string, got ['{id}']"),
        ({"jwt_secret": SECRET, "rules": [{"pattern": "a", "types": ["public"]}]},
         "f.toml: auth.rules[0].types has unknown type 'public' "
         "(known: private, presence, encrypted)"),
        ({}, "f.toml: auth needs jwt_secret or jwt_public_key_file to verify tokens"),
        ({"jwt_secret": SECRET, "algorithms": ["HS257"]},
         "f.toml: auth.algorithms has unknown algorithm 'HS257' (known: "),
        ({"jwt_secret": SECRET, "algorithms": ["none"]},
         "f.toml: auth.algorithms has unknown algorithm 'none' (known: "),
        ({"jwt_secret": SECRET, "algorithms": ["RS256"]},
         "f.toml: auth.algorithms RS256 needs auth.jwt_public_key_file"),
        ({"jwt_public_key_file": "/nonexistent/key.pem"},
         "f.toml: auth.jwt_public_key_file '/nonexistent/key.pem' cannot be read: "
         "No such file or directory"),
        ({"hook": "no_such_module_anywhere:decide"},
         "f.toml: auth.hook cannot import 'no_such_module_anywhere': "),
        ({"hook": "json:no_such_function"}, "f.toml: auth.hook 'json:no_such_function' is not "
         "a function"),
        ({"hook": "json"}, "f.toml: auth.hook must be 'module:function', got 'json'"),
        ({"hook": "json:loads", "rules": [{"pattern": "a"}]},
         "f.toml: auth.hook and auth.rules exclude each other"),
    ],
)
def test_parse_error_names_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_auth_config(table, "f.toml")
    assert str(raised.value).startswith(message), str(raised.value)


def test_parse_accepts_a_hook_without_a_key() -> None:
    assert parse_auth_config({"hook": "json:loads"}, "f.toml") == AuthConfig(hook="json:loads")


def test_parse_rejects_a_file_that_is_not_a_pem_key(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError) as raised:
        parse_auth_config({"jwt_public_key_file": str(path)}, "f.toml")
    assert str(raised.value) == f"f.toml: auth.jwt_public_key_file {str(path)!r} is not a PEM " \
        "public key"


def test_parse_defaults_the_algorithm_to_the_key_type(tmp_path: Path) -> None:
    path, _ = rsa_key_file(tmp_path)
    config = parse_auth_config({"jwt_public_key_file": str(path)}, "f.toml")
    assert config.algorithms == ("RS256",)


def test_parse_rejects_an_algorithm_that_does_not_fit_the_key(tmp_path: Path) -> None:
    path, _ = rsa_key_file(tmp_path)
    with pytest.raises(ConfigError) as raised:
        parse_auth_config({"jwt_public_key_file": str(path), "algorithms": ["ES256"]}, "f.toml")
    assert str(raised.value) == "f.toml: auth.algorithms ES256 does not fit the key in " \
        "auth.jwt_public_key_file"


def rsa_key_file(tmp_path: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "jwt.pem"
    path.write_bytes(pem)
    return path, private


# -- answers -------------------------------------------------------------------------------


async def test_private_channel_answer_is_the_a1_vector(make_client: Any) -> None:
    client = await make_client()
    assert await post(client, "private-foobar") == (200, {"auth": f"{KEY}:{A1}"})


async def test_json_body_is_accepted(make_client: Any) -> None:
    client = await make_client()
    response = await client.post("/broadcasting/auth", headers=bearer(token()),
                                 json={"socket_id": SOCKET, "channel_name": "private-foobar"})
    assert (response.status, await response.json()) == (200, {"auth": f"{KEY}:{A1}"})


async def test_private_cache_channel_signs_socket_and_channel(make_client: Any) -> None:
    client = await make_client()
    string = signatures.channel_string(SOCKET, "private-cache-foobar")
    expected = signatures.sign_auth(APP.key, APP.secret, string)
    assert await post(client, "private-cache-foobar") == (200, {"auth": expected})


async def test_encrypted_channel_answer_is_the_a6_vector_and_shared_secret(
    make_client: Any,
) -> None:
    client = await make_client()
    assert await post(client, "private-encrypted-foobar") == (
        200, {"auth": f"{KEY}:{A6}", "shared_secret": SHARED_SECRET},
    )


async def test_encrypted_channel_without_master_key_is_400(make_client: Any) -> None:
    client = await make_client(apps=(OTHER,))
    assert await post(client, "private-encrypted-foobar") == (400, {
        "error": "Encrypted channels are not configured for app '4': it has no "
                 "encryption_master_key_base64",
        "code": 400,
    })


async def test_presence_answer_is_the_a4_vector(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, "presence-foobar", bearer(token(name="Mr. Channels")))
    assert (status, body) == (200, {
        "auth": f"{KEY}:{A4}",
        "channel_data": '{"user_id":"10","user_info":{"name":"Mr. Channels"}}',
    })


async def test_presence_without_info_claims_omits_user_info(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, "presence-foobar", bearer(token(sub=10)))
    assert status == 200
    assert body["channel_data"] == '{"user_id":"10"}'
    string = signatures.channel_string(SOCKET, "presence-foobar", body["channel_data"])
    assert body["auth"] == signatures.sign_auth(APP.key, APP.secret, string)


async def test_presence_copies_the_configured_info_claims(make_client: Any) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,),
                        user_info_claims=("name", "avatar"), user_id_claim="uid")
    client = await make_client(config)
    claims = {"uid": 5, "name": "Ada", "avatar": "a.png", "email": "x@y"}
    status, body = await post(client, "presence-foobar", bearer(token(**claims)))
    assert status == 200
    assert body["channel_data"] == '{"user_id":"5","user_info":{"name":"Ada","avatar":"a.png"}}'


async def test_user_auth_answer_is_the_a2_vector(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, None, bearer(token(sub="12345")),
                              path="/broadcasting/user-auth")
    assert (status, body) == (200, {"auth": f"{KEY}:{A2}", "user_data": '{"id":"12345"}'})


async def test_user_auth_includes_user_info_and_watchlist(make_client: Any) -> None:
    client = await make_client()
    claims = {"sub": 7, "name": "Ada", "watchlist": ["8", 9]}
    status, body = await post(client, None, bearer(token(**claims)),
                              path="/broadcasting/user-auth")
    user_data = '{"id":"7","user_info":{"name":"Ada"},"watchlist":["8","9"]}'
    string = signatures.user_string(SOCKET, user_data)
    assert (status, body) == (200, {
        "auth": signatures.sign_auth(APP.key, APP.secret, string), "user_data": user_data,
    })


async def test_user_auth_watchlist_keeps_only_user_ids_as_the_websocket_sign_in_does(
    make_client: Any
) -> None:
    client = await make_client()
    claims = {"sub": 7, "watchlist": ["8", 9, True, False, "", 1.5, {"id": 3}, None, "8"]}
    status, body = await post(client, None, bearer(token(**claims)),
                              path="/broadcasting/user-auth")
    assert (status, json.loads(body["user_data"])) == (200, {"id": "7", "watchlist": ["8", "9"]})


# -- tokens --------------------------------------------------------------------------------


async def test_cookie_token_is_accepted(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), cookie="jwt"))
    client.session.cookie_jar.update_cookies({"jwt": token()})
    assert await post(client, "private-foobar", headers={}) == (200, {"auth": f"{KEY}:{A1}"})


async def test_query_token_is_ignored_by_default(make_client: Any) -> None:
    client = await make_client()
    assert await post(client, "private-foobar", headers={}, params={"token": token()}) == (
        401, {"error": "No token: send the JWT as 'Authorization: Bearer <token>'", "code": 401}
    )


async def test_query_token_is_accepted_when_opted_in(make_client: Any) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), query_parameter="token")
    client = await make_client(config)
    assert await post(client, "private-foobar", headers={}, params={"token": token()}) == (
        200, {"auth": f"{KEY}:{A1}"}
    )


async def test_bearer_token_wins_over_the_query_token(make_client: Any) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), query_parameter="token")
    client = await make_client(config)
    status, _ = await post(client, "private-foobar", params={"token": "garbage"})
    assert status == 200


def test_query_parameter_is_off_and_exp_required_by_default() -> None:
    config = parse_auth_config({"jwt_secret": SECRET}, "test.toml")
    assert (config.query_parameter, config.require_claims) == ("", ("exp",))


def test_require_claims_must_be_an_array_of_strings() -> None:
    with pytest.raises(ConfigError, match=r"auth.require_claims must be an array of strings"):
        parse_auth_config({"jwt_secret": SECRET, "require_claims": "exp"}, "test.toml")


async def test_token_without_exp_is_401_saying_exp_is_required(make_client: Any) -> None:
    client = await make_client()
    forever = jwt.encode({"sub": "10"}, SECRET, algorithm="HS256")
    assert await post(client, "private-foobar", bearer(forever)) == (401, {
        "error": "Token has no 'exp' claim, which auth.require_claims requires", "code": 401,
    })


async def test_require_claims_can_be_emptied_to_accept_tokens_without_exp(
    make_client: Any
) -> None:
    config = parse_auth_config({"jwt_secret": SECRET, "require_claims": [],
                                "rules": [{"pattern": "foobar"}]}, "test.toml")
    client = await make_client(config)
    forever = jwt.encode({"sub": "10"}, SECRET, algorithm="HS256")
    assert await post(client, "private-foobar", bearer(forever)) == (200, {"auth": f"{KEY}:{A1}"})


async def test_require_claims_can_demand_more_claims(make_client: Any) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), require_claims=("exp", "iat"))
    client = await make_client(config)
    assert await post(client, "private-foobar", bearer(token())) == (401, {
        "error": "Token has no 'iat' claim, which auth.require_claims requires", "code": 401,
    })


async def test_rs256_token_is_verified_with_the_public_key_file(
    make_client: Any, tmp_path: Path
) -> None:
    path, private = rsa_key_file(tmp_path)
    config = parse_auth_config(
        {"jwt_public_key_file": str(path), "rules": [{"pattern": "foobar"}]}, "f.toml"
    )
    client = await make_client(config)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    rs256 = token(pem, "RS256")
    assert await post(client, "private-foobar", bearer(rs256)) == (200, {"auth": f"{KEY}:{A1}"})


async def test_hs256_token_signed_with_the_public_key_is_refused(
    make_client: Any, tmp_path: Path
) -> None:
    path, _ = rsa_key_file(tmp_path)
    config = parse_auth_config({"jwt_public_key_file": str(path),
                                "rules": [{"pattern": "foobar"}]}, "f.toml")
    client = await make_client(config)
    forged = forged_hs256(path.read_bytes(), {"sub": "10"})
    assert await post(client, "private-foobar", bearer(forged)) == (401, {
        "error": "Token algorithm 'HS256' is not accepted (RS256)", "code": 401,
    })


AUD_ISS = {"aud": "my-api", "iss": "https://app"}
OTHER_SECRET = "another-secret-that-is-32-bytes-long"
LONG_SECRET = SECRET + "-and-64-bytes-for-hs512-to-be-happy!!"


def forged_hs256(secret: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token keyed with ``secret``, built by hand: PyJWT refuses PEM keys as secrets."""
    header = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64url_encode(json.dumps(claims).encode())
    signature = hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
    return b".".join((header, payload, base64url_encode(signature))).decode()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "No token: send the JWT as 'Authorization: Bearer <token>'"),
        ({"Authorization": "Basic dXNlcjpwYXNz"},
         "No token: send the JWT as 'Authorization: Bearer <token>'"),
        (bearer(token(exp=int(time.time()) - 60, **AUD_ISS)), "Token expired"),
        (bearer(token(OTHER_SECRET, **AUD_ISS)), "Token signature is invalid"),
        (bearer(token(aud="elsewhere", iss="https://app")),
         "Token audience is wrong: expected 'my-api'"),
        (bearer(token(iss="https://app")), "Token has no 'aud' claim"),
        (bearer(token(aud="my-api", iss="https://evil")),
         "Token issuer is wrong: expected 'https://app'"),
        (bearer(token(sub="", **AUD_ISS)), "The token has no 'sub' claim identifying the user"),
        (bearer(token(LONG_SECRET, "HS512", **AUD_ISS)),
         "Token algorithm 'HS512' is not accepted (HS256)"),
        (bearer("not-a-jwt"), "Malformed token: Not enough segments"),
    ],
    ids=["missing", "basic-auth", "expired", "bad-signature", "wrong-audience", "no-audience",
         "wrong-issuer", "no-sub", "algorithm", "malformed"],
)
async def test_bad_token_is_401_saying_why(
    make_client: Any, headers: dict[str, str], message: str
) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), audience="my-api",
                        issuer="https://app")
    client = await make_client(config)
    response = await client.post("/broadcasting/auth", headers=headers,
                                 data={"socket_id": SOCKET, "channel_name": "private-foobar"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await response.json() == {"error": message, "code": 401}


async def test_token_with_expected_audience_and_issuer_is_accepted(make_client: Any) -> None:
    config = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), audience="my-api",
                        issuer="https://app")
    client = await make_client(config)
    assert await post(client, "private-foobar", bearer(token(**AUD_ISS))) == (
        200, {"auth": f"{KEY}:{A1}"}
    )


async def test_leeway_admits_a_just_expired_token(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), leeway=120))
    status, _ = await post(client, "private-foobar", bearer(token(exp=int(time.time()) - 60)))
    assert status == 200


# -- denials and bad requests --------------------------------------------------------------


async def test_rule_denial_is_403(make_client: Any) -> None:
    rules = (Rule("App.Models.User.{id}", claim_equals={"sub": "{id}"}),)
    client = await make_client(AuthConfig(jwt_secret=SECRET, rules=rules))
    assert await post(client, "private-App.Models.User.10") == (200, {"auth": signatures.sign_auth(
        APP.key, APP.secret, f"{SOCKET}:private-App.Models.User.10")})
    assert await post(client, "private-App.Models.User.11") == (403, {
        "error": "Access to channel 'private-App.Models.User.11' is denied", "code": 403,
    })


async def test_public_channel_is_400(make_client: Any) -> None:
    client = await make_client()
    assert await post(client, "foobar") == (400, {
        "error": "'foobar' is a public channel: public channels need no authorization",
        "code": 400,
    })


async def test_cache_channel_is_400_as_public(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, "cache-foobar")
    assert (status, body["error"]) == (
        400, "'cache-foobar' is a public channel: public channels need no authorization"
    )


async def test_user_channel_is_400(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, "#server-to-user-10")
    assert (status, body["error"]) == (
        400, "'#server-to-user-10' is a user channel: sign in through /broadcasting/user-auth "
             "instead",
    )


@pytest.mark.parametrize("socket_id", ["1234", "abc.def", "1234.1234.1", "", "1234.1234\n",
                                       "1." + "1" * 21, "²³.1"])
async def test_bad_socket_id_is_400(make_client: Any, socket_id: str) -> None:
    client = await make_client()
    assert await post(client, "private-foobar", socket_id=socket_id) == (400, {
        "error": f"Invalid socket_id {socket_id!r}: expected digits.digits, at most 20 digits "
                 "each", "code": 400,
    })


@pytest.mark.parametrize("path", ["/broadcasting/auth", "/broadcasting/user-auth"])
async def test_a_100000_digit_socket_id_is_400_with_its_value_cut_short(
    make_client: Any, path: str
) -> None:
    client = await make_client()
    socket_id = "1" * 100_000 + ".1"
    assert await post(client, "private-foobar", path=path, socket_id=socket_id) == (400, {
        "error": f"Invalid socket_id '{'1' * 49}...: expected digits.digits, at most 20 digits "
                 "each", "code": 400,
    })


async def test_a_socket_id_of_twenty_digits_each_is_signed(make_client: Any) -> None:
    client = await make_client()
    socket_id = "9" * 20 + "." + "9" * 20
    assert await post(client, "private-foobar", socket_id=socket_id) == (200, {
        "auth": signatures.sign_auth(APP.key, APP.secret, f"{socket_id}:private-foobar"),
    })


async def test_missing_socket_id_is_400(make_client: Any) -> None:
    client = await make_client()
    response = await client.post("/broadcasting/auth", headers=bearer(token()),
                                 data={"channel_name": "private-foobar"})
    assert (response.status, await response.json()) == (
        400, {"error": "socket_id is required", "code": 400}
    )


async def test_missing_channel_name_is_400(make_client: Any) -> None:
    client = await make_client()
    assert await post(client, None) == (400, {"error": "channel_name is required", "code": 400})


async def test_invalid_channel_name_is_400(make_client: Any) -> None:
    client = await make_client()
    status, body = await post(client, "private-foo bar")
    assert (status, body["error"]) == (
        400, "Invalid channel name 'private-foo bar': only A-Z, a-z, 0-9 and _ - = @ , . ; "
             "are allowed",
    )


async def test_invalid_json_body_is_400(make_client: Any) -> None:
    client = await make_client()
    response = await client.post("/broadcasting/auth", data=b"{",
                                 headers={**bearer(token()), "Content-Type": "application/json"})
    assert (response.status, await response.json()) == (
        400, {"error": "The request body is not valid JSON", "code": 400}
    )


# -- the hook ------------------------------------------------------------------------------


def deciding_hook(channel_name: str, claims: dict[str, Any], socket_id: str) -> bool | dict:
    if channel_name.startswith("presence-"):
        return {"user_id": f"{claims['sub']}@{socket_id}", "user_info": {"via": "hook"}}
    return channel_name == f"private-user.{claims['sub']}"


async def async_hook(channel_name: str, claims: dict[str, Any], socket_id: str) -> bool:
    return True


def broken_hook(channel_name: str, claims: dict[str, Any], socket_id: str) -> Any:
    return "yes"


async def test_hook_allows_and_denies(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, hook=f"{__name__}:deciding_hook"))
    assert (await post(client, "private-user.10"))[0] == 200
    assert await post(client, "private-user.11") == (403, {
        "error": "Access to channel 'private-user.11' is denied", "code": 403,
    })


async def test_hook_dict_gives_the_presence_member(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, hook=f"{__name__}:deciding_hook"))
    status, body = await post(client, "presence-room")
    assert status == 200
    assert body["channel_data"] == '{"user_id":"10@1234.1234","user_info":{"via":"hook"}}'


async def test_coroutine_hook_is_awaited(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, hook=f"{__name__}:async_hook"))
    assert await post(client, "private-foobar") == (200, {"auth": f"{KEY}:{A1}"})


async def test_hook_returning_garbage_is_500(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, hook=f"{__name__}:broken_hook"))
    assert await post(client, "private-foobar") == (500, {
        "error": "The authorization hook returned neither a bool nor a dict", "code": 500,
    })


async def test_hook_without_key_decides_without_a_token(make_client: Any) -> None:
    client = await make_client(AuthConfig(hook=f"{__name__}:async_hook"))
    assert await post(client, "private-foobar", headers={}) == (200, {"auth": f"{KEY}:{A1}"})


# -- app selection -------------------------------------------------------------------------


async def test_app_is_chosen_by_query_id_or_key(make_client: Any) -> None:
    client = await make_client(apps=(APP, OTHER))
    other = signatures.sign_auth(OTHER.key, OTHER.secret, f"{SOCKET}:private-foobar")
    assert await post(client, "private-foobar", params={"app": "4"}) == (200, {"auth": other})
    assert await post(client, "private-foobar", params={"app": "other-key"}) == (
        200, {"auth": other}
    )
    assert await post(client, "private-foobar", params={"app": KEY}) == (
        200, {"auth": f"{KEY}:{A1}"}
    )


async def test_app_is_chosen_by_header(make_client: Any) -> None:
    client = await make_client(apps=(APP, OTHER))
    other = signatures.sign_auth(OTHER.key, OTHER.secret, f"{SOCKET}:private-foobar")
    headers = {**bearer(token()), "X-Pusher-App": "4"}
    assert await post(client, "private-foobar", headers) == (200, {"auth": other})


async def test_several_apps_and_none_chosen_is_400(make_client: Any) -> None:
    client = await make_client(apps=(APP, OTHER))
    assert await post(client, "private-foobar") == (400, {
        "error": "Several apps are configured: choose one with ?app=<id or key> or the "
                 "X-Pusher-App header",
        "code": 400,
    })


async def test_unknown_app_is_404(make_client: Any) -> None:
    client = await make_client()
    assert await post(client, "private-foobar", params={"app": "nope"}) == (404, {
        "error": "Unknown app 'nope' (give an app id or key)", "code": 404,
    })


# -- CORS ----------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"
CORS_CONFIG = AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,), allowed_origins=(ORIGIN,))


async def test_allowed_origin_gets_cors_headers(make_client: Any) -> None:
    client = await make_client(CORS_CONFIG)
    response = await client.post(
        "/broadcasting/auth", headers={**bearer(token()), "Origin": ORIGIN},
        data={"socket_id": SOCKET, "channel_name": "private-foobar"},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Vary"] == "Origin"


async def test_error_answers_carry_cors_headers_too(make_client: Any) -> None:
    client = await make_client(CORS_CONFIG)
    response = await client.post("/broadcasting/auth", headers={"Origin": ORIGIN},
                                 data={"socket_id": SOCKET, "channel_name": "private-foobar"})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


async def test_disallowed_origin_gets_no_cors_headers(make_client: Any) -> None:
    client = await make_client(CORS_CONFIG)
    response = await client.post(
        "/broadcasting/auth", headers={**bearer(token()), "Origin": "https://evil.example"},
        data={"socket_id": SOCKET, "channel_name": "private-foobar"},
    )
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


async def test_wildcard_echoes_the_request_origin(make_client: Any) -> None:
    client = await make_client(AuthConfig(jwt_secret=SECRET, rules=(ANY_FOOBAR,),
                                          allowed_origins=("*",)))
    response = await client.post(
        "/broadcasting/user-auth", headers={**bearer(token()), "Origin": "https://x.example"},
        data={"socket_id": SOCKET},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://x.example"


@pytest.mark.parametrize("path", ["/broadcasting/auth", "/broadcasting/user-auth"])
async def test_preflight_from_an_allowed_origin_is_204(make_client: Any, path: str) -> None:
    client = await make_client(CORS_CONFIG)
    response = await client.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-csrf-token",
    })
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Vary"] == "Origin"
    assert response.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Authorization, Content-Type, X-CSRF-TOKEN, X-Socket-Id, X-Requested-With, X-Pusher-App"
    )


async def test_preflight_from_a_disallowed_origin_is_403(make_client: Any) -> None:
    client = await make_client(CORS_CONFIG)
    response = await client.options("/broadcasting/auth", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
    })
    assert (response.status, await response.json()) == (403, {
        "error": "Origin 'https://evil.example' is not allowed", "code": 403,
    })
    assert "Access-Control-Allow-Origin" not in response.headers


# -- the server accepts what the endpoint signs --------------------------------------------


@pytest.mark.parametrize(
    ("channel", "data"),
    [
        ("private-foobar", "{}"),
        ("private-encrypted-foobar", "{}"),
        ("presence-foobar", '{"presence":{"ids":["10"],"hash":{"10":{"name":"Mr. Channels"}},'
                            '"count":1}}'),
    ],
)
async def test_connection_accepts_the_returned_signature(
    make_client: Any, channel: str, data: str
) -> None:
    sink = ListSink()
    connection = Connection(APP, ServerConfig(), Hub(), sink)
    connection.open()
    sink.take()  # connection_established
    client = await make_client()
    status, body = await post(client, channel, bearer(token(name="Mr. Channels")),
                              socket_id=connection.socket_id)
    assert status == 200
    subscribe = {"channel": channel, "auth": body["auth"]}
    if "channel_data" in body:
        subscribe["channel_data"] = body["channel_data"]
    connection.receive(json.dumps({"event": "pusher:subscribe", "data": subscribe}))
    assert sink.messages() == [
        {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data},
    ]
    assert sink.closes == []


def test_check_auth_returns_the_key_and_hook_it_loaded(tmp_path: Path) -> None:
    path, _ = rsa_key_file(tmp_path)
    check = check_auth(AuthConfig(jwt_public_key_file=str(path), algorithms=("RS256",),
                                  hook="json:loads"), "f.toml")
    assert isinstance(check.public_key, rsa.RSAPublicKey)
    assert check.hook is json.loads


def test_endpoints_refuse_a_config_built_in_code_that_cannot_verify_tokens() -> None:
    with pytest.raises(ConfigError) as raised:
        BroadcastingAuth((APP,), AuthConfig(algorithms=("HS256",)))
    assert str(raised.value) == (
        "auth config: auth needs jwt_secret or jwt_public_key_file to verify tokens"
    )
