"""Hardening, the environment's faults exercised for real, not simulated: an export into
/dev/full, a read-only BAIZE_HOME (a read-only bind mount, since root ignores file modes),
a disk that fills during ``baize-convert merge`` (RLIMIT_FSIZE), and malicious pickles through
``verify --lora`` and ``ask -m hf:…`` (one line each, and the payload never runs)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from hardening_helpers import BIN_DIR, one_error, run, tui
from test_hardening_convert import inputs, merge  # noqa: F401 - a fixture used here

from baize_tui.history import HistoryStore


@pytest.fixture
def one_chat(baize_home: Path) -> int:
    with HistoryStore() as store:
        cid = store.create_conversation(system_prompt="", model="m", params={})
        parent = store.add_message(cid, parent_id=None, role="user", text="hello there")
        store.add_message(cid, parent_id=parent, role="assistant", text="hi! " * 2000)
    return cid


# -- /dev/full -----------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_an_export_to_dev_full_is_one_error_and_the_device_stays(one_chat: int) -> None:
    before = os.lstat("/dev/full")
    out = tui("history", "export", str(one_chat), "-o", "/dev/full")
    one_error(out, 1, "/dev/full", "character device")
    after = os.lstat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", [["history", "export", "{cid}"], ["history", "show", "{cid}"],
                                  ["history", "list"], ["paths"]])
def test_stdout_on_dev_full_is_one_error_no_traceback(one_chat: int, args: list[str]) -> None:
    argv = [str(BIN_DIR / "baize-tui"), *(a.format(cid=one_chat) for a in args)]
    with open("/dev/full", "w") as full:
        out = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                             stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "disk is full" in lines[0], out.stderr


# -- a read-only BAIZE_HOME --------------------------------------------------------------------
_UNSHARE: list[str] = []


def _can_bind_read_only(tmp: Path) -> str | None:
    """None when a read-only bind mount works here (as root, or in a user namespace), else
    why not; remembers the ``unshare`` flags that worked."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = tmp / "probe"
    probe.mkdir()
    script = (f'mount --bind "{probe}" "{probe}" && mount -o remount,bind,ro "{probe}" && '
              f'! touch "{probe}/x" 2>/dev/null')
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        done = subprocess.run([*prefix, "sh", "-c", script], capture_output=True, timeout=30)
        if done.returncode == 0:
            _UNSHARE[:] = prefix
            return None
    return f"no read-only bind mount in a mount namespace here ({done.stderr.decode()[:200]})"


def read_only(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``baize-tui ARGS`` with BAIZE_HOME bind-mounted read-only in a private namespace."""
    script = (f'mount --bind "{home}" "{home}" && mount -o remount,bind,ro "{home}" && '
              'exec "$@"')
    return subprocess.run([*(_UNSHARE or ["unshare", "-m"]), "sh", "-c", script, "sh",
                           str(BIN_DIR / "baize-tui"), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "BAIZE_HOME": str(home)})


@pytest.mark.parametrize("args", [
    ["history", "list"], ["history", "show", "1"], ["history", "rename", "1", "new title"],
    ["history", "search", "hello"], ["history", "delete", "1", "--yes"],
    ["ask", "-m", "openai:m", "--base-url", "http://127.0.0.1:9/v1", "hi"],
])
def test_a_read_only_home_is_named_never_called_damaged(one_chat: int, baize_home: Path,
                                                        tmp_path: Path, args: list[str]) -> None:
    why = _can_bind_read_only(tmp_path)
    if why is not None:
        pytest.skip(why)
    db = baize_home / "data" / "history.sqlite3"
    before = db.read_bytes()
    out = read_only(baize_home, *args)
    line = one_error(out, 1, str(db), "read-only")
    assert "damaged" not in line and "move it aside" not in line
    assert db.read_bytes() == before


def test_a_read_only_home_with_no_history_yet(baize_home: Path, tmp_path: Path) -> None:
    why = _can_bind_read_only(tmp_path)
    if why is not None:
        pytest.skip(why)
    baize_home.mkdir(parents=True, exist_ok=True)
    out = read_only(baize_home, "history", "list")
    one_error(out, 1, str(baize_home / "data"), "read-only")
    assert read_only(baize_home, "paths").returncode == 0
    selfchat = read_only(baize_home, "selfchat", "run", "--seeds", __file__, "--out",
                         str(baize_home / "run"), "--model", "m", "--base-url",
                         "http://127.0.0.1:9/v1")
    one_error(selfchat, 1, str(baize_home / "run"), "read-only")


# -- the disk fills during a merge ---------------------------------------------------------------
def _small_files(limit: int):  # noqa: ANN202 - a preexec_fn
    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


def test_a_merge_that_runs_out_of_space_removes_its_partial_file(inputs: tuple[Path, Path],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    base, lora = inputs
    ok = merge(base, lora, tmp_path / "full.gguf")
    assert ok.returncode == 0, ok.stderr
    size = (tmp_path / "full.gguf").stat().st_size
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "merged.gguf"
    argv = [str(BIN_DIR / "baize-convert"), "merge", "--base", str(base), "--lora", str(lora),
            "-o", str(target)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, preexec_fn=_small_files(size // 2))
    one_error(done, 1, str(target), "not written", "partial file was removed", "full",
              prog="baize-convert")
    assert list(out_dir.iterdir()) == []  # no partial file, no temp file left behind


# -- malicious pickles ---------------------------------------------------------------------------
class Payload:
    """Pickles to ``os.system("touch MARKER")``: it ran if the marker exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch '{self.marker}'",))


def test_a_malicious_adapter_pickle_never_runs(inputs: tuple[Path, Path],  # noqa: F811
                                               tmp_path: Path) -> None:
    import torch

    base, lora = inputs
    merged = tmp_path / "merged.gguf"
    assert merge(base, lora, merged).returncode == 0
    marker = tmp_path / "PWNED"
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        (lora / name).unlink(missing_ok=True)
    torch.save({"base_model.model.x.lora_A.weight": Payload(marker)}, lora / "adapter_model.bin")
    verify = run("baize-convert", "verify", str(merged), "--hf", str(base), "--lora", str(lora))
    one_error(verify, 1, "adapter_model.bin", "pickle", prog="baize-convert")
    asked = tui("ask", "-m", f"hf:{base}+{lora}", "-n", "2", "hi")
    assert asked.returncode != 0 and "Traceback" not in asked.stderr, asked.stderr
    one_error(asked, asked.returncode, str(lora))
    assert not marker.exists()
