"""Is a base convertible? Checked before any training step or byte written.

The same checks ``merge`` runs before it writes: the architecture is in the LLaMA family
llama.cpp runs as ``llama`` (refused otherwise, named), the tokenizer is one baize-convert
writes correctly (sentencepiece, or byte-level BPE with a pre-tokenizer llama.cpp knows), and
the tensors are all there (an output layer, or tied embeddings). Only headers are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baize_convert.checkpoint import Checkpoint, rope_type
from baize_convert.gguf_export import plan_tensors
from baize_convert.quantize import parse_quant
from baize_convert.vocab import load_vocab


@dataclass(frozen=True)
class Convertible:
    """What the checks found, for a one-line summary."""

    architecture: str
    tokenizer: str  # "llama/default" or "gpt2/<pre>"
    tied: bool
    rope: str
    n_tensors: int

    def summary(self) -> str:
        """e.g. ``LlamaForCausalLM, gpt2/smollm tokenizer, tied embeddings``."""
        extras = [x for x in ("tied embeddings" if self.tied else "",
                              f"rope {self.rope}" if self.rope != "default" else "") if x]
        return ", ".join([self.architecture, f"{self.tokenizer} tokenizer", *extras])


def check_convertible(directory: Path) -> Convertible:
    """Raise ConvertError (a UserError) naming why ``directory`` cannot become a GGUF."""
    ckpt = Checkpoint.open(directory)
    vocab = load_vocab(directory, ckpt.vocab_rows)
    plans = plan_tensors(ckpt, parse_quant("f16"))
    archs = ckpt.config.get("architectures") or [ckpt.config.get("model_type", "llama")]
    return Convertible(str(archs[0]), f"{vocab.model}/{vocab.pre}", ckpt.tied,
                       rope_type(ckpt.config), len(plans))
