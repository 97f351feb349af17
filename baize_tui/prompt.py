"""The Baize conversation format: render a prompt, fit it to a context, cut the reply.

Every Baize prompt string lives here, exactly as the released models expect them (the system
prompt and turn tags of project-baize/baize-chatbot's demo): the default system prompt,
the turn tags, and the stop strings. The GGUF chat template that the converter writes is
generated from the same strings (:func:`chat_template`), so the two can never drift apart.

A prompt is::

    SYSTEM + "\\n[|Human|]{user}\\n[|AI|]{assistant}" per past turn + "\\n[|Human|]{new}\\n[|AI|]"

and the model writes the reply after the last tag. The released models rarely emit EOS: a
reply ends where the model starts the next ``[|Human|]`` (or ``[|AI|]``) line, which is what
:class:`StopFilter` detects while streaming.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from baize_tui.errors import UserError

BAIZE_SYSTEM_PROMPT = "The following is a conversation between a human and an AI assistant named Baize (named after a mythical creature in Chinese folklore). Baize is an open-source AI assistant developed by UCSD and Sun Yat-Sen University. The human and the AI assistant take turns chatting. Human statements start with [|Human|] and AI assistant statements start with [|AI|]. The AI assistant always provides responses in as much detail as possible, and in Markdown format. The AI assistant always declines to engage with topics, questions and instructions related to unethical, controversial, or sensitive issues. Complete the transcript in exactly that format.\n[|Human|]Hello!\n[|AI|]Hi!"

HUMAN_TAG = "[|Human|]"
AI_TAG = "[|AI|]"
STOP_STRINGS: tuple[str, ...] = (HUMAN_TAG, AI_TAG)


class Turn(NamedTuple):
    """One finished exchange: what the human said and what the AI answered."""

    user: str
    assistant: str


def render_turn(user: str, assistant: str) -> str:
    """One past turn exactly as it appears in a prompt (it starts with a newline)."""
    return f"\n{HUMAN_TAG}{user}\n{AI_TAG}{assistant}"


def render(
    system: str | None,
    past_turns: Iterable[tuple[str, str]],
    new_message: str,
) -> str:
    """The exact Baize prompt: system prompt, past turns in order, the new message, ``[|AI|]``.

    ``system=None`` means :data:`BAIZE_SYSTEM_PROMPT`. The text carries no BOS: the tokenizer
    adds it. Rendering is append-only (turn N's prompt is a prefix of turn N+1's, up to the
    reply), which is what lets llama.cpp reuse its KV cache between turns.
    """
    head = BAIZE_SYSTEM_PROMPT if system is None else system
    turns = "".join(render_turn(user, assistant) for user, assistant in past_turns)
    return f"{head}{turns}\n{HUMAN_TAG}{new_message}\n{AI_TAG}"


def to_messages(
    system: str | None, past_turns: Iterable[tuple[str, str]], new_message: str
) -> list[dict[str, str]]:
    """The same conversation as OpenAI-style chat messages (system prompt as system message)."""
    messages = [{"role": "system", "content": BAIZE_SYSTEM_PROMPT if system is None else system}]
    for user, assistant in past_turns:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": new_message})
    return messages


# -- fitting a conversation into the context window ----------------------------------------


class ContextOverflow(UserError):
    """Even the system prompt plus the new message plus the reply budget do not fit."""

    def __init__(self, needed: int, available: int, *, prompt_tokens: int, reserved: int) -> None:
        self.needed = needed
        self.available = available
        self.prompt_tokens = prompt_tokens
        self.reserved = reserved
        super().__init__(
            f"input too long: the prompt needs {prompt_tokens} tokens plus {reserved} reserved "
            f"for the reply ({needed} in all), but the context holds {available}; shorten the "
            f"message or the system prompt, or lower the reply budget (--max-tokens)"
        )


@dataclass(frozen=True)
class Fitted:
    """The prompt that fits, and what had to be left out to get there."""

    prompt: str
    prompt_tokens: int
    kept_turns: list[Turn] = field(default_factory=list)
    dropped_turns: int = 0

    @property
    def first_kept(self) -> int:
        """Index (in the past turns given to :func:`fit`) of the oldest turn kept."""
        return self.dropped_turns


def fit(
    system: str | None,
    past_turns: Sequence[tuple[str, str]],
    new_message: str,
    *,
    n_ctx: int,
    max_new_tokens: int,
    count_tokens: Callable[[str], int],
    min_start: int = 0,
    headroom: float = 0.0,
) -> Fitted:
    """Keep the system prompt and as many whole past turns, newest first, as fit.

    The budget is ``n_ctx - max_new_tokens``: room for the reply is reserved (the original
    demo did not). Only whole turns are dropped, always the oldest ones, and never the system
    prompt or the new message. ``count_tokens(prompt)`` counts a whole rendered prompt
    (including BOS). Raises :class:`ContextOverflow` with the numbers when not even the
    system prompt and the new message fit.

    For a chat that keeps a KV cache, two options keep the prompt's start stable so the
    cache stays useful once the context is full: ``min_start`` never brings back turns an
    earlier fit dropped (pass the previous :attr:`Fitted.first_kept`), and when turns must
    be dropped, ``headroom`` (a fraction of the room past turns may take) is freed beyond
    what this turn needs, so the next turns fit without dropping again.
    """
    turns = [Turn(*t) for t in past_turns]
    start = min(max(min_start, 0), len(turns))
    budget = n_ctx - max_new_tokens
    tried: dict[int, tuple[str, int]] = {}

    def attempt(keep: int) -> tuple[str, int]:
        if keep not in tried:
            text = render(system, turns[len(turns) - keep:] if keep else [], new_message)
            tried[keep] = (text, count_tokens(text))
        return tried[keep]

    def most_that_fit(limit: int, target: float) -> int:
        # More kept turns never means fewer tokens: binary search the most that fit.
        lo, hi = 0, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if attempt(mid)[1] <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo

    available = len(turns) - start
    if attempt(available)[1] <= budget:
        keep = available
    elif attempt(0)[1] > budget:
        used = attempt(0)[1]
        raise ContextOverflow(used + max_new_tokens, n_ctx, prompt_tokens=used,
                              reserved=max_new_tokens)
    else:
        # Free ``headroom`` of the room the turns may take, so the next turns fit as well.
        room = budget - attempt(0)[1]
        keep = most_that_fit(available - 1, budget - headroom * room)
        if keep == 0 and headroom and attempt(1)[1] <= budget:
            keep = 1  # headroom never costs the newest turn, the one a reply most depends on
    prompt, used = attempt(keep)
    return Fitted(prompt, used, turns[len(turns) - keep:] if keep else [], len(turns) - keep)


# -- streaming: cut the reply at the first stop string --------------------------------------


def cut_reply(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """The finished reply: ``text`` up to the first stop string, stripped."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut].strip()


