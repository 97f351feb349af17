"""baize-convert on today's LLaMA family: Llama 3 (byte-level BPE, llama3 rope scaling, GQA),
SmolLM (byte-level BPE, tied embeddings) and Mistral (sentencepiece, GQA); llama.cpp against
transformers + peft on tiny checkpoints of each shape (tests/tinymodels.py ``build_family``)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from baize_convert import ConvertError, ConvertFailed
from baize_convert.inspect_gguf import open_header
from baize_convert.pipeline import MergeRequest, model_name, run_lora_export, run_merge
from baize_convert.verify import PARITY_STRINGS, verify_gguf

SHAPES = ["llama3", "smollm", "mistral"]
HARD_STRINGS = PARITY_STRINGS + (
    " leading space", "  two leading", "trailing \n", "a\n\nb\r\nc", "🦙🤖 emoji-only",
    "日本語と中文の混在テキスト", "class A:\n    def f(self) -> int:\n        return 0x1F",
    "[|Human|]What?\n[|AI|]This.", "don't I'll we've THEY'RE", "1234567 89.5%",
)


_COUNTER = itertools.count()


def merge(tmp_path: Path, base: Path, loras: list[Path], quant: str = "f32", **kw) -> Path:
    out = tmp_path / f"out-{base.name}-{quant}-{next(_COUNTER)}.gguf"
    run_merge(MergeRequest(base=str(base), loras=[str(x) for x in loras], quant=quant,
                           output=out, **kw), quiet=True)
    return out


def header_value(path: Path, key: str):
    return open_header(path).get(key)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("quant", ["f32", "f16"])
def test_merged_gguf_matches_peft(family, tmp_path, shape, quant) -> None:
    out = merge(tmp_path, family[shape], [family[f"lora_{shape}"]], quant)
    report = verify_gguf(out, str(family[shape]), [str(family[f"lora_{shape}"])])
    assert report.tokens_ok, report.token_mismatches
    assert report.max_rel_error <= 1e-2
    assert report.argmax_agreement >= 0.97
    assert report.ok


@pytest.mark.parametrize("shape", ["llama3", "smollm"])
def test_bpe_tokenization_parity_on_hard_strings(family, tmp_path, shape) -> None:
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    out = merge(tmp_path, family[shape], [], "f16")
    hf = AutoTokenizer.from_pretrained(family[shape])
    llm = Llama(str(out), vocab_only=True, verbose=False)
    for text in HARD_STRINGS:
        ours = llm.tokenize(text.encode(), add_bos=True, special=False)
        assert ours == hf(text)["input_ids"], text
        bare = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert llm.detokenize(bare, special=False).decode() == text
    header = open_header(out)
    assert header.get("tokenizer.ggml.model") == "gpt2"
    assert header.get("tokenizer.ggml.pre") == {"llama3": "llama-bpe", "smollm": "smollm"}[shape]
    assert header.get("tokenizer.ggml.add_bos_token") is (shape == "llama3")
    merges = header.get("tokenizer.ggml.merges")
    assert merges.count == len(json.loads(
        (family[shape] / "tokenizer.json").read_text())["model"]["merges"])


def test_llama3_logits_directly_and_rope_freqs_matter(family, tmp_path, monkeypatch) -> None:
    """Written out without verify; and without the llama3 rope factors the logits drift."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    import baize_convert.checkpoint as ck
    from baize_convert.verify import load_reference_model

    base, lora = family["llama3"], family["lora_llama3"]
    tokens = AutoTokenizer.from_pretrained(base)("The quick brown fox jumps over the lazy dog. "
                                                 * 8)["input_ids"]
    assert len(tokens) > 60
    with torch.no_grad():
        ref = load_reference_model(base, [lora])(torch.tensor([tokens])).logits[0].numpy()

    def logits(path: Path) -> np.ndarray:
        llm = Llama(str(path), logits_all=True, n_ctx=256, verbose=False)
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float32)

    good = logits(merge(tmp_path, base, [lora]))
    assert np.abs(good - ref).max() / np.abs(ref).max() < 1e-2
    assert (good.argmax(-1) == ref.argmax(-1)).mean() >= 0.97
    assert "rope_freqs.weight" in {t.name for t in open_header(merge(tmp_path, base, [])).tensors}

    monkeypatch.setattr(ck, "llama3_rope_factors",
                        lambda config, head_dim, theta: np.ones(head_dim // 2, np.float32))
    bad = logits(merge(tmp_path, base, [lora]))
    assert np.abs(bad - ref).max() / np.abs(ref).max() > 5e-2


@pytest.mark.parametrize("shape", ["llama3", "smollm"])
def test_hf_out_of_tied_and_rope_scaled_bases_loads_in_transformers(family, tmp_path, shape) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from baize_convert.verify import load_reference_model

    hf_out = tmp_path / "merged-hf"
    merge(tmp_path, family[shape], [family[f"lora_{shape}"]], "f16", hf_out=hf_out)
    ids = torch.tensor([[5, 60, 70, 80, 90, 100, 110, 120] * 4])
    with torch.no_grad():
        ours = AutoModelForCausalLM.from_pretrained(hf_out, dtype=torch.float32)(ids).logits
        ref = load_reference_model(family[shape], [family[f"lora_{shape}"]])(ids).logits
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_tied_embeddings_have_no_output_tensor(family, tmp_path) -> None:
    out = merge(tmp_path, family["smollm"], [family["lora_smollm"]], "f16")
    names = {t.name for t in open_header(out).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names


@pytest.mark.parametrize("shape", SHAPES)
def test_gguf_lora_adapter_applies_at_runtime(family, tmp_path, shape) -> None:
    base_gguf = merge(tmp_path, family[shape], [], "f32")
    adapter = run_lora_export(str(family[f"lora_{shape}"]), base=str(family[shape]),
                              output=tmp_path / "adapter.gguf", quiet=True)
    report = verify_gguf(base_gguf, str(family[shape]), [str(family[f"lora_{shape}"])],
                         lora_gguf=adapter)
    assert report.max_rel_error <= 1e-2 and report.argmax_agreement >= 0.97, report


def _render(template: str, messages: list[dict], bos: str = "", eos: str = "") -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def test_baize_template_is_embedded_by_default_and_renders_the_engine_prompt(family, tmp_path) -> None:
    from baize_tui.prompt import render

    out = merge(tmp_path, family["smollm"], [family["lora_smollm"]])
    template = header_value(out, "tokenizer.chat_template")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "你好 🙂"}]
    assert _render(template, messages) == render(None, [("Hi", "Hello!")], "你好 🙂")
    assert header_value(out, "tokenizer.ggml.eot_token_id") is None


@pytest.mark.parametrize(("shape", "eot"), [("llama3", "<|eot_id|>"), ("smollm", "<|im_end|>")])
def test_base_template_from_the_training_record(family, tmp_path, shape, eot) -> None:
    """A run trained in the base's own format records it; merge embeds the base's template
    and the end-of-turn id that goes with it."""
    from transformers import AutoTokenizer

    run = tmp_path / "run7"
    shutil.copytree(family[f"lora_{shape}"], run / "adapter")
    (run / "adapter" / "baize_train.json").write_text(json.dumps({"template": "base"}))
    out = merge(tmp_path, family[shape], [run / "adapter"], "f16")
    hf = AutoTokenizer.from_pretrained(family[shape])
    assert header_value(out, "tokenizer.chat_template") == hf.chat_template
    assert header_value(out, "tokenizer.ggml.eot_token_id") == hf.convert_tokens_to_ids(eot)
    assert header_value(out, "general.name") == f"{shape}-run7"
    messages = [{"role": "user", "content": "Hi"}]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert _render(header_value(out, "tokenizer.chat_template"), messages,
                   bos=hf.bos_token or "") == expected
    # --template overrides the record
    out2 = merge(tmp_path, family[shape], [run / "adapter"], "f16", template="baize")
    assert "[|Human|]" in header_value(out2, "tokenizer.chat_template")


def test_template_file_and_bad_choices(family, tmp_path) -> None:
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    out = merge(tmp_path, family["smollm"], [], "f16", template=str(tpl))
    assert header_value(out, "tokenizer.chat_template") == tpl.read_text()
    with pytest.raises(ConvertError, match="base has none"):
        merge(tmp_path, family["mistral"], [], "f16", template="base")
    with pytest.raises(ConvertError, match="not baize, base or a template file"):
        merge(tmp_path, family["smollm"], [], "f16", template="nope")


def test_misdescribed_vocabulary_is_caught_and_leaves_no_file(family, tmp_path, monkeypatch) -> None:
    """The old bug: byte-level BPE tokens written as a sentencepiece vocabulary. llama.cpp
    aborts on such a file; the post-write probe (a child process) catches it."""
    import baize_convert.pipeline as pipeline
    from baize_convert.vocab import load_vocab

    def as_sentencepiece(directory: Path, rows: int):
        vocab = load_vocab(directory, rows)
        vocab.model, vocab.pre, vocab.merges = "llama", "default", []
        vocab.scores = [0.0] * len(vocab.tokens)
        return vocab

    monkeypatch.setattr(pipeline, "load_vocab", as_sentencepiece)
    out = tmp_path / "broken.gguf"
    with pytest.raises(ConvertFailed, match="llama.cpp cannot use the vocabulary") as info:
        run_merge(MergeRequest(base=str(family["smollm"]), loras=[], output=out), quiet=True)
    assert "aborted" in str(info.value) or "failed" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def _copy_with(base: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / base.name
    shutil.copytree(base, copy)
    edit(copy)
    return copy


def test_unknown_pre_tokenizer_is_refused_by_name(family, tmp_path) -> None:
    def edit(d: Path) -> None:
        data = json.loads((d / "tokenizer.json").read_text())
        data["pre_tokenizer"]["pretokenizers"][0] = {"type": "Digits", "individual_digits": False}
        (d / "tokenizer.json").write_text(json.dumps(data))

    base = _copy_with(family["smollm"], tmp_path, edit)
    out = tmp_path / "x.gguf"
    with pytest.raises(ConvertError, match=r"unknown BPE pre-tokenizer Digits\(individual_digits=False\)"):
        run_merge(MergeRequest(base=str(base), loras=[], output=out), quiet=True)
    assert not out.exists()


def test_unsupported_architecture_is_refused_by_name(family, tmp_path) -> None:
    from baize_tui.errors import UserError
    from baize_tui.train.runs import check_base

    def edit(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
        (d / "config.json").write_text(json.dumps(config))

    base = _copy_with(family["smollm"], tmp_path, edit)
    with pytest.raises(ConvertError, match="Qwen2ForCausalLM is not LLaMA and is not supported"):
        run_merge(MergeRequest(base=str(base), loras=[], output=tmp_path / "x.gguf"), quiet=True)
    with pytest.raises(UserError, match="not a LLaMA model"):
        check_base(str(base))


def test_general_name() -> None:
    assert model_name("huggyllama/llama-7b", ["project-baize/baize-lora-7B"]) == "baize-lora-7B"
    assert model_name("/m/SmolLM2-135M", ["/runs/run3/adapter"]) == "SmolLM2-135M-run3"
    assert model_name("/m/SmolLM2-135M", ["/runs/run3/adapter/"]) == "SmolLM2-135M-run3"
    assert model_name("/m/SmolLM2-135M", []) == "SmolLM2-135M"
    assert model_name("/m/x", ["/r/adapter"], "mine") == "mine"
