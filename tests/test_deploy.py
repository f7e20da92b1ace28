"""deploy/: every file parses, says what it must, and — where a tool exists here — runs.

* Kubernetes manifests and the compose file: ``yaml.safe_load``, kinds, labels and selectors
  that meet, probes on /up and /ready, the container port, one replica (and an HPA pinned to
  one) until the Redis adapter exists.
* nginx: the /app/ upgrade headers and timeouts; with the ``nginx`` binary (Debian's
  nginx-light) ``nginx -t`` on it, and a live proxy test: a WebSocket subscriber and an SDK
  trigger both go through nginx to a real server.
* systemd and supervisor: the stop signal, and their command line actually started here
  (paths mapped to this checkout), stopped by SIGTERM with exit 0; ``systemd-analyze
  verify`` on the unit when it is installed.
"""

from __future__ import annotations

import asyncio
import configparser
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
import yaml
from conftest import ROOT, ServerProcess

from pusher_compat.client import connect
from pusher_compat.config import load_settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
NGINX_CONF = DEPLOY / "nginx" / "pusher-compat.conf"
SYSTEMD_UNIT = DEPLOY / "systemd" / "pusher-compat.service"
SUPERVISOR_CONF = DEPLOY / "supervisor" / "pusher-compat.conf"
COMPOSE = DEPLOY / "docker-compose.yml"
INSTALLED_BINARY = "/opt/pusher-compat/venv/bin/pusher-compat"
INSTALLED_CONFIG = "/etc/pusher-compat/pusher-compat.toml"
_LISTEN_RE = re.compile(r"listening on http://[^:]+:(\d+)")


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """Every object of deploy/kubernetes/*.yaml (but the kustomization), by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), f"{path.name}: not a mapping"
            assert document["kind"] not in found, f"two {document['kind']} objects"
            assert document["metadata"]["name"] == "pusher-compat", path.name
            found[document["kind"]] = document
    return found


def test_kubernetes_kinds_and_kustomization(objects: dict[str, dict[str, Any]]) -> None:
    assert set(objects) == {"ConfigMap", "Secret", "Deployment", "Service",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    api = {kind: obj["apiVersion"] for kind, obj in objects.items()}
    assert api["Deployment"] == "apps/v1"
    assert api["HorizontalPodAutoscaler"] == "autoscaling/v2"
    assert api["PodDisruptionBudget"] == "policy/v1"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_deployment_is_one_replica_with_a_reason(objects: dict[str, dict[str, Any]]) -> None:
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate", "a rolling update runs two pods at once"
    text = (K8S / "deployment.yaml").read_text()
    before = text[:text.index("replicas: 1")].splitlines()[-6:]
    assert any("Redis" in line and line.lstrip().startswith("#") for line in before), before
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 1)
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "pusher-compat"}
    assert "Redis" in (K8S / "hpa.yaml").read_text()


def test_probes_port_and_labels_meet(objects: dict[str, dict[str, Any]]) -> None:
    deployment = objects["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    main = container(objects)
    (port,) = main["ports"]
    assert (port["containerPort"], port["name"]) == (6001, "http")
    assert main["livenessProbe"]["httpGet"] == {"path": "/up", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = objects["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(6001, "http")]
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() \
        <= labels.items()
    # A budget of 0 unavailable pods with one replica would block every node drain.
    assert objects["PodDisruptionBudget"]["spec"].get("maxUnavailable") == 1


def test_pod_runs_as_the_image_user_and_drains(objects: dict[str, dict[str, Any]]) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    settings = load_settings(DEPLOY / "docker" / "pusher-compat.toml", env={})
    needed = settings.server.drain_seconds + settings.server.shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_config_map_is_the_file_the_container_reads(
        objects: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    main = container(objects)
    config_path = main["args"][main["args"].index("--config") + 1]
    (mount,) = main["volumeMounts"]
    volume = next(v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    directory, _, filename = config_path.rpartition("/")
    assert directory == mount["mountPath"]
    toml = tmp_path / filename
    toml.write_text(objects["ConfigMap"]["data"][filename])
    env = {**objects["Secret"]["stringData"]}
    settings = load_settings(toml, env=env)
    assert settings.server.port == main["ports"][0]["containerPort"]
    assert settings.server.host == "0.0.0.0"
    assert [(a.id, a.key, a.secret) for a in settings.apps] == [
        (env["PUSHER_APP_ID"], env["PUSHER_APP_KEY"], env["PUSHER_APP_SECRET"])]
    assert main["envFrom"] == [{"secretRef": {"name": "pusher-compat"}}]


# -- docker compose --------------------------------------------------------------------------


def test_compose_runs_one_service_built_from_the_dockerfile() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert list(compose["services"]) == ["pusher-compat"], "one service until the Redis adapter"
    service = compose["services"]["pusher-compat"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert (context / service["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert service["ports"] == ["6001:6001"]
    assert set(service["environment"]) == {"PUSHER_APP_ID", "PUSHER_APP_KEY",
                                           "PUSHER_APP_SECRET"}
    assert "replicas" not in str(service.get("deploy", ""))
    assert int(service["stop_grace_period"].rstrip("s")) >= 15
    assert "Redis" in COMPOSE.read_text()


# -- nginx -----------------------------------------------------------------------------------


def nginx_location(text: str, prefix: str) -> str:
    """The body of ``location <prefix> { ... }`` (no nested blocks in ours)."""
    match = re.search(rf"location\s+{re.escape(prefix)}\s*\{{([^}}]*)\}}", text)
    assert match, f"no location {prefix}"
    return match.group(1)


def directives(block: str) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [" ".join(line.rstrip(";").split()) for line in lines if line]


def test_nginx_config_upgrades_app_and_proxies_the_api() -> None:
    text = NGINX_CONF.read_text()
    app = directives(nginx_location(text, "/app/"))
    assert "proxy_http_version 1.1" in app
    assert "proxy_set_header Upgrade $http_upgrade" in app
    assert "proxy_set_header Connection $connection_upgrade" in app
    assert re.search(r"map \$http_upgrade \$connection_upgrade\s*\{\s*default upgrade;", text)
    assert "proxy_read_timeout 3600s" in app
    assert "proxy_pass http://pusher_compat" in app
    api = directives(nginx_location(text, "/apps/"))
    assert "proxy_pass http://pusher_compat" in api
    assert "proxy_http_version 1.1" in api
    assert re.search(r"upstream pusher_compat\s*\{\s*server 127\.0\.0\.1:6001;", text)


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                  else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light): only the "
    "textual checks of deploy/nginx ran")


def nginx_wrapper(tmp_path: Path, listen: int, upstream: int) -> Path:
    """A complete nginx.conf around ours, on loopback ports, writing only under tmp_path."""
    ours = NGINX_CONF.read_text()
    ours = ours.replace("server 127.0.0.1:6001;", f"server 127.0.0.1:{upstream};")
    ours = re.sub(r"listen 80;", f"listen 127.0.0.1:{listen};", ours)
    (tmp_path / "pusher-compat.conf").write_text(ours)
    temp = tmp_path / "temp"
    temp.mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/pusher-compat.conf;
}}
""")
    return conf


