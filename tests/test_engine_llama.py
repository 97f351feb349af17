"""The llama.cpp engine on the tiny GGUF our converter writes: real llama.cpp, no mocks."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import pytest

from baize_tui.chat import ChatSession
from baize_tui.engines import SamplingParams, open_engine
from baize_tui.engines.llama import LlamaEngine, physical_cores
from baize_tui.errors import OperationFailed, UserError
from baize_tui.prompt import STOP_STRINGS, ContextOverflow, render


@pytest.fixture(scope="module")
def engine(tiny_gguf: Path) -> LlamaEngine:
    eng = LlamaEngine(tiny_gguf)
    yield eng
    eng.close()


def test_load_facts(engine: LlamaEngine, tiny_gguf: Path) -> None:
    assert engine.n_ctx == 512  # the tiny model's trained context, under the default cap
    assert 1 <= engine.n_threads <= (os.cpu_count() or 1)
    assert engine.n_threads == physical_cores()
    assert tiny_gguf.name in engine.describe() and "512" in engine.describe()
    prompt = render(None, [], "Hi")
    ids = engine.tokenize(prompt)
    assert ids[0] == 1 and engine.count_tokens(prompt) == len(ids)  # BOS (id 1) first


def test_max_ctx_setting_caps_the_context(tiny_gguf: Path) -> None:
    capped = open_engine(str(tiny_gguf), config={"model": {"max_ctx": 384}})
    try:
        assert isinstance(capped, LlamaEngine) and capped.n_ctx == 384
    finally:
        capped.close()


def test_streams_and_respects_max_new_tokens(engine: LlamaEngine) -> None:
    prompt = render(None, [], "Tell me a story.")
    gen = engine.stream(prompt, SamplingParams(max_new_tokens=7, seed=11))
    pieces = list(gen)
    stats = gen.stats
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert stats.prompt_tokens == engine.count_tokens(prompt)
    assert 1 <= stats.completion_tokens <= 7
    assert stats.finish_reason in ("length", "stop")
    if stats.finish_reason == "length":
        assert stats.completion_tokens == 7
    assert stats.ttft_s is not None and stats.ttft_s >= 0
    assert stats.total_s is not None and stats.total_s >= stats.ttft_s
    assert stats.seed == 11


def test_same_seed_same_text(engine: LlamaEngine) -> None:
    prompt = render(None, [], "Seeds?")
    params = SamplingParams(max_new_tokens=12, seed=1234)
    first = "".join(engine.stream(prompt, params))
    engine.stream(render(None, [], "Something else entirely"), params).close()
    second = "".join(engine.stream(prompt, params))  # now served partly from the KV cache
    assert first == second
    others = {"".join(engine.stream(prompt, params.with_(seed=s))) for s in (1, 2, 3)}
    assert len(others | {first}) > 1  # different seeds do sample differently
    # Without a seed each turn draws a fresh one (llama-cpp-python alone would reuse one).
    a, b = engine.stream(prompt, SamplingParams(max_new_tokens=2)), None
    list(a)
    b = engine.stream(prompt, SamplingParams(max_new_tokens=2))
    list(b)
    assert a.stats.seed != b.stats.seed


def test_cancel_stops_within_one_token(engine: LlamaEngine) -> None:
    prompt = render(None, [], "Go on forever")
    cancel = threading.Event()
    gen = engine.stream(prompt, SamplingParams(max_new_tokens=200, seed=5), cancel)
    got: list[str] = []
    first_seen, resume = threading.Event(), threading.Event()
    at_cancel: list[int] = []

    def consume() -> None:  # the UI pattern: generation in a thread, cancel from another
        for piece in gen:
            got.append(piece)
            if len(got) == 1:
                first_seen.set()
                resume.wait(10)

    worker = threading.Thread(target=consume)
    worker.start()
    assert first_seen.wait(30)
    at_cancel.append(gen.stats.completion_tokens)
    cancel.set()
    resume.set()
    worker.join(30)
    assert not worker.is_alive()
    assert gen.stats.finish_reason == "cancelled"
    assert gen.stats.completion_tokens <= at_cancel[0] + 1
    assert len(got) <= 2
    # The engine is free again and the next turn works.
    assert "".join(engine.stream(prompt, SamplingParams(max_new_tokens=3, seed=1))) is not None


def test_cancel_before_start_evaluates_nothing(engine: LlamaEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    gen = engine.stream(render(None, [], "x"), SamplingParams(), cancel)
    assert list(gen) == []
    assert gen.stats.finish_reason == "cancelled" and gen.stats.evaluated_tokens in (None, 0)


def test_second_turn_evaluates_only_new_tokens(engine: LlamaEngine) -> None:
    session = ChatSession(engine, params=SamplingParams(max_new_tokens=6, seed=3))
    first = session.send("What is the first question?")
    first.run()
    prompt1_tokens = first.stats.prompt_tokens
    second = session.send("And a second, longer question to follow it up?")
    reply = second.run()
    assert reply == second.text
    prompt2 = second.prepared.prompt
    assert prompt2.startswith(first.prepared.prompt)
    new_tokens = second.stats.prompt_tokens - prompt1_tokens
    evaluated = second.stats.evaluated_tokens
    # Only the new part (previous reply, new message) and the sampled tokens are decoded;
    # a couple of tokens of slack for re-tokenisation where the old prompt ended.
    assert evaluated <= new_tokens + second.stats.completion_tokens + 3
    assert evaluated < second.stats.prompt_tokens / 2
    # A fresh engine has to decode the whole prompt.
    fresh = LlamaEngine(engine.path)
    try:
        gen = fresh.stream(prompt2, SamplingParams(max_new_tokens=1, seed=3))
        list(gen)
        assert gen.stats.evaluated_tokens >= second.stats.prompt_tokens
    finally:
        fresh.close()


def test_prompt_longer_than_context(engine: LlamaEngine) -> None:
    long = render(None, [], "word " * 600)
    with pytest.raises(ContextOverflow):
        list(engine.stream(long, SamplingParams(max_new_tokens=4)))


def test_stop_strings_end_generation(engine: LlamaEngine) -> None:
    """Whatever the random model writes, no stop string ever reaches the caller."""
    for seed in range(4):
        gen = engine.stream(render(None, [], "Hi"), SamplingParams(max_new_tokens=40, seed=seed),
                            stop=STOP_STRINGS)
        text = "".join(gen)
        assert not any(s in text for s in STOP_STRINGS)


def test_load_logs_go_to_logging_and_fds_stay_put(
    tiny_gguf: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp's load chatter reaches Python logging, never the terminal, and fd 1/2 are
    never pointed at /dev/null while loading (what ``verbose=False`` would do)."""
    seen: list[str] = []

    class FdProbe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if sys.platform.startswith("linux"):
                seen.append(os.readlink("/proc/self/fd/2"))
            else:  # pragma: no cover
                seen.append("?")

    logger = logging.getLogger("baize_tui.llama_cpp")
    probe = FdProbe(level=logging.DEBUG)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(probe)
    try:
        capfd.readouterr()
        eng = LlamaEngine(tiny_gguf)
        eng.close()
        out, err = capfd.readouterr()
        assert seen, "llama.cpp's load logs did not reach Python logging"
        assert out == "" and err == ""
        assert os.devnull not in seen
        if sys.platform.startswith("linux"):
            # The trap itself: llama-cpp-python's verbose=False silences the whole process.
            import llama_cpp

            seen.clear()
            raw = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=64, verbose=False)
            raw.close()
            assert os.devnull in seen
    finally:
        logger.removeHandler(probe)
        logger.setLevel(old_level)


