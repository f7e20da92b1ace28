"""Process figures read from ``/proc`` and ``resource``, and the loopback guard.

Everything here is a plain function of a pid or of this process: CPU seconds (user + system),
resident memory, and the file-descriptor limit that decides how many sockets fit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import resource
import socket
import time
from dataclasses import dataclass

__all__ = [
    "CpuClock",
    "family",
    "family_cpu_seconds",
    "family_rss_bytes",
    "fd_limit",
    "process_cpu_seconds",
    "process_fd_limit",
    "raise_fd_limit",
    "require_loopback",
    "rss_bytes",
    "self_cpu_seconds",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        raw = stat.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes, from ``/proc/<pid>/statm``."""
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def family(pid: int) -> list[int]:
    """``pid`` and its direct children: a ``serve --workers N`` supervisor and its workers.

    A single-process server has no children, so its family is itself.
    """
    pids = [pid]
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/children") as children:
                pids.extend(int(child) for child in children.read().split())
    except OSError:
        pass  # the process (or a thread) ended between the listing and the read
    return pids


def family_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (a worker that already ended is missed)."""
    total = 0.0
    for member in family(pid):
        with contextlib.suppress(OSError):  # a worker exited between listing and read
            total += process_cpu_seconds(member)
    return total


def family_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` and its children, summed, in bytes."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):
            total += rss_bytes(member)
    return total


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class CpuClock:
    """CPU seconds of this process and (optionally) of the server, between two instants.

    The server's figure covers its family (:func:`family`): with ``--workers N`` the
    supervisor and every worker.
    """

    server_pid: int | None
    wall: float = 0.0
    own: float = 0.0
    server: float = 0.0

    def start(self) -> None:
        self.wall = time.perf_counter()
        self.own = self_cpu_seconds()
        self.server = family_cpu_seconds(self.server_pid) if self.server_pid else 0.0

    def read(self) -> tuple[float, float, float | None]:
        """(wall seconds, own CPU seconds, server CPU seconds or None) since :meth:`start`."""
        wall = time.perf_counter() - self.wall
        own = self_cpu_seconds() - self.own
        if not self.server_pid:
            return wall, own, None
        return wall, own, family_cpu_seconds(self.server_pid) - self.server


def fd_limit() -> int:
    """This process's soft limit on open files."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def process_fd_limit(pid: int) -> int | None:
    """Soft limit on open files of another process, from ``/proc/<pid>/limits``."""
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    value = line.split()[3]
                    return None if value == "unlimited" else int(value)
    except OSError:
        return None
    return None


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def require_loopback(host: str) -> str:
    """Resolve ``host`` and return its address; raise ``ValueError`` unless it is loopback.

    The benchmarks only ever send traffic to this machine: anything else is refused.
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve {host!r}: {error}") from None
    addresses = {info[4][0] for info in infos}
    for address in addresses:
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"{host!r} resolves to {address}, not a loopback address: refused")
    return sorted(addresses)[0]
