"""``pusher-compat``: the command line. Parses arguments, then hands over to the modules.

``serve`` runs the server; ``stats`` reads a running server's connections, channels and
recorded statistics through its signed HTTP API; ``stats prune`` deletes old rows from the
statistics file (:mod:`~pusher_compat.stats_store`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from typing import Any, get_args

from . import __version__, logs, signatures
from .channels import kind_of
from .config import AdapterName, ConfigError, load_settings
from .stats_store import SqliteStore

__all__ = ["DEFAULT_URL", "add_stats_commands", "main", "render_stats"]

DEFAULT_URL = "http://127.0.0.1:6001"
"""The server ``pusher-compat stats`` asks without ``--url``."""
_DAY = 86400.0

_DESCRIPTION = """\
A self-hosted server for the Pusher Channels protocol. Point unmodified pusher-js,
Laravel Echo and the official Pusher HTTP SDKs at it.
"""

_SERVE_EPILOG = """\
Without --config one app is served, taken from the environment variables a Laravel
.env already has: PUSHER_APP_ID, PUSHER_APP_KEY, PUSHER_APP_SECRET (defaults: app-id,
app-key, app-secret). A TOML config file holds [server] settings and any number of
[[apps]]; see the README for every key. Command-line options override the file.

WebSocket clients connect to ws://HOST:PORT/app/{key}; the HTTP API is under
http://HOST:PORT/apps/{app_id}/. SIGTERM or Ctrl-C closes sockets with 4200, so clients
reconnect (to another node, or to this one once it is back).

One node needs nothing else. To run several behind a load balancer, start each with
--adapter redis --redis-url redis://HOST:6379/0: events, presence, counts, users and
quotas are then shared, and a node that dies is removed from presence within
node_lease_seconds (default 10) plus a quarter of it.

