"""Tiny LLaMA GGUFs that speak real chat formats, written directly with gguf-py's GGUFWriter.

Each file is a real llama-architecture GGUF (GQA, RMS norm, rope) that llama.cpp loads, with
the chat template and special tokens of a model family embedded the way the hub's files have
them:

=============  =====================  ==========================================================
name           vocabulary             template
=============  =====================  ==========================================================
``chatml``     SentencePiece (llama)  ChatML (``<|im_start|>`` / ``<|im_end|>``), Qwen/SmolLM-style
``llama3``     GPT2 byte-level BPE    Llama-3 (``<|start_header_id|>`` … ``<|eot_id|>``),
               (``pre=llama-bpe``)    with merges
``mistral``    SentencePiece (llama)  Mistral v0.3 (``[INST]`` / ``[/INST]`` control tokens, EOS)
``baize``      SentencePiece (llama)  none, Baize-like name (``general.name`` mentions Baize)
``plain``      SentencePiece (llama)  none, no Baize sign
=============  =====================  ==========================================================

The weights are chosen so the greedy next token is a function of the current token (a
Markov chain we design): embeddings are one-hot (``n_embd >= vocab``), the attention and
feed-forward outputs are small random matrices (real work, negligible effect), and the output
matrix maps each token to its successor with a wide margin. So a reply is predictable without
depending on BLAS rounding: after the generation prompt the model says ``chain`` (by default
"Hello ▁there !") and then the format's end-of-turn token. ``chain="bytes"`` makes every
reply the byte tokens of "中" repeated, ``chain="invalid"`` the byte 0xFF repeated (never valid
UTF-8), ``chain="mixed"`` "中", 0xFF, 0xE5 (a character's start cut short) and "Hello" repeated,
``chain="text"`` "Hello ▁there ▁Hello ▁there …", all without an end (for benchmarks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

LLAMA3_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- endif -%}"
)

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system_message is defined -%}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' -}}"
    "{%- else -%}{{- '[INST] ' + message['content'] + '[/INST]' -}}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' + message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# token types (gguf.TokenType): NORMAL=1, UNKNOWN=2, CONTROL=3, BYTE=6
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6

WORDS = ("Hello", "there", "Hi", "world", "assistant", "user", "system", "How", "are", "you",
         "What", "is", "the", "a", "and", "Baize", "INST", "Tell", "me", "about", "cats")
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'\"-:;()[]{}<>|/_\n"


def _spm_vocab(specials: list[str]) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocab: unk/bos/eos, specials, 256 byte tokens, chars, words."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [UNKNOWN, CONTROL, CONTROL]
    for s in specials:
        tokens.append(s)
        types.append(CONTROL)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(BYTE)
    pieces: list[str] = ["▁"]
    for ch in CHARS:
        if ch not in " \n":
            pieces.append(ch)
    for word in WORDS:
        for n in range(2, len(word) + 2):  # every prefix of ▁word, so merges reach it
            piece = ("▁" + word)[:n]
            if piece not in pieces:
                pieces.append(piece)
        for n in range(2, len(word) + 1):  # and of the word at a line start ("\nHello")
            if word[:n] not in pieces:
                pieces.append(word[:n])
    pieces.append("\n")
    for piece in pieces:
        if piece not in tokens:
            tokens.append(piece)
            types.append(NORMAL)
    scores = [0.0] * len(tokens)
    for i, (tok, typ) in enumerate(zip(tokens, types, strict=True)):
        if typ == NORMAL:
            scores[i] = float(len(tok)) - i * 1e-4  # longer pieces merge first
    return tokens, scores, types


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map (the byte-level BPE alphabet)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _bpe_vocab(specials: list[str]) -> tuple[list[str], list[int], list[str]]:
    """A GPT2-style byte-level BPE vocab: 256 byte symbols, merges for a few words, specials."""
    b2u = _bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges: list[str] = []
    for word in [" " + w for w in WORDS] + list(WORDS) + ["\n\n"]:
        symbols = "".join(b2u[b] for b in word.encode())
        current = symbols[0]
        for ch in symbols[1:]:
            merged = current + ch
            if merged not in tokens:
                merges.append(f"{current} {ch}")
                tokens.append(merged)
            current = merged
    types = [NORMAL] * len(tokens)
    for s in specials:
        tokens.append(s)
        types.append(CONTROL)
    return tokens, types, merges


def _piece_id(tokens: list[str], text: str) -> int:
    return tokens.index(text)


def _successors(tokens: list[str], kind: str, chain: str, end: int) -> dict[int, int]:
    """The designed next token of each token id (greedy reply) — see the module docstring."""
    space = "Ġ" if kind == "bpe" else "▁"
    hello, there = _piece_id(tokens, space + "Hello"), _piece_id(tokens, space + "there")
    # A reply starts as a real chat model's does after "assistant\n": a word with no space
    # before it, so the saved reply re-tokenizes to the tokens sampled (KV reuse).
    opening = _piece_id(tokens, "Hello")
    if kind == "bpe":
        bang, byte = _piece_id(tokens, "!"), (lambda b: _bytes_to_unicode()[b])
        byte_ids = [_piece_id(tokens, byte(b)) for b in "中".encode()]
        ff = _piece_id(tokens, byte(0xFF))
    else:
        bang = _piece_id(tokens, "!")
        byte_ids = [_piece_id(tokens, f"<0x{b:02X}>") for b in "中".encode()]
        ff = _piece_id(tokens, "<0xFF>")
    if chain == "bytes":
        start, nxt = byte_ids[0], {byte_ids[0]: byte_ids[1], byte_ids[1]: byte_ids[2],
                                   byte_ids[2]: byte_ids[0]}
    elif chain == "invalid":
        start, nxt = ff, {ff: ff}
    elif chain == "mixed":  # 中, then 0xFF, then 0xE5 cut short by "Hello", and again
        e5 = _piece_id(tokens, byte(0xE5)) if kind == "bpe" else _piece_id(tokens, "<0xE5>")
        start, nxt = byte_ids[0], {byte_ids[0]: byte_ids[1], byte_ids[1]: byte_ids[2],
                                   byte_ids[2]: ff, ff: e5, e5: opening, opening: byte_ids[0]}
    elif chain == "text":
        start, nxt = opening, {opening: there, hello: there, there: hello}
    else:
        start, nxt = opening, {opening: there, there: bang, bang: end}
    table = {t: start for t in range(len(tokens))}
    table.update(nxt)
    return table


def _weights(n_vocab: int, n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int,
             succ: dict[int, int], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head
    small = 1e-4  # the residual stream stays the current token: the chain has a wide margin
    # Each layer's feed-forward adds noise to every dimension, growing with sqrt(n_ff) and
    # with the layer count; deeper/wider (benchmark) models scale it down so the one-hot
    # current token still dominates (the tests' default size, 2 x 128, is unchanged).
    ffn_down = small * min(1.0, (2 * 128 / (n_layer * n_ff)) ** 0.5)
    emb = np.zeros((n_vocab, n_embd), dtype=np.float32)
    emb[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for t, nxt in succ.items():
        out[nxt, t] = 1.0  # logit[succ(t)] = sqrt(n_embd) for the current token t, others ~0
    w = {"token_embd.weight": emb, "output_norm.weight": np.ones(n_embd, np.float32),
         "output.weight": out}
    for i in range(n_layer):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        w[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        w[p + "attn_q.weight"] = rng.normal(0, 0.1, (n_embd, n_embd)).astype(np.float32)
        w[p + "attn_k.weight"] = rng.normal(0, 0.1, (n_head_kv * head_dim, n_embd)).astype(
            np.float32)
        w[p + "attn_v.weight"] = rng.normal(0, 0.1, (n_head_kv * head_dim, n_embd)).astype(
            np.float32)
        w[p + "attn_output.weight"] = rng.normal(0, small, (n_embd, n_embd)).astype(np.float32)
        w[p + "ffn_gate.weight"] = rng.normal(0, 0.1, (n_ff, n_embd)).astype(np.float32)
        w[p + "ffn_up.weight"] = rng.normal(0, 0.1, (n_ff, n_embd)).astype(np.float32)
        w[p + "ffn_down.weight"] = rng.normal(0, ffn_down, (n_embd, n_ff)).astype(np.float32)
    return w


FORMATS = {
    # name: (vocab kind, template, specials, end-of-turn special or None for EOS, general.name)
    "chatml": ("spm", CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"], "<|im_end|>",
               "Tiny ChatML Instruct"),
    "llama3": ("bpe", LLAMA3_TEMPLATE, ["<|begin_of_text|>", "<|end_of_text|>",
                                        "<|start_header_id|>", "<|end_header_id|>",
                                        "<|eot_id|>"], "<|eot_id|>", "Tiny Llama 3 Instruct"),
    "mistral": ("spm", MISTRAL_TEMPLATE, ["[INST]", "[/INST]"], None, "Tiny Mistral Instruct"),
    "baize": ("spm", None, [], None, "Tiny Baize 7B"),
    "plain": ("spm", None, [], None, "Tiny Base"),
}


def build_chat_gguf(out: Path, fmt: str, *, chain: str = "reply", n_ctx: int = 2048,
                    template: str | None = None, n_layer: int = 2, n_ff: int = 128,
                    seed: int = 0, f16: bool = False) -> Path:
    """Write the tiny ``fmt`` GGUF (see :data:`FORMATS`) to ``out``; returns ``out``.

    ``template`` overrides the embedded chat template (for bad-template tests); ``n_layer``
    and ``n_ff`` make a bigger model for benchmarks; ``f16`` stores the matrices in F16 (as
    a converted hub model has them), norms stay F32.
    """
    import gguf

    kind, default_template, specials, eot, name = FORMATS[fmt]
    template = default_template if template is None else template
    if kind == "spm":
        tokens, scores, types = _spm_vocab(specials)
        merges: list[str] = []
        bos, eos = 1, 2
    else:
        tokens, types, merges = _bpe_vocab(specials)
        scores = []
        bos, eos = tokens.index("<|begin_of_text|>"), tokens.index("<|end_of_text|>")
    end = tokens.index(eot) if eot else eos
    n_vocab = len(tokens)
    n_embd = -(-n_vocab // 128) * 128  # one-hot embeddings need n_embd >= vocab
    n_head = n_embd // 64
    n_head_kv = n_head // 2  # grouped-query attention, as in Llama 3 / Mistral
    succ = _successors(tokens, kind, chain, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama" if kind == "spm" else "gpt2")
    writer.add_tokenizer_pre("default" if kind == "spm" else "llama-bpe")
    writer.add_token_list(tokens)
    if scores:
        writer.add_token_scores(scores)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    if kind == "spm":
        writer.add_unk_token_id(0)
    if eot:
        writer.add_eot_token_id(end)
    writer.add_add_bos_token(kind == "spm")
    if template is not None:
        writer.add_chat_template(template)
    for tname, array in _weights(n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, succ,
                                 seed).items():
        writer.add_tensor(tname, array.astype(np.float16) if f16 and array.ndim == 2 else array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def build_lora_gguf(out: Path, base_fmt: str = "chatml", *, word: str = "Hi") -> Path:
    """A GGUF LoRA adapter for the ``base_fmt`` fixture (rank 1, on the output matrix) that
    makes ``▁word`` the next token after every token, so a reply shows whether it applied."""
    import gguf

    kind, _, specials, _, _ = FORMATS[base_fmt]
    tokens = _spm_vocab(specials)[0] if kind == "spm" else _bpe_vocab(specials)[0]
    n_vocab = len(tokens)
    n_embd = -(-n_vocab // 128) * 128
    target = tokens.index(("▁" if kind == "spm" else "Ġ") + word)
    lora_a = np.ones((1, n_embd), dtype=np.float32)  # sums the (one-hot, scaled) hidden state
    lora_b = np.zeros((n_vocab, 1), dtype=np.float32)
    lora_b[target, 0] = 4.0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 1.0)
    writer.add_tensor("output.weight.lora_a", lora_a)
    writer.add_tensor("output.weight.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out
