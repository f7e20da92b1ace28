"""Every HMAC of the protocol against the published and SDK-produced vectors.

Vectors come from protocol.md: §4.3 (channel and user auth, shared secret), §8 (webhook body)
and §7.3 (signed HTTP API requests). Credentials are the Pusher docs' ones.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pusher_compat import signatures
from pusher_compat.signatures import RequestSignatureError

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET_ID = "1234.1234"
NOW = 1353088179

# -- §4.3 channel / user auth ----------------------------------------------------------------

AUTH_VECTORS = [
    pytest.param(
        signatures.channel_string(SOCKET_ID, "private-foobar"),
        "1234.1234:private-foobar",
        "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4",
        id="A1-private",
    ),
    pytest.param(
        signatures.user_string(SOCKET_ID, '{"id":"12345"}'),
        '1234.1234::user::{"id":"12345"}',
        "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba",
        id="A2-user-signin",
    ),
    pytest.param(
        signatures.channel_string(
            SOCKET_ID, "presence-foobar", '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
        ),
        '1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Channels"}}',
        "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
        id="A3-presence-doc-text",
    ),
    pytest.param(
        signatures.channel_string(
            SOCKET_ID, "presence-foobar", '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
        ),
        '1234.1234:presence-foobar:{"user_id":10,"user_info":{"name":"Mr. Pusher"}}',
        "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c",
        id="A3prime-presence-doc-hash",
    ),
    pytest.param(
        signatures.channel_string(
            SOCKET_ID, "presence-foobar", '{"user_id":"10","user_info":{"name":"Mr. Channels"}}'
        ),
        '1234.1234:presence-foobar:{"user_id":"10","user_info":{"name":"Mr. Channels"}}',
        "4c6d8fc42a207ba96a0779844171b0bb819d96ffceef9609f5cce596ab17a800",
        id="A4-presence-node-sdk",
    ),
    pytest.param(
        signatures.channel_string(
            SOCKET_ID,
            "presence-foobar",
            '{"user_id": "10", "user_info": {"name": "Mr. Channels"}}',
        ),
        '1234.1234:presence-foobar:{"user_id": "10", "user_info": {"name": "Mr. Channels"}}',
        "96f61cf0b64a80c5cf1852da9dea2998a90fd7fa840c4cc62212573f1c524cdf",
        id="A5-presence-python-sdk-spacing",
    ),
    pytest.param(
        signatures.channel_string(SOCKET_ID, "private-encrypted-foobar"),
        "1234.1234:private-encrypted-foobar",
        "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533",
        id="A6-private-encrypted",
    ),
]


@pytest.mark.parametrize(("string_to_sign", "expected_string", "signature"), AUTH_VECTORS)
def test_auth_string_is_built_as_documented(
    string_to_sign: str, expected_string: str, signature: str
) -> None:
    assert string_to_sign == expected_string


@pytest.mark.parametrize(("string_to_sign", "expected_string", "signature"), AUTH_VECTORS)
def test_sign_auth_matches_vector(string_to_sign: str, expected_string: str, signature: str):
    assert signatures.sign_auth(KEY, SECRET, string_to_sign) == f"{KEY}:{signature}"


@pytest.mark.parametrize(("string_to_sign", "expected_string", "signature"), AUTH_VECTORS)
def test_verify_auth_accepts_vector(string_to_sign: str, expected_string: str, signature: str):
    assert signatures.verify_auth(KEY, SECRET, f"{KEY}:{signature}", string_to_sign) is True


@pytest.mark.parametrize(("string_to_sign", "expected_string", "signature"), AUTH_VECTORS)
def test_verify_auth_refuses_tampered_signature(
    string_to_sign: str, expected_string: str, signature: str
) -> None:
    tampered = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert signatures.verify_auth(KEY, SECRET, f"{KEY}:{tampered}", string_to_sign) is False


def test_verify_auth_refuses_another_key_prefix() -> None:
    signature = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    string = "1234.1234:private-foobar"
    assert signatures.verify_auth(KEY, SECRET, f"other-key:{signature}", string) is False


def test_verify_auth_refuses_reserialised_presence_data() -> None:
    """The Python SDK's spaced channel_data must be verified as sent, never re-serialised."""
    sent = '{"user_id": "10", "user_info": {"name": "Mr. Channels"}}'
    compact = '{"user_id":"10","user_info":{"name":"Mr. Channels"}}'
    auth = signatures.sign_auth(
        KEY, SECRET, signatures.channel_string(SOCKET_ID, "presence-foobar", sent)
    )
    assert signatures.verify_auth(
        KEY, SECRET, auth, signatures.channel_string(SOCKET_ID, "presence-foobar", compact)
    ) is False


