"""100,000 concurrent sockets on this one machine, then one event fanned out to all of them.

The server runs as ``pusher-compat serve --workers W`` (each worker under the open-files hard
limit, sharing state through its own ``redis-server``); the sockets come from ``--holders``
processes of this script (``hold`` mode), each under the same limit, spread over
``--source-addresses`` loopback addresses (one ephemeral port range each: about 28,000 ports
per address towards one server port). Every socket subscribes to one public channel.

Figures, as one JSON line on stdout (progress on stderr):

- ``opened``, ``errors``: sockets subscribed, and failures of any kind (0 expected);
- ``connect_s``, ``connect_per_s``: from starting the holders until every socket is
  subscribed;
- ``rss_mib`` and ``rss_kib_per_socket``: resident memory of the supervisor and its
  workers together, before and with every socket open (growth divided by sockets);
- ``fanout_ms``: one event published through the HTTP API until the last socket has it;
  ``received``: sockets that got it.

Every wait is bounded (``--timeout`` for the whole run); loopback only.

    python bench/sockets_100k.py --sockets 100000 --workers 6 --holders 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster import Process, RedisServer
from procstat import raise_fd_limit, require_loopback, rss_bytes
from publisher import Publisher
from run import OUR_CONFIG, REPO
from scenarios import EVENT_MARKER, EVENT_NAME, Run, open_subscribers
from wsclient import Counters, Target

HOST = "127.0.0.1"
CHANNEL = "all-sockets"
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- hold mode: one process of sockets ----------------------------------------------------


async def hold(args: argparse.Namespace) -> None:
    """Open ``--count`` sockets subscribed to :data:`CHANNEL`, say so on stdout, then wait
    (at most ``--wait`` seconds) for one delivery on each and report when the last came."""
    target = Target(HOST, args.port, "1001", "app-key", "app-secret")
    run = Run(args, target)
    await open_subscribers(run, args.count, lambda _: CHANNEL, first=args.first,
                           label=f"holder {args.first // max(1, args.count)}",
                           marker=EVENT_MARKER)
    counters = run.counters
    _emit({"ready": len(run.clients), "errors": counters.error_count,
           "first_errors": counters.errors[:3]})
    opened = len(run.clients)
    with contextlib.suppress(TimeoutError):  # what did not arrive is reported as missing
        await asyncio.wait_for(counters.reach(opened), args.wait)
    _emit({"received": counters.deliveries, "last": counters.last_delivery,
           "lost": counters.lost, "errors": counters.error_count})
    run.close()


def _emit(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


# -- the run ------------------------------------------------------------------------------


class Supervisor(Process):
    """``pusher-compat serve --workers W`` on the Redis adapter."""

    def spawn(self, workers: int, redis_url: str) -> None:
        config = self.workdir / "server.toml"
        config.write_text(OUR_CONFIG)
        self.log.write_bytes(b"")
        self._spawn([sys.executable, "-m", "pusher_compat", "serve", "--host", HOST,
                     "--port", "0", "--config", str(config), "--workers", str(workers),
                     "--adapter", "redis", "--redis-url", redis_url],
                    dict(os.environ), REPO)

    def wait_listening(self, deadline: float) -> None:
        while time.monotonic() < deadline and not self.port:
            self.check_alive()
            match = _LISTENING.search(self.log.read_text(errors="replace"))
            self.port = int(match.group(1)) if match else 0
            time.sleep(0.1)
        if not self.port:
            raise RuntimeError("the server did not start listening:\n" + self.log_tail())

    def family(self) -> list[int]:
        """The supervisor's pid and its children's (the workers)."""
        pids = [self.pid]
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(pid) for pid in children)
        return pids

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.family())


async def _holder(args: argparse.Namespace, port: int, index: int, count: int, first: int
                  ) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "hold", "--port", str(port), "--count", str(count),
        "--first", str(first), "--source-addresses", str(args.source_addresses),
        "--connect-concurrency", str(args.connect_concurrency),
        "--wait", str(args.timeout), stdout=asyncio.subprocess.PIPE)


async def _line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError(f"a holder ended early (exit code {await process.wait()})")
    return dict(json.loads(line))


async def measure(args: argparse.Namespace, server: Supervisor) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # let the workers finish starting before the baseline
    baseline = server.rss()
    per_holder = math.ceil(args.sockets / args.holders)
    started = time.perf_counter()
    holders = [await _holder(args, server.port, i, min(per_holder, args.sockets - i * per_holder),
                             i * per_holder) for i in range(args.holders)]
    ready = await asyncio.gather(*(_line(h) for h in holders))
    connect_s = time.perf_counter() - started
    opened = sum(r["ready"] for r in ready)
    await asyncio.sleep(args.settle)
    rss = server.rss()
    _log(f"{opened} sockets open in {connect_s:.1f} s; publishing one event")
    counters = Counters()
    publisher = Publisher(Target(HOST, server.port, "1001", "app-key", "app-secret"), counters)
    published = time.perf_counter()
    try:
        await publisher.batch([(CHANNEL, EVENT_NAME, "to every socket")])
    finally:
        await publisher.close()
    done = await asyncio.gather(*(_line(h) for h in holders))
    await asyncio.gather(*(h.wait() for h in holders))
    received = sum(d["received"] for d in done)
    last = max((d["last"] for d in done if d["received"]), default=published)
    errors = sum(r["errors"] for r in ready) + counters.error_count + sum(
        d["lost"] for d in done)
    return {
        "scenario": "sockets-100k", "sockets": args.sockets, "workers": args.workers,
        "holders": args.holders, "source_addresses": args.source_addresses,
        "opened": opened, "errors": errors,
        "first_errors": [e for r in ready for e in r["first_errors"]][:5] + counters.errors[:2],
        "connect_s": round(connect_s, 2), "connect_per_s": round(opened / connect_s),
        "rss_mib": {"before": round(baseline / 2**20, 1), "open": round(rss / 2**20, 1)},
        "rss_kib_per_socket": round((rss - baseline) / 1024 / max(1, opened), 2),
        "fanout_ms": round((last - published) * 1000, 1), "received": received,
    }


async def main(args: argparse.Namespace) -> int:
    require_loopback(HOST)
    limit = raise_fd_limit()
    need = math.ceil(args.sockets / args.holders) + 200
    if need > limit:
        _log(f"{need} sockets per holder exceed the open-files limit {limit}: "
             "use more --holders")
        return 2
    with tempfile.TemporaryDirectory(prefix="sockets-100k-") as tmp:
        redis = RedisServer(Path(tmp), "redis")
        server = Supervisor(Path(tmp), "server")
        deadline = time.monotonic() + 60
        try:
            redis_binary = shutil.which("redis-server")
            if redis_binary is None:
                _log("redis-server is not installed (apt-get install redis-server)")
                return 2
            redis.start_at(redis_binary, HOST, deadline)
            server.spawn(args.workers, f"redis://{HOST}:{redis.port}/0")
            server.wait_listening(deadline)
            result = await asyncio.wait_for(measure(args, server), args.timeout)
        finally:
            server.stop()
            redis.stop()
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 and result["received"] == result["opened"] else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    hold_mode = sub.add_parser("hold", help="(internal) one process of sockets")
    hold_mode.add_argument("--port", type=int, required=True)
    hold_mode.add_argument("--count", type=int, required=True)
    hold_mode.add_argument("--first", type=int, default=0)
    hold_mode.add_argument("--wait", type=float, default=600.0)
    for target in (parser, hold_mode):
        target.add_argument("--source-addresses", type=int, default=8,
                            help="spread sockets over 127.0.0.1..N (default 8)")
        target.add_argument("--connect-concurrency", type=int, default=200,
                            help="sockets being opened at once per holder (default 200)")
    hold_mode.add_argument("--step-timeout", type=float, default=60.0)
    hold_mode.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--sockets", type=int, default=100_000, help="default 100000")
    parser.add_argument("--workers", type=int, default=6,
                        help="server worker processes (default 6)")
    parser.add_argument("--holders", type=int, default=6,
                        help="client processes holding the sockets (default 6)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to let memory settle before reading RSS (default 5)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="hard limit for the whole run, seconds (default 900)")
    return parser


if __name__ == "__main__":
    import uvloop

    options = _parser().parse_args()
    if options.mode == "hold":
        raise_fd_limit()
        uvloop.run(hold(options))
    else:
        sys.exit(uvloop.run(main(options)))
