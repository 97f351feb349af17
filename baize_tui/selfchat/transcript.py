"""Self-chat transcripts: parsing into turns, quality filters, and Baize's preprocess rules.

``baize_input`` reproduces the released data's ``preprocess.py`` (BAIZE.md §3) exactly: split on
``[Human]``, drop the part before the first tag and the last chunk, split each kept chunk on
``[AI]`` into exactly two parts or stop there, and wrap the stripped turns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from baize_tui.selfchat.templates import AI_TAG, BAIZE_AI, BAIZE_HEADER, BAIZE_HUMAN, HUMAN_TAG
from baize_tui.selfchat.turn_checks import REASON_SPEAKER_LABEL, speaker_label_problem

# Quality-filter reasons (the keys counted in ``status`` and written to failed.jsonl).
REASON_EMPTY = "empty_response"
REASON_NO_HUMAN = "no_human_turn"  # the reply has no [Human] tag at all
REASON_NO_AI = "no_ai_part"  # a [Human] part but no [AI] part
REASON_NO_TURN = "no_complete_turn"  # nothing left that is a whole (human, AI) turn
REASON_SPLIT = "turn_split_wrong"
REASON_EMPTY_TURN = "empty_turn"
REASON_AI_HAS_HUMAN = "ai_turn_contains_human"
REASON_TOO_SHORT = "too_few_turns"
REASONS = (REASON_EMPTY, REASON_NO_HUMAN, REASON_NO_AI, REASON_NO_TURN, REASON_SPLIT,
           REASON_EMPTY_TURN, REASON_AI_HAS_HUMAN, REASON_SPEAKER_LABEL, REASON_TOO_SHORT)

# Tags that must not appear inside a turn (leaked transcript or chat-format markers).
_HUMAN_MARKERS = (HUMAN_TAG, "[|Human|]")
_AI_MARKERS = (AI_TAG, "[|AI|]")


def baize_turns(transcript: str, *, keep_last_turn: bool = False) -> list[tuple[str, str]]:
    """The turns ``preprocess.py`` keeps, stripped (``keep_last_turn`` keeps the last chunk)."""
    chunks = transcript.split(HUMAN_TAG)[1:] if keep_last_turn else transcript.split(HUMAN_TAG)[1:-1]
    turns: list[tuple[str, str]] = []
    for chunk in chunks:
        if AI_TAG not in chunk:
            break
        parts = chunk.split(AI_TAG)
        if len(parts) != 2:
            break
        turns.append((parts[0].strip(), parts[1].strip()))
    return turns


def render_baize(turns: list[tuple[str, str]]) -> str:
    """Baize's released single-string format for these turns (``""`` when there are none)."""
    if not turns:
        return ""
    body = "".join(f"{BAIZE_HUMAN}{h.strip()}\n{BAIZE_AI}{a.strip()}\n" for h, a in turns)
    return BAIZE_HEADER + body + BAIZE_HUMAN


def baize_input(transcript: str, *, keep_last_turn: bool = False) -> str:
    """``preprocess.py``'s ``input`` string for one transcript; ``""`` means dropped."""
    return render_baize(baize_turns(transcript, keep_last_turn=keep_last_turn))


@dataclass
class ParseResult:
    """Turns parsed from a transcript, and why it was rejected (``reason`` ``None`` = kept)."""

    turns: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether the dialogue passed every filter."""
        return self.reason is None


def parse_transcript(transcript: str) -> ParseResult:
    """Split a v1 transcript into complete (human, AI) turns.

    Text before the first ``[Human]`` is ignored, and so is a last chunk without ``[AI]`` (a
    closing question the model never answered). A chunk in the middle with no ``[AI]`` or with
    more than one is a split error; the result keeps the turns before it.
    """
    if not transcript.strip():
        return ParseResult(reason=REASON_EMPTY, detail="the model returned no text")
    chunks = transcript.split(HUMAN_TAG)[1:]
    if not chunks:
        return ParseResult(reason=REASON_NO_HUMAN, detail="no [Human] turn in the reply")
    turns: list[tuple[str, str]] = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        n_ai = chunk.count(AI_TAG)
        if n_ai == 0:
            if last and turns:
                break
            reason = REASON_NO_AI if not turns and last else REASON_SPLIT
            detail = f"turn {i + 1} has a [Human] part but no [AI] part"
            return ParseResult(turns, reason, detail)
        if n_ai > 1:
            return ParseResult(turns, REASON_SPLIT, f"turn {i + 1} has {n_ai} [AI] tags")
        human, ai = chunk.split(AI_TAG)
        turns.append((human.strip(), ai.strip()))
    return ParseResult(turns)


def check_turns(turns: list[tuple[str, str]], *, min_turns: int = 1) -> tuple[str | None, str]:
    """Quality filters over parsed turns: ``(reason, detail)``, reason ``None`` when kept."""
    if not turns:
        return REASON_NO_TURN, "no complete [Human]/[AI] turn"
    for i, (human, ai) in enumerate(turns, 1):
        if not human or not ai:
            side = "human" if not human else "AI"
            return REASON_EMPTY_TURN, f"turn {i}: the {side} part is empty"
        if any(m in ai for m in _HUMAN_MARKERS):
            return REASON_AI_HAS_HUMAN, f"turn {i}: the AI part contains a [Human] tag"
        if any(m in ai for m in _AI_MARKERS) or any(m in human for m in _AI_MARKERS + _HUMAN_MARKERS):
            return REASON_SPLIT, f"turn {i}: a turn contains a leaked tag"
    label = speaker_label_problem(turns)
    if label is not None:
        return REASON_SPEAKER_LABEL, label
    if len(turns) < min_turns:
        return REASON_TOO_SHORT, f"{len(turns)} turn(s), fewer than --min-turns {min_turns}"
    return None, ""


def evaluate_v1(transcript: str, *, min_turns: int = 1) -> ParseResult:
    """Parse a v1 transcript and apply every filter."""
    result = parse_transcript(transcript)
    if not result.ok:
        return result
    reason, detail = check_turns(result.turns, min_turns=min_turns)
    return ParseResult(result.turns, reason, detail)


def evaluate_turns(turns: list[tuple[str, str]], *, min_turns: int = 1) -> ParseResult:
    """Apply every filter to turns generated one call at a time (v2)."""
    reason, detail = check_turns(turns, min_turns=min_turns)
    return ParseResult(list(turns), reason, detail)


def messages_from_turns(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    """Chat messages (``user`` / ``assistant``) for these turns."""
    out: list[dict[str, str]] = []
    for human, ai in turns:
        out.append({"role": "user", "content": human})
        out.append({"role": "assistant", "content": ai})
    return out


def turns_from_messages(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The inverse of ``messages_from_turns`` (strict alternation expected)."""
    turns: list[tuple[str, str]] = []
    for i in range(0, len(messages) - 1, 2):
        user, assistant = messages[i], messages[i + 1]
        if user.get("role") != "user" or assistant.get("role") != "assistant":
            raise ValueError(f"messages {i}/{i + 1} are not a user/assistant pair")
        turns.append((user["content"], assistant["content"]))
    return turns
