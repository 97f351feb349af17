"""Training data: reading every format, splitting, rendering, and label masks token by token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baize_tui.cli import main
from baize_tui.errors import UserError
from baize_tui.prompt import render
from baize_tui.selfchat.transcript import render_baize
from baize_tui.train.data import (
    IGNORE_INDEX,
    Collator,
    Dialogue,
    check_dropped,
    encode_all,
    encode_dialogue,
    load_dialogues,
    parse_baize_input,
    preview_dialogue,
    render_dialogue,
    resolve_val_size,
    split_dialogues,
)
from baize_tui.train.settings import TrainConfig, preset

MARKER = "\n[|Human|]"
TURNS = [
    ("Hi there", "Hello! How are you?"),
    ("What is 2 + 2?", "2 + 2 = 4.\n\n```python\nprint(2 + 2)\n```"),
    ("Thanks, bye.", "You're welcome. 再见!"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny: dict[str, Path]):
    from baize_tui.train.data import load_tokenizer

    return load_tokenizer(str(tiny["llama"]))


def trained_runs(tokenizer, text: str, ids: list[int], labels: list[int]) -> list[str]:
    """The text of each maximal run of trained tokens, cut out of ``text`` by offsets."""
    enc = tokenizer(text, return_offsets_mapping=True)
    assert enc["input_ids"][: len(ids)] == ids
    offsets = enc["offset_mapping"]
    runs: list[str] = []
    prev = False
    for i, label in enumerate(labels):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == ids[i], "a trained label must be the token itself"
            a, b = offsets[i]
            if prev:
                runs[-1] += text[offsets[i - 1][1]:b]
            else:
                runs.append(text[a:b])
        prev = trained
    return runs


# -- rendering ----------------------------------------------------------------------------------


def test_chat_rendering_matches_the_chat_prompt_byte_for_byte() -> None:
    dialogue = Dialogue(TURNS, system="Be brief.")
    r = render_dialogue(dialogue, "chat")
    assert r.text == ("Be brief.\n[|Human|]Hi there\n[|AI|]Hello! How are you?\n[|Human|]What is 2 + 2?"
                      "\n[|AI|]2 + 2 = 4.\n\n```python\nprint(2 + 2)\n```\n[|Human|]Thanks, bye."
                      "\n[|AI|]You're welcome. 再见!\n[|Human|]")
    for i, (user, assistant) in enumerate(TURNS):
        start, end = r.ai_spans[i]
        # What the model sees before each reply is exactly what chat sends for that turn.
        assert r.text[:start] == render("Be brief.", TURNS[:i], user)
        assert r.text[start:end] == assistant + MARKER
    default = render_dialogue(Dialogue(TURNS[:1]), "chat")
    assert default.text.startswith(render(None, [], TURNS[0][0]))


def test_release_rendering_is_the_released_format() -> None:
    r = render_dialogue(Dialogue(TURNS), "release")
    assert r.text == render_baize(TURNS)
    for (_, assistant), (start, end) in zip(TURNS, r.ai_spans, strict=True):
        assert r.text[start:end] == assistant + MARKER
    assert parse_baize_input(r.text) == TURNS


# -- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["chat", "release"])
def test_ai_loss_trains_exactly_the_ai_turns_and_their_closing_marker(tokenizer, template) -> None:
    dialogue = Dialogue(TURNS, system="Be brief.")
    enc = encode_dialogue(tokenizer, dialogue, template=template, cutoff_len=512, loss="ai")
    text = render_dialogue(dialogue, template).text
    assert len(enc.labels) == len(enc.input_ids) and not enc.truncated
    assert enc.input_ids == tokenizer(text)["input_ids"]  # one tokenization of the whole text
    # One trained span per AI turn, each the reply plus "\n[|Human|]", in order.
    assert trained_runs(tokenizer, text, enc.input_ids, enc.labels) == [a + MARKER for _, a in TURNS]
    # Token by token: trained iff the token lies inside an AI span; no human text is trained.
    r = render_dialogue(dialogue, template)
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    for i, ((a, b), label) in enumerate(zip(offsets, enc.labels, strict=True)):
        inside = any(s <= a and b <= e for s, e in r.ai_spans) and b > a
        outside = all(b <= s or a >= e for s, e in r.ai_spans) or b == a
        assert inside or outside, f"token {i} {text[a:b]!r} straddles a span boundary"
        assert (label != IGNORE_INDEX) == inside, f"token {i} {text[a:b]!r}"
    for user, _ in TURNS:
        assert user not in "".join(trained_runs(tokenizer, text, enc.input_ids, enc.labels))
    decoded = tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True)
                                if lab != IGNORE_INDEX])
    assert decoded.replace(" ", "") == "".join(a + MARKER for _, a in TURNS).replace(" ", "")


def test_all_loss_trains_every_token_but_bos_and_padding(tokenizer) -> None:
    dialogue = Dialogue(TURNS[:2], system="Be brief.")
    enc = encode_dialogue(tokenizer, dialogue, template="chat", cutoff_len=512, loss="all")
    assert enc.input_ids[0] == tokenizer.bos_token_id and enc.labels[0] == IGNORE_INDEX
    assert enc.labels[1:] == enc.input_ids[1:]
    short = encode_dialogue(tokenizer, Dialogue(TURNS[:1], system="S"), cutoff_len=512, loss="all")
    eos = tokenizer.eos_token_id
    # Padding is masked by position: with pad id = EOS, a real EOS in the text stays trained.
    features = [{"input_ids": enc.input_ids + [eos], "labels": enc.labels + [eos], "id": 0},
                {"input_ids": short.input_ids, "labels": short.labels, "id": 1}]
    batch = Collator(pad_id=eos)(features)
    n_long, n_short = len(features[0]["input_ids"]), len(short.input_ids)
    assert batch["labels"][0].tolist() == features[0]["labels"]
    assert batch["labels"][0, n_long - 1].item() == eos
    assert batch["attention_mask"][1].tolist() == [1] * n_short + [0] * (n_long - n_short)
    assert batch["labels"][1].tolist() == short.labels + [IGNORE_INDEX] * (n_long - n_short)
    assert batch["input_ids"][1, n_short:].tolist() == [eos] * (n_long - n_short)
    assert batch["sample_ids"].tolist() == [0, 1]


def test_cutoff_drops_whole_trailing_turns_first(tokenizer) -> None:
    dialogue = Dialogue(TURNS, system="Be brief.")
    full = encode_dialogue(tokenizer, dialogue, cutoff_len=512)
    one_turn = Dialogue(TURNS[:1], system="Be brief.")
    one_ids = tokenizer(render_dialogue(one_turn).text)["input_ids"]
    two_ids = tokenizer(render_dialogue(Dialogue(TURNS[:2], system="Be brief.")).text)["input_ids"]
    cutoff = len(two_ids) - 1  # the second turn does not fit any more
    enc = encode_dialogue(tokenizer, dialogue, cutoff_len=cutoff)
    assert enc.kept_turns == 1 and enc.truncated and not enc.hard_cut
    assert enc.input_ids == one_ids and len(enc.labels) == len(enc.input_ids) <= cutoff
    text = render_dialogue(one_turn).text
    assert trained_runs(tokenizer, text, enc.input_ids, enc.labels) == [TURNS[0][1] + MARKER]
    assert len(full.input_ids) > len(two_ids)

    # The first turn alone is too long: cut mid-reply, ids and labels together.
    hard = encode_dialogue(tokenizer, dialogue, cutoff_len=len(one_ids) - 3)
    assert hard.hard_cut and len(hard.input_ids) == len(hard.labels) == len(one_ids) - 3
    assert hard.input_ids == one_ids[: len(one_ids) - 3]
    assert 0 < hard.n_trained < len([t for t in full.labels if t != IGNORE_INDEX])

    # Nothing of the reply left: the example is dropped, and too many drops fail the run.
    prompt_len = len(tokenizer(render("Be brief.", [], TURNS[0][0]))["input_ids"])
    examples, stats = encode_all(tokenizer, [dialogue] * 3, template="chat",
                                 cutoff_len=prompt_len, loss="ai")
    assert examples == [] and stats.dropped_no_labels == 3
    with pytest.raises(UserError, match="no AI token left within --cutoff-len"):
        check_dropped(stats, cutoff_len=prompt_len)


def test_preview_pieces_cover_the_text(tokenizer) -> None:
    dialogue = Dialogue(TURNS[:2], system="Be brief.")
    pv = preview_dialogue(tokenizer, dialogue, loss="ai")
    assert "".join(p for p, _ in pv.pieces).removeprefix("<s>") == render_dialogue(dialogue).text
    assert "".join(p for p, t in pv.pieces if t) == "".join(a + MARKER for _, a in TURNS[:2])


# -- reading files -------------------------------------------------------------------------------


def _baize_items(turn_lists: list[list[tuple[str, str]]]) -> list[dict[str, str]]:
    return [{"topic": t[0][0], "input": render_baize(t)} for t in turn_lists]


def test_reads_baize_release_messages_jsonl_and_mixes(tmp_path: Path) -> None:
    baize = tmp_path / "quora_chat_data.json"
    baize.write_text(json.dumps(_baize_items([TURNS, TURNS[:1]]), indent=1))
    msgs = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "system", "content": "Custom."},
                      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                      {"role": "user", "content": "unanswered"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "assistant", "content": "out of order"}]},
    ]
    msgs.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    loaded = load_dialogues([baize, msgs])
    assert [d.turns for d in loaded.dialogues] == [TURNS, TURNS[:1], [("Hi", "Hey")]]
    assert loaded.dialogues[2].system == "Custom."
    assert loaded.dialogues[2].source == f"{msgs}:1"
    assert loaded.per_file == {str(baize): 2, str(msgs): 1}
    assert sum(loaded.dropped.values()) == 2
    # An array element's source names its line.
    assert loaded.dialogues[1].source.startswith(f"{baize}:") and \
        int(loaded.dialogues[1].source.rsplit(":", 1)[1]) > 1


def test_unknown_format_and_bad_json_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{"prompt": "x", "completion": "y"}\n')
    with pytest.raises(UserError, match=rf"{bad}:2: unknown data format"):
        load_dialogues([bad])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"input": "[|Human|] a\\n[|AI|] b\\n"}\n\n{"input": \n')
    with pytest.raises(UserError, match=rf"{broken}:3: not valid JSON"):
        load_dialogues([broken])
    arr = tmp_path / "arr.json"
    arr.write_text('[\n {"input": "[|Human|] a\\n[|AI|] b\\n"},\n {"text": "no"}\n]')
    with pytest.raises(UserError, match=rf"{arr}:3: unknown data format"):
        load_dialogues([arr])
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="unknown data format"):
        load_dialogues([csv])
    with pytest.raises(UserError, match="no such data file"):
        load_dialogues([tmp_path / "missing.json"])


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"topic": "t", "input": "The conversation between human and "
                                  "AI assistant.\n[|Human|] "}]))
    with pytest.raises(UserError, match="empty dataset"):
        load_dialogues([empty])


def test_split_is_seeded_and_val_size_defaults() -> None:
    dialogues = [Dialogue([(f"q{i}", f"a{i}")]) for i in range(100)]
    train, val = split_dialogues(dialogues, None, seed=1)
    assert len(val) == 5 and len(train) == 95
    assert split_dialogues(dialogues, None, seed=1) == (train, val)
    assert split_dialogues(dialogues, None, seed=2) != (train, val)
    assert {d.turns[0] for d in train + val} == {d.turns[0] for d in dialogues}
    assert resolve_val_size(100_000, None) == 2000
    assert resolve_val_size(10, None) == 0
    assert resolve_val_size(100, 0.1) == 10 and resolve_val_size(100, 7) == 7
    with pytest.raises(UserError, match="leaves no training data"):
        resolve_val_size(10, 10)


# -- settings -------------------------------------------------------------------------------------


def test_settings_defaults_presets_and_toml(tmp_path: Path) -> None:
    config = TrainConfig(base="b", data=["d.json"])
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert config.target_modules == "auto"  # resolved by architecture (train/plan.py)
    assert (config.learning_rate, config.warmup_steps, config.num_epochs) == (2e-4, 100, 1.0)
    assert (config.batch_size, config.cutoff_len, config.grad_accum(2)) == (64, 512, 4)
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    again = TrainConfig.from_toml_file(path)
    assert again == config and again.config_hash() == config.config_hash()
    assert preset("a100-bf16").target_modules == "all-linear"
    (tmp_path / "typo.toml").write_text("[train]\nlearning_rat = 1e-4\n")
    with pytest.raises(UserError, match="unknown training setting 'learning_rat'.*learning_rate"):
        TrainConfig.from_toml_file(tmp_path / "typo.toml")
    (tmp_path / "type.toml").write_text("lora_r = \"eight\"\n")
    with pytest.raises(UserError, match="lora_r must be a whole number"):
        TrainConfig.from_toml_file(tmp_path / "type.toml")
    with pytest.raises(UserError, match="not a multiple"):
        TrainConfig(base="b", data=["d"], batch_size=64, micro_batch_size=6).validate()


# -- CLI errors and preview (no trainer started) ---------------------------------------------------


def _data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(_baize_items([TURNS])))
    return path


def test_cli_rejects_bad_runs_with_one_line(tmp_path: Path, tiny: dict[str, Path], capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data_file(tmp_path)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2",
                                                  "architectures": ["GPT2LMHeadModel"]}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cases = [
        (["--base", str(gpt2), "--data", str(data)], "not a LLaMA model (gpt2)"),
        (["--base", str(tiny["llama"]), "--data", str(data), "--load-in", "4bit"],
         "--load-in 4bit needs a CUDA GPU"),
        (["--base", str(tiny["llama"]), "--data", str(tmp_path / "none.json")], "no such data file"),
        (["--base", str(tiny["llama"]), "--data", str(data), "--batch-size", "10",
          "--micro-batch-size", "4"], "not a multiple"),
        (["--data", str(data)], "no base model"),
        (["--base", str(tmp_path / "nowhere"), "--data", str(data)], "no such base model"),
    ]
    for extra, message in cases:
        code = main(["train", "run", "--out", str(tmp_path / "run"), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started
    assert main(["train", "status", str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err


def test_cli_preview_marks_trained_text(tmp_path: Path, tiny: dict[str, Path], capsys) -> None:
    data = _data_file(tmp_path)
    assert main(["train", "preview", "--base", str(tiny["llama"]), "--data", str(data),
                 "--plain"]) == 0
    out = capsys.readouterr().out
    for _, assistant in TURNS:
        assert f"⟦{assistant}{MARKER}⟧" in out
    assert "[|Human|]⟦" not in out and "trained" in out
    assert main(["train", "preview", "--base", str(tiny["llama"]), "--data", str(data),
                 "--plain", "--loss", "all", "--template", "release"]) == 0
    out = capsys.readouterr().out
    assert out.count("⟦") == 1 and "⟦The conversation between human and AI assistant." in out


def test_cli_settings_layer_preset_file_and_flags(tmp_path: Path, tiny: dict[str, Path],
                                                  capsys) -> None:
    from baize_tui.cli import build_parser
    from baize_tui.commands.train import resolve_config

    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nlearning_rate = 1e-4\nlora_r = 16\ntarget_modules = "all-linear"\n'
                    'micro_batch_size = 32\n')
    args = build_parser().parse_args(
        ["train", "run", "--preset", "baize-exact", "--config", str(toml), "--base", "B",
         "--data", "a.json", "b.jsonl", "--data", "c.json", "--out", "o", "--lr", "3e-4",
         "--val-size", "0.1", "--warmup-steps", "0.03", "--no-gradient-checkpointing"])
    config = resolve_config(args)
    assert (config.loss, config.template) == ("all", "release")  # preset
    assert (config.lora_r, config.target_modules, config.micro_batch_size) == (16, "all-linear", 32)
    assert config.learning_rate == 3e-4  # the flag wins over the file
    assert config.data == ["a.json", "b.jsonl", "c.json"]
    assert (config.val_size, config.warmup_steps, config.gradient_checkpointing) == (0.1, 0.03, False)

    # An existing run directory is never overwritten by accident.
    data = _data_file(tmp_path)
    out = tmp_path / "existing"
    out.mkdir()
    (out / "config.toml").write_text(TrainConfig(base="b", data=["d"]).to_toml())
    assert main(["train", "run", "--base", str(tiny["llama"]), "--data", str(data),
                 "--out", str(out)]) == 2
    assert "train resume" in capsys.readouterr().err and not (out / "run.json").exists()