def test_verify_auth_refuses_docs_presence_hash_with_doc_text() -> None:
    """§4.3: A3' printed hash does NOT belong to the A3 ("Mr. Channels") JSON."""
    string = signatures.channel_string(
        SOCKET_ID, "presence-foobar", '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    )
    printed = "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
    assert signatures.verify_auth(KEY, SECRET, f"{KEY}:{printed}", string) is False


# -- §4.3 shared secret, §8 webhook -----------------------------------------------------------


def test_shared_secret_matches_sdk_vector() -> None:
    master_key = b"01234567890123456789012345678901"
    assert (
        signatures.shared_secret("private-encrypted-foobar", master_key)
        == "Uedy6frF2/3cz/oMziDQ0pGdahMvE50/N0xZ8eKYEIg="
    )


def test_webhook_signature_matches_docs_vector() -> None:
    body = (
        b'{"time_ms":1327078148132,"events":'
        b'[{"name":"channel_occupied","channel":"my-channel"}]}'
    )
    assert (
        signatures.webhook_signature(SECRET, body)
        == "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
    )


def test_webhook_signature_of_a_body_in_parts_is_that_of_the_joined_body() -> None:
    parts = (b'{"time_ms":1327078148132,"events":',
             b'[{"name":"channel_occupied","channel":"my-channel"}]', b"}")
    assert (
        signatures.webhook_signature(SECRET, *parts)
        == "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
    )


# -- §7.3 signed HTTP API requests -----------------------------------------------------------

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def _base(**extra: str) -> dict[str, str]:
    return {"auth_key": KEY, "auth_timestamp": str(NOW), "auth_version": "1.0", **extra}


REQUEST_VECTORS = [
    pytest.param(
        "POST",
        "/apps/3/events",
        b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}',
        _base(body_md5="ec365a775a4cd0599faeb73354201b6f"),
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
        id="docs-worked-example",
    ),
    pytest.param(
        "GET",
        "/apps/3/channels",
        b"",
        _base(filter_by_prefix="presence-", info="user_count"),
        "16819168891cb5dfd72b5c7a5d3d602605b26c6ba1930033b5e2eeeb65010291",
        id="node-get-channels",
    ),
    pytest.param(
        "GET",
        "/apps/3/channels",
        b"",
        _base(body_md5=EMPTY_MD5, filter_by_prefix="presence-", info="user_count"),
        "f3f17c61ae491cc9085db68b22076e9b772e3bcb301659d655153ee3f9782aba",
        id="python-get-channels-empty-body-md5",
    ),
    pytest.param(
        "POST",
        "/apps/3/events",
        b'{"name":"foo","data":"{\\"some\\":\\"data\\"}","channels":["project-3"]}',
        _base(body_md5="45ff0dd3fcd388e766ebeec554920e41"),
        "3afbfced4119aeb18b1b441f623f438db238170e007bb8dda50203ad09031632",
        id="node-post-events",
    ),
    pytest.param(
        "POST",
        "/apps/3/events",
        b'{"name": "foo", "channels": ["project-3"], "data": "{\\"some\\": \\"data\\"}"}',
        _base(body_md5="e99c7bd443c2257b30f72ae568153d4f"),
        "d550b5c3df185aa94a2c76c7c3ca5bdec16c5dbef2f7eccdb68886384e05c06a",
        id="python-post-events",
    ),
    pytest.param(
        "POST",
        "/users/42/terminate_connections",
        b"{}",
        _base(body_md5="99914b932bd37a50b983c5e7c90ae93b"),
        "103f2a90361bc4bcd8407c86f261563b23281fea1602c29fc81ac0ec1b7ec5a7",
        id="python-terminate-unprefixed",
    ),
]

