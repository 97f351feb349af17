"""The transformers + peft engine on the tiny LLaMA and a Baize v1 (legacy) adapter."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from baize_tui.chat import ChatSession
from baize_tui.engines import SamplingParams, open_engine
from baize_tui.errors import UserError
from baize_tui.prompt import STOP_STRINGS, render


@pytest.fixture(scope="module")
def hf_engine(tiny: dict[str, Path]):
    engine = open_engine(f"hf:{tiny['llama']}+{tiny['lora_v1']}", config={})
    yield engine
    engine.close()


def test_hf_streams_with_seed_and_stops(hf_engine) -> None:
    assert hf_engine.takes_messages is False and hf_engine.n_ctx == 512
    assert "lora" in hf_engine.describe()
    prompt = render(None, [], "Hello")
    params = SamplingParams(max_new_tokens=10, seed=3)
    first = hf_engine.stream(prompt, params, stop=STOP_STRINGS)
    text = "".join(first)
    assert first.stats.prompt_tokens == hf_engine.count_tokens(prompt)
    assert 1 <= first.stats.completion_tokens <= 10
    assert first.stats.finish_reason in ("stop", "length")
    assert "".join(hf_engine.stream(prompt, params, stop=STOP_STRINGS)) == text
    session = ChatSession(hf_engine, params=params)
    reply = session.send("Hello").run()
    assert not any(s in reply for s in STOP_STRINGS)


def test_hf_cancel(hf_engine) -> None:
    cancel = threading.Event()
    gen = hf_engine.stream(render(None, [], "Go"), SamplingParams(max_new_tokens=150, seed=1),
                           cancel)
    for _ in gen:
        cancel.set()
    assert gen.stats.finish_reason == "cancelled"
    assert gen.stats.completion_tokens < 150


def test_hf_bad_base(tmp_path: Path, tiny: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="cannot load"):
        open_engine(f"hf:{tmp_path}", config={})
