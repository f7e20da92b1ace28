#!/usr/bin/env python3
"""Trigger an event on pusher-compat with the official Python SDK (``pip install pusher``).

    PUSHER_APP_ID=1001 PUSHER_APP_KEY=app-key PUSHER_APP_SECRET=app-secret \\
    PUSHER_HOST=127.0.0.1 PUSHER_PORT=6001 PUSHER_SCHEME=http \\
        python3 trigger.py orders order-shipped '{"id": 17}'

Arguments: channel, event name, JSON data (defaults: ``orders``, ``order-shipped``,
``{"id": 17}``). The environment variables are the ones a Laravel ``.env`` has; the app id
must be numeric (the SDK refuses others). Prints the server's JSON answer (``{}``) and
exits 0; on an error it prints what the server answered and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

import pusher


def client_from_env(env: Mapping[str, str] = os.environ) -> pusher.Pusher:
    """A ``pusher.Pusher`` pointed at pusher-compat, configured from ``PUSHER_*``."""
    scheme = env.get("PUSHER_SCHEME", "http")
    return pusher.Pusher(
        app_id=env.get("PUSHER_APP_ID", "1001"),
        key=env.get("PUSHER_APP_KEY", "app-key"),
        secret=env.get("PUSHER_APP_SECRET", "app-secret"),
        host=env.get("PUSHER_HOST", "127.0.0.1"),
        port=int(env.get("PUSHER_PORT", "6001")),
        ssl=scheme == "https",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Trigger an event on pusher-compat.")
    parser.add_argument("channel", nargs="?", default="orders")
    parser.add_argument("event", nargs="?", default="order-shipped")
    parser.add_argument("data", nargs="?", default='{"id": 17}', help="JSON data")
    args = parser.parse_args(argv)
    sdk = client_from_env()
    try:
        response = sdk.trigger(args.channel, args.event, json.loads(args.data))
    except Exception as error:  # the SDK raises its own errors for 4xx/5xx answers
        print(f"trigger failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
