"""Pre-signed HTTP API requests replayed by ``wrk``: the requests, the Lua script, the report.

``wrk`` (C, epoll, keep-alive connections) sends the requests so that the load generator is not
the bottleneck; Python only prepares them. Every request is signed as the Pusher HTTP SDKs
sign them (``auth_key``, ``auth_timestamp``, ``auth_version=1.0``, ``body_md5``, then
``auth_signature`` over the sorted parameters; the PHP SDK's ``build_auth_query_params``), with
one timestamp taken just before the run: servers accept a timestamp within their window
(``request_timestamp_window``, 600 s by default), so the requests stay valid for any short run.

Bodies are those the PHP SDK sends: ``{"name","data","channel"}`` for a one-channel
``trigger`` (Laravel's ``broadcast()``), ``{"batch":[{"name","data","channel"}, ...]}`` for
``triggerBatch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import orjson
from wsclient import Target

from pusher_compat.signatures import sign_request

__all__ = ["REPORT_MARKER", "authority", "lua_script", "parse_report", "presign", "signed_request"]

REPORT_MARKER = "WRK-JSON "
"""Leads the one line of the script's ``done`` callback on wrk's stdout."""

_LUA_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\r"): "\\r", ord("\n"): "\\n"}

# ``setup`` runs in the main Lua state once per thread; ``init``, ``request`` and ``done`` in
# the thread's own state. Threads start at different places in the list so that two threads
# do not send the same request at the same moment. ``request`` only hands wrk a prepared
# string: no formatting and no response parsing (a ``response`` callback would make wrk parse
# every response, which costs it more CPU than the server's answer is worth here).
_LUA_BODY = """\
local count = #prepared
local threads = 0
local index = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  index = ((thread_number or 0) * 7919) % count
end

function request()
  index = index % count + 1
  return prepared[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect_errors":%.0f,' ..
    '"read_errors":%.0f,"write_errors":%.0f,"status_errors":%.0f,"timeouts":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\\n',
    MARKER, summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def _event(channel: str, name: str, data: str) -> dict[str, str]:
    # The key order of the PHP SDK's make_event.
    return {"name": name, "data": data, "channel": channel}


def authority(target: Target) -> str:
    """``host:port`` for a URL or a ``Host`` header (an IPv6 address in brackets)."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def signed_request(target: Target, path: str, body: bytes, timestamp: int,
                   close: bool = False) -> bytes:
    """One whole ``POST`` request (head and body) as it goes on the wire, signed;
    ``close``: with ``Connection: close`` (a new connection per request)."""
    params = {
        "auth_key": target.key,
        "auth_timestamp": str(timestamp),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    params["auth_signature"] = sign_request("POST", path, params, target.secret)
    # Signed unescaped, sent escaped (the server decodes before checking), as the SDKs do.
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    head = (
        f"POST {path}?{query} HTTP/1.1\r\n"
        f"Host: {authority(target)}\r\n"
        "Content-Type: application/json\r\n"
        + ("Connection: close\r\n" if close else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def presign(target: Target, channels: Sequence[str], batch: int, name: str, data: str,
            timestamp: int, close: bool = False) -> list[bytes]:
    """One request per channel, signed at ``timestamp``.

    ``batch == 1``: ``POST /apps/{id}/events`` to channel *k*. ``batch > 1``:
    ``POST /apps/{id}/batch_events`` whose events go to channels *k·batch* ... *k·batch +
    batch - 1* (modulo the count), so every channel gets the same share of the events.
    ``close``: every request asks for its connection to be closed after the answer.
    """
    requests = []
    count = len(channels)
    for k in range(count):
        if batch == 1:
            path = f"/apps/{target.app_id}/events"
            body = orjson.dumps(_event(channels[k], name, data))
        else:
            path = f"/apps/{target.app_id}/batch_events"
            events = [_event(channels[(k * batch + j) % count], name, data) for j in range(batch)]
            body = orjson.dumps({"batch": events})
        requests.append(signed_request(target, path, body, timestamp, close))
    return requests


def lua_script(requests: Sequence[bytes]) -> str:
    """The wrk script replaying ``requests`` in turn on every connection."""
    lines = ["-- Written by bench/wrkload.py: pre-signed requests, replayed in turn.",
             f'local MARKER = "{REPORT_MARKER}"', "prepared = {"]
    for raw in requests:
        lines.append('  "' + raw.decode("ascii").translate(_LUA_ESCAPES) + '",')
    lines.append("}")
    return "\n".join(lines) + "\n" + _LUA_BODY


def parse_report(stdout: str) -> dict[str, Any]:
    """The figures of the script's ``done`` line; ``ValueError`` when wrk printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(REPORT_MARKER):
            report: dict[str, Any] = orjson.loads(line[len(REPORT_MARKER):])
            return report
    raise ValueError(f"no {REPORT_MARKER.strip()} line in wrk's output: {stdout[-300:]!r}")
