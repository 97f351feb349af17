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


def test_hf_renders_with_the_tokenizers_own_template(tiny: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A checkpoint whose tokenizer has a chat template: ``auto`` renders with it, exactly as
    ``apply_chat_template`` does; Baize's format when chosen."""
    import json
    import shutil

    from tiny_chat_ggufs import CHATML_TEMPLATE

    from baize_tui.chat_core import ChatController, ChatSettings

    model = tmp_path / "chatml-llama"
    shutil.copytree(tiny["llama"], model)
    config_path = model / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    config["chat_template"] = CHATML_TEMPLATE
    config_path.write_text(json.dumps(config))
    engine = open_engine(f"hf:{model}", config={})
    try:
        controller = ChatController(engine, None)
        settings = ChatSettings(model="m", system_prompt="Be brief.")
        assert controller.resolved(settings).name == "template"
        session = controller.session(settings)
        session.turns = [("Hi", "Hello there!")]
        prompt = session.prepare("How are you").prompt
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello there!"},
                    {"role": "user", "content": "How are you"}]
        assert prompt == engine.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
        turn = session.send("Again", threading.Event(),
                            params=SamplingParams(max_new_tokens=4, seed=1))
        turn.run()
        assert turn.stats.finish_reason in ("stop", "length")
        baize = controller.session(ChatSettings(model="m", format="baize"))
        assert baize.prepare("Hi").prompt == render(None, [], "Hi")
    finally:
        engine.close()
