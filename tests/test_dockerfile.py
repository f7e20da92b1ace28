"""The Dockerfile and .dockerignore, checked without a Docker engine (none runs here or in CI).

The Dockerfile is parsed into its instructions and the essentials are asserted: a multi-stage
build on a slim Python base, a non-root user, a HEALTHCHECK on /up, ``pusher-compat serve`` as
the exec-form entrypoint, SIGTERM as stop signal, port 6001, and ``pip install .`` as the
only install step. What can run without Docker runs: the image's command line (entrypoint +
CMD + the default config file it ships, with the environment variables it documents) is
started here, its HEALTHCHECK command is run against it, and SIGTERM must stop it with exit
0. The build context that .dockerignore leaves is assembled and, when PyPI is reachable for
hatchling, built into a wheel exactly as the build stage's ``pip install .`` would.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, free_port

from pusher_compat.config import load_settings

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, ``\\`` continuations joined, numbered by
    stage (each FROM starts the next)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == last]


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD."""
    args = instruction.args
    if instruction.keyword == "HEALTHCHECK":
        args = args[args.index("CMD ") + 4:]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_parser_joins_continuations_and_counts_stages() -> None:
    parsed = parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # inner\n  y\nFROM c\nUSER 1\n")
    assert parsed == [Instruction("FROM", "a AS b", 0), Instruction("RUN", "x y", 0),
                      Instruction("FROM", "c", 1), Instruction("USER", "1", 1)]


def test_multi_stage_build_on_slim_python(instructions: list[Instruction]) -> None:
    froms = only(instructions, "FROM")
    assert len(froms) >= 2, "expected a multi-stage build"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in re.search(r">=\s*(\d+)\.(\d+)", requires).groups())
    stage_names = []
    for instruction in froms:
        match = re.fullmatch(r"python:3\.(1\d)-slim(?:\s+AS\s+(\S+))?", instruction.args,
                             re.IGNORECASE)
        assert match, f"not a slim Python 3.1x base: FROM {instruction.args}"
        assert (3, int(match.group(1))) >= minimum, f"{instruction.args} < {requires}"
        stage_names.append(match.group(2))
    # The final stage copies the installed virtualenv from an earlier, named stage.
    copies_from = [re.search(r"--from=(\S+)", i.args) for i in only(final_stage(instructions),
                                                                   "COPY")]
    assert any(m and m.group(1) in stage_names[:-1] for m in copies_from)


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    stage = final_stage(instructions)
    users = only(stage, "USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    # Nothing runs as root after it, and the user is created in the image.
    assert stage.index(users[-1]) > max(stage.index(i) for i in only(stage, "RUN"))
    created = " ".join(i.args for i in only(stage, "RUN"))
    assert re.search(rf"useradd\b.*--uid {user}\b", created) or re.search(
        rf"useradd\b.*\b{user}$", created), f"USER {user} is not created by useradd"


def test_only_install_step_is_pip_install_of_the_project(
        instructions: list[Instruction]) -> None:
    runs = only(instructions, "RUN")
    installs = [i for i in runs if re.search(r"\bpip\b", i.args)]
    assert len(installs) == 1, [i.args for i in installs]
    assert re.search(r"pip install \.(\s|$)", installs[0].args), installs[0].args
    assert installs[0].stage < instructions[-1].stage, "pip install belongs in the build stage"
    forbidden = re.compile(r"\b(apt-get|apt|apk|curl|wget|npm|node|gcc|make|git|poetry)\b")
    for run in runs:
        assert not forbidden.search(run.args), f"RUN builds or fetches something: {run.args}"


def test_copied_sources_exist_and_are_in_the_build_context(
        instructions: list[Instruction]) -> None:
    for copy in only(instructions, "COPY"):
        if "--from=" in copy.args:
            continue
        *sources, _dest = copy.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source.rstrip("/")), f"COPY {source}: .dockerignore drops it"


def test_entrypoint_is_pusher_compat_serve_in_exec_form(instructions: list[Instruction]) -> None:
    stage = final_stage(instructions)
    (entrypoint,) = only(stage, "ENTRYPOINT")
    assert exec_form(entrypoint) == ["pusher-compat", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["pusher-compat"] == "pusher_compat.cli:main"
    (cmd,) = only(stage, "CMD")
    args = exec_form(cmd)
    # CMD names the config file the final stage copies in.
    config = args[args.index("--config") + 1]
    copied = [i.args.split()[-1] for i in only(stage, "COPY") if "--from=" not in i.args]
    assert config in copied


def test_stop_signal_port_and_documented_environment(instructions: list[Instruction]) -> None:
    stops = only(instructions, "STOPSIGNAL")
    assert all(s.args in ("SIGTERM", "TERM", "15") for s in stops)
    assert [e.args for e in only(final_stage(instructions), "EXPOSE")] == ["6001"]
    notes = comments(DOCKERFILE.read_text())
    for name in ("PUSHER_APP_ID", "PUSHER_APP_KEY", "PUSHER_APP_SECRET"):
        assert name in notes, f"{name} is not documented in the Dockerfile"
    # ...and they are the names the server reads when the config file has no [[apps]].
    env = {"PUSHER_APP_ID": "77", "PUSHER_APP_KEY": "k", "PUSHER_APP_SECRET": "s"}
    settings = load_settings(ROOT / "deploy/docker/pusher-compat.toml", env=env)
    assert [(a.id, a.key, a.secret) for a in settings.apps] == [("77", "k", "s")]
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 6001)


