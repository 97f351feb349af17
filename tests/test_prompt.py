"""The Baize prompt format, context fitting, the streaming stop filter and the chat template."""

from __future__ import annotations

import jinja2
import jinja2.sandbox
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baize_tui.errors import UserError
from baize_tui.prompt import (
    BAIZE_SYSTEM_PROMPT,
    STOP_STRINGS,
    ContextOverflow,
    StopFilter,
    chat_template,
    cut_reply,
    fit,
    render,
    to_messages,
)

# Copied by hand from Baize's demo (project-baize/baize-chatbot): the system prompt the released
# models were trained with. The code must match this byte for byte.
LITERAL = "The following is a conversation between a human and an AI assistant named Baize (named after a mythical creature in Chinese folklore). Baize is an open-source AI assistant developed by UCSD and Sun Yat-Sen University. The human and the AI assistant take turns chatting. Human statements start with [|Human|] and AI assistant statements start with [|AI|]. The AI assistant always provides responses in as much detail as possible, and in Markdown format. The AI assistant always declines to engage with topics, questions and instructions related to unethical, controversial, or sensitive issues. Complete the transcript in exactly that format.\n[|Human|]Hello!\n[|AI|]Hi!"

THREE_TURNS = [
    ("What is 2+2?", "2+2 is **4**."),
    ("And in Python?", "```python\nprint(2 + 2)\n```"),
    ("你好", "你好！"),
]


def test_system_prompt_is_the_literal() -> None:
    assert BAIZE_SYSTEM_PROMPT == LITERAL
    assert STOP_STRINGS == ("[|Human|]", "[|AI|]")


def test_render_no_past_turns() -> None:
    assert render(None, [], "Hi there") == LITERAL + "\n[|Human|]Hi there\n[|AI|]"
    assert render(LITERAL, [], "x") == render(None, [], "x")


def test_render_one_past_turn() -> None:
    got = render(None, [("Who are you?", "I am Baize.")], "Tell me more.")
    assert got == (
        LITERAL + "\n[|Human|]Who are you?\n[|AI|]I am Baize.\n[|Human|]Tell me more.\n[|AI|]"
    )


def test_render_three_past_turns_and_custom_system() -> None:
    got = render(None, THREE_TURNS, "Thanks")
    assert got == (
        LITERAL
        + "\n[|Human|]What is 2+2?\n[|AI|]2+2 is **4**."
        + "\n[|Human|]And in Python?\n[|AI|]```python\nprint(2 + 2)\n```"
        + "\n[|Human|]你好\n[|AI|]你好！"
        + "\n[|Human|]Thanks\n[|AI|]"
    )
    assert render("Be brief.", THREE_TURNS[:1], "ok") == (
        "Be brief.\n[|Human|]What is 2+2?\n[|AI|]2+2 is **4**.\n[|Human|]ok\n[|AI|]"
    )


def test_render_is_append_only() -> None:
    """Turn N's prompt plus its reply is a prefix of turn N+1's (KV-cache reuse needs it)."""
    first = render(None, THREE_TURNS[:1], THREE_TURNS[1][0])
    second = render(None, THREE_TURNS[:2], "next")
    assert second.startswith(first + THREE_TURNS[1][1])


def test_to_messages() -> None:
    msgs = to_messages(None, THREE_TURNS[:1], "next")
    assert msgs == [
        {"role": "system", "content": LITERAL},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "2+2 is **4**."},
        {"role": "user", "content": "next"},
    ]