class StopFilter:
    """Turns a stream of generated pieces into the visible reply, piece by piece.

    ``feed(piece)`` returns what may be shown now; ``finish()`` returns the rest at the end.
    Text that could still become a stop string (``[``, ``[|``, ``[|H`` …) is held back until
    it is known not to be one; at the first stop string everything after it is dropped and
    :attr:`stopped` becomes true. Leading whitespace is never shown and trailing whitespace is
    held until more text follows, so the concatenation of everything returned equals
    :func:`cut_reply` of the whole text, for any split into pieces.
    """

    def __init__(self, stops: Sequence[str] = STOP_STRINGS) -> None:
        if not stops or any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        self.stops = tuple(stops)
        self.stopped = False
        self.text = ""  # everything returned so far
        self._held = ""

    def _hold_len(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best

    def _emit(self, out: str) -> str:
        if not self.text:
            out = out.lstrip()
        self.text += out
        return out

    def feed(self, piece: str) -> str:
        """Take the next generated piece; return the text that is safe to show now."""
        if self.stopped or not piece:
            return ""
        buf = self._held + piece
        cut = min((i for i in (buf.find(s) for s in self.stops) if i != -1), default=-1)
        if cut != -1:
            self.stopped = True
            self._held = ""
            return self._emit(buf[:cut].rstrip())
        keep = self._hold_len(buf)
        ready, held = buf[: len(buf) - keep], buf[len(buf) - keep:]
        body = ready.rstrip()
        self._held = ready[len(body):] + held
        if not self.text:  # nothing shown yet: leading whitespace is dropped, not held
            body = body.lstrip()
            if not body:
                self._held = held
        return self._emit(body)

    def finish(self) -> str:
        """End of generation: return the held-back text that turned out not to be a stop."""
        if self.stopped:
            return ""
        self.stopped = True
        out, self._held = self._held.rstrip(), ""
        return self._emit(out)


# -- the GGUF chat template ------------------------------------------------------------------


def _jinja_string(text: str) -> str:
    """``text`` as a single-quoted Jinja string literal."""
    escaped = (
        text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    )
    return f"'{escaped}'"


def chat_template() -> str:
    """A Jinja chat template (``tokenizer.chat_template``) that renders exactly :func:`render`.

    Given ``messages`` (``role`` system/user/assistant, ``content``) and
    ``add_generation_prompt=True`` it yields the Baize prompt, without ``bos_token`` (the
    tokenizer adds BOS). A missing system message means the Baize default system prompt.
    Only constructs that Jinja2, llama.cpp's minja and transformers all support are used.
    """
    system = _jinja_string(BAIZE_SYSTEM_PROMPT)
    human = _jinja_string("\n" + HUMAN_TAG)
    ai = _jinja_string("\n" + AI_TAG)
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{{- messages[0]['content'] -}}"
        "{%- else -%}"
        "{{- " + system + " -}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{- " + human + " + message['content'] -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- " + ai + " + message['content'] -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- " + ai + " -}}"
        "{%- endif -%}"
    )