def image_command(instructions: list[Instruction], port: int) -> list[str]:
    """The container's command, runnable here: ENTRYPOINT + CMD, the in-image config path
    mapped back to its source in the repository, on 127.0.0.1:``port``."""
    stage = final_stage(instructions)
    sources = {i.args.split()[-1]: i.args.split()[0] for i in only(stage, "COPY")
               if "--from=" not in i.args}
    args = [str(ROOT / sources.get(a, "")) if a in sources else a
            for a in exec_form(only(stage, "CMD")[0])]
    program = exec_form(only(stage, "ENTRYPOINT")[0])
    script = Path(sys.executable).with_name(program[0])
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "pusher_compat"]
    return [*launcher, *program[1:], *args, "--host", "127.0.0.1", "--port", str(port)]


def test_image_command_serves_health_and_stops_on_sigterm(
        instructions: list[Instruction], tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PUSHER_APP_ID": "1001", "PUSHER_APP_KEY": "docker-key",
           "PUSHER_APP_SECRET": "docker-secret"}
    (healthcheck,) = only(final_stage(instructions), "HEALTHCHECK")
    probe = exec_form(healthcheck)
    assert "/up" in " ".join(probe) and ":6001/" in " ".join(probe)
    probe = [sys.executable if p == "python" else p.replace(":6001/", f":{port}/")
             for p in probe]

    def healthy() -> bool:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

    assert not healthy(), "the HEALTHCHECK passes with no server: it checks nothing"
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(image_command(instructions, port), stdout=out,
                                   stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not healthy():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # The app came from the documented environment variables.
        assert "key=docker-key" in log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path: str, text: str | None = None) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides;
    ``!`` patterns re-include."""
    text = DOCKERIGNORE.read_text() if text is None else text
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _pattern_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


def test_ignore_matcher_follows_docker_rules() -> None:
    rules = "*\n!src/\n**/__pycache__\n"
    assert ignored("node_modules/x.js", rules)
    assert not ignored("src/a.py", rules)
    assert ignored("src/__pycache__/a.pyc", rules)
    assert not ignored("anything", "")


@pytest.mark.parametrize("path", [
    "node_modules/pusher-js/package.json", ".git/HEAD", "tests/test_server.py",
    "artifacts/browser-presence.png", ".hypothesis/examples/x", ".pytest_cache/v/x",
    "bench/run.py", "pusher_compat/__pycache__/cli.cpython-311.pyc", ".venv/bin/python",
    "clients/chat.html", "package-lock.json", "Dockerfile", "dist/x.whl",
])
def test_dockerignore_leaves_out(path: str) -> None:
    assert ignored(path), f"{path} would be sent to the Docker build context"


def build_context(tmp_path: Path) -> Path:
    """What `docker build .` sends: the repository's files .dockerignore keeps."""
    context = tmp_path / "context"
    for file in ROOT.rglob("*"):
        relative = file.relative_to(ROOT).as_posix()
        if file.is_file() and not relative.startswith((".git/", "node_modules/")) \
                and not ignored(relative):
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, context / relative)
    return context


def test_build_stage_pip_install_works_from_the_build_context(
        instructions: list[Instruction], tmp_path: Path) -> None:
    context = build_context(tmp_path)
    kept = sorted(p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file())
    assert "pusher_compat/cli.py" in kept and "pyproject.toml" in kept
    assert not [p for p in kept if p.startswith(("tests/", "clients/", "bench/"))]
    # The build stage's COPYs, into its WORKDIR.
    build = [i for i in instructions if i.stage == 0]
    workdir = tmp_path / "src"
    workdir.mkdir()
    for copy in only(build, "COPY"):
        *sources, dest = copy.args.split()
        for source in sources:
            target = workdir / dest / (Path(source).name if dest.endswith("/")
                                       and not source.endswith("/") else "")
            if (context / source).is_dir():
                shutil.copytree(context / source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(context / source, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
         "--disable-pip-version-check", "-w", str(tmp_path / "wheels"), str(workdir)],
        capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    offline = r"No matching distribution found for hatchling|NewConnectionError|name resolution"
    if result.returncode and re.search(offline, output):
        pytest.skip(f"hatchling could not be fetched from PyPI:\n{output[-800:]}")
    assert result.returncode == 0, output
    (wheel,) = (tmp_path / "wheels").glob("pusher_compat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "pusher-compat = pusher_compat.cli:main" in archive.read(entry_points).decode()
    assert "pusher_compat/server.py" in names
    assert "pusher_compat/client.py" in names
    assert any(n.startswith("pusher_compat/protocol/") for n in names), names
