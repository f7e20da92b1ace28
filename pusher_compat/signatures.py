"""Every HMAC the protocol uses, in one place.

Channel authorization, user sign-in, signed HTTP API requests, webhook bodies and the shared
secret of encrypted channels are all computed here, exactly as the official Pusher SDKs do.
Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "RequestSignatureError",
    "channel_string",
    "hmac_hex",
    "shared_secret",
    "sign_auth",
    "sign_request",
    "user_string",
    "verify_auth",
    "verify_request",
    "webhook_signature",
]


def hmac_hex(secret: str, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``message`` under ``secret``."""
    if isinstance(message, str):
        message = message.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def channel_string(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """What a channel subscription signs: ``socket_id:channel[:channel_data]``."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_string(socket_id: str, user_data: str) -> str:
    """What a user sign-in signs: ``socket_id::user::user_data``."""
    return f"{socket_id}::user::{user_data}"


def sign_auth(key: str, secret: str, string_to_sign: str) -> str:
    """An ``auth`` value as auth endpoints return it: ``key:hex_signature``."""
    return f"{key}:{hmac_hex(secret, string_to_sign)}"


def verify_auth(key: str, secret: str, auth: str, string_to_sign: str) -> bool:
    """Check an ``auth`` value sent by a client, in constant time."""
    expected = sign_auth(key, secret, string_to_sign)
    return hmac.compare_digest(expected.encode(), auth.encode())


def webhook_signature(secret: str, *body: bytes) -> str:
    """``X-Pusher-Signature`` of a webhook body, given whole or as consecutive parts (a body
    sent in parts is signed without joining them into one more copy)."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    for part in body:
        mac.update(part)
    return mac.hexdigest()


def shared_secret(channel: str, master_key: bytes) -> str:
    """The per-channel key of a ``private-encrypted-`` channel, base64 as the SDKs return it."""
    return base64.b64encode(hashlib.sha256(channel.encode() + master_key).digest()).decode()


class RequestSignatureError(Exception):
    """A signed HTTP API request failed verification; the message says why (HTTP 401)."""


def _string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    query = "&".join(
        f"{k.lower()}={v}" for k, v in sorted(params.items(), key=lambda kv: kv[0].lower())
    )
    return f"{method.upper()}\n{path}\n{query}"


def sign_request(method: str, path: str, params: Mapping[str, str], secret: str) -> str:
    """``auth_signature`` of an HTTP API request (``params`` without the signature)."""
    return hmac_hex(secret, _string_to_sign(method, path, params))


def verify_request(
    method: str,
    paths: list[str],
    params: Mapping[str, str],
    body: bytes,
    key: str,
    secret: str,
    now: float,
    window: int = 600,
) -> None:
    """Verify a signed HTTP API request; raise :class:`RequestSignatureError` if it fails.

    ``params`` are the percent-decoded query parameters; ``paths`` the candidate request paths
    (the raw one and its decoded form), since SDKs differ in what they sign. ``body_md5`` is
    part of the signed string whenever it is present, even for an empty body (the Python SDK
    sends it on every request).
    """
    params = dict(params)
    signature = params.pop("auth_signature", None)
    if not signature:
        raise RequestSignatureError("Missing auth_signature")
    if params.get("auth_key") != key:
        raise RequestSignatureError("Unknown auth_key")
    try:
        timestamp = int(params["auth_timestamp"])
    except (KeyError, ValueError):
        raise RequestSignatureError("Missing or non-integer auth_timestamp") from None
    if abs(now - timestamp) > window:
        raise RequestSignatureError(
            f"Timestamp expired: Given timestamp ({timestamp}) not within {window}s "
            f"of server time ({int(now)})"
        )
    if body and "body_md5" not in params:
        raise RequestSignatureError("Missing body_md5 for a request with a body")
    if "body_md5" in params and params["body_md5"] != hashlib.md5(body).hexdigest():
        raise RequestSignatureError("body_md5 does not match the request body")
    for path in paths:
        # Bytes, not str: compare_digest refuses non-ASCII strings with a TypeError.
        expected = sign_request(method, path, params, secret).encode()
        if hmac.compare_digest(expected, signature.encode()):
            return
    string_to_sign = _string_to_sign(method, paths[0], params).replace("\n", "\\n")
    raise RequestSignatureError(
        f'Invalid signature: you should have sent HmacSHA256Hex("{string_to_sign}", '
        f'your_secret_key), but you sent "{signature}"'
    )