@needs_nginx
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = nginx_wrapper(tmp_path, free_port(), 6001)
    result = subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "pusher-compat.conf"
    broken.write_text(broken.read_text().replace("proxy_read_timeout 3600s;",
                                                 "proxy_read_timeout;"))
    result = subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-e",
                             str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0, "nginx -t accepts anything: the check above proves nothing"


@pytest.fixture
def nginx_proxy(server: ServerProcess, tmp_path: Path) -> Iterator[int]:
    """nginx with our config in front of ``server``; yields the port it listens on."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    conf = nginx_wrapper(tmp_path, port, server.port)
    process = subprocess.Popen([NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                                "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, tmp_path / "error.log")
        yield port
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_websocket_and_api_through_nginx(server: ServerProcess, nginx_proxy: int) -> None:
    proxy = f"http://127.0.0.1:{nginx_proxy}"
    sdk = pusher.Pusher(app_id=server.app_id, key=server.key, secret=server.secret,
                        host="127.0.0.1", port=nginx_proxy, ssl=False)
    async with connect(proxy, server.key) as client:
        channel = "private-orders.1"
        await client.subscribe(channel, auth=client.sign_private(channel, server.secret))
        await asyncio.to_thread(sdk.trigger, channel, "shipped", {"id": 1})
        event = await client.next_event(channel=channel, timeout=5)
        assert (event.event, event.data) == ("shipped", {"id": 1})
        info = await asyncio.to_thread(sdk.channel_info, channel, ["subscription_count"])
        assert info["occupied"] is True


# -- systemd and supervisor ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, log.read_text() if log.exists() else "exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no port"
        time.sleep(0.1)


def run_command_line(command: str, env: dict[str, str], tmp_path: Path) -> str:
    """Start a deploy file's command line here (installed paths mapped to this checkout,
    loopback and a free port added), wait until it listens, SIGTERM it: must exit 0."""
    argv = shlex.split(command)
    assert argv[:2] == [INSTALLED_BINARY, "serve"], argv
    config = tmp_path / "pusher-compat.toml"
    shutil.copy(DEPLOY / "docker" / "pusher-compat.toml", config)
    script = Path(sys.executable).with_name("pusher-compat")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "pusher_compat"]
    argv = [*launcher, *[str(config) if a == INSTALLED_CONFIG else a for a in argv[1:]],
            "--host", "127.0.0.1", "--port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={"PATH": "/usr/bin:/bin", **env}, cwd=tmp_path)
    assert process.stdout is not None
    log = []
    try:
        for line in process.stdout:
            log.append(line)
            if match := _LISTEN_RE.search(line):
                break
        else:
            raise AssertionError("never listened:\n" + "".join(log))
        # Serving a request also means the SIGTERM handler is in place (it is installed
        # just after the "listening" line).
        with urllib.request.urlopen(f"http://127.0.0.1:{match.group(1)}/up", timeout=5) as up:
            assert up.status == 200
        process.send_signal(signal.SIGTERM)
        log.extend(process.stdout)
        assert process.wait(30) == 0, "".join(log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return "".join(log)


def test_systemd_unit(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(SYSTEMD_UNIT.read_text())
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 15
    assert "pusher-compat serve" in service["ExecStart"]
    assert service["User"] not in ("root", "0")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    documented = dict(re.findall(r"^#\s+(PUSHER_APP_\w+)=(\S+)", SYSTEMD_UNIT.read_text(),
                                 re.MULTILINE))
    assert set(documented) == {"PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"}
    log = run_command_line(service["ExecStart"], documented, tmp_path)
    assert f"key={documented['PUSHER_APP_KEY']}" in log


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed: unit checked by parsing only")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("pusher-compat")
    text = SYSTEMD_UNIT.read_text().replace(INSTALLED_BINARY, str(script))
    # The pusher user does not exist on this machine; everything else is checked as written.
    text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.MULTILINE)
    unit = tmp_path / "pusher-compat.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pusher-compat.service" not in result.stderr, result.stderr
    unit.write_text(text.replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert "SIGNOPE" in result.stderr, "systemd-analyze does not report bad settings here"


def supervisor_program() -> configparser.SectionProxy:
    conf = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(" ;",))
    conf.read_string(SUPERVISOR_CONF.read_text())
    return conf["program:pusher-compat"]


def supervisor_environment(value: str) -> dict[str, str]:
    return {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', value)}


def test_supervisor_program(tmp_path: Path) -> None:
    program = supervisor_program()
    assert program["stopsignal"] == "TERM"
    assert int(program["stopwaitsecs"]) >= 15
    assert program["numprocs"] == "1"
    assert program["user"] not in ("root", "0")
    assert program.getboolean("autorestart")
    env = supervisor_environment(program["environment"])
    assert set(env) == {"PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"}
    log = run_command_line(program["command"], env, tmp_path)
    assert f"key={env['PUSHER_APP_KEY']}" in log


def test_command_line_runner_notices_a_failing_command(tmp_path: Path) -> None:
    # The runner must fail when the program does not come up (e.g. a config key it rejects).
    with pytest.raises(AssertionError, match="never listened"):
        run_command_line(f"{INSTALLED_BINARY} serve --config {INSTALLED_CONFIG} "
                         "--log-level loud", {}, tmp_path)
