"""Logs go to the file ``baize-tui paths log`` names, never to the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_llama_load_log_goes_to_the_log_file(tiny_gguf: Path, baize_home: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-secret-never-logged"}
    out = subprocess.run([str(BIN / "baize-tui"), "ask", "-m", str(tiny_gguf), "-n", "4",
                          "--no-history", "Hello"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "llama_model_load" not in out.stdout + out.stderr and "llama_" not in out.stderr
    log = Path(subprocess.run([str(BIN / "baize-tui"), "paths", "log"], capture_output=True,
                              text=True, env=env).stdout.strip())
    assert log.is_relative_to(baize_home)
    text = log.read_text()
    assert "llama" in text  # llama.cpp's load lines, through Python logging
    assert "sk-secret-never-logged" not in text


def test_paths_command_creates_no_log(baize_home: Path) -> None:
    subprocess.run([str(BIN / "baize-tui"), "paths"], check=True, capture_output=True)
    assert not (baize_home / "cache").exists()
