"""Padding-free packing is exact: per-sample losses and gradients of a packed batch equal those
of each sample run alone (an independent eager-attention reference), for both loss modes; a
contaminating mask is caught by the same comparison, and a model whose attention ignores the
boundaries is refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from baize_tui.errors import UserError
from baize_tui.train.data import IGNORE_INDEX, Collator, Dialogue, encode_all, load_tokenizer

DIALOGUES = [
    [("What is a LoRA adapter?", "A small low-rank update to the weights of a model."),
     ("Why use it?", "It trains fast and saves memory.")],
    [("Tell me a joke.", "Why did the chicken cross the road? To get to the other side!")],
    [("What is 2 + 2?", "2 + 2 = 4."), ("And 3 + 3?", "3 + 3 = 6."), ("Thanks!", "You're welcome.")],
    [("How do I print in Python?", "Use print('hello').")],
]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def lora_model(base: Path):
    """The tiny base with a random (non-zero) LoRA, loaded the way ``--packing`` loads it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from baize_tui.train.packing import choose_attention

    attention = choose_attention(packing=True, precision="fp32")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32,
                                                 attn_implementation=attention)
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def set_attention(model, name: str) -> None:
    model.get_base_model().set_attn_implementation(name)


def examples(base: Path, loss: str) -> list[dict]:
    tokenizer = load_tokenizer(str(base))
    dialogues = [Dialogue(turns) for turns in DIALOGUES]
    found, stats = encode_all(tokenizer, dialogues, template="release", cutoff_len=512, loss=loss)
    assert stats.examples == len(DIALOGUES)
    return found


def alone(model, example: dict, params: list):
    """Loss and gradients of one sample on its own (eager attention, no padding, no packing)."""
    import torch

    set_attention(model, "eager")
    out = model(input_ids=torch.tensor([example["input_ids"]]),
                labels=torch.tensor([example["labels"]]))
    grads = torch.autograd.grad(out.loss, params)
    return out.loss.detach(), grads


def packed(model, batch: dict, params: list):
    """Per-sample losses and gradients, all from one forward pass over the packed row."""
    import torch

    from baize_tui.train.packing import per_example_losses

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "sample_ids")}
    logits = model(**inputs).logits
    bounds = batch["cu_seq_lens_q"].tolist()
    losses = per_example_losses(logits, batch["labels"], bounds)
    grads = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    return [loss.detach() for loss in losses], grads


def mismatches(ref: list, got: list) -> list[int]:
    """Indices of samples whose loss or gradients differ beyond float-order tolerance."""
    import torch

    bad = []
    for i, ((ref_loss, ref_grads), (loss, grads)) in enumerate(zip(ref, got, strict=True)):
        same = torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6) and all(
            torch.allclose(g, r, rtol=1e-4, atol=1e-6) for g, r in zip(grads, ref_grads, strict=True))
        if not same:
            bad.append(i)
    return bad


@pytest.mark.parametrize("loss", ["ai", "all"])
@pytest.mark.parametrize("base", ["llama", "llama_gqa"])
def test_packed_losses_and_gradients_equal_each_sample_alone(tiny: dict[str, Path], loss: str,
                                                             base: str) -> None:
    import torch

    from baize_tui.train.packing import PACKED_ATTENTION, PackingCollator

    model = lora_model(tiny[base])
    params = [p for p in model.parameters() if p.requires_grad]
    found = examples(tiny[base], loss)
    reference = [alone(model, ex, params) for ex in found]

    batch = PackingCollator()(found)
    lengths = [len(ex["input_ids"]) for ex in found]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    starts = batch["cu_seq_lens_q"].tolist()[:-1]
    assert all(batch["labels"][0, s] == IGNORE_INDEX for s in starts)

    set_attention(model, PACKED_ATTENTION)
    losses, grads = packed(model, batch, params)
    assert mismatches(reference, list(zip(losses, grads, strict=True))) == []
    assert all(any(g.abs().max() > 0 for g in gs) for _, gs in reference)  # gradients flow

    # The batch loss the trainer optimises equals the padded batch's (same tokens, same mean).
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "sample_ids"}
        packed_loss = model(**inputs).loss
        set_attention(model, "eager")
        padded = Collator(pad_id=0)(found)
        padded.pop("sample_ids")
        padded_loss = model(**padded).loss
    assert torch.allclose(packed_loss, padded_loss, rtol=1e-5)


