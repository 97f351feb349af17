"""Training on today's LLaMA-family bases (CPU, tiny fixtures): refused up front when the
adapter could never become a GGUF, LoRA targets chosen by architecture, a warmup longer than
the run clamped, one final evaluation, and train -> merge -> chat on a tied-embedding BPE base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from baize_tui.cli import main
from baize_tui.selfchat.transcript import render_baize
from baize_tui.train.plan import (
    ALL_PROJECTIONS,
    BAIZE_V1_MODULES,
    clamp_warmup,
    is_llama1,
    target_modules_for,
    total_steps,
)
from baize_tui.train.runs import Run

DIALOGUES = [
    [("What is a LoRA adapter?", "A small low-rank update to the weights of a model."),
     ("Why use it?", "It trains fast and saves memory.")],
    [("How do I print in Python?", "Use print('hello').")],
    [("What is 2 + 2?", "2 + 2 = 4."), ("And 3 + 3?", "3 + 3 = 6.")],
]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "baize.json"
    path.write_text(json.dumps([{"topic": d[0][0], "input": render_baize(d)} for d in DIALOGUES * 8]))
    return path


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def test_target_modules_by_architecture(tiny, family) -> None:
    assert is_llama1(_config(tiny["llama"]))
    assert target_modules_for("auto", _config(tiny["llama"])) == BAIZE_V1_MODULES
    for shape in ("llama3", "smollm", "mistral"):
        assert not is_llama1(_config(family[shape])), shape
        assert target_modules_for("auto", _config(family[shape])) == ALL_PROJECTIONS
    assert target_modules_for(["q_proj"], _config(family["smollm"])) == ["q_proj"]
    llama2 = _config(tiny["llama"]) | {"rms_norm_eps": 1e-5, "max_position_embeddings": 4096}
    assert not is_llama1(llama2)


def test_warmup_clamp_and_step_count() -> None:
    assert total_steps(8, 1.0, 1000, 4, 1, 2) == 8
    assert total_steps(-1, 1.0, 100, 4, 1, 2) == 13  # 25 batches -> 13 updates
    assert total_steps(-1, 2.0, 100, 4, 2, 1) == 26
    assert clamp_warmup(100, 8) == (0, clamp_warmup(100, 8)[1])
    assert "100" in clamp_warmup(100, 8)[1]
    assert clamp_warmup(100, 50) == (5, clamp_warmup(100, 50)[1])
    assert clamp_warmup(10, 50) == (10, None)
    assert clamp_warmup(0.03, 8) == (0.03, None)


def _broken_copy(base: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    edit(copy)
    return copy


def _tied_without_flag(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["tie_word_embeddings"] = False  # claims an lm_head the weights do not have
    (d / "config.json").write_text(json.dumps(config))


def _unknown_pre(d: Path) -> None:
    data = json.loads((d / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    (d / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("edit", "message"), [
    (_tied_without_flag, "no lm_head.weight"),
    (_unknown_pre, "unknown BPE pre-tokenizer Whitespace"),
])
def test_train_run_refuses_an_unconvertible_base_before_any_work(
        family, tmp_path, data_file, capsys, edit, message) -> None:
    base = _broken_copy(family["smollm"], tmp_path, edit)
    out = tmp_path / "run"
    code = main(["train", "run", "--base", str(base), "--data", str(data_file), "--out", str(out),
                 "--max-steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "training was not started" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_train_merge_chat_round_trip_on_a_tied_bpe_base(family, tmp_path, data_file,
                                                        capsys) -> None:
    """SmolLM-shaped base (byte-level BPE, tied embeddings): 8 steps with the default 100-step
    warmup (clamped), eval every 5 steps (evaluated at 5 and once at 8), then merge without
    --base and ask the merged GGUF a question."""
    out = tmp_path / "run"
    code = main(["train", "run", "--base", str(family["smollm"]), "--data", str(data_file),
                 "--out", str(out), "--max-steps", "8", "--batch-size", "4",
                 "--micro-batch-size", "4", "--cutoff-len", "96", "--lr", "1e-2",
                 "--val-size", "4", "--eval-steps", "5", "--save-steps", "100", "--template", "release",
                 "--wait"])
    run = Run(out)
    log = run.log_file.read_text()
    assert code == 0, log[-3000:]
    assert "warmup of 100 steps is not shorter than the run (8 steps)" in log
    train = [r for r in run.metrics() if r["kind"] == "train"]
    assert max(r["lr"] for r in train) > 5e-3  # no longer stuck near zero by the warmup
    evals = [r["step"] for r in run.metrics() if r["kind"] == "eval"]
    assert evals == [5, 8]
    adapter = run.adapter_dir
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(ALL_PROJECTIONS)
    assert json.loads((adapter / "baize_train.json").read_text()) == {"template": "release"}

    gguf = tmp_path / "merged.gguf"
    from baize_convert.cli import main as convert_main

    assert convert_main(["merge", "--lora", str(adapter), "-o", str(gguf)]) == 0
    from baize_convert.inspect_gguf import open_header

    header = open_header(gguf)
    assert header.get("general.name") == "smollm-run"
    assert header.get("tokenizer.ggml.pre") == "smollm"
    assert "[|Human|]" in header.get("tokenizer.chat_template")
    capsys.readouterr()
    assert main(["ask", "--model", str(gguf), "--max-tokens", "8", "--seed", "1", "--no-history",
                 "Hello there"]) == 0
    assert "Traceback" not in capsys.readouterr().err
