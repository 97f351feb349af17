"""Chat formats end to end: real llama.cpp on tiny GGUFs with ChatML, Llama-3 and Mistral
templates (tests/tiny_chat_ggufs.py), the sandboxed template renderer, the controller shared
with ``ask``, and ``ask`` itself in a subprocess."""

from __future__ import annotations

import threading
from pathlib import Path

import gguf
import jinja2
import pytest
from test_ask import ask, one_line_error
from tiny_chat_ggufs import FORMATS, build_chat_gguf

from baize_tui.chat_core import ChatController, ChatSettings
from baize_tui.chat_format import BaizeFormat, TemplateError, TemplateFormat, resolve_format
from baize_tui.config import set_value
from baize_tui.engines.llama import LlamaEngine
from baize_tui.history import HistoryStore
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT

TEMPLATED = ("chatml", "llama3", "mistral")
END_TOKEN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>"}
HISTORY = [("Hi", "Hello there!"), ("How are you", "What is the world")]


def _field(path: Path, key: str) -> object:
    reader = gguf.GGUFReader(str(path))
    return reader.fields[key].contents()


def _reference(path: Path, messages: list[dict[str, str]]) -> str:
    """The template as the file holds it, rendered by plain Jinja2 (not our sandbox)."""
    tokens = _field(path, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise AssertionError(message)

    env.globals["raise_exception"] = raise_exception
    template = env.from_string(str(_field(path, "tokenizer.chat_template")))
    bos = tokens[int(str(_field(path, "tokenizer.ggml.bos_token_id")))]
    eos = tokens[int(str(_field(path, "tokenizer.ggml.eos_token_id")))]
    return template.render(messages=messages, add_generation_prompt=True, bos_token=bos,
                           eos_token=eos)


@pytest.fixture
def engines(chat_ggufs: dict[str, Path]):
    opened: dict[str, LlamaEngine] = {}

    def get(name: str) -> LlamaEngine:
        if name not in opened:
            opened[name] = LlamaEngine(chat_ggufs[name], n_threads=1)
        return opened[name]

    yield get
    for engine in opened.values():
        engine.close()


@pytest.mark.parametrize("name", TEMPLATED)
def test_rendered_prompt_equals_reference_render(name: str, chat_ggufs: dict[str, Path],
                                                 engines) -> None:
    engine = engines(name)
    settings = ChatSettings(model=str(chat_ggufs[name]), system_prompt="Be brief.")
    controller = ChatController(engine, None)
    assert controller.resolved(settings).name == "template"
    session = controller.session(settings)
    session.turns = [*HISTORY]
    prepared = session.prepare("Tell me about cats")
    messages = [{"role": "system", "content": "Be brief."}]
    for user, assistant in HISTORY:
        messages += [{"role": "user", "content": user}, {"role": "assistant",
                                                          "content": assistant}]
    messages.append({"role": "user", "content": "Tell me about cats"})
    assert prepared.prompt == _reference(chat_ggufs[name], messages)
    # Other formats default to no system prompt: no system message at all.
    bare = controller.session(ChatSettings(model="m")).prepare("Hi").prompt
    assert bare == _reference(chat_ggufs[name], [{"role": "user", "content": "Hi"}])
    assert BAIZE_SYSTEM_PROMPT not in bare


@pytest.mark.parametrize("name", TEMPLATED)
def test_special_tokens_are_single_ids_and_end_the_reply(name: str, engines) -> None:
    engine = engines(name)
    tokens = [str(t) for t in _field(engine.path, "tokenizer.ggml.tokens")]  # type: ignore[union-attr]
    fmt = resolve_format("auto", engine.chat_info()).format
    assert END_TOKEN[name] in fmt.stop_strings
    for special in fmt.stop_strings:
        assert engine.llama.tokenize(special.encode(), add_bos=False, special=True) == [
            tokens.index(special)]
    # The prompt starts with exactly one BOS, whether or not the template writes it.
    prompt_ids = engine.tokenize(fmt.render(None, [], "Hello"))
    assert prompt_ids.count(engine.llama.token_bos()) <= 1

    controller = ChatController(engine, None)
    turn = controller.send(ChatSettings(model="m"), "Hello", threading.Event())
    text = turn.run()
    # The designed reply is "Hello there!" and then the format's end-of-turn token.
    assert text == "Hello there!"
    assert turn.stats.finish_reason == "stop"
    assert turn.stats.completion_tokens == 3


def test_kv_cache_is_reused_across_eight_turns(engines) -> None:
    engine = engines("chatml")
    controller = ChatController(engine, HistoryStore())
    settings = ChatSettings(model="m")
    cancel = threading.Event()
    turn = controller.send(settings, "Hello", cancel)
    turn.run()
    conversation = controller.history.get_message(turn.user_message_id).conversation_id
    previous_prompt = turn.stats.prompt_tokens
    for n in range(7):
        turn = controller.send(settings, f"Tell me about cats {n}", cancel,
                               conversation_id=conversation)
        assert turn.run() == "Hello there!"
        stats = turn.stats
        assert stats.kv_note is None
        assert stats.reused_tokens is not None and stats.reused_tokens >= previous_prompt
        new_tokens = stats.prompt_tokens - stats.reused_tokens
        # Only the new tokens are evaluated, plus the reply's tokens fed back (the end-of-turn
        # token, sampled last, is not).
        assert stats.evaluated_tokens == new_tokens + stats.completion_tokens
        previous_prompt = stats.prompt_tokens
    assert len(controller.history.thread(conversation)) == 16
    controller.history.close()


def test_incremental_decoding_is_exact_for_byte_tokens(tmp_path: Path) -> None:
    valid = LlamaEngine(build_chat_gguf(tmp_path / "bytes.gguf", "chatml", chain="bytes"),
                        n_threads=1)
    invalid = LlamaEngine(build_chat_gguf(tmp_path / "ff.gguf", "chatml", chain="invalid"),
                          n_threads=1)
    try:
        fmt = resolve_format("auto", valid.chat_info()).format
        prompt = fmt.render(None, [], "Hello")
        from baize_tui.engines.base import SamplingParams

        params = SamplingParams(max_new_tokens=30, seed=1)
        pieces = list(valid.stream(prompt, params))
        # Three byte tokens make one character: each is shown as soon as it is complete.
        assert pieces == ["中"] * 10
        pieces = list(invalid.stream(prompt, params.with_(max_new_tokens=7)))
        assert pieces == ["\ufffd"] * 7  # a byte that can never be valid shows at once
        gen = valid.stream(prompt, params.with_(max_new_tokens=4))
        assert "".join(gen) == "中\ufffd"  # an unfinished character at the end is kept
        assert gen.stats.finish_reason == "length"
    finally:
        valid.close()
        invalid.close()


def test_only_an_incomplete_character_is_held_back(tmp_path: Path) -> None:
    """Token by token: a character shows with the token that completes it, a byte that can
    never be valid shows as U+FFFD with its own token, and a started character cut short by
    another token becomes U+FFFD in front of that token's text (nothing waits for more)."""
    from baize_tui.engines.base import SamplingParams

    engine = LlamaEngine(build_chat_gguf(tmp_path / "mixed.gguf", "chatml", chain="mixed"),
                         n_threads=1)
    try:
        prompt = resolve_format("auto", engine.chat_info()).format.render(None, [], "Hello")
        gen = engine.stream(prompt, SamplingParams(max_new_tokens=13, seed=1))
        seen = [(piece, gen.stats.completion_tokens) for piece in gen]
        # tokens: E4 B8 AD | FF | E5 | Hello | E4 B8 AD | FF | E5 | Hello | E4
        assert seen == [("中", 3), ("\ufffd", 4), ("\ufffdHello", 6),
                        ("中", 9), ("\ufffd", 10), ("\ufffdHello", 12), ("\ufffd", 13)]
        assert gen.stats.finish_reason == "length"  # the last, unfinished byte is kept
    finally:
        engine.close()


def test_resolve_format_choices(chat_ggufs: dict[str, Path], engines) -> None:
    baize = resolve_format("auto", engines("baize").chat_info())
    assert isinstance(baize.format, BaizeFormat) and "Baize" in baize.reason
    assert baize.notice is None
    plain = resolve_format("auto", engines("plain").chat_info())
    assert isinstance(plain.format, BaizeFormat) and plain.notice
    assert "no chat template" in plain.notice
    chosen = resolve_format("baize", engines("chatml").chat_info())
    assert isinstance(chosen.format, BaizeFormat)
    with pytest.raises(Exception, match="no chat template"):
        resolve_format("template", engines("plain").chat_info())
    with pytest.raises(Exception, match="unknown chat format 'chatml'"):
        resolve_format("chatml", None)


def test_bad_templates_fail_with_one_clear_message() -> None:
    raising = TemplateFormat("{{ raise_exception('only user messages') }}", label="M")
    with pytest.raises(TemplateError, match="M refused this conversation: only user messages"):
        raising.render(None, [], "Hi")
    needs = TemplateFormat("{{ tools.names }}", label="M")
    with pytest.raises(TemplateError, match="needs a value baize-tui does not provide"):
        needs.render(None, [], "Hi")
    broken = TemplateFormat("{% for m in messages %}", label="M")
    with pytest.raises(TemplateError, match="does not parse"):
        broken.render(None, [], "Hi")
    # The sandbox refuses what a template must not do.
    unsafe = TemplateFormat("{{ messages.__class__.__mro__ }}", label="M")
    with pytest.raises(TemplateError):
        unsafe.render(None, [], "Hi")
    dated = TemplateFormat("{{ strftime_now('%Y') }}{% for m in messages %}{% if loop.first %}"
                           "{% continue %}{% endif %}{% endfor %}")
    assert dated.render(None, [], "Hi").isdigit()


def test_ask_uses_the_template_and_reports_the_cache(chat_ggufs: dict[str, Path]) -> None:
    model = str(chat_ggufs["chatml"])
    first = ask("-m", model, "--stats", "Hello")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "Hello there!\n"
    assert "format template (auto)" in first.stderr
    second = ask("-c", "--stats", "Tell me about cats")
    assert second.returncode == 0 and second.stdout == "Hello there!\n"
    shown = ask("-c", "--show-prompt", "And you")
    assert shown.stdout.startswith("<|im_start|>user\nHello<|im_end|>\n")
    assert shown.stdout.endswith("<|im_start|>user\nAnd you<|im_end|>\n<|im_start|>assistant\n")
    baize = ask("-m", model, "--format", "baize", "--show-prompt", "Hi")
    assert baize.stdout.startswith(BAIZE_SYSTEM_PROMPT) and baize.stdout.endswith("[|AI|]")
    one_line_error(ask("-m", model, "--format", "nope", "Hi"), 2, "--format", "nope")


def test_ask_honours_chat_defaults_from_config(chat_ggufs: dict[str, Path]) -> None:
    set_value("chat.format", "baize")
    set_value("chat.system_prompt", "You are terse.")
    out = ask("-m", str(chat_ggufs["chatml"]), "--show-prompt", "Hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "You are terse.\n[|Human|]Hi\n[|AI|]"
    # flags still win over the config
    out = ask("-m", str(chat_ggufs["chatml"]), "--format", "auto", "-s", "", "--show-prompt", "Hi")
    assert out.stdout == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_ask_on_a_small_context_model_uses_a_fitting_reply_budget(
        chat_ggufs: dict[str, Path]) -> None:
    out = ask("-m", str(chat_ggufs["chatml_512"]), "--stats", "Hello")
    assert out.returncode == 0, out.stderr  # the default budget of 512 is reserved at most n_ctx/4
    assert out.stdout == "Hello there!\n"


def test_template_problems_keep_the_chat(tmp_path: Path, chat_ggufs: dict[str, Path]) -> None:
    model = str(chat_ggufs["chatml"])
    assert ask("-m", model, "Hello").returncode == 0
    with HistoryStore() as store:
        conv = store.last_conversation_id()
        before = [m.text for m in store.thread(conv)]
    # A template that refuses the conversation (roles must alternate ...).
    raising = build_chat_gguf(tmp_path / "raising.gguf", "chatml", template=(
        "{% if messages|length > 1 %}{{ raise_exception('roles must alternate') }}{% endif %}"
        + FORMATS["chatml"][1]))
    one_line_error(ask("-c", "-m", str(raising), "Again"), 2, "roles must alternate",
                   "--format baize")
    # One that needs a variable nobody provides.
    needy = build_chat_gguf(tmp_path / "needy.gguf", "chatml",
                            template="{{ custom_settings.header }}" + FORMATS["chatml"][1])
    one_line_error(ask("-c", "-m", str(needy), "Again"), 2, "does not provide")
    with HistoryStore() as store:
        assert [m.text for m in store.thread(conv)] == before  # nothing lost, nothing added
    # A template that is not append-only: it numbers the messages in a header.
    rewriting = build_chat_gguf(tmp_path / "rewriting.gguf", "chatml", template=(
        "{{ '<|im_start|>system\\n' + (messages|length|string) + '<|im_end|>\\n' }}"
        + FORMATS["chatml"][1]))
    first = ask("-m", str(rewriting), "--stats", "Hello")
    assert first.returncode == 0 and "does not extend" not in first.stderr
    # The KV cache lives in one process: check it through the controller.
    engine = LlamaEngine(rewriting, n_threads=1)
    try:
        controller = ChatController(engine, None)
        session = controller.session(ChatSettings(model="m"))
        session.send("Hello", threading.Event()).run()
        turn = session.send("Hello again", threading.Event())
        assert turn.run() == "Hello there!"
        assert turn.stats.kv_note and "does not extend the previous one" in turn.stats.kv_note
        assert len(session.turns) == 2
    finally:
        engine.close()


def test_a_model_path_opens_the_app_on_it(chat_ggufs: dict[str, Path]) -> None:
    from baize_tui.cli import _model_path_as_option, build_parser

    parser = build_parser()
    model = str(chat_ggufs["chatml"])
    assert _model_path_as_option(parser, [model]) == ["-m", model]
    assert parser.parse_args(_model_path_as_option(parser, [model])).model == model
    assert _model_path_as_option(parser, ["ask", "hi"]) == ["ask", "hi"]
    assert _model_path_as_option(parser, ["nothing-here"]) == ["nothing-here"]


def test_ask_with_a_runtime_lora_adapter(chat_ggufs: dict[str, Path], tmp_path: Path) -> None:
    from tiny_chat_ggufs import build_lora_gguf

    adapter = build_lora_gguf(tmp_path / "adapter.gguf")
    model = str(chat_ggufs["chatml"])
    base = ask("-m", model, "--no-history", "Hello")
    assert base.returncode == 0 and base.stdout == "Hello there!\n"
    tuned = ask("-m", model, "--lora", str(adapter), "--no-history", "-n", "3", "Hello")
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout == "Hi Hi Hi\n"  # the adapter's designed reply: it was applied
    one_line_error(ask("-m", str(adapter), "Hello"), 2, "--lora", "adapter")
    one_line_error(ask("-m", model, "--lora", model, "Hello"), 2, "not a LoRA adapter")