def test_a_contaminating_mask_is_caught(tiny: dict[str, Path]) -> None:
    """The same comparison fails when the row is attended causally across sample boundaries."""
    import torch

    from baize_tui.train.packing import PackingCollator

    model = lora_model(tiny["llama"])
    params = [p for p in model.parameters() if p.requires_grad]
    found = examples(tiny["llama"], "ai")
    reference = [alone(model, ex, params) for ex in found]
    batch = PackingCollator()(found)
    # A plain 2-D mask of ones: sdpa then masks causally over the whole row, so every sample
    # after the first attends to the ones before it (position ids restart, the mask does not).
    leaky = dict(batch, attention_mask=torch.ones_like(batch["input_ids"]))
    for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
        leaky.pop(key)
    set_attention(model, "sdpa")
    losses, grads = packed(model, dict(leaky, cu_seq_lens_q=batch["cu_seq_lens_q"]), params)
    assert mismatches(reference, list(zip(losses, grads, strict=True))) == [1, 2, 3]


def test_attention_that_ignores_boundaries_is_refused(tiny: dict[str, Path]) -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from baize_tui.train.packing import (
        PACKED_ATTENTION,
        check_isolation,
        probe_tokens,
        require_boundaries,
    )

    model = lora_model(tiny["llama"])
    found = examples(tiny["llama"], "ai")
    tokens = probe_tokens(found)
    check_isolation(model, tokens)  # the packed attention passes
    assert require_boundaries(model) == PACKED_ATTENTION

    def leaky(module, query, key, value, attention_mask, **kwargs):
        for name in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
            kwargs.pop(name, None)
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)

    AttentionInterface.register("test_leaky_sdpa", leaky)
    set_attention(model, "test_leaky_sdpa")
    with pytest.raises(UserError, match="lets packed samples see each other"):
        check_isolation(model, tokens)
    with pytest.raises(UserError, match="would let packed samples attend"):
        require_boundaries(model)


def test_kernels_and_option_checks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    from baize_tui.train.packing import check_kernels
    from baize_tui.train.settings import TrainConfig

    check_kernels("")
    if importlib.util.find_spec("liger_kernel") is None:
        with pytest.raises(UserError, match="needs the liger-kernel package"):
            check_kernels("liger")
        # train run refuses before starting anything, with the usage exit status
        from baize_tui.cli import main

        out = tmp_path / "never"
        code = main(["train", "run", "--base", "b", "--data", "d", "--out", str(out),
                     "--kernels", "liger"])
        assert code == 2 and not out.exists()
        assert "pip install 'baize-tui[kernels]'" in capsys.readouterr().err
    config = TrainConfig(base="b", data=["d"], packing=True, group_by_length=True)
    with pytest.raises(UserError, match="--group-by-length is for unpacked"):
        config.validate()
    with pytest.raises(UserError, match="--kernels"):
        TrainConfig(base="b", data=["d"], kernels="unsloth").validate()


