"""Closing the llama.cpp engine while a generation runs on another thread (the app's exit):
the context is never freed under llama_decode, and the generation ends as cancelled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tiny_chat_ggufs import build_chat_gguf

from baize_tui.chat_format import resolve_format
from baize_tui.engines.base import SamplingParams
from baize_tui.engines.llama import LlamaEngine
from baize_tui.engines.llama_compat import EngineClosing
from baize_tui.errors import OperationFailed


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reply that never ends on its own ("Hello there Hello there …"), 4k context."""
    return build_chat_gguf(tmp_path_factory.mktemp("close") / "text.gguf", "chatml",
                           chain="text", n_ctx=4096)


def _prompt(engine: LlamaEngine, message: str = "Hello") -> str:
    return resolve_format("auto", engine.chat_info()).format.render(None, [], message)


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _generate_in_thread(engine: LlamaEngine, prompt: str, n: int) -> tuple[threading.Thread,
                                                                             dict]:
    result: dict = {"pieces": 0}
    gen = engine.stream(prompt, SamplingParams(max_new_tokens=n, seed=1))
    result["gen"] = gen

    def work() -> None:
        try:
            for _ in gen:
                result["pieces"] += 1
        except BaseException as exc:  # reported to the test, not lost in the thread
            result["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, result


def test_close_during_the_token_loop_waits_for_the_step_then_frees(text_model: Path) -> None:
    engine = LlamaEngine(text_model, n_threads=1)
    thread, result = _generate_in_thread(engine, _prompt(engine), 3000)
    _wait_for(lambda: result["pieces"] >= 5)
    engine.close()  # from another thread, mid-generation: returns once the step is done
    assert engine._llm is None
    thread.join(60)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    stats = result["gen"].stats
    assert stats.finish_reason == "cancelled"
    assert 5 <= stats.completion_tokens < 3000


def test_close_during_a_long_prompt_stops_between_batches(text_model: Path) -> None:
    engine = LlamaEngine(text_model, n_threads=1)
    try:
        llm = engine.llama
        batch = llm.n_batch
        tokens = engine.tokenize(_prompt(engine, "Hello there " * 600))
        assert len(tokens) > 2 * batch
        # Deterministic: with closing already signalled, one batch is evaluated, then it stops.
        engine._closing.set()
        before = engine.evaluated_total
        with pytest.raises(EngineClosing):
            llm.eval(tokens)
        assert engine.evaluated_total - before == batch
        engine._closing.clear()
        # And through a generation on another thread, closed while the prompt evaluates.
        thread, result = _generate_in_thread(engine, _prompt(engine, "Hello there " * 600), 50)
        _wait_for(lambda: engine.evaluated_total > before + batch)
        engine.close()
        thread.join(60)
        assert not thread.is_alive() and "error" not in result, result.get("error")
        assert result["gen"].stats.finish_reason == "cancelled"
    finally:
        engine.close()


def test_a_generation_left_open_does_not_block_close_and_ends_cleanly(text_model: Path) -> None:
    engine = LlamaEngine(text_model, n_threads=1)
    prompt = _prompt(engine)
    gen = engine.stream(prompt, SamplingParams(max_new_tokens=100, seed=1))
    assert next(gen)  # suspended between tokens, holding the engine's generation lock
    started = time.monotonic()
    engine.close()
    assert time.monotonic() - started < 5  # nothing was decoding: no wait
    assert list(gen) == []  # resumed after close: ends without touching the freed model
    assert gen.stats.finish_reason == "cancelled"
    with pytest.raises(OperationFailed, match="closed"):
        next(iter(engine.stream(prompt, SamplingParams(max_new_tokens=5))))
