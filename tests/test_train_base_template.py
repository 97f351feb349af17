"""Training's ``--template base``: the base model's own chat template, AI-only loss, the record
``baize-convert merge`` reads, and the errors for a base without (or with an unusable) template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baize_tui.errors import UserError
from baize_tui.train.base_template import BaseTemplate, resolve_template
from baize_tui.train.data import (
    IGNORE_INDEX,
    Dialogue,
    encode_all,
    encode_dialogue,
    load_tokenizer,
    render_dialogue,
)

TURNS = [
    ("Hi there", "Hello! How are you?"),
    ("What is 2 + 2?", "2 + 2 = 4.\n\n```python\nprint(2 + 2)\n```"),
    ("Thanks, bye.", "You're welcome. 再见!"),
]


@pytest.fixture(scope="module")
def chatml_tokenizer(family: dict[str, Path]):
    """The SmolLM-shaped base: byte-level BPE with a ChatML chat template."""
    tokenizer = load_tokenizer(str(family["smollm"]))
    assert "<|im_start|>" in tokenizer.chat_template
    return tokenizer


def _messages(system: str | None, turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def _trained_text(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded text of each maximal run of trained tokens."""
    runs: list[list[int]] = []
    prev = False
    for tok, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == tok
            if not prev:
                runs.append([])
            runs[-1].append(tok)
        prev = label != IGNORE_INDEX
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_base_renders_the_tokenizers_template_and_trains_only_the_replies(
        chatml_tokenizer, system) -> None:
    template = resolve_template("base", chatml_tokenizer, "smollm")
    assert template == "base" and isinstance(template, BaseTemplate)
    dialogue = Dialogue(TURNS, system=system)
    rendered = render_dialogue(dialogue, template)
    # The reference: transformers' own rendering of the same chat template.
    reference = chatml_tokenizer.apply_chat_template(_messages(system, TURNS), tokenize=False)
    assert rendered.text == reference
    enc = encode_dialogue(chatml_tokenizer, dialogue, template=template, cutoff_len=512,
                          loss="ai")
    assert enc.input_ids == chatml_tokenizer(rendered.text)["input_ids"]
    # Each reply is trained together with the template's closing <|im_end|>, and nothing else.
    runs = _trained_text(chatml_tokenizer, enc.input_ids, enc.labels)
    assert [r.strip() for r in runs] == [f"{a}<|im_end|>" for _, a in TURNS]
    trained = "".join(runs)
    for user, _ in TURNS:
        assert user not in trained
    assert "<|im_start|>" not in trained and "assistant" not in trained
    if system:
        assert system not in trained


def test_base_cuts_whole_turns_and_batches_like_the_other_templates(chatml_tokenizer) -> None:
    template = resolve_template("base", chatml_tokenizer, "smollm")
    dialogue = Dialogue(TURNS)
    one_turn = len(chatml_tokenizer(render_dialogue(Dialogue(TURNS[:1]), template).text)
                   ["input_ids"])
    enc = encode_dialogue(chatml_tokenizer, dialogue, template=template, cutoff_len=one_turn + 2,
                          loss="ai")
    assert enc.kept_turns == 1 and not enc.hard_cut
    runs = _trained_text(chatml_tokenizer, enc.input_ids, enc.labels)
    assert [r.strip() for r in runs] == [f"{TURNS[0][1]}<|im_end|>"]
    examples, stats = encode_all(chatml_tokenizer, [dialogue, Dialogue(TURNS[:2])],
                                 template=template, cutoff_len=512, loss="ai")
    assert stats.examples == 2 and stats.truncated == 0
    assert examples[0]["input_ids"] == encode_dialogue(
        chatml_tokenizer, dialogue, template=template, cutoff_len=512).input_ids


def test_a_template_with_bos_is_not_given_bos_twice(family) -> None:
    """The Llama-3-shaped base's template writes bos_token; its tokenizer adds BOS too."""
    tokenizer = load_tokenizer(str(family["llama3"]))
    template = resolve_template("base", tokenizer, "llama3")
    ids = encode_dialogue(tokenizer, Dialogue(TURNS[:1]), template=template).input_ids
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    reference = tokenizer.apply_chat_template(_messages(None, TURNS[:1]), tokenize=True)
    if hasattr(reference, "keys"):  # newer transformers return a BatchEncoding
        reference = reference["input_ids"]
    assert ids == list(reference)


def test_base_without_a_chat_template_is_one_clear_error(family) -> None:
    tokenizer = load_tokenizer(str(family["mistral"]))
    assert not tokenizer.chat_template
    with pytest.raises(UserError, match="no chat template.*--template chat"):
        resolve_template("base", tokenizer, str(family["mistral"]))
    assert resolve_template("chat", tokenizer, "x") == "chat"  # the others need none


def test_a_template_that_rewrites_earlier_turns_is_refused(chatml_tokenizer) -> None:
    rewriting = ("{% for m in messages %}{{ m['role'] }}{{ loop.length }}: {{ m['content'] }}\n"
                 "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    template = BaseTemplate(rewriting, label="rewriting")
    with pytest.raises(UserError, match="does not only append turns.*--template chat"):
        render_dialogue(Dialogue(TURNS), template)
    raising = BaseTemplate("{{ raise_exception('no system messages') }}", label="raising")
    with pytest.raises(UserError, match="no system messages.*--template chat"):
        render_dialogue(Dialogue(TURNS, system="S"), raising)


def test_preview_with_template_base(family, tmp_path, capsys) -> None:
    """`train preview --template base` shows the ChatML rendering with the replies trained."""
    from baize_tui.cli import main

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": _messages(None, TURNS[:1])}) + "\n")
    code = main(["train", "preview", "--base", str(family["smollm"]), "--data", str(data),
                 "--template", "base", "--plain"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "<|im_start|>user" in out and "--template base" in out
    code = main(["train", "preview", "--base", str(family["mistral"]), "--data", str(data),
                 "--template", "base", "--plain"])
    err = capsys.readouterr().err
    assert code == 2 and "no chat template" in err and "Traceback" not in err


def test_train_run_base_records_it_and_merge_embeds_the_bases_template(family, tmp_path,
                                                                       monkeypatch) -> None:
    """train run --template base on the ChatML (SmolLM-shaped) base: the record says base,
    and baize-convert merge reads it and embeds the base tokenizer's own template."""
    from transformers import AutoTokenizer

    from baize_convert.cli import main as convert_main
    from baize_convert.inspect_gguf import open_header
    from baize_tui.cli import main
    from baize_tui.train.runs import Run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": _messages(None, TURNS[:k])}) + "\n"
                            for k in (1, 2, 3) * 4))
    out = tmp_path / "run"
    code = main(["train", "run", "--base", str(family["smollm"]), "--data", str(data),
                 "--out", str(out), "--max-steps", "1", "--batch-size", "2",
                 "--micro-batch-size", "2", "--cutoff-len", "128", "--val-size", "2",
                 "--template", "base", "--wait"])
    run = Run(out)
    assert code == 0, run.log_file.read_text()[-3000:]
    record = json.loads((run.adapter_dir / "baize_train.json").read_text())
    assert record == {"template": "base"}
    gguf = tmp_path / "merged.gguf"
    assert convert_main(["merge", "--lora", str(run.adapter_dir), "-o", str(gguf)]) == 0
    template = open_header(gguf).get("tokenizer.chat_template")
    assert template == AutoTokenizer.from_pretrained(family["smollm"]).chat_template
