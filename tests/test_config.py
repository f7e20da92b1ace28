"""Configuration: the environment default, the TOML file, and errors that name file and key."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from pusher_compat import logs
from pusher_compat.auth_config import AuthConfig
from pusher_compat.auth_rules import Rule
from pusher_compat.cli import _parser as cli_parser
from pusher_compat.config import (
    AppConfig,
    ConfigError,
    ServerConfig,
    WebhookEndpoint,
    load_settings,
)
from pusher_compat.config_fields import check_fields, choices


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_no_file_serves_one_app_with_soketi_defaults() -> None:
    settings = load_settings(env={})
    assert settings.apps == (AppConfig(id="app-id", key="app-key", secret="app-secret"),)
    assert settings.server == ServerConfig()


def test_no_file_takes_the_app_from_laravel_env_names() -> None:
    env = {"PUSHER_APP_ID": "42", "PUSHER_APP_KEY": "k", "PUSHER_APP_SECRET": "s"}
    assert load_settings(env=env).apps == (AppConfig(id="42", key="k", secret="s"),)


def test_command_line_overrides_win_and_none_is_ignored() -> None:
    settings = load_settings(env={}, host="127.0.0.1", port=None)
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 6001)


def test_file_holds_server_settings_and_many_apps(tmp_path: Path) -> None:
    path = write(tmp_path, """
        [server]
        port = 7001
        activity_timeout = 120

        [[apps]]
        id = "1"
        key = "k1"
        secret = "s1"
        client_events = false
        max_connections = 500

        [[apps]]
        id = "2"
        key = "k2"
        secret = "s2"
        enabled = false
    """.replace("\n        ", "\n"))
    settings = load_settings(path, env={})
    assert (settings.server.port, settings.server.activity_timeout) == (7001, 120)
    assert settings.apps == (
        AppConfig(id="1", key="k1", secret="s1", client_events=False, max_connections=500),
        AppConfig(id="2", key="k2", secret="s2", enabled=False),
    )


def test_file_without_apps_takes_the_app_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7001\n")
    settings = load_settings(path, env={"PUSHER_APP_KEY": "from-env"})
    assert settings.apps[0].key == "from-env"


def test_each_worker_needs_a_metrics_port_of_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 6001\nmetrics_port = 6000\nworkers = 3\n'
                           'adapter = "redis"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value) == (f"{path}: server.metrics_port must be a port other than "
                                 "server.port (or 0), got 6000..6002 (one per worker)")


def test_the_dashboard_is_refused_with_workers(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nworkers = 2\nadapter = "redis"\n'
                           'dashboard_password = "pw"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value) == (
        f"{path}: server.dashboard_password: the dashboard keeps its sessions in one process, "
        "so it is not served by workers: serve it from a node with workers = 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 'x'\n", "server.port must be int, got 'x'"),
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[server]\nport = -1\n", "server.port must not be negative, got -1"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level must be one of"),
        ("[server]\nactivity_timeout = 0\n", "server.activity_timeout must be at least 1"),
        ("[sever]\n", "unknown section 'sever'"),
        ("[[apps]]\nid = '1'\nkey = 'k'\n", "apps[0].secret is required"),
        ("[[apps]]\nid = '1'\nkey = 'k'\nsecret = 's'\nenabled = 'yes'\n",
         "apps[0].enabled must be bool, got 'yes'"),
        ("[[apps]]\nid='1'\nkey='k'\nsecret='s'\n[[apps]]\nid='1'\nkey='k2'\nsecret='s'\n",
         "apps[1].id '1' is used twice"),
        ("apps = []\n", "apps must be a non-empty array of tables"),
        ("[server\n", "invalid TOML"),
        ("[[apps]]\nid='1'\nkey='k'\nsecret='s'\nencryption_master_key_base64='abc'\n",
         "apps[0].encryption_master_key_base64 must be 32 bytes, base64-encoded"),
        ("[[apps]]\nid='1'\nkey='k'\nsecret='s'\n[[apps.webhooks]]\nurl='ftp://x'\n",
         "apps[0].webhooks[0].url is required (an http:// or https:// URL)"),
        ("[[apps]]\nid='1'\nkey='k'\nsecret='s'\n[[apps.webhooks]]\nurl='http://x'\n"
         "event_types=['nope']\n", "apps[0].webhooks[0].event_types must list names among"),
        ("[auth]\njwt_secret = 5\n", "auth.jwt_secret"),
        ("[server]\nwebhook_log_max_bytes = 0\n",
         "server.webhook_log_max_bytes must be at least 1 byte"),
    ],
    ids=["wrong-type", "unknown-key", "negative", "log-level", "zero-timeout", "unknown-section",
         "missing-secret", "bool-type", "duplicate-id", "empty-apps", "bad-toml",
         "master-key", "webhook-url", "webhook-events", "auth-type",
         "zero-byte-budget"],
)
def test_invalid_file_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_webhook_store_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"[server]\nwebhook_store = '{tmp_path}/absent/webhooks.db'\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value) == (f"{path}: server.webhook_store: no directory "
                                 f"'{tmp_path}/absent' to keep the file in")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", env={})


def test_serve_with_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "pusher_compat", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"pusher-compat: configuration error: {path}: server.port must be int, got 'x'\n"
    )


def test_help_explains_the_environment_variables() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pusher_compat", "serve", "--help"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0
    for name in ("PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET", "--config", "4200"):
        assert name in result.stdout


def test_server_logs_where_it_listens_and_which_apps(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory()
    log = "".join(server.log)
    assert f"listening on http://127.0.0.1:{server.port}" in log
    assert "serving app id=1001 key=app-key (enabled, client events on)" in log
    assert "serving app id=disabled-id key=disabled-key (disabled, client events on)" in log


def test_file_reads_webhook_endpoints_of_an_app(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[apps]]
id = "1"
key = "k"
secret = "s"
[[apps.webhooks]]
url = "https://example.com/hook"
event_types = ["member_added", "member_removed"]
channel_prefix = "presence-"
headers = { Authorization = "Bearer x" }
""")
    (hook,) = load_settings(path, env={}).apps[0].webhooks
    assert hook == WebhookEndpoint(
        url="https://example.com/hook", event_types=("member_added", "member_removed"),
        channel_prefix="presence-", headers=(("Authorization", "Bearer x"),),
    )
    assert hook.wants({"name": "member_added", "channel": "presence-room"})
    assert not hook.wants({"name": "member_added", "channel": "private-room"})
    assert not hook.wants({"name": "channel_occupied", "channel": "presence-room"})


