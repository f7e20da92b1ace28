"""TLS served directly: wss:// and https:// with a certificate made by the test."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, ServerProcess, run_node
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, as PEM files (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pusher-compat test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return cert_path, key_path


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
