"""Processes: is a pid still ours and running, and how many physical cores are there.

One liveness check for everything that leaves a pid on disk (fine-tuning runs in
``run.json``, the converter's ``.NAME.PID.TAG`` partial files). ``psutil`` (an optional
dependency) is used when installed; without it, ``os.kill(pid, 0)`` and ``/proc`` (or ``ps``)
give the same answers on Linux and macOS. A zombie (exited, not yet reaped) counts as dead, and
children this process started are reaped on every check.

This module imports nothing from the rest of baize_tui (the converter uses it too).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

_children: list[subprocess.Popen] = []  # reaped on every liveness check (no zombies)


def track_child(proc: subprocess.Popen) -> None:
    """Remember a child process so that a later liveness check reaps it once it exits."""
    _children.append(proc)


def _reap() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def _psutil() -> Any:
    """The psutil module (an optional dependency), or None when it is not installed."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _cmdline(pid: int) -> str | None:
    """The command line of ``pid`` joined by spaces, or None if it cannot be read."""
    psutil = _psutil()
    if psutil is not None:
        try:
            return " ".join(psutil.Process(pid).cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        except psutil.AccessDenied:
            return ""
    cmdline_file = Path(f"/proc/{pid}/cmdline")
    if cmdline_file.parent.exists():
        try:
            return cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)],  # pragma: no cover - no /proc
                         capture_output=True, text=True)
    return out.stdout


def _running(pid: int) -> bool:
    psutil = _psutil()
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:  # a zombie still answers kill(0); /proc says it has exited
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None if that cannot be read."""
    psutil = _psutil()
    if psutil is not None:
        try:
            return float(psutil.Process(pid).create_time())
        except (psutil.Error, OSError):
            return None
    try:  # Linux: field 22 of /proc/PID/stat is the start in clock ticks after boot
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


#: How much later than recorded a process may seem to have started and still be the same one
#: (clock ticks, the wall clock's adjustments since boot).
START_SLACK_S = 2.0


def process_alive(pid: int | None, needle: str | None = None,
                  started_by: float | None = None) -> bool:
    """Whether ``pid`` runs and, if ``needle`` is given, its command line contains it (pids get
    reused: the needle tells our process from a stranger that got the same pid). With
    ``started_by`` (when our process was known to be running, e.g. just after launching it), a
    process that started later is a stranger too, whatever its command line says (after a
    reboot or a long time, a pid comes back to life in another process)."""
    _reap()
    if not pid or pid <= 0 or not _running(pid):
        return False
    if started_by is not None:
        start = process_start_time(pid)
        if start is not None and start > float(started_by) + START_SLACK_S:
            return False
    if needle is None:
        return True
    cmdline = _cmdline(pid)
    return cmdline is not None and needle in cmdline


def physical_cores() -> int:
    """Physical CPU cores available to this process (llama.cpp's best thread count)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    psutil = _psutil()
    physical = psutil.cpu_count(logical=False) if psutil is not None else _cpuinfo_cores()
    return max(1, min(usable, physical or max(1, usable // 2) or 1))


def _cpuinfo_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo, or None if it cannot be read."""
    try:
        cores: set[tuple[str, str]] = set()
        phys = core = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "physical id":
                phys = value
            elif key == "core id":
                core = value
            elif not key and core:
                cores.add((phys, core))
                core = ""
        if core:
            cores.add((phys, core))
        return len(cores) or None
    except OSError:
        return None
