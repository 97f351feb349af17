"""Can llama.cpp use a GGUF's vocabulary? Checked in a child process.

A mis-described vocabulary (e.g. byte-level BPE tokens written as a sentencepiece model) does
not fail to load cleanly: llama.cpp throws from inside its tokenizer and the whole process
aborts (``std::out_of_range``, exit 134). So the check runs ``python -m baize_convert.probe
FILE`` in a child: load the vocabulary only (no weights), tokenize a fixed probe string that
covers spaces, newlines, digits, CJK, emoji and Baize's tags, and detokenize it again.
The parent only reads the exit status and the last line of stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROBE_TEXT = " Hello world!\n\n\t12345 [|Human|]Hi\n[|AI|]你好，世界 😀 café — `x = {1: 2}`"
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ProbeResult:
    """The verdict on one file's vocabulary."""

    ok: bool
    reason: str = ""
    n_tokens: int = 0


def _describe_failure(returncode: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = next((line for line in reversed(lines) if "what()" in line or "error" in line.lower()),
                  lines[-1] if lines else "")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        how = f"llama.cpp aborted ({name})"
    else:
        how = f"llama.cpp failed (exit {returncode})"
    return f"{how}: {detail[-300:]}" if detail else how


def probe_vocab(path: Path, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """Load ``path``'s vocabulary in llama.cpp in a child process and tokenize a probe."""
    env = dict(os.environ, PYTHONFAULTHANDLER="0")
    try:
        proc = subprocess.run([sys.executable, "-m", "baize_convert.probe", str(path)],
                              capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, f"llama.cpp did not load the vocabulary within {timeout:.0f} s")
    if proc.returncode != 0:
        return ProbeResult(False, _describe_failure(proc.returncode, proc.stderr))
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ProbeResult(False, f"unexpected probe output {proc.stdout[-200:]!r}")
    return ProbeResult(True, n_tokens=int(report.get("n_tokens", 0)))


def _child(path: str) -> int:
    from llama_cpp import Llama

    try:
        llm = Llama(path, vocab_only=True, verbose=False)
    except ValueError as exc:
        print(f"error: cannot load the vocabulary ({exc})", file=sys.stderr)
        return 3
    ids = llm.tokenize(PROBE_TEXT.encode(), add_bos=True, special=False)
    n_vocab = llm.n_vocab()
    if not ids or any(not 0 <= i < n_vocab for i in ids):
        print(f"error: tokenizing the probe gave ids {ids[:8]}… outside 0..{n_vocab}", file=sys.stderr)
        return 4
    llm.detokenize(ids)
    print(json.dumps({"n_tokens": len(ids), "n_vocab": n_vocab}))
    return 0


if __name__ == "__main__":  # the child process
    sys.exit(_child(sys.argv[1]))