def test_file_reads_the_auth_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[auth]\njwt_secret = 'change-me'\n")
    auth = load_settings(path, env={}).auth
    assert auth is not None
    assert auth.jwt_secret == "change-me"
    assert load_settings(env={}).auth is None


def test_webhook_endpoint_without_event_types_takes_only_webhook_events() -> None:
    hook = WebhookEndpoint(url="https://example.com/hook")
    assert hook.wants({"name": "member_added", "channel": "presence-room"})
    assert not hook.wants({"name": "connection_opened", "socket_id": "1.1"})
    assert not hook.wants({"name": "api_message", "channel": "news", "event": "e"})


def test_redis_outbox_bounds_default_to_8_mib_and_10_seconds_and_are_read_from_server(
        tmp_path: Path) -> None:
    assert (ServerConfig().redis_outbox_max_bytes,
            ServerConfig().redis_outbox_max_age_seconds) == (8 * 1024 * 1024, 10.0)
    path = write(tmp_path, "[server]\nredis_outbox_max_bytes = 0\n"
                           "redis_outbox_max_age_seconds = 2.5\n")
    server = load_settings(path, env={}).server
    assert (server.redis_outbox_max_bytes, server.redis_outbox_max_age_seconds) == (0, 2.5)
    with pytest.raises(ConfigError, match="redis_outbox_max_age_seconds must not be negative"):
        load_settings(write(tmp_path, "[server]\nredis_outbox_max_age_seconds = -1\n"), env={})