_REQUEST_ARGS = ("method", "path", "body", "params", "signature")


@pytest.mark.parametrize(_REQUEST_ARGS, REQUEST_VECTORS)
def test_request_vector_body_md5_is_md5_of_body(
    method: str, path: str, body: bytes, params: dict[str, str], signature: str
) -> None:
    if "body_md5" in params:
        assert hashlib.md5(body).hexdigest() == params["body_md5"]
    else:
        assert body == b""


@pytest.mark.parametrize(_REQUEST_ARGS, REQUEST_VECTORS)
def test_sign_request_matches_vector(
    method: str, path: str, body: bytes, params: dict[str, str], signature: str
) -> None:
    assert signatures.sign_request(method, path, params, SECRET) == signature


@pytest.mark.parametrize(_REQUEST_ARGS, REQUEST_VECTORS)
def test_verify_request_accepts_vector(
    method: str, path: str, body: bytes, params: dict[str, str], signature: str
) -> None:
    signed = {**params, "auth_signature": signature}
    signatures.verify_request(method, [path], signed, body, KEY, SECRET, now=NOW)


def test_sign_request_ignores_param_order_and_key_case() -> None:
    """Keys are lower-cased and sorted; the docs example signs the same whatever the order."""
    params = {
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
        "AUTH_VERSION": "1.0",
        "auth_timestamp": str(NOW),
        "auth_key": KEY,
    }
    assert (
        signatures.sign_request("post", "/apps/3/events", params, SECRET)
        == "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    )


def test_sign_request_signs_decoded_values_unescaped() -> None:
    """§7.2: ``key=value`` pairs use the decoded values, never URL-escaped."""
    params = _base(filter_by_prefix="a b/c", info="user_count,subscription_count")
    expected = (
        "GET\n/apps/3/channels\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&filter_by_prefix=a b/c&info=user_count,subscription_count"
    )
    assert signatures.sign_request("GET", "/apps/3/channels", params, SECRET) == (
        signatures.hmac_hex(SECRET, expected)
    )
    assert signatures.hmac_hex(SECRET, "abc") == hmac.new(
        SECRET.encode(), b"abc", hashlib.sha256
    ).hexdigest()


# -- verify_request refusals -----------------------------------------------------------------

DOCS_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
DOCS_MD5 = "ec365a775a4cd0599faeb73354201b6f"
DOCS_SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def _signed(params: dict[str, str], method: str = "POST", path: str = "/apps/3/events"):
    return {**params, "auth_signature": signatures.sign_request(method, path, params, SECRET)}


def _verify(params, body: bytes = DOCS_BODY, now: float = NOW, paths=("/apps/3/events",)):
    signatures.verify_request("POST", list(paths), params, body, KEY, SECRET, now=now)


def test_verify_request_refuses_missing_signature() -> None:
    with pytest.raises(RequestSignatureError) as error:
        _verify(_base(body_md5=DOCS_MD5))
    assert str(error.value).startswith("Missing auth_signature")


def test_verify_request_refuses_empty_signature() -> None:
    with pytest.raises(RequestSignatureError) as error:
        _verify({**_base(body_md5=DOCS_MD5), "auth_signature": ""})
    assert str(error.value).startswith("Missing auth_signature")


def test_verify_request_refuses_wrong_auth_key() -> None:
    params = _signed(_base(body_md5=DOCS_MD5) | {"auth_key": "someone-else"})
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("Unknown auth_key")


@pytest.mark.parametrize("offset", [601, -601], ids=["timestamp-too-old", "timestamp-in-future"])
def test_verify_request_refuses_timestamp_outside_window(offset: int) -> None:
    params = _signed(_base(body_md5=DOCS_MD5))
    with pytest.raises(RequestSignatureError) as error:
        _verify(params, now=NOW + offset)
    assert str(error.value).startswith("Timestamp expired")


@pytest.mark.parametrize("offset", [600, -600], ids=["600s-old", "600s-ahead"])
def test_verify_request_accepts_timestamp_exactly_at_window_edge(offset: int) -> None:
    _verify(_signed(_base(body_md5=DOCS_MD5)), now=NOW + offset)


@pytest.mark.parametrize("timestamp", ["1353088179.5", "abc", ""])
def test_verify_request_refuses_non_integer_timestamp(timestamp: str) -> None:
    params = _signed(_base(body_md5=DOCS_MD5) | {"auth_timestamp": timestamp})
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("Missing or non-integer auth_timestamp")


def test_verify_request_refuses_missing_timestamp() -> None:
    params = _base(body_md5=DOCS_MD5)
    del params["auth_timestamp"]
    with pytest.raises(RequestSignatureError) as error:
        _verify(_signed(params))
    assert str(error.value).startswith("Missing or non-integer auth_timestamp")


def test_verify_request_refuses_body_without_body_md5() -> None:
    params = _signed(_base())
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("Missing body_md5")


def test_verify_request_refuses_wrong_body_md5() -> None:
    params = _signed(_base(body_md5=EMPTY_MD5))
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("body_md5 does not match")


def test_verify_request_refuses_tampered_signature() -> None:
    tampered = "0" * 64
    params = {**_base(body_md5=DOCS_MD5), "auth_signature": tampered}
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    message = str(error.value)
    assert message.startswith('Invalid signature: you should have sent HmacSHA256Hex(')
    # §7.2 template: the string to sign with literal "\n", then what was sent.
    assert (
        '"POST\\n/apps/3/events\\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179'
        f'&auth_version=1.0&body_md5={DOCS_MD5}"'
    ) in message
    assert message.endswith(f'but you sent "{tampered}"')


def test_verify_request_refuses_tampered_body_param() -> None:
    """A parameter changed after signing breaks the signature."""
    params = {**_base(body_md5=DOCS_MD5, info="user_count"), "auth_signature": DOCS_SIGNATURE}
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("Invalid signature: you should have sent HmacSHA256Hex(")


def test_verify_request_refuses_signature_over_another_path() -> None:
    params = _signed(_base(body_md5=DOCS_MD5), path="/apps/4/events")
    with pytest.raises(RequestSignatureError) as error:
        _verify(params)
    assert str(error.value).startswith("Invalid signature: you should have sent HmacSHA256Hex(")


def test_verify_request_accepts_percent_decoded_path_when_raw_path_differs() -> None:
    """PHP/Guzzle may send a %-encoded path while the SDK signed the decoded one."""
    raw = "/apps/3/channels/presence%2Dfoo%40bar"
    decoded = "/apps/3/channels/presence-foo@bar"
    params = _signed(_base(body_md5=EMPTY_MD5), method="GET", path=decoded)
    signatures.verify_request("GET", [raw, decoded], params, b"", KEY, SECRET, now=NOW)


def test_verify_request_accepts_empty_body_md5_on_get() -> None:
    """The Python SDK sends body_md5 of the empty body on every GET; it stays in the string."""
    params = _signed(_base(body_md5=EMPTY_MD5), method="GET", path="/apps/3/channels")
    signatures.verify_request("GET", ["/apps/3/channels"], params, b"", KEY, SECRET, now=NOW)
    dropped = {k: v for k, v in params.items() if k != "body_md5"}
    with pytest.raises(RequestSignatureError):
        signatures.verify_request(
            "GET", ["/apps/3/channels"], dropped, b"", KEY, SECRET, now=NOW
        )
