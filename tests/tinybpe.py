"""Tiny byte-level BPE tokenizers (GPT-2-style merges) shaped like today's LLaMA-family bases.

Two flavours, trained offline on local text with the ``tokenizers`` library and saved the way
the hub ships them (``tokenizer.json`` + ``tokenizer_config.json`` with a chat template):

- ``llama3``: Llama 3's split regex, ``ignore_merges``, special tokens appended after the
  learned vocabulary (``<|begin_of_text|>`` …), a post-processor that adds BOS, and a
  header/``<|eot_id|>`` chat template.
- ``smollm``: SmolLM's individual-digit + GPT-2 byte-level pre-tokenizer, special tokens at
  ids 0-16 (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` …), no BOS added, and a
  ChatML template.
"""

from __future__ import annotations

import json
from pathlib import Path

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
SMOLLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<jupyter_script>", "<empty_output>",
]

# Written for these fixtures in the shape of the bases' own templates.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
SMOLLM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

FLAVOURS = ("llama3", "smollm")


def _pre_tokenizer(flavour: str):
    from tokenizers import Regex, pre_tokenizers

    if flavour == "llama3":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def build_bpe_tokenizer(out: Path, flavour: str, vocab_size: int = 1000) -> Path:
    """Train and save a byte-level BPE tokenizer of ``flavour`` (``llama3`` or ``smollm``)."""
    from tinymodels import corpus_lines
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if flavour not in FLAVOURS:
        raise ValueError(flavour)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(ignore_merges=flavour == "llama3"))
    tok.pre_tokenizer = _pre_tokenizer(flavour)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SMOLLM_SPECIALS if flavour == "smollm" else [],
    )
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    if flavour == "llama3":
        tok.add_special_tokens(LLAMA3_SPECIALS)
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", bos)]),
        ])
        specials = LLAMA3_SPECIALS
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                  "eos_token": "<|end_of_text|>", "chat_template": LLAMA3_TEMPLATE,
                  "clean_up_tokenization_spaces": True, "model_max_length": 131072}
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        specials = SMOLLM_SPECIALS
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>",
                  "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                  "pad_token": "<|im_end|>", "add_prefix_space": False,
                  "chat_template": SMOLLM_TEMPLATE, "clean_up_tokenization_spaces": False,
                  "model_max_length": 8192}
    tok.save(str(out / "tokenizer.json"))
    config["added_tokens_decoder"] = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
        for t in specials
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if k in config},
        indent=2))
    return out


def bpe_size(tokenizer_dir: Path) -> int:
    """Number of ids in a saved tokenizer (learned vocabulary plus added tokens)."""
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data["added_tokens"]]
    return max(ids) + 1
