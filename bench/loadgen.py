#!/usr/bin/env python3
"""Load generator for Pusher-compatible servers: one scenario per run, one JSON line out.

    python bench/loadgen.py fanout --port 6001 --subscribers 1000 --events 2000
    python bench/loadgen.py latency --port 6001 --subscribers 1000 --rate 50 --duration 20

Works against any server speaking the Pusher Channels protocol (ours, Soketi...): give its
host, port and app credentials. Only loopback addresses are accepted. Pass ``--server-pid`` to
get the server's CPU time and memory (read from /proc). Progress goes to stderr; stdout gets
exactly one JSON line. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson
import uvloop
from procstat import raise_fd_limit, require_loopback
from scenarios import SCENARIOS, Run
from wsclient import Target

__all__ = ["main"]


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target")
    group.add_argument("--host", default="127.0.0.1",
                       help="server address; must be loopback (default 127.0.0.1)")
    group.add_argument("--port", type=int, default=6001, help="server port (default 6001)")
    group.add_argument("--app-id", default="1001", help="app id for the HTTP API (default 1001)")
    group.add_argument("--key", default="app-key", help="app key (default app-key)")
    group.add_argument("--secret", default="app-secret", help="app secret (default app-secret)")
    group.add_argument("--server-pid", type=int,
                       help="server process id: enables server CPU and RSS figures (/proc), "
                            "summed over it and its children (serve --workers N)")
    group.add_argument("--label", default="", help="free text copied into the JSON line")
    run = parser.add_argument_group("limits")
    run.add_argument("--timeout", type=float, default=300.0,
                     help="hard limit for the whole scenario, seconds (default 300)")
    run.add_argument("--step-timeout", type=float, default=30.0,
                     help="limit for one connect / handshake / subscribe, seconds (default 30)")
    run.add_argument("--settle", type=float, default=3.0,
                     help="stop waiting for deliveries after this many seconds without one, "
                          "and let memory settle this long before reading RSS (default 3)")
    run.add_argument("--connect-concurrency", type=int, default=200,
                     help="sockets being opened at once (default 200)")
    run.add_argument("--source-addresses", type=int, default=1,
                     help="spread sockets over 127.0.0.1..127.0.0.N to get N ephemeral port "
                          "ranges; needed past ~28k sockets (default 1)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _publishing(parser: argparse.ArgumentParser, batch: int) -> None:
    group = parser.add_argument_group("publishing")
    group.add_argument("--batch", type=int, default=batch, choices=range(1, 11), metavar="1-10",
                       help=f"events per POST /apps/{{id}}/batch_events (default {batch})")
    group.add_argument("--payload-bytes", type=int, default=100,
                       help="size of each event's data string (default 100)")


def _flow(parser: argparse.ArgumentParser, events: int) -> None:
    _publishing(parser, 10)
    group = parser.add_argument_group("flow")
    group.add_argument("--events", type=int, default=events,
                       help=f"events to publish in total (default {events})")
    group.add_argument("--window", type=int, default=100,
                       help="at most this many events published but not yet received "
                            "(keeps backlogs small; default 100)")
    group.add_argument("--publishers", type=int, default=2,
                       help="concurrent HTTP requests in flight (default 2)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadgen.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="scenario", metavar="SCENARIO", required=True)

    fanout = commands.add_parser("fanout", help="N subscribers on one channel, M events",
                                 description="N raw WebSocket subscribers on one channel; M "
                                             "events through batch_events. Deliveries per second "
                                             "and server CPU per delivery.")
    _common(fanout)
    fanout.add_argument("--subscribers", type=int, default=1000, help="sockets (default 1000)")
    _flow(fanout, 1000)

    channels = commands.add_parser("channels", help="many sockets over many channels",
                                   description="N sockets over C channels (socket i on channel "
                                               "i mod C); events round-robin over the channels.")
    _common(channels)
    channels.add_argument("--subscribers", type=int, default=10000,
                          help="sockets (default 10000)")
    channels.add_argument("--channels", type=int, default=1000, help="channels (default 1000)")
    _flow(channels, 20000)

    latency = commands.add_parser("latency", help="publish-to-receive latency at a fixed rate",
                                  description="N subscribers on one channel; events at a fixed "
                                              "rate carry their send time; p50/p99/max of "
                                              "publish-to-receive.")
    _common(latency)
    latency.add_argument("--subscribers", type=int, default=1000, help="sockets (default 1000)")
    latency.add_argument("--rate", type=float, default=50.0,
                         help="events per second (default 50)")
    latency.add_argument("--duration", type=float, default=20.0,
                         help="seconds of measured publishing (default 20)")
    latency.add_argument("--warmup", type=float, default=2.0,
                         help="seconds of publishing before measuring, discarded (default 2)")
    _publishing(latency, 1)

    conns = commands.add_parser("connections", help="idle memory per socket and connect rate",
                                description="Open idle sockets, each subscribed to one of C "
                                            "channels, up to each level; server RSS growth per "
                                            "socket and sockets opened per second.")
    _common(conns)
    conns.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                       default=[1000, 10000],
                       help="comma-separated socket counts, reached one after the other "
                            "(default 1000,10000); levels over the open-files limit are skipped")
    conns.add_argument("--channels", type=int, default=100,
                       help="channels the idle sockets are spread over (default 100)")

    pres = commands.add_parser("presence", help="presence join/leave throughput",
                               description="Sockets join presence channels (signed channel "
                                           "data), then unsubscribe; joins and leaves per second "
                                           "including member_added/removed fan-out.")
    _common(pres)
    pres.add_argument("--subscribers", type=int, default=1000, help="sockets (default 1000)")
    pres.add_argument("--members", type=int, default=50,
                      help="members per presence channel (default 50; servers cap at 100)")
    pres.add_argument("--rounds", type=int, default=1, help="join+leave rounds (default 1)")

    pub = commands.add_parser("publish", help="the signed HTTP API under wrk",
                              description="Pre-signed POST /apps/{id}/events (one event, one "
                                          "per-user private channel per request, as Laravel's "
                                          "broadcast() sends) or batch_events, replayed by wrk "
                                          "on keep-alive connections; requests/s, server CPU "
                                          "per request, p50/p99 request latency.")
    _common(pub)
    pub.add_argument("--channels", type=_positive, default=1000,
                     help="private-user.N channels, one request signed for each (default 1000)")
    pub.add_argument("--subscribed", action="store_true",
                     help="one socket subscribed (signed auth) to each channel; the deliveries "
                          "are counted and checked")
    _publishing(pub, 1)
    wrk = pub.add_argument_group("wrk", "--batch 1 sends POST /events, more sends batch_events")
    wrk.add_argument("--duration", type=_positive, default=10,
                     help="seconds of measured load (default 10)")
    wrk.add_argument("--warmup", type=int, default=1,
                     help="seconds of load before measuring, discarded; 0: none (default 1)")
    wrk.add_argument("--connections", type=_positive, default=50,
                     help="keep-alive connections (default 50)")
    wrk.add_argument("--threads", type=_positive, default=1, help="wrk threads (default 1)")
    wrk.add_argument("--close", action="store_true",
                     help="send Connection: close: a new connection per request, as Soketi "
                          "does on its own (it closes every API connection after the answer)")
    wrk.add_argument("--request-timeout", type=_positive, default=5,
                     help="wrk counts a request slower than this many seconds as a timeout "
                          "(default 5)")
    wrk.add_argument("--wrk", default="wrk", help="the wrk executable (default wrk on PATH)")
    return parser


def _params(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"scenario", "host", "key", "secret", "app_id", "server_pid", "label", "timeout",
            "step_timeout", "port"}
    return {k: v for k, v in vars(args).items() if k not in skip}


async def _run(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    run = Run(args, target)
    result: dict[str, Any] = {}
    try:
        async with asyncio.timeout(args.timeout):
            result = await SCENARIOS[args.scenario](run)
    except TimeoutError:
        run.counters.error(f"hard timeout after {args.timeout:g} s")
    finally:
        run.close()
        await asyncio.sleep(0.2)
    counters = run.counters
    result["errors"] = counters.error_count
    if counters.errors:
        result["first_errors"] = counters.errors[:5]
    if counters.lost:
        result["connections_lost"] = counters.lost
    if counters.closed_by_server:
        result["closed_by_server"] = dict(counters.close_codes)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        address = require_loopback(args.host)
    except ValueError as error:
        print(f"loadgen: {error}", file=sys.stderr)
        return 2
    raise_fd_limit()
    # The receiver's own objects are acyclic and bounded: a cyclic GC pass over 10k clients
    # would only add pauses to the latency figures, so it stays off for the whole run.
    gc.disable()
    target = Target(address, args.port, args.app_id, args.key, args.secret)
    started = time.time()
    figures = uvloop.run(_run(args, target))
    line = {
        "scenario": args.scenario,
        "label": args.label,
        "at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds"),
        "params": _params(args),
        **figures,
    }
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return 0 if figures.get("errors", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
