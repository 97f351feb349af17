"""SDF end to end on tiny fixtures: candidates from a tiny GGUF through llama.cpp, a local
judge server picks the best, export -> ``train run --init-adapter`` -> ``baize-convert merge``
of both adapters -> llama.cpp's logits equal transformers+peft applying both adapters.
Plus: sampling resumes after SIGKILL with no duplicate and no lost prompt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from openai_server import OpenAITestServer
from sdf_helpers import expected_best, read_jsonl, scripted_judge

from baize_tui.cli import main
from baize_tui.sdf.sample import candidate_seed

PROMPTS = ["What is a llama?", "How do rivers form?", "Why is the sky blue?",
           "What is a LoRA adapter?", "How do I print in Python?", "Tell me a joke."]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path


def sample_args(gguf: Path, prompts: Path, out: Path, n: int = 4, tokens: int = 12) -> list[str]:
    return ["sdf", "sample", "--prompts", str(prompts), "--model", str(gguf), "--n", str(n),
            "--out", str(out), "--max-tokens", str(tokens), "--no-progress"]


def llama_logits(gguf_path: Path, tokens: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), logits_all=True, n_ctx=256, verbose=False, seed=0)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


def peft_logits(base: Path, adapters: list[Path], tokens: list[int]) -> np.ndarray:
    """transformers+peft: each adapter applied on top of the previous ones, in order."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def test_sdf_pipeline_end_to_end(tiny: dict[str, Path], tiny_gguf: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sdf"
    prompts = write_prompts(tmp_path / "prompts.txt", PROMPTS)
    # 1. candidates from the tiny GGUF through llama.cpp
    assert main(sample_args(tiny_gguf, prompts, out)) == 0, capsys.readouterr().err
    cands = read_jsonl(out / "candidates.jsonl")
    assert [c["prompt"] for c in cands] == PROMPTS
    for rec in cands:
        assert len(rec["candidates"]) == 4 and all(c["text"] for c in rec["candidates"])
        assert rec["candidates"][0]["seed"] in {candidate_seed(0, rec["id"], 0, a) for a in range(3)}
        assert all("[|Human|]" not in c["text"] for c in rec["candidates"])
    assert len({c["text"] for rec in cands for c in rec["candidates"]}) > len(PROMPTS)  # sampling on
    # a re-run has nothing left to do
    assert main(sample_args(tiny_gguf, prompts, out)) == 0
    assert len(read_jsonl(out / "candidates.jsonl")) == len(PROMPTS)
    # 2. the local judge picks the expected best per prompt
    with OpenAITestServer(scripted_judge) as server:
        assert main(["sdf", "judge", str(out), "--judge", "openai:j", "--base-url",
                     server.base_url, "--no-progress"]) == 0
    verdicts = {v["id"]: v for v in read_jsonl(out / "judgments.jsonl")}
    best_text = {}
    for rec in cands:
        texts = [c["text"] for c in rec["candidates"]]
        assert verdicts[rec["id"]]["best"] == expected_best(texts)
        best_text[rec["prompt"]] = texts[expected_best(texts)]
    # 3. export -> train a new LoRA on top of the frozen SFT adapter
    best = tmp_path / "best.jsonl"
    assert main(["sdf", "export", str(out), "-o", str(best)]) == 0
    assert {r["messages"][0]["content"]: r["messages"][1]["content"]
            for r in read_jsonl(best)} == best_text
    sft = tiny["lora_st"]
    run_dir = tmp_path / "sdf-run"
    code = main(["train", "run", "--base", str(tiny["llama"]), "--data", str(best), "--out",
                 str(run_dir), "--init-adapter", str(sft), "--max-steps", "4", "--batch-size",
                 "2", "--micro-batch-size", "2", "--cutoff-len", "480", "--lr", "5e-2",
                 "--warmup-steps", "0", "--val-size", "0", "--wait"])
    log = (run_dir / "train.log").read_text()
    assert code == 0, log[-3000:]
    assert "init adapter: merged" in log and str(sft) in log
    assert f'"init_adapter" = "{sft}"' in (run_dir / "config.toml").read_text()
    sdf_adapter = run_dir / "adapter"
    # 4. merge both adapters in order into one GGUF; its logits equal transformers+peft's
    from baize_convert.cli import main as convert_main

    both = tmp_path / "both.gguf"
    assert convert_main(["merge", "--base", str(tiny["llama"]), "--lora", str(sft), "--lora",
                         str(sdf_adapter), "-q", "f32", "-o", str(both)]) == 0
    tokens = [1, 450, 2182, 338, 263, 1243, 310, 29871, 13, 7, 99, 3, 250, 17, 42, 5]
    tokens = [t % 500 for t in tokens]
    ours = llama_logits(both, tokens)
    ref = peft_logits(tiny["llama"], [sft, sdf_adapter], tokens)
    sft_only = peft_logits(tiny["llama"], [sft], tokens)
    err = float(np.abs(ours - ref).max())
    effect = float(np.abs(ref - sft_only).max())
    # llama.cpp keeps its KV cache in f16: the same 1 % bound as the converter's own tests
    assert err < 1e-2 * float(np.abs(ref).max()), err
    assert effect > 10 * err, (effect, err)  # the SDF adapter really changes the model
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_init_adapter_errors_name_the_flag(tiny: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    base = ["train", "run", "--base", str(tiny["llama"]), "--data", str(data), "--out",
            str(tmp_path / "r")]
    assert main(base + ["--init-adapter", str(tmp_path / "missing")]) == 2
    assert "--init-adapter" in capsys.readouterr().err
    assert main(base + ["--init-adapter", str(tiny["lora_wide"])]) == 2  # another base's shapes
    err = capsys.readouterr().err
    assert "--init-adapter" in err and "base" in err
    assert not (tmp_path / "r").exists()


def test_merge_init_adapter_equals_peft_merge(tiny: dict[str, Path]) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from baize_tui.train.init_adapter import merge_init_adapter

    ours = AutoModelForCausalLM.from_pretrained(str(tiny["llama"]), dtype=torch.float32)
    assert merge_init_adapter(ours, str(tiny["lora_st"])) == 2 * 7
    ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny["llama"]), dtype=torch.float32),
        str(tiny["lora_st"])).merge_and_unload()
    ref_params = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert torch.allclose(param, ref_params[name], atol=1e-6), name