@pytest.mark.parametrize("port", [6001, 70000])
def test_metrics_port_is_another_valid_port(tmp_path: Path, port: int) -> None:
    path = write(tmp_path, f"[server]\nport = 6001\nmetrics_port = {port}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value) == (
        f"{path}: server.metrics_port must be a port other than server.port (or 0), got {port}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nlog_format = 'xml'\n",
         "server.log_format must be one of text, json, got 'xml'"),
        ("[server]\nadapter = 'memcached'\n",
         "server.adapter must be one of local, redis, got 'memcached'"),
        ("[server]\nhost = 1\n", "server.host must be a string, got 1"),
        ("[server]\ndrain_seconds = 'soon'\n", "server.drain_seconds must be float, got 'soon'"),
        ("[[apps]]\nid='1'\nkey='k'\nsecret='s'\nallowed_origins='*'\n",
         "apps[0].allowed_origins must be an array of strings, got '*'"),
        ("[server]\nstats_interval_seconds = 0\n",
         "server.stats_interval_seconds must be positive, got 0"),
        ("[server]\nnode_lease_seconds = 0.5\n",
         "server.node_lease_seconds must be at least 1 second, got 0.5"),
        ("[server]\nhttp_keepalive_timeout = -1\n",
         "server.http_keepalive_timeout must be positive, got -1"),
    ],
    ids=["literal-format", "literal-adapter", "string", "float", "string-array",
         "positive", "at-least", "positive-not-negative"],
)
def test_every_table_is_checked_against_its_typed_fields(tmp_path: Path, text: str,
                                                         message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path, env={})
    assert str(raised.value) == f"{path}: {message}"


def test_a_whole_number_for_a_float_setting_is_read_as_a_float(tmp_path: Path) -> None:
    server = load_settings(write(tmp_path, "[server]\ndrain_seconds = 2\n"), env={}).server
    assert (server.drain_seconds, type(server.drain_seconds)) == (2.0, float)


def test_command_line_values_are_checked_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env={}, log_level="loud")
    assert str(raised.value) == (
        "environment: server.log_level must be one of debug, info, warning, error, got 'loud'"
    )


def test_the_cli_and_the_log_setup_offer_the_choices_the_config_accepts() -> None:
    commands = next(action for action in cli_parser()._actions
                    if isinstance(action, argparse._SubParsersAction))
    options = {action.dest: action.choices for action in commands.choices["serve"]._actions}
    assert options["adapter"] == choices(typing.get_type_hints(ServerConfig)["adapter"])
    assert options["log_level"] == logs.LEVELS == ("debug", "info", "warning", "error")
    assert options["log_format"] == logs.FORMATS == ("text", "json")
    assert choices(typing.get_type_hints(ServerConfig)["log_level"]) == logs.LEVELS


def test_config_and_auth_config_import_without_each_other_s_parsers() -> None:
    """The bottom layer (config_fields) imports nothing of ours; the [auth] settings never
    import the server/apps loader nor the endpoint module."""
    code = (
        "import sys\n"
        "import pusher_compat.config_fields\n"
        "assert not [m for m in sys.modules if m.startswith('pusher_compat.')"
        " and m != 'pusher_compat.config_fields'], sorted(sys.modules)\n"
        "import pusher_compat.auth_config\n"
        "assert 'pusher_compat.config' not in sys.modules\n"
        "import pusher_compat.config\n"
        "assert 'pusher_compat.broadcasting_auth' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("cls", "tables"),
    [(ServerConfig, set()), (AppConfig, {"webhooks"}), (WebhookEndpoint, {"headers"}),
     (AuthConfig, {"rules"}), (Rule, {"claim_equals", "claim_contains"})],
    ids=["server", "apps", "webhooks", "auth", "auth-rules"],
)
def test_every_setting_has_a_type_the_one_check_knows(cls: type, tables: set[str]) -> None:
    """Each field's default passes the check, so a field of a type it cannot check fails here
    rather than at a user's start (tables of their own are parsed by their callers)."""
    defaults = {f.name: list(f.default) if isinstance(f.default, tuple) else f.default
                for f in dataclasses.fields(cls)
                if f.name not in tables and f.default is not dataclasses.MISSING}
    assert check_fields(cls, defaults, "x", "f.toml") == {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in defaults.items()
    }
