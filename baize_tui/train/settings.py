"""Fine-tuning settings: Baize's defaults, presets, TOML in and out, validation.

The defaults are Baize v1's (BAIZE.md §4): LoRA r 8, alpha 16, dropout 0.05 on the six
projections (no ``o_proj``), lr 2e-4 with 100 warmup steps, one epoch, a global batch of 64
reached by gradient accumulation, cutoff 512. The loss defaults to the AI turns only (Baize
v1.5/v2); ``loss = "all"`` trains on the whole text as v1 did.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

BAIZE_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"]
LOSS_MODES = ("ai", "all")
TEMPLATES = ("chat", "release", "base")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOAD_IN = ("8bit", "4bit")

# Settings that do not change what is trained (excluded from the config hash).
_NOT_HASHED = ("num_gpus", "logging_steps")


@dataclass
class TrainConfig:
    """Everything a fine-tuning run needs; a run directory stores it as ``config.toml``."""

    base: str = ""
    data: list[str] = field(default_factory=list)
    # SDF (Baize v2): a PEFT LoRA merged into the base weights before the new LoRA is added
    init_adapter: str = ""
    # data
    val_size: float | None = None  # None: min(2000, 5%); >= 1: dialogues; < 1: a fraction
    seed: int = 42
    cutoff_len: int = 512
    loss: str = "ai"
    template: str = "chat"  # chat: prompt.py's format; release: the released data's spaced form;
    # base: the base model's own chat template
    # LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # auto: Baize's six for LLaMA-1, every projection for newer bases (train/plan.py)
    target_modules: list[str] | str = "auto"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_steps: float = 100  # >= 1: steps; < 1: a fraction of the total
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = 64  # global: micro_batch_size x gradient accumulation x GPUs
    micro_batch_size: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = ""  # "": the Trainer's default AdamW
    # hardware
    precision: str = "auto"
    load_in: str = ""  # "", "8bit" or "4bit" (bitsandbytes, CUDA only)
    gradient_checkpointing: bool = True
    num_gpus: int = 0  # 0: every visible GPU (accelerate launch when more than one)
    # throughput
    packing: bool = False  # padding-free micro-batches, attention kept inside each sample
    group_by_length: bool = False  # micro-batches of similar lengths (less padding, unpacked)
    kernels: str = ""  # "" or "liger" (optional fused kernels, CUDA only)
    # bookkeeping
    eval_steps: int = 200
    save_steps: int = 200
    save_total_limit: int = 3
    logging_steps: int = 1

    # -- conversions ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists copied), in field order."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """The setting names, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "settings") -> TrainConfig:
        """Build from a mapping; unknown keys are an error naming ``source``."""
        config = cls()
        config.update(data, source=source)
        return config

    def update(self, data: dict[str, Any], *, source: str = "settings") -> None:
        """Set the given keys (``-`` or ``_`` spellings), checking names and types."""
        names = {f.name: f for f in dataclasses.fields(self)}
        for raw_key, value in data.items():
            key = raw_key.replace("-", "_")
            if key not in names:
                close = [n for n in names if n.split("_")[0] == key.split("_")[0]]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise UserError(f"{source}: unknown training setting {raw_key!r}{hint}")
            setattr(self, key, _coerce(key, value, getattr(self, key), source))

    def to_toml(self) -> str:
        """``config.toml`` text: a ``[train]`` table plus the hash, for the run directory."""
        from baize_tui.config import dumps_toml

        data = {k: v for k, v in self.to_dict().items()}
        if not data["optim"]:
            data.pop("optim")
        if data["val_size"] is None:
            data.pop("val_size")
        return dumps_toml({"train": data, "meta": {"config_hash": self.config_hash()}})

    @classmethod
    def from_toml_file(cls, path: Path | str) -> TrainConfig:
        """Read a ``run.toml``/``config.toml``: keys at the top level or in ``[train]``."""
        return cls.from_dict(read_toml_settings(path), source=str(path))

    def config_hash(self) -> str:
        """A short hash of the settings that change what is trained."""
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # -- derived values ---------------------------------------------------------------------

    def grad_accum(self, world_size: int = 1) -> int:
        """Gradient accumulation steps that keep the global batch at ``batch_size``."""
        per_step = self.micro_batch_size * max(1, world_size)
        if self.batch_size % per_step:
            raise UserError(
                f"--batch-size {self.batch_size} is not a multiple of --micro-batch-size "
                f"{self.micro_batch_size} x {max(1, world_size)} GPU(s); pick sizes that divide"
            )
        return self.batch_size // per_step

    def validate(self) -> None:
        """Raise :class:`UserError` naming the first bad setting."""
        if not self.base:
            raise UserError("no base model: give --base PATH (a LLaMA checkpoint directory)")
        if not self.data:
            raise UserError("no training data: give --data FILE (one or more)")
        checks = [
            (self.loss in LOSS_MODES, f"--loss must be one of {', '.join(LOSS_MODES)}"),
            (self.template in TEMPLATES, f"template must be one of {', '.join(TEMPLATES)}"),
            (self.lr_scheduler in SCHEDULERS, f"lr_scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.load_in in ("",) + LOAD_IN, "--load-in must be 8bit or 4bit"),
            (self.cutoff_len >= 16, "--cutoff-len must be at least 16"),
            (self.lora_r >= 1, "lora_r must be at least 1"),
            (self.lora_alpha > 0, "lora_alpha must be above 0"),
            (0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (self.learning_rate > 0, "--lr must be above 0"),
            (self.warmup_steps >= 0, "warmup_steps must not be negative"),
            (self.num_epochs > 0, "num_epochs must be above 0"),
            (self.max_steps == -1 or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.batch_size >= 1 and self.micro_batch_size >= 1, "batch sizes must be at least 1"),
            (self.eval_steps >= 1 and self.save_steps >= 1, "eval/save steps must be at least 1"),
            (self.save_total_limit >= 1, "save_total_limit must be at least 1"),
            (self.logging_steps >= 1, "logging_steps must be at least 1"),
            (self.num_gpus >= 0, "--num-gpus must not be negative"),
            (self.val_size is None or self.val_size >= 0, "--val-size must not be negative"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.kernels not in ("", "liger"):
            raise UserError("--kernels must be liger (or empty for none)")
        if self.packing and self.group_by_length:
            raise UserError("--group-by-length is for unpacked batches; --packing already "
                            "leaves no padding: use one of them")
        if isinstance(self.target_modules, str) and self.target_modules not in ("all-linear", "auto"):
            raise UserError("--target-modules takes auto, 'all-linear' or a comma-separated list")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise UserError("--target-modules is empty")
        if self.init_adapter:
            check_init_adapter(self.init_adapter)
        if self.batch_size % self.micro_batch_size:
            raise UserError(
                f"--batch-size {self.batch_size} is not a multiple of --micro-batch-size "
                f"{self.micro_batch_size}"
            )


def check_init_adapter(path: str) -> None:
    """Fail, naming the flag, when ``--init-adapter`` is not a PEFT LoRA adapter directory."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserError(f"--init-adapter {path}: no such adapter directory (give the SFT run's "
                        "adapter/ directory)")
    if not (directory / "adapter_config.json").is_file():
        raise UserError(f"--init-adapter {path}: no adapter_config.json; is this a PEFT LoRA "
                        "adapter directory?")


def read_toml_settings(path: Path | str) -> dict[str, Any]:
    """The settings a TOML file sets: keys at the top level or in a ``[train]`` table."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such settings file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("train", data)
    if not isinstance(table, dict):
        raise UserError(f"{path}: [train] must be a table")
    return {k: v for k, v in table.items() if not isinstance(v, dict)}


def _coerce(key: str, value: Any, current: Any, source: str) -> Any:
    """``value`` converted to the type of setting ``key`` (whose current value is ``current``)."""
    def bad(kind: str) -> UserError:
        return UserError(f"{source}: {key} must be {kind}, not {value!r}")

    if key == "data":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad("a file name or a list of them")
    if key == "target_modules":
        if value in ("all-linear", "auto"):
            return value
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad("'all-linear' or a list of module names")
    if key == "val_size":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value) if value < 1 else int(value)
    if key == "warmup_steps":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return value if value < 1 else int(value)
    return _coerce_by_type(value, current, bad)


def _coerce_by_type(value: Any, current: Any, bad: Callable[[str], UserError]) -> Any:
    """``value`` checked against the type of ``current`` (``bad(kind)`` makes the error)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    return value


# Named starting points; a preset is applied first, then --config, then flags.
PRESETS: dict[str, dict[str, Any]] = {
    "baize": {},  # Baize v1's settings with the AI-only loss
    "baize-exact": {"loss": "all", "template": "release"},  # v1 parity (bf16 instead of int8)
    "baize-7b-a100": {"micro_batch_size": 32, "packing": True, "target_modules": "all-linear"},
    "baize-13b-a100": {"micro_batch_size": 16, "learning_rate": 1e-4},
    "a100-bf16": {"target_modules": "all-linear", "lora_r": 16, "lora_alpha": 32,
                  "lr_scheduler": "cosine", "warmup_steps": 0.03, "micro_batch_size": 16,
                  "packing": True},
    "qlora-4bit": {"load_in": "4bit", "target_modules": "all-linear", "lora_r": 16,
                   "lora_alpha": 16, "lr_scheduler": "cosine", "warmup_steps": 0.03,
                   "max_grad_norm": 0.3, "micro_batch_size": 16},
}


def preset(name: str) -> TrainConfig:
    """A fresh config from a named preset."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig.from_dict(PRESETS[name], source=f"preset {name}")
