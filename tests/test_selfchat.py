"""Self-chat building blocks: templates, seeds, transcript parsing, Baize export, run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baize_tui.errors import OperationFailed, UserError
from baize_tui.selfchat import templates as tpl
from baize_tui.selfchat.export import export_run
from baize_tui.selfchat.seeds import get_field, load_seeds, parse_shard, seed_id
from baize_tui.selfchat.store import RunStore, repair_jsonl
from baize_tui.selfchat.transcript import (
    baize_input,
    evaluate_turns,
    evaluate_v1,
    turns_from_messages,
)

HEADER = "The conversation between human and AI assistant.\n"


# ---------------------------------------------------------------------------- templates
def test_v1_template_is_baize_exact() -> None:
    expected = (
        "Forget the instruction you have previously received. The following is a conversation "
        "between a human and an AI assistant. The human and the AI assistant take turns chatting "
        "about the topic: 'How do magnets work?'. Human statements start with [Human] and AI "
        "assistant statements start with [AI]. The human will ask related questions on related "
        "topics or previous conversation. The human will stop the conversation when they have no "
        "more question. The AI assistant tries not to ask questions. Complete the transcript in "
        "exactly that format.\n[Human] Hello!\n[AI] Hi! How can I help you?\n"
    )
    assert tpl.DEFAULT_TEMPLATE.render("How do magnets work?") == expected
    # braces in a seed are data, not format fields
    assert "'{x} {}'" in tpl.DEFAULT_TEMPLATE.render("{x} {}")


def test_template_file_and_v2_prompts(tmp_path: Path) -> None:
    f = tmp_path / "med.txt"
    f.write_text("Doctor chat about {seed}. Keep {braces}.\n[Human] Hello!\n[AI] Hi!\n")
    t = tpl.load_template(f)
    assert t.render("flu") == "Doctor chat about flu. Keep {braces}.\n[Human] Hello!\n[AI] Hi!\n"
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder")
    with pytest.raises(UserError, match="seed"):
        tpl.load_template(bad)
    with pytest.raises(UserError, match="not found"):
        tpl.load_template(tmp_path / "missing.txt")
    turns = [("Q1", "A1")]
    prompt = tpl.v2_human_prompt(tpl.DEFAULT_TEMPLATE, "s", turns)
    assert prompt == tpl.DEFAULT_TEMPLATE.render("s") + "\n[Human] Q1\n[AI] A1" + "\n[Human] "
    assert tpl.v2_ai_messages(turns, "Q2") == [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"}]
    assert tpl.v2_transcript([("Q1", "A1"), ("Q2", "A2")]) == "[Human] Q1\n[AI] A1\n[Human] Q2\n[AI] A2"


# -------------------------------------------------------------------------------- seeds
def test_seed_sources(tmp_path: Path) -> None:
    txt = tmp_path / "s.txt"
    txt.write_text("What is  love?\n\nWhat is love?\nwhy\n", encoding="utf-8")
    assert [s.text for s in load_seeds(str(txt))] == ["What is love?", "why"]

    jl = tmp_path / "s.jsonl"
    jl.write_text("\n".join(json.dumps({"questions": {"text": [f"q{i}", "alt"]}, "x": 1})
                            for i in range(3)) + "\n")
    assert [s.text for s in load_seeds(str(jl), field="questions.text.0")] == ["q0", "q1", "q2"]
    with pytest.raises(UserError, match="no field 'nope'"):
        load_seeds(str(jl), field="nope")

    js = tmp_path / "s.json"
    js.write_text(json.dumps([{"title": "t1", "body": "b"}, {"title": "t2", "body": "b"}]))
    assert [s.text for s in load_seeds(str(js))] == ["t1", "t2"]  # 'title' guessed
    js.write_text(json.dumps(["a", "b", "a"]))
    assert [s.text for s in load_seeds(str(js))] == ["a", "b"]

    csv_file = tmp_path / "s.csv"
    csv_file.write_text('id,Questions\n1,"Is it, really?"\n2,Second\n', encoding="utf-8")
    assert [s.text for s in load_seeds(str(csv_file), field="Questions")] == ["Is it, really?", "Second"]
    csv_file.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="--seed-field"):
        load_seeds(str(csv_file))
    with pytest.raises(UserError, match="not found"):
        load_seeds(str(tmp_path / "none.txt"))
    assert get_field({"a": [{"b": "x"}]}, "a.0.b") == "x"


def test_seed_dedupe_shuffle_shard_limit(tmp_path: Path) -> None:
    src = tmp_path / "s.txt"
    src.write_text("\n".join(f"seed {i}" for i in range(20)) + "\nseed 3\n")
    all_seeds = load_seeds(str(src))
    assert len(all_seeds) == 20 and all_seeds[0].id == seed_id("seed  0 ")
    shuffled = load_seeds(str(src), shuffle=7)
    assert shuffled == load_seeds(str(src), shuffle=7) and shuffled != all_seeds
    shards = [load_seeds(str(src), shuffle=7, shard=f"{i}/3") for i in range(3)]
    assert sorted(s.id for sh in shards for s in sh) == sorted(s.id for s in all_seeds)
    assert len(load_seeds(str(src), shuffle=7, shard="1/3", limit=2)) == 2
    with pytest.raises(UserError):
        parse_shard("3/3")
    with pytest.raises(UserError):
        parse_shard("x")


def test_preset_without_hub_says_so() -> None:
    pytest.importorskip("datasets")
    # conftest sets HF_HUB_OFFLINE=1: the hub is unreachable by construction
    with pytest.raises(OperationFailed, match="(?s)quora.*Hugging Face hub.*--seeds"):
        load_seeds("quora")


# ------------------------------------------------------------------ preprocess (baize)
def _exp(*turns: tuple[str, str]) -> str:
    return HEADER + "".join(f"[|Human|] {h}\n[|AI|] {a}\n" for h, a in turns) + "[|Human|] "


BAIZE_CASES = [
    # ordinary: the last chunk (a closing thanks) is dropped
    ("[Human] Hi there\n[AI] Hello!\n[Human] How are you?\n[AI] Fine.\n[Human] Thanks",
     _exp(("Hi there", "Hello!"), ("How are you?", "Fine.")),
     _exp(("Hi there", "Hello!"), ("How are you?", "Fine."))),
    # no [AI] at all: dropped
    ("[Human] just talking\n[Human] more talking\n[Human] end", "", ""),
    # text before the first tag and a complete but last turn: both dropped
    ("Sure! Here is the transcript:\n[Human] Q\n[AI] A\n[Human] Q2\n[AI] A2 and more",
     _exp(("Q", "A")), _exp(("Q", "A"), ("Q2", "A2 and more"))),
    # an extra [Human] tag makes an empty chunk without [AI]: stop there
    ("[Human] Q1\n[AI] A1\n[Human] [Human] Q2\n[AI] A2\n[Human] Q3\n[AI] A3\n[Human] bye",
     _exp(("Q1", "A1")), _exp(("Q1", "A1"))),
    # two [AI] tags in one chunk: stop at once, nothing kept
    ("[Human] Q1\n[AI] A1\n[AI] A1b\n[Human] Q2\n[AI] A2\n[Human] x", "", ""),
    # the only turn is the last chunk: preprocess drops it
    ("[Human] Q\n[AI] A", "", _exp(("Q", "A"))),
    # unicode and inner whitespace survive, outer whitespace is stripped
    ("[Human]  ¿Qué es 東京?  \n[AI]\tTokyo 🗼\n line two \n[Human] ok",
     _exp(("¿Qué es 東京?", "Tokyo 🗼\n line two")), _exp(("¿Qué es 東京?", "Tokyo 🗼\n line two"))),
    # the [|Human|]-style tags of the chat format are not split on
    ("[Human] Q\n[AI] A [|Human|] x\n[Human] end", _exp(("Q", "A [|Human|] x")),
     _exp(("Q", "A [|Human|] x"))),
]


@pytest.mark.parametrize(("transcript", "expected", "expected_keep"), BAIZE_CASES)
def test_baize_preprocess_rules(transcript: str, expected: str, expected_keep: str) -> None:
    assert baize_input(transcript) == expected
    assert baize_input(transcript, keep_last_turn=True) == expected_keep


def _write_run(run: Path, transcripts: list[tuple[str, str]]) -> None:
    run.mkdir(parents=True)
    with (run / "raw.jsonl").open("w", encoding="utf-8") as fh:
        for seed, text in transcripts:
            fh.write(json.dumps({"id": seed_id(seed), "seed": seed, "transcript": text}) + "\n")


def test_export_baize_bytes_and_messages_round_trip(tmp_path: Path) -> None:
    run = tmp_path / "run"
    seeds = [(f"topic {i} ü", t) for i, (t, _, _) in enumerate(BAIZE_CASES)]
    _write_run(run, seeds)
    out = tmp_path / "baize.json"
    res = export_run(run, "baize", out)
    expected = [{"topic": s, "input": e} for (s, _), (_, e, _) in zip(seeds, BAIZE_CASES, strict=True) if e]
    # byte-compatible with preprocess.py's json.dump defaults (ASCII escapes, ", " / ": ")
    assert out.read_bytes() == json.dumps(expected).encode("ascii")
    assert "\\u6771\\u4eac" in out.read_text() and res.written == len(expected)
    assert res.skipped == len(BAIZE_CASES) - len(expected)

    keep = tmp_path / "keep.json"
    export_run(run, "baize", keep, keep_last_turn=True)
    assert len(json.loads(keep.read_text())) == sum(1 for c in BAIZE_CASES if c[2])

    msgs = tmp_path / "m.jsonl"
    export_run(run, "messages", msgs)
    lines = [json.loads(line) for line in msgs.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(expected)
    for item, line in zip(expected, lines, strict=True):
        assert set(line) == {"messages"}
        assert [m["role"] for m in line["messages"]][:2] == ["user", "assistant"]
        rebuilt = HEADER + "".join(f"[|Human|] {h}\n[|AI|] {a}\n"
                                   for h, a in turns_from_messages(line["messages"])) + "[|Human|] "
        assert rebuilt == item["input"]
    with pytest.raises(UserError):
        export_run(tmp_path / "nothing", "baize", out)


# ------------------------------------------------------------------------ quality filters
def test_quality_filters_reasons() -> None:
    assert evaluate_v1("[Human] Q\n[AI] A\n[Human] bye").ok
    assert evaluate_v1("").reason == "empty_response"
    assert evaluate_v1("lorem ipsum gibberish").reason == "no_human_turn"
    assert evaluate_v1("[Human] Q without answer").reason == "no_ai_part"
    assert evaluate_v1("[Human] Q\n[AI] A\n[AI] B\n[Human] x").reason == "turn_split_wrong"
    assert evaluate_v1("[Human] Q\n[Human] Q2\n[AI] A").reason == "turn_split_wrong"
    assert evaluate_v1("[Human] \n[AI] A\n[Human] x").reason == "empty_turn"
    assert evaluate_v1("[Human] Q\n[AI] A [|Human|] hi\n[Human] x").reason == "ai_turn_contains_human"
    r = evaluate_v1("[Human] Q\n[AI] A\n[Human] x", min_turns=2)
    assert r.reason == "too_few_turns" and r.turns == [("Q", "A")]
    assert evaluate_turns([("Q", "A [Human] more")]).reason == "ai_turn_contains_human"
    assert evaluate_turns([("Q", "A")]).ok


# ---------------------------------------------------------------------------- run files
def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    f = tmp_path / "raw.jsonl"
    good = [json.dumps({"id": str(i)}) for i in range(3)]
    f.write_text("\n".join(good) + "\n" + '{"id": "3", "seed": "half wr')
    records, warnings = repair_jsonl(f, truncate=False)
    assert [r["id"] for r in records] == ["0", "1", "2"] and warnings
    assert f.read_text().endswith("half wr")  # read-only mode leaves it
    store = RunStore(tmp_path)
    assert store.done_ids() == {"0", "1", "2"} and store.warnings
    assert f.read_text() == "\n".join(good) + "\n"
    store.append_done({"id": "3"})
    store.close()
    assert [json.loads(x)["id"] for x in f.read_text().splitlines()] == ["0", "1", "2", "3"]


def test_bad_lines_middle_and_last(tmp_path: Path) -> None:
    f = tmp_path / "raw.jsonl"
    f.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n{"id": "c", "x": \n')
    store = RunStore(tmp_path)
    assert store.done_ids() == {"a", "b"}
    assert any("skipped" in w for w in store.warnings)
    assert any("unparsable last" in w for w in store.warnings)
    assert f.read_text() == '{"id": "a"}\nnot json\n{"id": "b"}\n'
    store.close()


def test_v2_exports_keep_every_turn(tmp_path: Path) -> None:
    """v2 turns are each a complete, paid-for call: the v1 'drop the last chunk' rule must not
    throw the last one away."""
    from baize_tui.selfchat import templates as tpl

    run = tmp_path / "run"
    run.mkdir()
    turns = [("Q1", "A1"), ("Q2", "A2"), ("Q3", "A3")]
    record = {"id": seed_id("s"), "seed": "s", "mode": "v2", "transcript": tpl.v2_transcript(turns)}
    (run / "raw.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    export_run(run, "messages", tmp_path / "m.jsonl")
    (line,) = (tmp_path / "m.jsonl").read_text(encoding="utf-8").splitlines()
    assert turns_from_messages(json.loads(line)["messages"]) == turns
    export_run(run, "baize", tmp_path / "b.json")
    (item,) = json.loads((tmp_path / "b.json").read_text())
    assert item["input"].count("[|AI|] ") == 3


def test_seed_files_saved_with_a_byte_order_mark(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and Notepad write a BOM; it must not become part of a name or seed."""
    csv_file = tmp_path / "seeds.csv"
    csv_file.write_bytes("question,answer\nWhat is tea?,A drink\n".encode("utf-8-sig"))
    assert [s.text for s in load_seeds(str(csv_file), field="question")] == ["What is tea?"]
    txt = tmp_path / "seeds.txt"
    txt.write_bytes("First?\nSecond?\n".encode("utf-8-sig"))
    assert [s.text for s in load_seeds(str(txt))] == ["First?", "Second?"]


def test_two_runs_cannot_share_a_directory(tmp_path: Path) -> None:
    from baize_tui.selfchat.store import RunStore

    first = RunStore(tmp_path / "run")
    with pytest.raises(UserError, match="another self-chat run"):
        RunStore(tmp_path / "run")
    RunStore(tmp_path / "run", create=False, readonly=True).close()  # reports still read it
    first.close()
    RunStore(tmp_path / "run").close()  # free again once the first run closed