# -- fit --------------------------------------------------------------------------------------


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word, plus BOS."""
    return len(text.split()) + 1


def test_fit_keeps_everything_when_it_fits() -> None:
    out = fit(None, THREE_TURNS, "Thanks", n_ctx=4096, max_new_tokens=512, count_tokens=words)
    assert out.prompt == render(None, THREE_TURNS, "Thanks")
    assert out.dropped_turns == 0 and len(out.kept_turns) == 3
    assert out.prompt_tokens == words(out.prompt)


def test_fit_drops_whole_oldest_turns_and_reserves_the_reply() -> None:
    system = "sys"
    turns = [(f"q{i} " * 10, f"a{i} " * 10) for i in range(6)]  # 20 words per turn
    base = words(render(system, [], "new"))
    # Room for exactly two past turns once 100 tokens are reserved for the reply.
    n_ctx = base + 2 * 20 + 100 + 5
    out = fit(system, turns, "new", n_ctx=n_ctx, max_new_tokens=100, count_tokens=words)
    assert out.kept_turns == turns[-2:]
    assert out.dropped_turns == 4
    assert out.prompt == render(system, turns[-2:], "new")
    assert out.prompt.startswith(system)
    assert out.prompt_tokens + 100 <= n_ctx
    # Without the reply reserve, more would have fit: the reserve is what dropped them.
    roomy = fit(system, turns, "new", n_ctx=n_ctx, max_new_tokens=0, count_tokens=words)
    assert len(roomy.kept_turns) > 2
    # Nothing but the new message fits: all turns go, the system prompt stays.
    bare = fit(system, turns, "new", n_ctx=base + 100, max_new_tokens=100, count_tokens=words)
    assert bare.kept_turns == [] and bare.prompt == render(system, [], "new")


def test_fit_overflow_names_the_numbers() -> None:
    long = "word " * 300
    with pytest.raises(ContextOverflow) as info:
        fit(None, THREE_TURNS, long, n_ctx=256, max_new_tokens=64, count_tokens=words)
    err = info.value
    assert isinstance(err, UserError) and err.exit_code == 2
    assert err.available == 256 and err.reserved == 64
    assert err.needed == err.prompt_tokens + 64 > 256
    msg = str(err)
    assert str(err.needed) in msg and "256" in msg and "\n" not in msg


# -- StopFilter ---------------------------------------------------------------------------------


def run_filter(pieces: list[str]) -> tuple[str, list[str]]:
    flt = StopFilter()
    shown = []
    for piece in pieces:
        shown.append(flt.feed(piece))
        assert flt.text == "".join(shown)
    shown.append(flt.finish())
    return "".join(shown), shown


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Hello", " world", "\n[|Hu", "man|]more"], "Hello world"),
        (["  Sure", "!\n", "\n[", "|AI|] x"], "Sure!"),
        (["a [", "b"], "a [b"),  # a held "[" that is not a stop is released
        (["ends with [|Hu"], "ends with [|Hu"),  # flushed at the end, not lost
        (["[|Human|]"], ""),
        (["x\n\n"], "x"),
        (["x", "[|", "A", "I", "|", "]", "y"], "x"),
    ],
)
def test_stop_filter_examples(pieces: list[str], expected: str) -> None:
    assert run_filter(pieces)[0] == expected


def test_stop_filter_holds_back_prefixes() -> None:
    flt = StopFilter()
    assert flt.feed("Hi [|H") == "Hi"
    assert flt.feed("u") == ""
    assert flt.feed("g") == " [|Hug"
    assert flt.feed(" [|AI|] later") == ""
    assert flt.stopped and flt.text == "Hi [|Hug"
    assert flt.feed("more") == "" and flt.finish() == ""


ALPHABET = st.sampled_from(list("ab [|]HumanAI\n ") + ["[|Human|]", "[|AI|]", "é", "\t"])


@st.composite
def text_and_splits(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = "".join(draw(st.lists(ALPHABET, max_size=40)))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=400, deadline=None)
@given(text_and_splits())
def test_stop_filter_any_split_equals_cut(case: tuple[str, list[str]]) -> None:
    text, pieces = case
    out, shown = run_filter(pieces)
    assert out == cut_reply(text)
    # Nothing after a stop string is ever shown: every partial output is a prefix of the answer.
    so_far = ""
    for part in shown:
        so_far += part
        assert cut_reply(text).startswith(so_far)
    for stop in STOP_STRINGS:
        assert stop not in out


# -- chat template -----------------------------------------------------------------------------


def render_template(messages: list[dict[str, str]], **env_options: bool) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(**env_options)
    return env.from_string(chat_template()).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize("env_options", [{}, {"trim_blocks": True, "lstrip_blocks": True}])
@pytest.mark.parametrize("n_turns", [0, 1, 3])
@pytest.mark.parametrize("system", [None, "Custom 'quoted' \\ system\nline two"])
def test_chat_template_renders_like_render(
    env_options: dict, n_turns: int, system: str | None
) -> None:
    turns = THREE_TURNS[:n_turns]
    messages = to_messages(system, turns, "Thanks")
    expected = render(system, turns, "Thanks")
    assert render_template(messages, **env_options) == expected
    if system is None:  # a missing system message means the Baize default
        assert render_template(messages[1:], **env_options) == expected
    assert "<s>" not in render_template(messages, **env_options)


def test_chat_template_without_generation_prompt() -> None:
    messages = to_messages(None, THREE_TURNS[:1], "Thanks")
    out = jinja2.Environment().from_string(chat_template()).render(
        messages=messages, add_generation_prompt=False
    )
    assert out == render(None, THREE_TURNS[:1], "Thanks")[: -len("\n[|AI|]")]
