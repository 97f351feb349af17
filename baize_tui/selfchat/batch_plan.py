"""Batch-mode dialogue bookkeeping: what each dialogue needs next, request lines, result lines.

A dialogue's progress is rebuilt by replaying the results log (``batch_jobs.RESULTS``) over
its seed, so nothing here is stored twice. The requests are the live runner's, byte for byte
(same prompts, same parameters, same stop list), so a batch run and a live run given the same
replies write the same dialogues.

``custom_id`` is ``"<seed id>:<turn>:<role>"``: role ``t`` is a v1 transcript call, ``h`` and
``a`` the v2 human and AI calls of turn ``<turn>`` (0-based).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from baize_tui.selfchat import templates as tpl
from baize_tui.selfchat.runner import RunConfig, estimate_tokens
from baize_tui.selfchat.seeds import Seed
from baize_tui.selfchat.transcript import ParseResult, evaluate_turns, evaluate_v1

ENDPOINT = "/v1/chat/completions"
# Provider limits per input file (OpenAI: 50,000 requests, 200 MB), with a margin.
MAX_REQUESTS = 45_000
MAX_BYTES = 180 * 1024 * 1024
ROLE_NAMES = {"t": "transcript", "h": "human", "a": "ai"}


def make_custom_id(seed_id: str, turn: int, role: str) -> str:
    """``"<seed id>:<turn>:<role>"``."""
    return f"{seed_id}:{turn}:{role}"


def split_custom_id(custom_id: Any) -> tuple[str, int, str] | None:
    """The parts of a custom id, or ``None`` when it is not one of ours."""
    if not isinstance(custom_id, str):
        return None
    parts = custom_id.split(":")
    if len(parts) != 3 or parts[2] not in ROLE_NAMES or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


@dataclass
class Dialogue:
    """One seed's dialogue as rebuilt from the results log."""

    seed: Seed
    turns: list[tuple[str, str]] = field(default_factory=list)
    human: str | None = None  # v2: the human turn waiting for its AI answer
    transcript: str = ""
    final: str | None = None  # None (live), "done", "rejected" or "failed"
    termination: str = "completed"
    reason: str = ""
    error: str = ""
    retryable: bool = False
    attempts: int = 0
    gen: int = 0
    parsed: ParseResult | None = None
    finish_reasons: list[str | None] = field(default_factory=list)
    by_role: dict[str, list[int]] = field(default_factory=dict)
    calls: int = 0

    @property
    def sid(self) -> str:
        """The seed id."""
        return self.seed.id

    def expected(self, mode: str) -> str:
        """The custom id of the request this dialogue needs next."""
        if mode == "v1":
            return make_custom_id(self.sid, 0, "t")
        return make_custom_id(self.sid, len(self.turns), "h" if self.human is None else "a")

    def usage(self, mode: str) -> dict[str, Any]:
        """The record's ``usage`` (like the live runner's)."""
        out: dict[str, Any] = {
            "prompt_tokens": sum(v[0] for v in self.by_role.values()),
            "completion_tokens": sum(v[1] for v in self.by_role.values()),
            "calls": self.calls,
        }
        if mode == "v2":
            out["by_role"] = {ROLE_NAMES[k]: {"prompt_tokens": v[0], "completion_tokens": v[1]}
                              for k, v in self.by_role.items()}
        return out


class Replayer:
    """Applies result records to dialogues (the same code collects and resumes)."""

    def __init__(self, config: RunConfig, max_attempts: int) -> None:
        self.config = config
        self.max_attempts = max_attempts

    def apply(self, d: Dialogue, rec: dict[str, Any]) -> bool:
        """Apply one outcome; ``False`` when it is not the request ``d`` waits for."""
        if "revive" in rec:
            self.revive(d)
            return True
        if d.final is not None or rec.get("cid") != d.expected(self.config.mode):
            return False
        role = rec["cid"].rsplit(":", 1)[1]
        if not rec.get("ok"):
            d.attempts += 1
            if not rec.get("retryable"):
                self._fail(d, rec.get("reason") or "failed", rec.get("error", ""), False)
            elif d.attempts >= self.max_attempts:
                self._fail(d, "retries_exhausted",
                           f"gave up after {d.attempts} batch attempts: {rec.get('error', '')}", True)
            return True
        d.attempts = 0
        d.calls += 1
        acc = d.by_role.setdefault(role, [0, 0])
        acc[0] += int(rec.get("p") or 0)
        acc[1] += int(rec.get("c") or 0)
        d.finish_reasons.append(rec.get("finish"))
        self._advance(d, role, rec.get("text") or "")
        return True

    def _advance(self, d: Dialogue, role: str, text: str) -> None:
        cfg = self.config
        if role == "t":
            d.transcript = text
            self._judge(d, evaluate_v1(text, min_turns=cfg.min_turns))
        elif role == "h":
            human = text.strip()
            if not human:
                d.termination = "human_done"
                self._end_v2(d)
            else:
                d.human = human
        else:
            d.turns.append((d.human or "", text.strip()))
            d.human = None
            if len(d.turns) >= cfg.max_turns:
                d.termination = "max_turns"
                self._end_v2(d)

    def _end_v2(self, d: Dialogue) -> None:
        d.transcript = tpl.v2_transcript(d.turns)
        self._judge(d, evaluate_turns(d.turns, min_turns=self.config.min_turns))

    @staticmethod
    def _judge(d: Dialogue, parsed: ParseResult) -> None:
        d.parsed = parsed
        if parsed.ok:
            d.final = "done"
        else:
            d.final, d.reason, d.error, d.retryable = "rejected", parsed.reason or "rejected", parsed.detail, False

    @staticmethod
    def _fail(d: Dialogue, reason: str, error: str, retryable: bool) -> None:
        d.final, d.reason, d.error, d.retryable = "failed", reason, error, retryable

    @staticmethod
    def revive(d: Dialogue) -> None:
        """Make a failed or rejected dialogue live again (a rejected one starts afresh)."""
        if d.final == "rejected":
            d.turns, d.human, d.transcript = [], None, ""
            d.termination = "completed"
        d.final, d.reason, d.error, d.attempts = None, "", "", 0
        d.gen += 1