def test_group_by_length_batches_similar_lengths(tiny: dict[str, Path], tmp_path: Path) -> None:
    """--group-by-length reaches the Trainer's sampler: its micro-batches carry less padding
    than the default random order over the same examples."""
    import random

    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from baize_tui.train.packing import sampling_args
    from baize_tui.train.settings import TrainConfig

    rng = random.Random(0)
    found = [{"input_ids": [1] * n, "labels": [1] * n, "id": i}
             for i, n in enumerate(rng.randint(10, 300) for _ in range(256))]

    def padding(config: TrainConfig) -> float:
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8,
                                 use_cpu=True, report_to="none", seed=1,
                                 **sampling_args(config, TrainingArguments))
        trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny["llama"]), args=args,
                          train_dataset=found)
        sampler = trainer._get_train_sampler()
        assert sampler is not None
        order = list(sampler)
        assert sorted(order) == list(range(len(found)))  # every sample once
        lengths = [len(found[i]["input_ids"]) for i in order]
        batches = [lengths[i:i + 8] for i in range(0, len(lengths), 8)]
        return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)

    plain = padding(TrainConfig())
    grouped = padding(TrainConfig(group_by_length=True))
    assert grouped < 0.5 * plain, (grouped, plain)


def test_a_sample_longer_than_the_sliding_window_is_refused(tiny: dict[str, Path]) -> None:
    """Per-sample SDPA attends to the whole sample: a model with a shorter sliding window
    (Mistral-style) would train on a different attention, so packing stops with a message."""
    import torch

    from baize_tui.train.packing import packed_sdpa_attention

    model = lora_model(tiny["llama"])
    attention = model.get_base_model().model.layers[0].self_attn
    q = k = v = torch.zeros(1, 4, 24, 16)
    cu = torch.tensor([0, 16, 24], dtype=torch.int32)
    out, _ = packed_sdpa_attention(attention, q, k, v, None, cu_seq_lens_q=cu, sliding_window=16)
    assert out.shape == (1, 24, 4, 16)
    with pytest.raises(UserError, match="sliding window"):
        packed_sdpa_attention(attention, q, k, v, None, cu_seq_lens_q=cu, sliding_window=8)


def test_presets_flags_and_attention_choice() -> None:
    import argparse

    from baize_tui.commands.train import register, resolve_config
    from baize_tui.train.packing import (
        PACKED_ATTENTION,
        choose_attention,
        flash_attention_available,
    )

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def config(*flags: str):
        return resolve_config(parser.parse_args(["train", "run", "--base", "b", "--data", "d",
                                                 "--out", "o", *flags]))

    assert not config().packing and not config().group_by_length
    assert config("--preset", "baize-7b-a100").packing
    assert config("--preset", "baize-7b-a100").target_modules == "all-linear"
    assert not config("--preset", "a100-bf16", "--no-packing").packing
    assert not config("--preset", "baize-exact").packing
    assert config("--group-by-length").group_by_length
    # fp32 (and any machine without CUDA + flash-attn): the per-sample SDPA path.
    assert choose_attention(packing=True, precision="fp32") == PACKED_ATTENTION
    expected = "flash_attention_2" if flash_attention_available() else PACKED_ATTENTION
    assert choose_attention(packing=True, precision="bf16") == expected
    assert choose_attention(packing=False, precision="fp32") is None


def test_useful_and_raw_token_counts() -> None:
    """Padded batches: real tokens from the attention mask, positions with the padding; packed
    batches: every position is a real token."""
    from baize_tui.train.packing import PackingCollator, batch_token_counts
    from baize_tui.train.worker import throughput_fields

    features = [{"input_ids": [1, 5, 6, 7], "labels": [-100, 5, 6, 7], "id": 0},
                {"input_ids": [1, 8], "labels": [-100, 8], "id": 1}]
    assert batch_token_counts(Collator(pad_id=0)(features)) == (6, 8)
    assert batch_token_counts(Collator(pad_id=0, pad_to_multiple_of=513)(features)) == (6, 1026)
    assert batch_token_counts(PackingCollator()(features)) == (6, 6)
    fields = throughput_fields(6, 8, 2.0)
    assert fields == {"useful_tokens_per_s": 3.0, "raw_tokens_per_s": 4.0,
                      "padding_fraction": 0.25}
    assert throughput_fields(0, 0, 0.0)["useful_tokens_per_s"] is None
