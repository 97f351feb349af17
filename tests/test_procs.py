"""One liveness check for runs and the converter: real processes, with and without psutil."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from baize_tui import procs


@pytest.fixture(params=["psutil", "no-psutil"])
def flavour(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "no-psutil":
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil fails
    else:
        pytest.importorskip("psutil")
    return str(request.param)


def test_running_process_and_its_command_line(flavour: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "marker-x1"],
                             stdin=subprocess.PIPE)
    try:
        assert procs.process_alive(child.pid)
        assert procs.process_alive(child.pid, "marker-x1")
        assert not procs.process_alive(child.pid, "another-run")  # a reused pid is not ours
    finally:
        child.communicate(b"")
    assert not procs.process_alive(child.pid)
    assert not procs.process_alive(None) and not procs.process_alive(0)


def test_an_exited_child_is_dead_before_and_after_reaping(flavour: str) -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not procs.process_alive(zombie.pid)
    zombie.wait()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    procs.track_child(child)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not procs.process_alive(child.pid)
    assert child not in procs._children  # the check reaped it


def test_physical_cores_is_a_sane_count(flavour: str) -> None:
    cores = procs.physical_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
