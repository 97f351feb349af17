"""Converter edge cases: adapter variants peft supports, added tokens, the tokenizer.json
fallback, --hf-out safety, termination, and hub downloads that fetch only what is needed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tinymodels
from hub_server import HubServer

from baize_convert.checkpoint import Checkpoint
from baize_convert.cli import main as convert_main
from baize_convert.gguf_export import merged_tensor
from baize_convert.lora import Adapter
from baize_convert.pipeline import MergeRequest, run_merge
from baize_convert.verify import load_reference_model, verify_gguf

BIN = Path(sys.executable).parent


def save_peft_adapter(out: Path, **lora_kwargs) -> Path:
    """An adapter saved by peft itself, with random non-zero A and B."""
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **lora_kwargs)
    model = get_peft_model(tinymodels.make_model(tinymodels.TINY), config)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("kwargs", [
    {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "fan_in_fan_out": True},
    {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj"],
     "rank_pattern": {"up_proj": 4}, "alpha_pattern": {"q_proj|v_proj": 32}},
    {"r": 16, "lora_alpha": 8, "target_modules": ["k_proj", "o_proj"], "use_rslora": True},
], ids=["fan_in_fan_out", "rank-alpha-patterns", "rslora"])
def test_adapter_variants_merge_exactly_like_peft(tiny, tmp_path, kwargs) -> None:
    lora = save_peft_adapter(tmp_path / "lora", **kwargs)
    reference = {k: v.numpy() for k, v in
                 load_reference_model(tiny["llama"], [lora]).state_dict().items()}
    ckpt, adapter = Checkpoint.open(tiny["llama"]), Adapter.open(lora)
    for name in ckpt.refs:
        np.testing.assert_allclose(merged_tensor(ckpt, [adapter], name), reference[name],
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    out = tmp_path / "m.gguf"
    run_merge(MergeRequest(base=str(tiny["llama"]), loras=[str(lora)], quant="f32", output=out),
              quiet=True)
    assert verify_gguf(out, str(tiny["llama"]), [str(lora)]).ok


def test_added_tokens_go_at_their_ids(tiny, tmp_path, caplog) -> None:
    from llama_cpp import Llama

    base = tinymodels.save_safetensors_model(
        tinymodels.TinySpec(vocab=1008, seed=9), tmp_path / "base", tiny["tokenizer"])
    config = json.loads((base / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"1000": {"content": "<|sep|>", "special": True}}
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    (base / "added_tokens.json").write_text(json.dumps({"<|user|>": 1001, "<|far|>": 5000}))
    out = tmp_path / "m.gguf"
    run_merge(MergeRequest(base=str(base), loras=[], quant="f16", output=out), quiet=True)
    assert "<|far|>" in caplog.text and "beyond" in caplog.text  # skipped, as llama.cpp does
    vocab = Llama(str(out), vocab_only=True, verbose=False)
    assert 1000 in vocab.tokenize(b"a<|sep|>b", add_bos=False, special=True)
    assert vocab.detokenize([1001]) == b"<|user|>"
    assert vocab.n_vocab() == 1008


def test_tokenizer_json_fallback_tokenizes_like_sentencepiece(tiny, tmp_path) -> None:
    base = tmp_path / "no-spm"
    shutil.copytree(tiny["llama"], base)
    (base / "tokenizer.model").unlink()
    out = tmp_path / "m.gguf"
    run_merge(MergeRequest(base=str(base), loras=[], quant="f16", output=out), quiet=True)
    report = verify_gguf(out, str(tiny["llama"]))  # the reference still has tokenizer.model
    assert report.tokens_ok, report.token_mismatches
    assert report.ok


def run(args: list[str], capsys) -> tuple[int, str]:
    code = convert_main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_hf_out_never_deletes_what_is_not_a_model(tiny, tmp_path, capsys) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    base = ["merge", "--base", str(tiny["llama"])]
    code, err = run(base + ["-o", str(precious / "m.gguf"), "--hf-out", str(precious), "--force"], capsys)
    assert code == 2 and "would contain the GGUF" in err
    code, err = run(base + ["-o", str(tmp_path / "m.gguf"), "--hf-out", str(precious), "--force"], capsys)
    assert code == 2 and "notes.txt" in err and "refusing" in err
    assert (precious / "notes.txt").read_text() == "keep me"
    code, err = run(base + ["-o", str(tmp_path / "m.gguf"), "--hf-out", str(precious / "notes.txt")], capsys)
    assert code == 2 and "not a directory" in err
    code, err = run(base + ["-o", str(tmp_path / "m.gguf"), "--hf-out", str(tiny["llama"]), "--force"], capsys)
    assert code == 2 and "overlaps the input" in err
    assert not (tmp_path / "m.gguf").exists()
    hf = tmp_path / "merged"
    assert run(base + ["-o", str(tmp_path / "m.gguf"), "--hf-out", str(hf)], capsys)[0] == 0
    first = (hf / "model-00001-of-00001.safetensors").read_bytes()
    args = ["merge", "--base", str(tiny["llama"]), "--lora", str(tiny["lora_v1"]),
            "-o", str(tmp_path / "m.gguf"), "--hf-out", str(hf), "--force"]
    assert run(args, capsys)[0] == 0  # a previous --hf-out output is replaced
    assert (hf / "model-00001-of-00001.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "merged", "mine"]


SLOW_CONVERT = """
import sys, time
import baize_convert.gguf_export as ge
real = ge.encode_tensor
def slow(w, q):
    time.sleep(0.3)
    return real(w, q)
