"""TLS served directly: wss:// and https:// with a certificate made by the test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import DEFAULT_CONFIG, ServerProcess, run_node


def test_pusher_js_with_force_tls_connects_over_wss_and_receives_events(
    node: str, server_factory: Callable[..., ServerProcess], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server = server_factory(DEFAULT_CONFIG, "--ssl-cert", str(cert), "--ssl-key", str(key))
    assert f"listening on https://127.0.0.1:{server.port}" in "".join(server.log)

    result = run_node(node, server, "tls_channel.mjs", env={"NODE_EXTRA_CA_CERTS": str(cert)})

    assert result == {
        "state": "connected",
        "use_tls": True,  # and the server speaks nothing but TLS on this port
        "trigger_status": 200,
        "received": [{"data": {"text": "hi"}}],
    }


def test_ssl_cert_without_key_is_a_config_error(certificate: tuple[Path, Path]) -> None:
    cert, _ = certificate
    result = subprocess.run(
        [sys.executable, "-m", "pusher_compat", "serve", "--ssl-cert", str(cert)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "server.ssl_cert and server.ssl_key go together" in result.stderr