# -- bad model files ---------------------------------------------------------------------------


def write_gguf(path: Path, arch: str, kind: str = "model") -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(kind)
    writer.add_context_length(128)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_bad_model_files(tmp_path: Path, tiny_gguf: Path) -> None:
    with pytest.raises(UserError, match="not found") as info:
        open_engine(str(tmp_path / "missing.gguf"), config={})
    assert info.value.exit_code == 2
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a GGUF file"):
        open_engine(str(text), config={})
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="baize-convert merge"):
        LlamaEngine(weights)
    with pytest.raises(UserError, match="architecture 'gpt2'"):
        LlamaEngine(write_gguf(tmp_path / "gpt2.gguf", "gpt2"))
    with pytest.raises(UserError, match="LoRA adapter"):
        LlamaEngine(write_gguf(tmp_path / "adapter.gguf", "llama", "adapter"))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:5000])
    with pytest.raises(OperationFailed) as info:
        LlamaEngine(truncated)
    assert info.value.exit_code == 1 and "truncated.gguf" in str(info.value)
    with pytest.raises(UserError, match="directory"):
        open_engine(str(tmp_path), config={})
    with pytest.raises(UserError, match="no such model"):
        open_engine("nonsense", config={})


def test_gguf_chat_template_renders_the_baize_prompt(engine: LlamaEngine) -> None:
    """The converter stores prompt.chat_template(); llama-cpp-python's own Jinja formatter
    renders it to exactly our prompt (so OpenAI-style servers on the GGUF agree with us)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from baize_tui.prompt import chat_template, to_messages

    template = engine.llama.metadata.get("tokenizer.chat_template")
    assert template == chat_template()
    turns = [("What is 2+2?", "4."), ("Sure?", "Yes.")]
    formatted = Jinja2ChatFormatter(template=template, eos_token="</s>", bos_token="<s>")(
        messages=to_messages(None, turns, "Thanks"))
    assert formatted.prompt == render(None, turns, "Thanks")


def test_a_dropped_engine_frees_its_model_without_a_gc_cycle(tiny_gguf: Path) -> None:
    import gc
    import weakref

    gc.disable()
    try:
        engine = LlamaEngine(tiny_gguf)
        model = weakref.ref(engine.llama)
        del engine
        assert model() is None  # freed by reference counting alone
    finally:
        gc.enable()