# ---------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------
def request_body(config: RunConfig, messages: list[dict[str, str]],
                 stop: list[str] | None = None) -> dict[str, Any]:
    """A chat-completions body exactly as the live runner sends it."""
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    if stop:
        body["stop"] = stop
    return body


def next_request(config: RunConfig, d: Dialogue) -> tuple[str, dict[str, Any]]:
    """The custom id and body of the request ``d`` needs next."""
    cid = d.expected(config.mode)
    if config.mode == "v1":
        return cid, request_body(config, [{"role": "user", "content": config.template.render(d.seed.text)}])
    if d.human is None:
        prompt = tpl.v2_human_prompt(config.template, d.seed.text, d.turns)
        return cid, request_body(config, [{"role": "user", "content": prompt}], tpl.V2_HUMAN_STOP)
    return cid, request_body(config, tpl.v2_ai_messages(d.turns, d.human))


def request_line(custom_id: str, body: dict[str, Any]) -> bytes:
    """One input-file line (with its newline)."""
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def shard_lines(lines: Iterable[bytes], max_requests: int = MAX_REQUESTS,
                max_bytes: int = MAX_BYTES) -> Iterator[list[bytes]]:
    """Split input lines into files within both limits (a single oversized line gets its own)."""
    shard: list[bytes] = []
    size = 0
    for line in lines:
        if shard and (len(shard) >= max_requests or size + len(line) > max_bytes):
            yield shard
            shard, size = [], 0
        shard.append(line)
        size += len(line)
    if shard:
        yield shard


def estimate_request_tokens(body: dict[str, Any], mode: str) -> int:
    """Input estimate plus the expected output (``max_tokens``, else a typical length)."""
    prompt = sum(estimate_tokens(m.get("content") or "") for m in body.get("messages", []))
    out = body.get("max_tokens") or (512 if mode == "v1" else 160)
    return prompt + int(out)


def project_remaining(config: RunConfig, dialogues: Iterable[Dialogue]) -> tuple[int, int, int]:
    """A rough projection of what the live dialogues still need: (requests, input, output tokens).

    v1: one transcript call each. v2: every remaining human and AI call up to ``max_turns``,
    each prompt growing by one exchange a turn (outputs guessed as ``max_tokens`` or 160).
    Early endings make the real figure lower.
    """
    requests = tok_in = tok_out = 0
    out = config.max_tokens or (512 if config.mode == "v1" else 160)
    for d in dialogues:
        if config.mode == "v1":
            requests += 1
            tok_in += estimate_tokens(config.template.render(d.seed.text))
            tok_out += out
            continue
        base = estimate_tokens(config.template.render(d.seed.text))
        so_far = sum(estimate_tokens(h) + estimate_tokens(a) for h, a in d.turns)
        for turn in range(len(d.turns), config.max_turns):
            history = so_far + (turn - len(d.turns)) * 2 * out
            if not (turn == len(d.turns) and d.human is not None):
                requests += 1
                tok_in += base + history
                tok_out += out
            requests += 1
            tok_in += history + out
            tok_out += out
    return requests, tok_in, tok_out


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
# Provider error codes on a row that are worth another try in the next step.
RETRYABLE_CODES = {"batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error",
                   "timeout"}


def parse_result_line(raw: bytes) -> dict[str, Any]:
    """One output/error-file line as an outcome record, or ``{"bad": why}``.

    A success: ``{"cid", "ok": True, "text", "finish", "p", "c"}``; a failure:
    ``{"cid", "ok": False, "reason", "retryable", "error"}``.
    """
    try:
        line = json.loads(raw)
        if not isinstance(line, dict):
            raise ValueError("not an object")
    except ValueError:
        return {"bad": "unparsable result line"}
    cid = line.get("custom_id")
    if not isinstance(cid, str):
        return {"bad": "result line without a custom_id"}
    response = line.get("response") or {}
    error = line.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    if error or status != 200:
        return _failure(cid, status, error, response)
    try:
        body = response["body"]
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if not isinstance(text, str):
            raise TypeError("content is not text")
        usage = body.get("usage") or {}
        return {"cid": cid, "ok": True, "text": text, "finish": choice.get("finish_reason"),
                "p": int(usage.get("prompt_tokens") or 0), "c": int(usage.get("completion_tokens") or 0)}
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return {"cid": cid, "ok": False, "reason": "malformed_response", "retryable": True,
                "error": f"malformed response body: {type(exc).__name__}: {exc}"[:300]}


def _failure(cid: str, status: Any, error: Any, response: Any) -> dict[str, Any]:
    if isinstance(error, dict) and error:
        code = str(error.get("code") or "error")
        message = str(error.get("message") or code)
        return {"cid": cid, "ok": False, "reason": code, "retryable": code in RETRYABLE_CODES,
                "error": " ".join(message.split())[:300]}
    body = (response or {}).get("body") if isinstance(response, dict) else None
    err = (body or {}).get("error") if isinstance(body, dict) else None
    detail = (err or {}).get("message") if isinstance(err, dict) else None
    http = int(status) if isinstance(status, int) else 0
    retryable = http in (408, 409, 429) or http >= 500 or http == 0
    return {"cid": cid, "ok": False, "reason": f"http_{http}", "retryable": retryable,
            "error": " ".join(str(detail or f"HTTP {http}").split())[:300]}