ge.encode_tensor = slow
from baize_convert.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_termination_signals_leave_no_partial_file(tiny, tmp_path, sig) -> None:
    out = tmp_path / "m.gguf"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, "merge", "--base",
                             str(tiny["llama"]), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".m.gguf.*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".m.gguf.*")), "the conversion never started writing"
    time.sleep(0.5)  # some tensors in (any moment will do: the assertion holds at every one)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "no output was written" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_killed_runs_are_removed(tiny, tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.gguf.{dead.pid}.partial"
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f".m.gguf.{os.getppid()}.partial"  # a live process: not ours to remove
    alive.write_bytes(b"y")
    run_merge(MergeRequest(base=str(tiny["llama"]), loras=[], quant="f16",
                           output=tmp_path / "m.gguf"), quiet=True)
    assert not stale.exists() and alive.exists()


def test_verify_refuses_an_adapter_gguf(tiny, tmp_path, capsys) -> None:
    adapter = tmp_path / "a.gguf"
    assert convert_main(["lora", "--lora", str(tiny["lora_v1"]), "--base", str(tiny["llama"]),
                         "-o", str(adapter)]) == 0
    code, err = run(["verify", str(adapter), "--hf", str(tiny["llama"])], capsys)
    assert code == 2 and "adapter" in err


def test_malformed_config_is_one_clear_error(tiny, tmp_path, capsys) -> None:
    base = tmp_path / "bad-config"
    shutil.copytree(tiny["llama"], base)
    config = json.loads((base / "config.json").read_text())
    del config["intermediate_size"]
    (base / "config.json").write_text(json.dumps(config))
    code, err = run(["merge", "--base", str(base), "-o", str(tmp_path / "m.gguf")], capsys)
    assert code == 2 and "intermediate_size" in err
    config.update(intermediate_size=176, num_key_value_heads=3)
    (base / "config.json").write_text(json.dumps(config))
    code, err = run(["merge", "--base", str(base), "-o", str(tmp_path / "m.gguf")], capsys)
    assert code == 2 and "num_key_value_heads=3" in err


def test_hub_downloads_fetch_only_what_is_needed(tiny, tmp_path) -> None:
    with HubServer(tmp_path / "repos") as hub:
        repo = hub.add_repo("huggyllama/llama-7b", tiny["llama"])
        for shard in tiny["llama_bin"].glob("pytorch_model*"):  # a repo holding both formats
            shutil.copy2(shard, repo / shard.name)
        hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
        adapter = subprocess.run([str(BIN / "baize-convert"), "lora", "--lora",
                                  "project-baize/baize-lora-7B", "-o", str(tmp_path / "a.gguf")],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert adapter.returncode == 0, adapter.stderr
        fetched = [p for _, p, _ in hub.requests if "/resolve/" in p and "llama-7b" in p]
        assert fetched and not any(p.endswith((".safetensors", ".bin")) for p in fetched)
        merged = subprocess.run([str(BIN / "baize-convert"), "merge", "--lora",
                                 "project-baize/baize-lora-7B", "-o", str(tmp_path / "m.gguf")],
                                env=env, capture_output=True, text=True, timeout=300)
        assert merged.returncode == 0, merged.stderr
        fetched = [p for _, p, _ in hub.requests if "/resolve/" in p and "llama-7b" in p]
        assert any(p.endswith(".safetensors") for p in fetched)
        assert not any(p.endswith(".bin") for p in fetched)
