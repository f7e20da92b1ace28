"""The pre-signed requests of ``bench/`` scenario ``publish`` (``bench/wrkload.py``): what wrk
replays must be exactly what the Pusher SDKs send, signed so that the server accepts it."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson

from pusher_compat.signatures import verify_request

# Appended, not prepended: bench/'s module names (run, report...) must not shadow others.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import wrkload
from wsclient import Target

TARGET = Target("127.0.0.1", 6001, "1001", "app-key", "app-secret")
TIMESTAMP = 1_800_000_000


def _split(raw: bytes) -> tuple[str, list[str], bytes]:
    """(request line, header lines, body) of one raw request."""
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *headers = head.decode().split("\r\n")
    return line, headers, body


def _verify(raw: bytes) -> None:
    """Check the request as the server does: raises RequestSignatureError when refused."""
    line, _, body = _split(raw)
    target = urlsplit(line.split(" ")[1])
    params = dict(parse_qsl(target.query))
    verify_request("POST", [target.path], params, body, TARGET.key, TARGET.secret,
                   now=TIMESTAMP)


def test_single_event_request_is_the_php_sdk_trigger_signed() -> None:
    raw = wrkload.presign(TARGET, ["private-user.7"], 1, "bench-event", "hello", TIMESTAMP)[0]
    line, headers, body = _split(raw)
    assert line.startswith("POST /apps/1001/events?auth_key=app-key&auth_timestamp=1800000000"
                           "&auth_version=1.0&body_md5=")
    assert line.endswith(" HTTP/1.1")
    assert headers == ["Host: 127.0.0.1:6001", "Content-Type: application/json",
                       f"Content-Length: {len(body)}"]
    assert body == b'{"name":"bench-event","data":"hello","channel":"private-user.7"}'
    _verify(raw)


def test_batch_requests_are_signed_and_share_the_channels_evenly() -> None:
    channels = [f"private-user.{i}" for i in range(100)]
    requests = wrkload.presign(TARGET, channels, 10, "bench-event", "x", TIMESTAMP)
    assert len(requests) == 100
    per_channel: Counter[str] = Counter()
    for raw in requests:
        assert raw.startswith(b"POST /apps/1001/batch_events?")
        _verify(raw)
        batch = orjson.loads(_split(raw)[2])["batch"]
        assert len(batch) == 10
        per_channel.update(event["channel"] for event in batch)
    assert set(per_channel.values()) == {10}
    assert len(per_channel) == 100


def test_close_asks_for_a_new_connection_per_request() -> None:
    raw = wrkload.presign(TARGET, ["private-user.1"], 1, "e", "d", TIMESTAMP, close=True)[0]
    assert "Connection: close" in _split(raw)[1]
    _verify(raw)


def test_lua_script_holds_each_request_escaped_once() -> None:
    raw = b'POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{"a":"\\\\"}'
    script = wrkload.lua_script([raw])
    expected = r'  "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a\":\"\\\\\"}",'
    assert expected + "\n" in script


def test_report_is_read_from_the_marker_line() -> None:
    out = f'Running 1s test\n{wrkload.REPORT_MARKER}{{"requests":5,"p99_us":900}}\nmore\n'
    assert wrkload.parse_report(out) == {"requests": 5, "p99_us": 900}
