"""Shared pieces of the SDF tests: a scripted judge for tests/openai_server.py and readers."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

ANSWER = re.compile(r"\[Answer (\d+)\]\n(.*?)\n\[End of Answer \1\]", re.S)


def text_score(text: str) -> int:
    """The score the scripted judge gives a candidate: a hash of its text, 1..100, with many
    ties (only 7 distinct values), so the tie rule is exercised."""
    return 40 + 10 * (int(hashlib.sha256(text.strip().encode()).hexdigest()[:8], 16) % 7)


def shown_answers(body: dict) -> list[str]:
    """The candidate texts in the order the judge was shown them."""
    prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return [m.group(2) for m in ANSWER.finditer(prompt)]


def scripted_judge(body: dict) -> str:
    """A judge that scores what it is shown by :func:`text_score`, in the strict form."""
    return "\n".join(f"Answer {k}: {text_score(t)}" for k, t in enumerate(shown_answers(body), 1))


def expected_best(candidates: list[str]) -> int:
    """The candidate the SDF tie rule must pick: the highest score, then the lowest index."""
    scores = [text_score(t) for t in candidates]
    return scores.index(max(scores))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_candidates(out: Path, n_prompts: int, n: int = 4) -> list[dict]:
    """A synthetic ``candidates.jsonl`` (as ``sdf sample`` writes it) for judge-only tests."""
    from baize_tui.selfchat.seeds import seed_id

    out.mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n_prompts):
        prompt = f"Question number {i}?"
        cands = [{"text": f"Reply {k} to question {i}: " + "detail " * ((i * 7 + k * 3) % 5),
                  "finish_reason": "stop"} for k in range(n)]
        recs.append({"id": seed_id(prompt), "prompt": prompt, "candidates": cands, "n": n,
                     "model": "synthetic", "usage": {}})
    (out / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs
