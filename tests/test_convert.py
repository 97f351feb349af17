"""baize-convert on the tiny fixtures: llama.cpp's logits on our GGUF against transformers+peft."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tensor_compare import assert_close, assert_same_gguf, assert_same_safetensors

from baize_convert.checkpoint import Checkpoint
from baize_convert.cli import main as convert_main
from baize_convert.gguf_export import hf_to_gguf_qk, merged_tensor
from baize_convert.inspect_gguf import inspect_gguf
from baize_convert.lora import Adapter
from baize_convert.pipeline import MergeRequest, resolve_base_spec, run_merge
from baize_convert.verify import verify_gguf


def merge(tmp_path: Path, base: Path, loras: list[Path], quant: str, **kw) -> Path:
    out = tmp_path / f"out-{quant}.gguf"
    run_merge(MergeRequest(base=str(base), loras=[str(x) for x in loras], quant=quant, output=out,
                           **kw), quiet=True)
    return out


def peft_merged(base: Path, loras: list[Path]):
    from baize_convert.verify import load_reference_model

    return load_reference_model(base, loras)


def llama_logits(gguf_path: Path, tokens: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), logits_all=True, n_ctx=256, verbose=False, seed=0,
                lora_path=str(lora) if lora else None)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


CASES = [
    ("llama", ["lora_v1"], "f32"),
    ("llama", ["lora_v1"], "f16"),
    ("llama", ["lora_st"], "f16"),
    ("llama", ["lora_v1", "lora_st"], "f32"),
    ("llama_gqa", ["lora_gqa"], "f16"),
    ("llama_bin", ["lora_bin_base"], "f16"),
    ("llama_decapoda", [], "f32"),
]


@pytest.mark.parametrize(("base", "loras", "quant"), CASES,
                         ids=["-".join([b, *lo, q]) for b, lo, q in CASES])
def test_merged_gguf_matches_peft(tiny, tmp_path, base, loras, quant) -> None:
    out = merge(tmp_path, tiny[base], [tiny[x] for x in loras], quant)
    report = verify_gguf(out, str(tiny[base]), [str(tiny[x]) for x in loras])
    assert report.tokens_ok, report.token_mismatches
    assert report.max_rel_error <= 1e-2
    assert report.argmax_agreement >= 0.97
    assert report.ok


def test_logits_directly_against_transformers(tiny, tmp_path) -> None:
    """The same check as verify, written out here so a bug in verify cannot hide one."""
    import sentencepiece as spm
    import torch

    out = merge(tmp_path, tiny["llama_gqa"], [tiny["lora_gqa"]], "f32")
    sp = spm.SentencePieceProcessor(model_file=str(tiny["tokenizer"] / "tokenizer.model"))
    text = "The quick brown fox jumps over the lazy dog. " * 6
    tokens = [1] + sp.encode(text)
    ours = llama_logits(out, tokens)
    with torch.no_grad():
        ref = peft_merged(tiny["llama_gqa"], [tiny["lora_gqa"]])(torch.tensor([tokens])).logits[0].numpy()
    assert len(tokens) > 40  # the missing-permutation failure shows only after ~20 tokens
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-2
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.97


def test_missing_permutation_is_caught(tiny, tmp_path, monkeypatch) -> None:
    import baize_convert.gguf_export as ge

    monkeypatch.setattr(ge, "hf_to_gguf_qk", lambda w, n_head: w)
    out = merge(tmp_path, tiny["llama"], [tiny["lora_v1"]], "f32")
    report = verify_gguf(out, str(tiny["llama"]), [str(tiny["lora_v1"])])
    assert not report.logits_ok and not report.ok


def test_verify_rejects_the_wrong_source(tiny, tmp_path) -> None:
    out = merge(tmp_path, tiny["llama"], [], "f16")
    assert not verify_gguf(out, str(tiny["llama_bin"])).ok
    assert convert_main(["verify", str(out), "--hf", str(tiny["llama_bin"])]) == 1


def test_permutation_round_trip() -> None:
    rng = np.random.default_rng(0)
    for n_head, rows, cols in ((4, 64, 64), (2, 32, 64), (8, 128, 16)):
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        hf_forward = w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
        assert np.array_equal(hf_to_gguf_qk(hf_forward, n_head), w)


@pytest.mark.parametrize("lora", ["lora_v1", "lora_st"])
def test_merged_tensors_equal_peft_merge(tiny, lora) -> None:
    model = peft_merged(tiny["llama"], [tiny[lora]])
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    ckpt = Checkpoint.open(tiny["llama"])
    adapter = Adapter.open(tiny[lora])
    changed = 0
    for name in ckpt.refs:
        ours = merged_tensor(ckpt, [adapter], name)
        np.testing.assert_allclose(ours, reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
        changed += name in adapter.pairs and not np.allclose(ours, ckpt.load(name))
    assert changed == len(adapter.pairs) > 0


def test_hf_out_writes_the_merged_model(tiny, tmp_path) -> None:
    from safetensors.numpy import load_file

    hf_out = tmp_path / "merged-hf"
    merge(tmp_path, tiny["llama_decapoda"], [tiny["lora_v1"]], "f16", hf_out=hf_out)
    reference = {k: v.numpy() for k, v in
                 peft_merged(tiny["llama_decapoda"], [tiny["lora_v1"]]).state_dict().items()}
    index = json.loads((hf_out / "model.safetensors.index.json").read_text())
    written = {}
    for shard in set(index["weight_map"].values()):
        written |= load_file(hf_out / shard)
    assert set(written) == set(reference)
    for name, value in written.items():
        assert value.dtype == np.float16  # the source dtype is kept
        np.testing.assert_allclose(value.astype(np.float32), reference[name], rtol=2e-3, atol=2e-3)
    config = json.loads((hf_out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert (hf_out / "tokenizer.model").exists()


def test_decapoda_ids_and_inv_freq_are_handled(tiny, tmp_path) -> None:
    out = merge(tmp_path, tiny["llama_decapoda"], [], "f16")
    info = inspect_gguf(out)
    assert (info["bos_token_id"], info["eos_token_id"]) == (1, 2)  # from tokenizer.model, not config.json
    assert info["add_bos_token"] is True and info["add_eos_token"] is False
    assert info["tensor_count"] == 3 + 2 * 9  # no rotary_emb.inv_freq


def test_embedded_chat_template_renders_the_baize_prompt(tiny_gguf) -> None:
    import jinja2
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from baize_tui.prompt import render

    template = inspect_gguf(tiny_gguf)["chat_template"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "What is 2+2?"}]
    expected = render(None, [("Hi", "Hello!")], "What is 2+2?")
    rendered = jinja2.Environment().from_string(template).render(messages=messages,
                                                                 add_generation_prompt=True)
    assert rendered == expected
    formatter = Jinja2ChatFormatter(template, eos_token="</s>", bos_token="<s>")
    assert formatter(messages=messages).prompt == expected
    custom = [{"role": "system", "content": "Be brief."}] + messages
    assert Jinja2ChatFormatter(template, "</s>", "<s>")(messages=custom).prompt == \
        render("Be brief.", [("Hi", "Hello!")], "What is 2+2?")


QUANTS = [("q8_0", "Q8_0", "Q8_0"), ("q4", "Q4_K_M", "Q4_K"), ("q4_0", "Q4_0", "Q4_0"),
          ("q5_k_m", "Q5_K_M", "Q5_K"), ("q6_k", "Q6_K", "Q6_K"), ("bf16", "BF16", "BF16")]


@pytest.fixture(scope="module")
def quant_reports(tiny, tmp_path_factory) -> dict:
    """Each quant type of the 256-wide model + adapter, with its verify report."""
    from llama_cpp import Llama

    tmp = tmp_path_factory.mktemp("quants")
    reports = {}
    for quant, _, _ in QUANTS:
        out = merge(tmp, tiny["llama_wide"], [tiny["lora_wide"]], quant)
        llm = Llama(str(out), n_ctx=256, verbose=False, seed=1)
        text = llm.create_completion("Hello", max_tokens=24, temperature=0.0)["choices"][0]["text"]
        generated = llm.n_tokens
        del llm
        reports[quant] = (out, verify_gguf(out, str(tiny["llama_wide"]), [str(tiny["lora_wide"])]),
                          text, generated)
    assert not list(tmp.glob(".*"))  # temporary F16 and partial files are gone
    return reports


@pytest.mark.parametrize(("quant", "label", "main_type"), QUANTS)
def test_quantized_outputs_load_generate_and_stay_close(quant_reports, quant, label,
                                                        main_type) -> None:
    out, report, text, generated = quant_reports[quant]
    info = inspect_gguf(out)
    assert info["file_type"] == label
    assert info["tensor_types"].get(main_type, 0) >= 7  # the asked type is really applied
    assert generated > 20 and isinstance(text, str)
    assert report.tokens_ok
    # Bounds per type are in baize_convert.verify.BOUNDS; whatever they say, a quantized file
    # must stay far from a broken one (NMSE ~1, argmax agreement ~1/1000).
    assert report.ok, report
    assert report.nmse < 0.25 and report.argmax_agreement > 0.3


def test_k_quants_beat_legacy_quants(quant_reports) -> None:
    nmse = {q: quant_reports[q][1].nmse for q, _, _ in QUANTS}
    assert nmse["bf16"] < nmse["q8_0"] < nmse["q6_k"] < nmse["q5_k_m"] < nmse["q4"] < nmse["q4_0"]
    sizes = {q: quant_reports[q][0].stat().st_size for q, _, _ in QUANTS}
    assert sizes["bf16"] > sizes["q8_0"] > sizes["q6_k"] > sizes["q5_k_m"] > sizes["q4"]


def test_k_quant_on_widths_that_do_not_divide_falls_back(tiny, tmp_path) -> None:
    out = merge(tmp_path, tiny["llama"], [tiny["lora_v1"]], "q4_k_m")  # 64-wide rows
    info = inspect_gguf(out)
    assert info["file_type"] == "Q4_K_M"
    assert "Q4_K" not in info["tensor_types"]  # llama.cpp fell back per tensor
    assert verify_gguf(out, str(tiny["llama"]), [str(tiny["lora_v1"])]).tokens_ok


@pytest.mark.parametrize(("base", "lora"), [("llama", "lora_v1"), ("llama_gqa", "lora_gqa"),
                                            ("llama", "lora_st")])
def test_gguf_lora_adapter_matches_merged(tiny, tmp_path, base, lora) -> None:
    import sentencepiece as spm

    adapter = tmp_path / "adapter.gguf"
    assert convert_main(["lora", "--lora", str(tiny[lora]), "--base", str(tiny[base]),
                         "-o", str(adapter)]) == 0
    info = inspect_gguf(adapter)
    assert info["type"] == "adapter" and info["adapter_type"] == "lora"
    base_gguf = merge(tmp_path, tiny[base], [], "f32")
    merged_gguf = tmp_path / "merged.gguf"
    run_merge(MergeRequest(base=str(tiny[base]), loras=[str(tiny[lora])], quant="f32",
                           output=merged_gguf), quiet=True)
    sp = spm.SentencePieceProcessor(model_file=str(tiny["tokenizer"] / "tokenizer.model"))
    tokens = [1] + sp.encode("Adapters applied at load time match merged weights. " * 4)
    with_adapter = llama_logits(base_gguf, tokens, lora=adapter)
    merged = llama_logits(merged_gguf, tokens)
    plain = llama_logits(base_gguf, tokens)
    assert np.abs(with_adapter - merged).max() / np.abs(merged).max() < 1e-3
    assert np.abs(plain - merged).max() / np.abs(merged).max() > 1e-2  # the adapter matters


def test_inspect_cli(tiny_gguf, capsys) -> None:
    assert convert_main(["inspect", str(tiny_gguf), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "llama" and info["vocab_size"] == 1000
    assert info["context_length"] == 512 and info["file_type"] == "F16"
    assert info["tensor_count"] == 21 and "[|Human|]" in info["chat_template"]


def test_known_baize_adapter_needs_no_base() -> None:
    assert resolve_base_spec(None, ["project-baize/baize-lora-13B"], []) == "huggyllama/llama-13b"
    assert resolve_base_spec(None, ["project-baize/baize-healthcare-lora-7B"], []) == "huggyllama/llama-7b"


def test_default_output_name_and_force(tiny, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    lora = tmp_path / "baize-lora-7B"
    shutil.copytree(tiny["lora_wide"], lora)
    args = ["merge", "--base", str(tiny["llama_wide"]), "--lora", str(lora), "--quantize", "q8"]
    assert convert_main(args) == 0
    out = tmp_path / "baize-lora-7B-Q8_0.gguf"
    assert out.exists()
    summary = capsys.readouterr().out
    assert str(out) in summary and "Q8_0" in summary and "peak memory" in summary
    before = out.stat().st_mtime_ns
    assert convert_main(args) == 2
    assert "--force" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert convert_main(args + ["--force"]) == 0


def test_chunked_streaming_writes_identical_files(tiny, tmp_path, monkeypatch) -> None:
    import baize_convert.gguf_export as ge

    (tmp_path / "whole").mkdir()
    (tmp_path / "chunked").mkdir()
    whole = merge(tmp_path / "whole", tiny["llama_gqa"], [tiny["lora_gqa"]], "q8_0",
                  hf_out=tmp_path / "whole" / "hf")
    monkeypatch.setattr(ge, "CHUNK_ELEMENTS", 700)  # many row blocks per tensor, heads kept whole
    assert len(ge.row_chunks((1000, 64), None)) > 1 and len(ge.row_chunks((64, 64), 4)) == 4
    chunked = merge(tmp_path / "chunked", tiny["llama_gqa"], [tiny["lora_gqa"]], "q8_0",
                    hf_out=tmp_path / "chunked" / "hf")
    # Equal within rounding, not bit for bit: BLAS rounds a row block's product differently
    # from the whole matrix's (see tests/tensor_compare.py).
    assert_same_gguf(whole, chunked)
    shards = sorted(p.name for p in (tmp_path / "whole" / "hf").glob("*.safetensors"))
    assert shards and shards == sorted(
        p.name for p in (tmp_path / "chunked" / "hf").glob("*.safetensors"))
    for shard in shards:
        assert_same_safetensors(tmp_path / "whole" / "hf" / shard,
                                tmp_path / "chunked" / "hf" / shard)


def test_tensor_comparison_catches_a_wrong_block_but_not_rounding() -> None:
    rng = np.random.default_rng(0)
    merged = rng.standard_normal((64, 32)).astype(np.float32)
    rounded = merged * np.float32(1 + 2e-7)  # what a different BLAS block size can do
    assert_close("w", "F32", merged, rounded)
    wrong = merged.copy()
    wrong[16:32] = merged[32:48]  # one row block written from the wrong rows
    with pytest.raises(AssertionError, match="more than rounding allows"):
        assert_close("w", "F32", merged, wrong)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    def q8(x: np.ndarray) -> np.ndarray:
        return dequantize(quantize(x, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0)

    assert_close("w", "Q8_0", q8(merged), q8(rounded))
    with pytest.raises(AssertionError, match="more than rounding allows"):
        assert_close("w", "Q8_0", q8(merged), q8(wrong))


def test_row_chunks_cover_rows_and_keep_heads_whole() -> None:
    from baize_convert.gguf_export import row_chunks

    assert row_chunks((1000, 64), None, chunk_elements=640) == [(i, i + 10) for i in range(0, 1000, 10)]
    chunks = row_chunks((64, 64), 4, chunk_elements=640)  # 10 rows wanted, heads are 16 rows
    assert chunks == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert row_chunks((64,), None) == [(0, 64)]


@pytest.mark.parametrize("name", ["llama_bin", "llama_decapoda", "lora_v1"])
def test_torch_free_reader_matches_torch_load(tiny, name) -> None:
    import torch

    from baize_convert.torchbin import load_state_dict, read_rows

    files = sorted(tiny[name].glob("*.bin"))
    assert files
    for path in files:
        ours = load_state_dict(path)
        theirs = torch.load(path, weights_only=True)
        assert set(ours) == set(theirs)
        for key, lazy in ours.items():
            expected = theirs[key].numpy()
            assert lazy.shape == expected.shape
            np.testing.assert_array_equal(read_rows(path, lazy), expected)
            if expected.ndim == 2 and expected.shape[0] > 3:
                np.testing.assert_array_equal(read_rows(path, lazy, 1, 3), expected[1:3])


def test_torch_free_reader_refuses_code(tmp_path) -> None:
    import os as os_mod
    import zipfile

    from baize_convert import ConvertError
    from baize_convert.torchbin import load_state_dict

    class Evil:
        def __reduce__(self):
            return (os_mod.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    import pickle

    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ConvertError, match="refusing to load"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()


def test_progress_callback_reaches_the_total(tiny, tmp_path) -> None:
    calls: list[tuple[str, int, int | None]] = []
    run_merge(MergeRequest(base=str(tiny["llama"]), loras=[str(tiny["lora_v1"])], quant="q4",
                           output=tmp_path / "p.gguf"), quiet=True,
              progress_cb=lambda stage, done, total: calls.append((stage, done, total)))
    converting = [c for c in calls if c[0].startswith("converting")]
    assert len(converting) == 21  # one per tensor
    dones = [done for _, done, _ in converting]
    assert dones == sorted(dones) and dones[-1] == converting[-1][2]
    assert calls[-1][0] == "quantizing to Q4_K_M"
