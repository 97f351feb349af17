"""PEFT LoRA adapters: load (legacy pickled ``.bin`` or safetensors), validate, merge.

Adapters are small (tens of MB for 7B), so they are read whole, as float32. Merging is
``W' = W + scale · B @ A`` with ``scale = alpha / r`` (``alpha / √r`` for rsLoRA), done in the
Hugging Face layout, before any Q/K permutation.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baize_convert import ConvertError
from baize_convert.checkpoint import Checkpoint, SafetensorsFile
from baize_convert.rawio import to_f32
from baize_convert.torchbin import load_state_dict, read_rows

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$")


@dataclass
class LoraPair:
    """The two low-rank factors for one base weight, and their merge scale."""

    a: np.ndarray  # [r, in]
    b: np.ndarray  # [out, r]
    scale: float

    @property
    def rank(self) -> int:
        """The LoRA rank of this pair."""
        return int(self.a.shape[0])

    def delta(self) -> np.ndarray:
        """``scale · B @ A`` in the base weight's layout."""
        return (self.b @ self.a) * np.float32(self.scale)


@dataclass
class Adapter:
    """A loaded, validated LoRA adapter, keyed by the base tensor it changes."""

    directory: Path
    config: dict[str, Any]
    pairs: dict[str, LoraPair] = field(default_factory=dict)

    @property
    def r(self) -> int:
        """Default rank from the config."""
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        """lora_alpha from the config."""
        return float(self.config["lora_alpha"])

    @property
    def use_rslora(self) -> bool:
        """Whether scaling is alpha/√r (rank-stabilised LoRA)."""
        return bool(self.config.get("use_rslora"))

    @property
    def base_model(self) -> str | None:
        """The base recorded in the config (null in Baize v1 adapters)."""
        return self.config.get("base_model_name_or_path") or None

    @property
    def n_params(self) -> int:
        """Parameters in the adapter."""
        return sum(p.a.size + p.b.size for p in self.pairs.values())

    def targets(self) -> set[str]:
        """The module kinds adapted, e.g. {"q_proj", "v_proj"}."""
        return {name.rsplit(".", 2)[-2] for name in self.pairs}

    @classmethod
    def open(cls, directory: Path) -> Adapter:
        """Read and validate ``adapter_config.json`` and the adapter weights."""
        config_path = directory / "adapter_config.json"
        if not config_path.exists():
            raise ConvertError(f"{directory}: no adapter_config.json; is this a PEFT LoRA adapter?")
        try:
            config = json.loads(config_path.read_text())
        except ValueError as exc:
            raise ConvertError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ConvertError(f"{config_path}: expected a JSON object of LoRA settings, got a "
                               f"{type(config).__name__}")
        _validate_config(config, config_path)
        tensors = _read_weights(directory)
        adapter = cls(directory, config)
        adapter.pairs = _pair_up(tensors, config, directory)
        return adapter

    def check_against(self, ckpt: Checkpoint) -> None:
        """Fail, naming the tensor, when the adapter does not fit this base checkpoint."""
        shapes = ckpt.shapes()
        for name, pair in self.pairs.items():
            shape = shapes.get(name)
            if shape is None:
                raise ConvertError(
                    f"{self.directory}: adapter targets {name}, which the base model "
                    f"{ckpt.directory} does not have; is this adapter for another architecture?"
                )
            if (pair.b.shape[0], pair.a.shape[1]) != tuple(shape):
                raise ConvertError(
                    f"{self.directory}: adapter for {name} gives B@A of shape "
                    f"({pair.b.shape[0]}, {pair.a.shape[1]}) but the base tensor is "
                    f"{tuple(shape)}: the adapter was trained on a different base model "
                    "(e.g. a 13B adapter on a 7B base)"
                )

    def merge_into(self, name: str, weight: np.ndarray, start: int = 0) -> np.ndarray:
        """``weight`` (rows ``start:start+len(weight)`` of the base tensor) with this adapter's
        delta added, in place."""
        pair = self.pairs.get(name)
        if pair is None:
            return weight
        stop = start + weight.shape[0]
        weight += (pair.b[start:stop] @ pair.a) * np.float32(pair.scale)
        return weight


def _validate_config(config: dict[str, Any], path: Path) -> None:
    # fan_in_fan_out needs no handling: it describes GPT-2-style Conv1D weights, and for
    # LLaMA's nn.Linear projections peft warns and merges as if it were false, as we do.
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise ConvertError(f"{path}: peft_type is {config.get('peft_type')!r}; only LORA adapters merge")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or config[key] <= 0:
            raise ConvertError(f"{path}: field {key!r} must be a positive number")
    if config.get("bias", "none") != "none":
        raise ConvertError(f"{path}: bias={config['bias']!r} adapters are not supported (need 'none')")
    if config.get("use_dora"):
        raise ConvertError(f"{path}: DoRA adapters (use_dora) are not supported")
    if config.get("modules_to_save"):
        raise ConvertError(
            f"{path}: modules_to_save {config['modules_to_save']} (fully trained modules) are "
            "not supported"
        )


def _read_weights(directory: Path) -> dict[str, np.ndarray]:
    st = directory / "adapter_model.safetensors"
    bin_path = directory / "adapter_model.bin"
    if st.exists():
        handle = SafetensorsFile(st)
        return {ref.name: handle.load(ref.name) for ref in handle.refs()}
    if bin_path.exists():
        return {name: to_f32(read_rows(bin_path, tensor), tensor.label)
                for name, tensor in load_state_dict(bin_path).items()}
    raise ConvertError(
        f"{directory}: no adapter_model.safetensors or adapter_model.bin next to adapter_config.json"
    )


def _pattern_value(patterns: dict[str, Any] | None, module: str, default: float) -> float:
    """peft's rule: the first key that matches the end of the module path, as a regex."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return float(value)
    return default


def _pair_up(tensors: dict[str, np.ndarray], config: dict[str, Any], directory: Path) -> dict[str, LoraPair]:
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise ConvertError(
                f"{directory}: tensor {key} is not a LoRA A/B weight (embedding LoRA, biases and "
                "fully trained modules are not supported)"
            )
        halves.setdefault(match["module"], {})[match["ab"]] = value
    if not halves:
        raise ConvertError(
            f"{directory}: the adapter holds no LoRA tensors (an empty adapter file, as saved by "
            "the broken state_dict patch of old alpaca-lora code); re-save or retrain it"
        )
    pairs: dict[str, LoraPair] = {}
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            raise ConvertError(f"{directory}: {module} has lora_{''.join(ab)} without its partner")
        a, b = ab["A"], ab["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConvertError(
                f"{directory}: {module} lora_A {a.shape} and lora_B {b.shape} do not form a "
                "rank-r pair"
            )
        rank = _pattern_value(config.get("rank_pattern"), module, config["r"])
        alpha = _pattern_value(config.get("alpha_pattern"), module, config["lora_alpha"])
        if int(rank) != a.shape[0]:
            raise ConvertError(
                f"{directory}: {module} has rank {a.shape[0]} but the config says r={int(rank)}"
            )
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ConvertError(f"{directory}: {module} contains NaN or infinite values")
        pairs[f"{module}.weight"] = LoraPair(np.ascontiguousarray(a, np.float32),
                                             np.ascontiguousarray(b, np.float32), scale)
    return pairs
