"""Shared by the tests/test_hardening_*.py modules: run a console script, check its error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN_DIR = Path(sys.executable).parent


def run(prog: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``baize-tui`` or ``baize-convert`` (BAIZE_HOME comes from the autouse fixture)."""
    return subprocess.run([str(BIN_DIR / prog), *args], capture_output=True, text=True,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def tui(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    """``baize-tui ARGS``."""
    return run("baize-tui", *args, **kwargs)  # type: ignore[arg-type]


def one_error(out: subprocess.CompletedProcess, status: int, *needles: str,
              prog: str = "baize-tui") -> str:
    """Exactly one ``prog: error: …`` line naming every needle, the status, no traceback."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]