--workers N runs N processes on the one port (SO_REUSEPORT) under a supervisor that
restarts a worker that dies and drains them all on SIGTERM: one node per core. Workers are
nodes of the Redis adapter, so N > 1 needs --adapter redis. /metrics, /up and the
statistics are per worker: a request is answered by whichever worker the kernel picked.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pusher-compat", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve", help="run the server", description="Run the server.", epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default 6001; 0 = any free)")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration file")
    serve.add_argument("--ssl-cert", metavar="PEM",
                       help="certificate (chain) to serve wss:// and https:// directly")
    serve.add_argument("--ssl-key", metavar="PEM", help="private key of --ssl-cert")
    serve.add_argument("--ssl-ca", metavar="PEM",
                       help="CA bundle to verify client certificates with (optional)")
    serve.add_argument("--adapter", choices=get_args(AdapterName),
                       help="local: one node, state in memory (default); redis: many nodes "
                            "behind a load balancer share channels, presence and events")
    serve.add_argument("--redis-url", metavar="URL",
                       help="Redis for --adapter redis (default redis://127.0.0.1:6379/0; "
                            "rediss:// for TLS, redis+sentinel://host:26379/mymaster, "
                            "redis+cluster://host:6379,host2:6379 for a Redis Cluster)")
    serve.add_argument("--log-format", choices=logs.FORMATS,
                       help="log lines as text or one JSON object each (default text)")
    serve.add_argument("--log-level", choices=logs.LEVELS,
                       help="logging level (default info)")
    serve.add_argument("--workers", type=_positive_int, metavar="N",
                       help="processes serving the port together, one per core at most "
                            "(default 1; past 1 needs --adapter redis)")
    # Set by the supervisor on the command line of each worker it starts.
    serve.add_argument("--worker", type=_positive_int, help=argparse.SUPPRESS)
    serve.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)
    add_stats_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and (args.worker is None) != (args.supervisor_fd is None):
        parser.error("--worker and --supervisor-fd are set together, by the supervisor")
    if args.command == "stats":
        return int(args.run(args))
    try:
        settings = load_settings(args.config, host=args.host, port=args.port,
                                 log_level=args.log_level, ssl_cert=args.ssl_cert,
                                 ssl_key=args.ssl_key, ssl_ca=args.ssl_ca,
                                 log_format=args.log_format, adapter=args.adapter,
                                 redis_url=args.redis_url, workers=args.workers)
    except ConfigError as error:
        print(f"pusher-compat: configuration error: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.server.log_level, settings.server.log_format)
    if args.worker is not None:
        from .workers import run_worker

        run_worker(settings, args.worker, args.supervisor_fd)
        return 0
    if settings.server.workers > 1:
        from .workers import supervise

        return supervise(settings, argv)
    from .server import run

    run(settings)
    return 0


# -- pusher-compat stats ---------------------------------------------------------------


class CommandError(Exception):
    """A ``pusher-compat stats`` failure, printed without a traceback."""


def _signed_get(args: argparse.Namespace, path: str, query: dict[str, str]) -> Any:
    """GET ``/apps/{id}{path}`` of the server at ``args.url``, signed as the SDKs sign."""
    full_path = f"/apps/{args.app_id}{path}"
    params = {"auth_key": args.key, "auth_timestamp": str(int(time.time())),
              "auth_version": "1.0", **query}
    params["auth_signature"] = signatures.sign_request("GET", full_path, params, args.secret)
    url = f"{args.url.rstrip('/')}{full_path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise CommandError(f"{full_path}: HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"cannot reach {args.url}: {reason}") from None


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1) -> str:
    """A plain text table; the last ``right`` columns are right-aligned (numbers)."""
    cells = [list(map(str, headers)), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    first_right = len(headers) - right

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i >= first_right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def render_stats(app_id: str, url: str, channels: dict[str, Any], statistics: dict[str, Any],
                 intervals: int) -> str:
    """The ``pusher-compat stats`` report from the two API answers."""
    current = statistics.get("current", {})
    out = [f"App {app_id} at {url}",
           f"Connections: {current.get('connections', '?')}   "
           f"Channels: {len(channels)}   Subscriptions: {current.get('subscriptions', '?')}",
           ""]
    channel_rows = sorted(
        ((name, kind_of(name).name, attributes.get("subscription_count", 0))
         for name, attributes in channels.items()),
        key=lambda row: (-row[2], row[0]),
    )
    if channel_rows:
        out.append(_table(("Channel", "Type", "Subscribers"), channel_rows))
    else:
        out.append("No occupied channels.")
    out.append("")
    rows = statistics.get("statistics", [])[-intervals:] if intervals else []
    if not statistics.get("recording", True):
        out.append("Statistics are not recorded by this server (stats_path is empty).")
    elif not rows:
        out.append("No statistics recorded in the last hour yet.")
    else:
        out.append(f"Last {len(rows)} interval(s):")
        out.append(_table(
            ("End", "Seconds", "Peak conns", "WS msgs in", "WS msgs out", "API msgs",
             "Webhooks ok", "Webhooks failed"),
            [(_local_time(r["time"]), f"{r['seconds']:g}", r["connections_peak"],
              r["ws_messages_in"], r["ws_messages_out"], r["api_messages"],
              r["webhooks_delivered"], r["webhooks_failed"]) for r in rows],
            right=7,
        ))
    return "\n".join(out)


def stats_command(args: argparse.Namespace) -> int:
    """``pusher-compat stats``: print a running server's connections, channels and recent
    statistics of one app, read through its signed HTTP API."""
    try:
        channels = _signed_get(args, "/channels", {"info": "subscription_count"})["channels"]
        statistics = _signed_get(args, "/statistics", {})
    except CommandError as error:
        print(f"pusher-compat stats: {error}", file=sys.stderr)
        return 1
    print(render_stats(args.app_id, args.url, channels, statistics, args.intervals))
    return 0


def prune_command(args: argparse.Namespace) -> int:
    """``pusher-compat stats prune``: delete rows older than the retention from the SQLite file
    named by ``--path`` or by the config's ``stats_path``."""
    path = args.path
    days = args.older_than_days
    if path is None or days is None:
        try:
            server = load_settings(args.config).server
        except ConfigError as error:
            print(f"pusher-compat: configuration error: {error}", file=sys.stderr)
            return 2
        if path is None:
            path = server.stats_path
        if days is None:
            days = server.stats_retention_days
    if not path:
        print("pusher-compat stats prune: statistics are off (stats_path is empty)",
              file=sys.stderr)
        return 1
    if not os.path.isfile(path):
        print(f"pusher-compat stats prune: no statistics file {path!r}", file=sys.stderr)
        return 1
    cutoff = time.time() - days * _DAY
    try:
        store = SqliteStore(path)
        try:
            deleted = store.prune(cutoff)
        finally:
            store.close()
    except sqlite3.Error as error:
        print(f"pusher-compat stats prune: {path}: {error}", file=sys.stderr)
        return 1
    print(f"pruned {deleted} row(s) older than {days:g} day(s) ({_local_time(cutoff)}) "
          f"from {path}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return value


def add_stats_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``stats`` (and ``stats prune``) to the ``add_subparsers()`` object of the CLI.

    Both set ``args.run`` to the function to call with ``args``.
    """
    env = os.environ
    stats = commands.add_parser(
        "stats", help="show a running server's connections, channels and statistics",
        description="Show one app's connections, channels (with subscriber counts and types) "
                    "and recent statistics, read from a running server's signed HTTP API.",
    )
    stats.add_argument("--url", default=DEFAULT_URL, help=f"server URL (default {DEFAULT_URL})")
    stats.add_argument("--app-id", default=env.get("PUSHER_APP_ID") or "app-id",
                       help="app id (default $PUSHER_APP_ID or app-id)")
    stats.add_argument("--key", default=env.get("PUSHER_APP_KEY") or "app-key",
                       help="app key (default $PUSHER_APP_KEY or app-key)")
    stats.add_argument("--secret", default=env.get("PUSHER_APP_SECRET") or "app-secret",
                       help="app secret (default $PUSHER_APP_SECRET or app-secret)")
    stats.add_argument("--intervals", type=int, default=10,
                       help="recorded intervals to show, newest last (default 10)")
    stats.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    stats.set_defaults(run=stats_command)
    actions = stats.add_subparsers(dest="stats_action", metavar="ACTION")
    prune = actions.add_parser(
        "prune", help="delete old rows from the statistics file",
        description="Delete statistics rows older than the retention from the SQLite file.",
    )
    prune.add_argument("--config", metavar="FILE",
                       help="TOML configuration file (its stats_path and stats_retention_days)")
    prune.add_argument("--path", metavar="FILE", help="statistics file (overrides the config)")
    prune.add_argument("--older-than-days", type=_non_negative, metavar="N",
                       help="delete rows older than N days (default: stats_retention_days)")
    prune.set_defaults(run=prune_command)
    return stats
