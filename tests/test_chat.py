"""ChatSession: history + fitting + engine + stop filter for one turn (tiny GGUF, real SQLite)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from baize_tui.chat import ChatSession
from baize_tui.engines import SamplingParams
from baize_tui.engines.llama import LlamaEngine
from baize_tui.history import HistoryStore
from baize_tui.prompt import ContextOverflow, render


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> LlamaEngine:
    eng = LlamaEngine(tiny_gguf)
    yield eng
    eng.close()


def test_user_message_is_saved_before_generation(engine: LlamaEngine) -> None:
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, params=SamplingParams(max_new_tokens=6, seed=2))
        turn = session.send("First!")
        # Saved already, before a single token was generated.
        assert [m.role for m in store.thread(session.conversation_id)] == ["user"]
        pieces = []
        for piece in turn:
            if not pieces:  # mid-stream: the reply row exists, unfinished
                mid = store.thread(session.conversation_id)
                assert [m.role for m in mid] == ["user", "assistant"]
                assert not mid[1].complete and mid[1].finish_reason is None
            pieces.append(piece)
        thread = store.thread(session.conversation_id)
        reply = thread[-1]
        assert reply.text == turn.text == "".join(pieces).strip()
        assert reply.finish_reason == turn.stats.finish_reason and reply.complete
        assert reply.completion_tokens == turn.stats.completion_tokens
        assert reply.prompt_tokens == turn.stats.prompt_tokens
        conv = store.get_conversation(session.conversation_id)
        assert conv.model == engine.spec and conv.params["seed"] == 2


def test_cancel_saves_the_partial_reply(engine: LlamaEngine) -> None:
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, params=SamplingParams(max_new_tokens=100, seed=4))
        cancel = threading.Event()
        turn = session.send("Keep talking", cancel)
        shown = ""
        for piece in turn:
            shown += piece
            if len(shown) > 3:
                cancel.set()
        assert turn.stats.finish_reason == "cancelled"
        reply = store.thread(session.conversation_id)[-1]
        assert reply.finish_reason == "cancelled" and not reply.complete
        assert reply.text == turn.text and turn.text.startswith(shown.strip()[:3])
        # Closing a turn (Esc in the UI) is a cancel too.
        turn = session.send("Again")
        next(turn, None)
        turn.close()
        assert turn.stats.finish_reason == "cancelled"
        assert store.thread(session.conversation_id)[-1].finish_reason == "cancelled"


def test_resume_rebuilds_the_prompt_from_history(engine: LlamaEngine) -> None:
    params = SamplingParams(max_new_tokens=5, seed=8)
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, system_prompt="Custom system.", params=params)
        a = session.send("one").run()
        b = session.send("two").run()
        resumed = ChatSession.resume(engine, store, session.conversation_id)
        assert resumed.system == "Custom system." and resumed.params == params
        prepared = resumed.prepare("three")
        assert prepared.prompt == render("Custom system.", [("one", a), ("two", b)], "three")
        resumed.send("three").run()
        users = [m.text for m in store.thread(session.conversation_id) if m.role == "user"]
        assert users == ["one", "two", "three"]


def test_old_turns_are_dropped_to_fit_and_overflow_saves_nothing(engine: LlamaEngine) -> None:
    turns = [(f"question {i} " * 8, f"answer {i} " * 8) for i in range(12)]
    session = ChatSession(engine, turns=list(turns), params=SamplingParams(max_new_tokens=32))
    prepared = session.prepare("latest")
    assert 0 < prepared.dropped_turns < len(turns)
    assert prepared.kept_turns == turns[prepared.dropped_turns:]
    assert prepared.prompt_tokens + 32 <= engine.n_ctx
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, params=SamplingParams(max_new_tokens=32))
        with pytest.raises(ContextOverflow):
            session.send("word " * 600)
        assert store.last_conversation_id() is None  # nothing half-saved


def test_regenerate_adds_a_sibling_reply(engine: LlamaEngine) -> None:
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, params=SamplingParams(max_new_tokens=6, seed=1))
        first = session.send("Pick a word")
        first.run()
        again = session.regenerate(params=SamplingParams(max_new_tokens=6, seed=2))
        again.run()
        assert again.user_message_id == first.user_message_id
        siblings = store.siblings(again.reply_message_id)
        assert {m.id for m in siblings} >= {first.reply_message_id, again.reply_message_id}
        thread = store.thread(session.conversation_id)
        assert [m.id for m in thread] == [first.user_message_id, again.reply_message_id]
        # The prompt now holds the new reply only.
        assert [t.assistant for t in session.turns] == [again.text]


def test_full_context_keeps_reusing_the_kv_cache(engine: LlamaEngine) -> None:
    """Once old turns must go, they go in a batch and stay out, so the prompt's start (and
    llama.cpp's cache) survives most turns instead of being re-encoded every turn."""
    session = ChatSession(engine, system_prompt="You are Baize, a helpful assistant.",
                          params=SamplingParams(max_new_tokens=8, seed=1))
    full_reencodes, drops_seen, turns_after_first_drop = 0, 0, 0
    previous_first = 0
    for i in range(24):
        turn = session.send(f"Question number {i}: tell me about item {i} and why it matters.")
        turn.run()
        if turn.dropped_turns:
            turns_after_first_drop += 1
            drops_seen += session.first_kept != previous_first
            full_reencodes += turn.stats.evaluated_tokens > turn.stats.prompt_tokens / 2
        previous_first = session.first_kept
        assert turn.stats.prompt_tokens + 8 <= engine.n_ctx
    assert turns_after_first_drop >= 8, "the conversation never filled the context"
    # A re-encode only where the window moved; without the batching every turn re-encodes.
    assert full_reencodes <= drops_seen < turns_after_first_drop / 2


