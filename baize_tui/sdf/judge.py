"""The judging prompt, its strict parser, the position-bias shuffle and the tie rule.

The paper (Baize v2, App. C) had ChatGPT give every reply "an overall score from 1 to 100 for
helpfulness, relevance, accuracy and level of detail"; its prompt was never published, so
:data:`JUDGE_TEMPLATE` is ours, written from that description. It asks for exactly one line
``Answer K: SCORE`` per candidate, which :func:`parse_scores` reads strictly.

Position bias: the candidates are shown in an order shuffled per prompt with a seed derived
from the run's ``--seed`` and the prompt id (:func:`shuffle_order`), recorded with the verdict.
Ties: among the highest scores, the candidate **sampled first** wins (the lowest index in
``candidates.jsonl``), whatever order the judge saw them in (:func:`pick_best`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

SCORE_MIN = 1
SCORE_MAX = 100

JUDGE_SYSTEM = "You are a careful and impartial judge of the answers an AI assistant gives."

JUDGE_TEMPLATE = """\
Below is a question from a user, followed by {n} candidate answers written by an AI assistant.

Rate every answer with ONE overall score from 1 to 100 that reflects its helpfulness, \
relevance, accuracy and level of detail: 100 is an excellent answer, 1 is useless or wrong. \
Judge each answer on its own merits. The order in which the answers are shown means nothing, \
and length alone is not a virtue.

[Question]
{question}

{answers}

Reply with exactly {n} lines and nothing else, one line per answer in the order shown, each of \
the form
Answer <number>: <score>
where <score> is a whole number from 1 to 100."""

ANSWER_BLOCK = "[Answer {k}]\n{text}\n[End of Answer {k}]"

# "Answer 2: 85", tolerating markdown bold, "=" or "-" and a "/100" suffix; nothing else.
_LINE = re.compile(
    r"^\W*answer\s*#?\s*(\d+)\s*\**\s*[:=\-]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100)?\W*$",
    re.IGNORECASE)


def render_judge_prompt(question: str, answers: Sequence[str]) -> str:
    """The user message that asks for one score per answer (answers in display order)."""
    blocks = "\n\n".join(ANSWER_BLOCK.format(k=k, text=text.strip() or "(empty answer)")
                         for k, text in enumerate(answers, 1))
    return JUDGE_TEMPLATE.format(n=len(answers), question=question.strip(), answers=blocks)


def judge_messages(question: str, answers: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages sent to the judge."""
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": render_judge_prompt(question, answers)}]


def correction_message(reason: str, n: int) -> str:
    """What the judge is told after a reply that could not be read (then it answers again)."""
    return (f"Your reply could not be read ({reason}). Reply again with exactly {n} lines and "
            f"nothing else, each of the form `Answer <number>: <score>` for the answers 1 to {n}, "
            f"with whole-number scores from {SCORE_MIN} to {SCORE_MAX}.")


def prompt_fingerprint() -> str:
    """16 hex digits identifying the judging prompt (saved with a run, checked on resume)."""
    blob = "\0".join((JUDGE_SYSTEM, JUDGE_TEMPLATE, ANSWER_BLOCK)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ParseError(ValueError):
    """A judge reply without a usable score for every answer; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_scores(text: str, n: int) -> list[int]:
    """Scores for answers 1..n (display order) from a judge reply, or :class:`ParseError`.

    Every line of the form ``Answer K: SCORE`` counts; other lines are ignored. Each answer
    needs exactly one whole-number score in 1..100; a score given twice with different values,
    a K outside 1..n, a fraction or an out-of-range score is an error, as is a missing answer.
    """
    found: dict[int, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        k, raw = int(m.group(1)), m.group(2)
        if not 1 <= k <= n:
            raise ParseError("unknown_answer", f"scored answer {k}, but there are {n}")
        value = float(raw)
        if value != int(value):
            raise ParseError("not_whole", f"answer {k} got {raw}; scores are whole numbers")
        score = int(value)
        if not SCORE_MIN <= score <= SCORE_MAX:
            raise ParseError("out_of_range", f"answer {k} got {score}, outside "
                                             f"{SCORE_MIN}-{SCORE_MAX}")
        if k in found and found[k] != score:
            raise ParseError("conflicting", f"answer {k} scored twice ({found[k]} and {score})")
        found[k] = score
    if not found:
        snippet = " ".join(text.split())[:80]
        raise ParseError("no_scores", f"no 'Answer K: SCORE' line in {snippet!r}")
    missing = [k for k in range(1, n + 1) if k not in found]
    if missing:
        raise ParseError("missing_scores", f"no score for answer(s) {', '.join(map(str, missing))}")
    return [found[k] for k in range(1, n + 1)]


def shuffle_seed(run_seed: int, prompt_id: str) -> int:
    """The per-prompt shuffle seed: stable for a run seed and prompt, independent of order."""
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}".encode()).hexdigest()
    return int(digest[:8], 16)


def shuffle_order(n: int, seed: int) -> list[int]:
    """``order[j]`` is the candidate index shown as answer ``j + 1``."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def unshuffle(display_scores: Sequence[int], order: Sequence[int]) -> list[int]:
    """Scores by candidate index from scores in display order."""
    scores = [0] * len(order)
    for shown, index in enumerate(order):
        scores[index] = display_scores[shown]
    return scores


@dataclass(frozen=True)
class Verdict:
    """The winner of one prompt: its candidate index and score, and who tied with it."""

    best: int
    score: int
    tied: tuple[int, ...]


def pick_best(scores: Sequence[int]) -> Verdict:
    """The highest score; on a tie the lowest candidate index (the one sampled first)."""
    if not scores:
        raise ValueError("no scores")
    top = max(scores)
    tied = tuple(i for i, s in enumerate(scores) if s == top)
    return Verdict(best=tied[0], score=top, tied=tied)
