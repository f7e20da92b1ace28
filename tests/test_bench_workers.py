"""``bench/``'s multi-worker support: a server's figures cover the supervisor and its workers,
and ``run.py`` knows the ``ours-<N>w`` server kinds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Appended, not prepended: bench/'s module names (run, report...) must not shadow others.
sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
import procstat
import run

# A parent that starts one child, prints the child's pid once it exists, and waits on stdin.
_PARENT = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
    " stdin=subprocess.PIPE)\n"
    "print(child.pid, flush=True)\n"
    "sys.stdin.read()\n"
    "child.stdin.close(); child.wait()\n"
)


def test_family_is_the_process_and_its_children(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert procstat.family(parent.pid) == [parent.pid, child]
        assert procstat.family_rss_bytes(parent.pid) > procstat.rss_bytes(parent.pid)
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(10)


def test_ours_nw_names_a_worker_server(tmp_path: Path) -> None:
    server = run.make_server("ours-2w", tmp_path)
    assert isinstance(server, run.OurWorkers)
    assert (server.name, server.workers) == ("ours-2w", 2)
    assert isinstance(run.make_server("ours", tmp_path), run.OurServer)
    assert run.make_server("ours-0w", tmp_path) is None
    assert run.make_server("ours-xw", tmp_path) is None
