"""deploy/: every file parses, says what it must, and — where a tool exists here — runs.

* Every YAML file under deploy/ parses (``yaml.safe_load_all``).
* Kubernetes manifests: kinds, labels and selectors that meet (and the Redis pods' and
  pusher-compat's that never pick each other's), probes on /up and /ready, the container
  port, several replicas on the Redis adapter pointed at the Redis Service, an HPA on CPU
  from 2, a PodDisruptionBudget that lets one pod go and keeps one serving, a grace period
  that covers the drain, a kustomization listing every file (and, with ``kubectl``,
  ``kubectl kustomize`` building exactly those objects).
* Compose: the single node; the cluster of three nodes built from the Dockerfile, all on
  ``--adapter redis`` with a redis-url naming the redis service, health checks on /up,
  depends_on conditions, nginx the only service with a published port.
* nginx: the /app/ upgrade headers and timeouts of both configs, the cluster upstream listing
  the compose nodes; with the ``nginx`` binary (Debian's nginx-light) ``nginx -t`` on each
  (upstream host names mapped to loopback), and a live proxy test through each: a WebSocket
  subscriber and an SDK trigger both go through nginx to a real server; three nodes started
  with the compose cluster's command line on a real Redis, behind cluster.conf, deliver one
  API event to all.
* systemd and supervisor: the stop signal, and their command line actually started here
  (paths mapped to this checkout), stopped by SIGTERM with exit 0; ``systemd-analyze
  verify`` on the unit when it is installed.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pusher
import pytest
import yaml
from conftest import DEFAULT_CONFIG, ROOT, RedisServer, ServerProcess, free_port

from pusher_compat.client import Client, connect
from pusher_compat.config import load_settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
NGINX_CONF = DEPLOY / "nginx" / "pusher-compat.conf"
NGINX_CLUSTER_CONF = DEPLOY / "nginx" / "cluster.conf"
SYSTEMD_UNIT = DEPLOY / "systemd" / "pusher-compat.service"
SUPERVISOR_CONF = DEPLOY / "supervisor" / "pusher-compat.conf"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_CLUSTER = DEPLOY / "docker-compose.cluster.yml"
CLUSTER_NODES = ["pusher-compat-1", "pusher-compat-2", "pusher-compat-3"]
REDIS = "pusher-compat-redis"
APP_ENV = {"PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"}
INSTALLED_BINARY = "/opt/pusher-compat/venv/bin/pusher-compat"
INSTALLED_CONFIG = "/etc/pusher-compat/pusher-compat.toml"
_LISTEN_RE = re.compile(r"listening on http://[^:]+:(\d+)")

Objects = dict[str, dict[str, Any]]


def test_every_deploy_yaml_file_parses() -> None:
    paths = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    names = {path.relative_to(DEPLOY).as_posix() for path in paths}
    assert {"docker-compose.yml", "docker-compose.cluster.yml", "kubernetes/redis.yaml",
            "kubernetes/deployment.yaml", "kubernetes/hpa.yaml", "kubernetes/pdb.yaml",
            "kubernetes/kustomization.yaml"} <= names, names
    for path in paths:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents, f"{path}: empty"
        assert all(isinstance(document, dict) for document in documents), path


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, Objects]:
    """Every object of deploy/kubernetes/*.yaml (but the kustomization): name -> kind -> it."""
    found: dict[str, Objects] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), f"{path.name}: not a mapping"
            name, kind = document["metadata"]["name"], document["kind"]
            assert kind not in found.setdefault(name, {}), f"two {kind} objects named {name}"
            found[name][kind] = document
    return found


@pytest.fixture(scope="module")
def objects(manifests: dict[str, Objects]) -> Objects:
    """pusher-compat's own objects, by kind."""
    return manifests["pusher-compat"]


@pytest.fixture(scope="module")
def redis(manifests: dict[str, Objects]) -> Objects:
    """The objects of redis.yaml, by kind."""
    return manifests[REDIS]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pod_labels(objects: Objects) -> dict[str, str]:
    return objects["Deployment"]["spec"]["template"]["metadata"]["labels"]


def option(args: list[str], name: str) -> str:
    """The value after ``name`` in a command line (exactly once)."""
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


def test_kubernetes_kinds_and_kustomization(manifests: dict[str, Objects]) -> None:
    assert set(manifests) == {"pusher-compat", REDIS}
    assert set(manifests["pusher-compat"]) == {"ConfigMap", "Secret", "Deployment", "Service",
                                               "HorizontalPodAutoscaler",
                                               "PodDisruptionBudget"}
    assert set(manifests[REDIS]) == {"Deployment", "Service"}
    api = {kind: obj["apiVersion"] for kind, obj in manifests["pusher-compat"].items()}
    assert api["Deployment"] == "apps/v1"
    assert api["HorizontalPodAutoscaler"] == "autoscaling/v2"
    assert api["PodDisruptionBudget"] == "policy/v1"
    assert manifests[REDIS]["Deployment"]["apiVersion"] == "apps/v1"
    assert manifests[REDIS]["Service"]["apiVersion"] == "v1"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert "redis.yaml" in files
    assert sorted(kustomization["resources"]) == sorted(files)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl is not installed: the kustomization was checked by parsing")
def test_kustomize_builds_every_object(manifests: dict[str, Objects]) -> None:
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)}
    assert built == {(kind, name) for name, kinds in manifests.items() for kind in kinds}
    assert len(built) == 8


def container(objects: Objects) -> dict[str, Any]:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_deployment_runs_several_replicas_on_the_redis_adapter(objects: Objects,
                                                               redis: Objects) -> None:
    spec = objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert spec["replicas"] >= 2
    assert 2 <= hpa["minReplicas"] <= spec["replicas"] <= hpa["maxReplicas"]
    assert hpa["maxReplicas"] >= 10
    # A rolling update keeps every ready pod until its replacement is ready.
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    args = container(objects)["args"]
    assert option(args, "--adapter") == "redis"
    url = urllib.parse.urlsplit(option(args, "--redis-url"))
    (redis_port,) = redis["Service"]["spec"]["ports"]
    assert (url.scheme, url.hostname, url.port) == ("redis", REDIS, redis_port["port"])
    assert option(args, "--config") == INSTALLED_CONFIG
    # The HPA of the guides: the Deployment, on CPU at 50%; scaling down drains a pod (its
    # clients all reconnect), so one pod at a time.
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "pusher-compat"}
    assert [metric["resource"] for metric in hpa["metrics"]] == [
        {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}]
    assert all(metric["type"] == "Resource" for metric in hpa["metrics"])
    policies = hpa["behavior"]["scaleDown"]["policies"]
    assert policies and all((p["type"], p["value"]) == ("Pods", 1) for p in policies)
    assert container(objects)["resources"]["requests"]["cpu"], "CPU utilization needs a request"


def readme_deploy_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("### Docker / Kubernetes")
    return text[start:text.index("\n## ", start)]


def test_the_one_replica_limitation_is_gone() -> None:
    texts = {path: path.read_text() for path in DEPLOY.rglob("*") if path.is_file()}
    texts[ROOT / "README.md"] = readme_deploy_section()
    for path, text in texts.items():
        flat = " ".join(text.lower().replace("#", " ").replace(";", " ").split())
        for phrase in ("not built yet", "until the redis adapter", "one replica",
                       "pinned to", "redis adapter exists"):
            assert phrase not in flat, f"{path.relative_to(ROOT)} still says {phrase!r}"
    section = texts[ROOT / "README.md"]
    for mention in ("deploy/docker-compose.yml", "deploy/docker-compose.cluster.yml",
                    "deploy/nginx/cluster.conf", "redis.yaml", "--adapter redis"):
        assert mention in section, mention


def test_redis_for_the_simple_case(objects: Objects, redis: Objects) -> None:
    deployment = redis["Deployment"]["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"]["type"] == "Recreate", "two Redis would split the pods"
    labels = deployment["template"]["metadata"]["labels"]
    assert matches(deployment["selector"]["matchLabels"], labels)
    pod = deployment["template"]["spec"]
    (main,) = pod["containers"]
    assert main["image"] == "redis:7-alpine"
    args = main["args"]
    assert args[0] == "redis-server"
    assert (option(args, "--save"), option(args, "--appendonly")) == ("", "no")
    assert all("persistentVolumeClaim" not in volume for volume in pod.get("volumes", []))
    assert main["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (port,) = main["ports"]
    service = redis["Service"]["spec"]
    assert matches(service["selector"], labels)
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(6379, port["name"])]
    assert port["containerPort"] == 6379
    # Neither app's selectors pick the other's pods (pusher-compat's Service must never send
    # a client to Redis, nor its PDB count Redis).
    ours = pod_labels(objects)
    assert not matches(service["selector"], ours)
    assert not matches(deployment["selector"]["matchLabels"], ours)
    for selector in (objects["Service"]["spec"]["selector"],
                     objects["Deployment"]["spec"]["selector"]["matchLabels"],
                     objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert not matches(selector, labels), selector
    text = " ".join((K8S / "redis.yaml").read_text().split())
    assert "managed Redis" in text and "Sentinel" in text


def test_probes_port_and_labels_meet(objects: Objects) -> None:
    deployment = objects["Deployment"]["spec"]
    labels = pod_labels(objects)
    assert matches(deployment["selector"]["matchLabels"], labels)
    main = container(objects)
    assert [(port["containerPort"], port["name"]) for port in main["ports"]] == [
        (6001, "http"), (9601, "metrics")]
    assert main["livenessProbe"]["httpGet"] == {"path": "/up", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = objects["Service"]["spec"]
    assert matches(service["selector"], labels)
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(6001, "http")]
    pdb = objects["PodDisruptionBudget"]["spec"]
    assert matches(pdb["selector"]["matchLabels"], labels)
    for spread in deployment["template"]["spec"]["topologySpreadConstraints"]:
        assert matches(spread["labelSelector"]["matchLabels"], labels)
    # The budget lets a node drain evict a pod, and keeps one serving, at the HPA's floor.
    floor = objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert ("maxUnavailable" in pdb) != ("minAvailable" in pdb)
    evictable = pdb["maxUnavailable"] if "maxUnavailable" in pdb else floor - pdb["minAvailable"]
    assert isinstance(evictable, int)
    assert 1 <= evictable < floor, pdb


def test_metrics_are_served_on_their_own_port_outside_the_service(
    objects: Objects, tmp_path: Path
) -> None:
    toml = tmp_path / "pusher-compat.toml"
    toml.write_text(objects["ConfigMap"]["data"]["pusher-compat.toml"])
    server = load_settings(toml, env={}).server
    ports = {port["name"]: port["containerPort"] for port in container(objects)["ports"]}
    assert (server.metrics_host, server.metrics_port) == ("0.0.0.0", ports["metrics"])
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    service_ports = objects["Service"]["spec"]["ports"]
    assert "metrics" not in [p["targetPort"] for p in service_ports]
    assert ports["metrics"] not in [p["port"] for p in service_ports]


def test_pod_runs_as_the_image_user_and_drains(objects: Objects) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    settings = load_settings(DEPLOY / "docker" / "pusher-compat.toml", env={})
    pre_stop = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + settings.server.drain_seconds + settings.server.shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] > settings.server.drain_seconds
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_config_map_is_the_file_the_container_reads(objects: Objects, tmp_path: Path) -> None:
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
    assert settings.server.port == next(p["containerPort"] for p in main["ports"]
                                        if p["name"] == "http")
    assert settings.server.host == "0.0.0.0"
    assert [(a.id, a.key, a.secret) for a in settings.apps] == [
        (env["PUSHER_APP_ID"], env["PUSHER_APP_KEY"], env["PUSHER_APP_SECRET"])]
    assert main["envFrom"] == [{"secretRef": {"name": "pusher-compat"}}]


# -- docker compose --------------------------------------------------------------------------


def test_compose_runs_one_service_built_from_the_dockerfile() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    assert list(compose["services"]) == ["pusher-compat"], "one node: the cluster file scales"
    service = compose["services"]["pusher-compat"]
    context = (COMPOSE.parent / service["build"]["context"]).resolve()
    assert (context / service["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert service["ports"] == ["6001:6001"]
    assert set(service["environment"]) == APP_ENV
    assert "replicas" not in str(service.get("deploy", ""))
    assert "--adapter" not in str(service.get("command", "")), "one node needs no Redis"
    assert int(service["stop_grace_period"].rstrip("s")) >= 15
    assert "docker-compose.cluster.yml" in COMPOSE.read_text()


def compose_cluster() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_CLUSTER.read_text())


def healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    (url,) = re.findall(r"https?://[^\s'\"]+", " ".join(test[1:]))
    return url


def test_compose_cluster_nodes_share_the_redis_service() -> None:
    services = compose_cluster()["services"]
    assert set(services) == {"redis", "nginx", *CLUSTER_NODES}
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert redis["command"][0] == "redis-server"
    assert (option(redis["command"], "--save"), option(redis["command"], "--appendonly")) \
        == ("", "no")
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    environments = []
    for name in CLUSTER_NODES:
        node = services[name]
        context = (COMPOSE_CLUSTER.parent / node["build"]["context"]).resolve()
        assert (context / node["build"]["dockerfile"]).resolve() == ROOT / "Dockerfile", name
        command = node["command"]
        assert option(command, "--adapter") == "redis", name
        url = urllib.parse.urlsplit(option(command, "--redis-url"))
        assert (url.scheme, url.hostname, url.port or 6379) == ("redis", "redis", 6379), name
        # command replaces the image's CMD: the config file must still be named.
        assert option(command, "--config") == INSTALLED_CONFIG, name
        assert node["depends_on"] == {"redis": {"condition": "service_healthy"}}, name
        assert healthcheck_url(node) == "http://127.0.0.1:6001/up", name
        assert int(node["stop_grace_period"].rstrip("s")) >= 15, name
        environments.append(node["environment"])
    # Every node serves the same apps with the same credentials.
    assert set(environments[0]) == APP_ENV
    assert all(environment == environments[0] for environment in environments)


def test_compose_cluster_publishes_only_nginx() -> None:
    services = compose_cluster()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx"}
    nginx = services["nginx"]
    assert nginx["ports"] == ["6001:6001"]
    assert nginx["image"].startswith("nginx:")
    (mount,) = nginx["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE_CLUSTER.parent / source).resolve() == NGINX_CLUSTER_CONF
    assert re.fullmatch(r"/etc/nginx/conf\.d/[\w.-]+\.conf", target) and mode == "ro"
    assert nginx["depends_on"] == {name: {"condition": "service_healthy"}
                                   for name in CLUSTER_NODES}
    listen = re.findall(r"^\s*listen\s+(\d+);", NGINX_CLUSTER_CONF.read_text(), re.MULTILINE)
    assert listen == [nginx["ports"][0].split(":")[1]]
    assert healthcheck_url(nginx) == f"http://127.0.0.1:{listen[0]}/up"


# -- nginx -----------------------------------------------------------------------------------


def nginx_location(text: str, prefix: str) -> str:
    """The body of ``location <prefix> { ... }`` (no nested blocks in ours)."""
    match = re.search(rf"location\s+{re.escape(prefix)}\s*\{{([^}}]*)\}}", text)
    assert match, f"no location {prefix}"
    return match.group(1)


def directives(block: str) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [" ".join(line.rstrip(";").split()) for line in lines if line]


def upstream_servers(text: str) -> tuple[str, list[str]]:
    """The upstream's name and the addresses of its ``server`` lines."""
    (match,) = re.finditer(r"upstream\s+(\w+)\s*\{([^}]*)\}", text)
    servers = [d.split()[1] for d in directives(match.group(2)) if d.startswith("server ")]
    return match.group(1), servers


@pytest.mark.parametrize("path", [NGINX_CONF, NGINX_CLUSTER_CONF], ids=lambda p: p.name)
def test_nginx_config_upgrades_app_and_proxies_the_api(path: Path) -> None:
    text = path.read_text()
    upstream, _ = upstream_servers(text)
    app = directives(nginx_location(text, "/app/"))
    assert "proxy_http_version 1.1" in app
    assert "proxy_set_header Upgrade $http_upgrade" in app
    assert "proxy_set_header Connection $connection_upgrade" in app
    assert re.search(r"map \$http_upgrade \$connection_upgrade\s*\{\s*default upgrade;", text)
    assert "proxy_read_timeout 3600s" in app
    assert "proxy_send_timeout 3600s" in app
    assert f"proxy_pass http://{upstream}" in app
    for prefix in ("/apps/", "/broadcasting/"):
        block = directives(nginx_location(text, prefix))
        assert f"proxy_pass http://{upstream}" in block, prefix
        assert "proxy_http_version 1.1" in block, prefix


def test_single_node_nginx_upstream() -> None:
    assert upstream_servers(NGINX_CONF.read_text())[1] == ["127.0.0.1:6001"]


def test_cluster_nginx_upstream_lists_the_compose_nodes() -> None:
    text = NGINX_CLUSTER_CONF.read_text()
    _, servers = upstream_servers(text)
    services = compose_cluster()["services"]
    on_redis = [name for name, service in services.items()
                if "--adapter" in service.get("command", [])]
    assert on_redis == CLUSTER_NODES
    assert servers == [f"{name}:6001" for name in CLUSTER_NODES]
    body = re.search(r"upstream\s+\w+\s*\{([^}]*)\}", text).group(1)
    assert "least_conn" in directives(body), "long-lived sockets: fewest connections first"


NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                  else None)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light): only the "
    "textual checks of deploy/nginx ran")


def nginx_wrapper(tmp_path: Path, listen: int, upstreams: list[int],
                  source: Path = NGINX_CONF) -> Path:
    """A complete nginx.conf around ``source``, on loopback ports (its upstream servers, host
    names included, become ``127.0.0.1:<upstreams[i]>``), writing only under tmp_path."""
    ours = source.read_text()
    _, servers = upstream_servers(ours)
    assert len(servers) == len(upstreams), servers
    for address, port in zip(servers, upstreams, strict=True):
        ours, count = re.subn(rf"(\bserver\s+){re.escape(address)}(?=[\s;])",
                              rf"\g<1>127.0.0.1:{port}", ours, count=1)
        assert count == 1, address
    ours, count = re.subn(r"listen \d+;", f"listen 127.0.0.1:{listen};", ours)
    assert count == 1
    (tmp_path / source.name).write_text(ours)
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
    include {tmp_path}/{source.name};
}}
""")
    return conf


def nginx_test(tmp_path: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-e",
                           str(tmp_path / "error.log"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


@needs_nginx
@pytest.mark.parametrize("source", [NGINX_CONF, NGINX_CLUSTER_CONF], ids=lambda p: p.name)
def test_nginx_accepts_the_config(source: Path, tmp_path: Path) -> None:
    upstreams = [free_port() for _ in upstream_servers(source.read_text())[1]]
    conf = nginx_wrapper(tmp_path, free_port(), upstreams, source)
    result = nginx_test(tmp_path, conf)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / source.name
    broken.write_text(broken.read_text().replace("proxy_read_timeout 3600s;",
                                                 "proxy_read_timeout;"))
    result = nginx_test(tmp_path, conf)
    assert result.returncode != 0, "nginx -t accepts anything: the check above proves nothing"


@contextlib.contextmanager
def running_nginx(tmp_path: Path, source: Path, upstreams: list[int]) -> Iterator[int]:
    """nginx with ``source`` in front of the given loopback ports; yields its port."""
    if NGINX is None:
        pytest.fail("nginx is required: apt-get install -y nginx-light (.ci/run does)")
    port = free_port()
    conf = nginx_wrapper(tmp_path, port, upstreams, source)
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


@pytest.fixture(params=[NGINX_CONF, NGINX_CLUSTER_CONF], ids=lambda p: p.name)
def nginx_proxy(request: pytest.FixtureRequest, server: ServerProcess,
                tmp_path: Path) -> Iterator[int]:
    """nginx with one of our configs in front of ``server`` (every upstream server of the
    cluster config mapped to it); yields the port it listens on."""
    source: Path = request.param
    upstreams = [server.port] * len(upstream_servers(source.read_text())[1])
    with running_nginx(tmp_path, source, upstreams) as port:
        yield port


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


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
    assert await asyncio.to_thread(get_json, f"{proxy}/up") == (200, {"status": "ok"})


# -- the compose cluster on a real Redis ----------------------------------------------------


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def cluster_node_arguments(name: str, redis_url: str) -> list[str]:
    """The compose node's command, its config file and Redis host mapped to this machine
    (the test servers bring their own --config)."""
    command = list(compose_cluster()["services"][name]["command"])
    command[command.index("--redis-url") + 1] = redis_url
    at = command.index("--config")
    del command[at:at + 2]
    return command


async def wait_ready(node: ServerProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (status := (await asyncio.to_thread(get_json, f"{node.url}/ready"))[0]) != 200:
        assert time.monotonic() < deadline, f"/ready {status}:\n" + "".join(node.log[-30:])
        await asyncio.sleep(0.2)


async def receive_all(clients: list[Client], channel: str, publish: Callable[[int], None],
                      attempts: int = 20) -> dict[int, Any]:
    """Publish (``publish(n)``) until every client got one event on ``channel``."""
    received: dict[int, Any] = {}
    for attempt in range(attempts):
        await asyncio.to_thread(publish, attempt)
        for index, client in enumerate(clients):
            if index not in received:
                with contextlib.suppress(TimeoutError):
                    received[index] = await client.next_event(channel=channel, timeout=0.5)
        if len(received) == len(clients):
            break
    return received


async def test_compose_cluster_delivers_across_nodes(
        server_factory: Callable[..., ServerProcess], redis_url: str, tmp_path: Path) -> None:
    nodes = [server_factory(DEFAULT_CONFIG, *cluster_node_arguments(name, redis_url))
             for name in CLUSTER_NODES]
    for node in nodes:
        await wait_ready(node)
    key, secret = nodes[0].key, nodes[0].secret
    with running_nginx(tmp_path, NGINX_CLUSTER_CONF, [node.port for node in nodes]) as port:
        proxy = f"http://127.0.0.1:{port}"
        sdk = pusher.Pusher(app_id=nodes[0].app_id, key=key, secret=secret,
                            host="127.0.0.1", port=port, ssl=False)
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(url, key))
                       for url in [*(node.url for node in nodes), proxy]]
            for client in clients:
                await client.subscribe("orders")
            received = await receive_all(
                clients, "orders",
                lambda n: sdk.trigger("orders", "shipped", {"n": n}))
            names = [*CLUSTER_NODES, "nginx"]
            assert sorted(received) == list(range(len(clients))), (
                "the event reached the clients of " + ", ".join(names[i] for i in received)
                + " only")
            assert {event.event for event in received.values()} == {"shipped"}
            info = await asyncio.to_thread(sdk.channel_info, "orders", ["subscription_count"])
            assert info["occupied"] is True


# -- systemd and supervisor ------------------------------------------------------------------


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
