"""``pusher-compat``: the command line. Parses arguments, then hands over to the modules."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import get_args

from . import __version__, logs
from .config import AdapterName, ConfigError, load_settings
from .stats import add_stats_commands

__all__ = ["main"]

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
    add_stats_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "stats":
        return int(args.run(args))
    try:
        settings = load_settings(args.config, host=args.host, port=args.port,
                                 log_level=args.log_level, ssl_cert=args.ssl_cert,
                                 ssl_key=args.ssl_key, ssl_ca=args.ssl_ca,
                                 log_format=args.log_format, adapter=args.adapter,
                                 redis_url=args.redis_url)
    except ConfigError as error:
        print(f"pusher-compat: configuration error: {error}", file=sys.stderr)
        return 2
    logs.configure(settings.server.log_level, settings.server.log_format)
    from .server import run

    run(settings)
    return 0