def test_sample_resumes_after_sigkill(tiny_gguf: Path, tmp_path: Path) -> None:
    prompts = [f"Question {i}: what is {i} plus {i}?" for i in range(14)]
    src = write_prompts(tmp_path / "p.txt", prompts)
    out = tmp_path / "run"
    env = dict(os.environ, BAIZE_HOME=str(tmp_path / "home"))
    args = [sys.executable, "-m", "baize_tui.cli", *sample_args(tiny_gguf, src, out, n=2, tokens=6)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = out / "candidates.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = path.read_bytes().count(b"\n")
    assert 3 <= done_before < len(prompts), "sampling was not killed halfway"
    first = read_jsonl(path)
    with path.open("ab") as fh:
        fh.write(b'{"id": "torn", "prompt": "half')
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    recs = read_jsonl(path)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == len(prompts)
    assert [r["prompt"] for r in recs] == prompts
    assert recs[:done_before] == first  # what was done stays as it was


def test_a_model_that_cannot_load_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    src = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    code = main(sample_args(bad, src, tmp_path / "run"))
    err = capsys.readouterr().err
    assert code in (1, 2) and "broken.gguf" in err and "Traceback" not in err
    assert "broken.gguf" in (tmp_path / "run" / "events.log").read_text()
    assert not (tmp_path / "run" / "candidates.jsonl").exists()


def test_batched_candidates_are_reproducible_and_one_by_one_works(
        tiny_gguf: Path, tmp_path: Path) -> None:
    src = write_prompts(tmp_path / "p.txt", PROMPTS[:2])
    runs = {}
    for name, extra in (("a", []), ("b", []), ("one", ["--no-batch"])):
        out = tmp_path / name
        assert main(sample_args(tiny_gguf, src, out, n=3, tokens=8) + extra) == 0
        runs[name] = [[c["text"] for c in r["candidates"]] for r in read_jsonl(out / "candidates.jsonl")]
    assert runs["a"] == runs["b"]  # same seeds, same candidates
    assert all(len(set(texts)) > 1 for texts in runs["a"])  # independent samplers per candidate
    assert [len(t) for t in runs["one"]] == [3, 3] and all(all(t) for t in runs["one"])


def test_installed_llama_cpp_supports_batched_sampling() -> None:
    """The pinned llama-cpp-python has every C function and field batched.py uses (else
    sampling silently falls back to one by one, which this would hide)."""
    from baize_tui.sdf import batched

    assert batched.supported()