def test_fit_min_start_and_headroom() -> None:
    from baize_tui.prompt import fit

    turns = [(f"q{i} " * 10, f"a{i} " * 10) for i in range(10)]

    def count(text: str) -> int:
        return len(text.split())

    base = count(fit(None, [], "new", n_ctx=10_000, max_new_tokens=0, count_tokens=count).prompt)
    plain = fit(None, turns, "new", n_ctx=350, max_new_tokens=100, count_tokens=count)
    assert plain.dropped_turns > 0 and plain.prompt_tokens <= 250
    roomy = fit(None, turns, "new", n_ctx=350, max_new_tokens=100, count_tokens=count,
                headroom=0.25)
    assert roomy.dropped_turns > plain.dropped_turns
    assert roomy.prompt_tokens <= 250 - 0.25 * (250 - base)
    later = fit(None, turns + [("x", "y")], "new", n_ctx=350, max_new_tokens=100,
                count_tokens=count, min_start=roomy.first_kept, headroom=0.25)
    assert later.first_kept == roomy.first_kept  # fits again: the window did not move
    assert later.prompt.startswith(roomy.prompt.rsplit("\n[|Human|]new", 1)[0])


def test_regenerate_without_history_after_an_empty_reply_keeps_earlier_turns(
        engine: LlamaEngine) -> None:
    session = ChatSession(engine, params=SamplingParams(max_new_tokens=6, seed=2))
    session.send("First question").run()
    assert len(session.turns) == 1
    cancelled = threading.Event()
    cancelled.set()  # stopped before the first token: an empty reply
    empty = session.send("Second question", cancelled)
    empty.run()
    assert empty.text == "" and len(session.turns) == 1
    again = session.regenerate(params=SamplingParams(max_new_tokens=6, seed=2))
    again.run()
    assert session.turns[0].user == "First question"  # the good first answer stays
    assert again.prepared.prompt.endswith("[|Human|]Second question\n[|AI|]")


def test_a_streaming_reply_is_saved_before_it_ends() -> None:
    """Through ChatSession itself (not the store alone): while a reply streams, its text so far
    is in history, marked incomplete, so a crash at that moment loses nothing shown."""
    import time

    from ui_helpers import ScriptedEngine

    engine = ScriptedEngine([f"w{i} " for i in range(400)], delay=0.01)
    with HistoryStore() as store:
        session = ChatSession(engine, history=store, params=SamplingParams(max_new_tokens=400))
        session.partial_save_s = 0.2
        turn = session.send("talk for a while")
        shown = ""
        started = time.monotonic()
        for piece in turn:
            shown += piece
            if time.monotonic() - started > 1.0:
                break
        saved = store.get_message(turn.reply_message_id)
        assert saved.text and shown.startswith(saved.text.strip()[:20])
        assert not saved.complete and saved.finish_reason is None
        turn.close()
