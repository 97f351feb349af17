"""``hf:BASE[+LORA]``: transformers + peft on the unmerged adapter.

For GPU users, and for checking a fine-tune before converting it to GGUF. torch,
transformers and peft are imported only when this engine opens (the ``train`` extra).
Generation runs in a thread and streams through ``TextIteratorStreamer``; a
``StoppingCriteria`` ends it on cancel or on a Baize stop string.
"""

from __future__ import annotations

import logging
import pickle
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from baize_tui.engines.base import (
    PromptEngine,
    SamplingParams,
    TurnStats,
)
from baize_tui.errors import OperationFailed, UserError

log = logging.getLogger("baize_tui.hf")


def _import_stack() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise UserError(
            f"hf: models need the train extra (pip install 'baize-tui[train]'): {exc.name} "
            f"is missing"
        ) from None
    return torch, transformers


class HFEngine(PromptEngine):
    """A Hugging Face LLaMA checkpoint, with an optional PEFT LoRA adapter on top."""

    takes_messages = False
    engine_label = "hf"

    def __init__(self, base: str, lora: str | None = None, *, device: str | None = None) -> None:
        if not base:
            raise UserError("hf:BASE needs a base model directory or hub id, e.g. hf:huggyllama/llama-7b")
        self.base, self.lora = base, lora
        self.spec = f"hf:{base}" + (f"+{lora}" if lora else "")
        torch, transformers = _import_stack()
        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self._lock = threading.Lock()
        transformers.utils.logging.disable_progress_bar()  # no bars on a command's stderr
        with warnings.catch_warnings():
            # Deprecation chatter, and the keys (enable_lora, merge_weights) of Baize v1
            # adapter configs that newer PEFT ignores: not the user's problem.
            warnings.simplefilter("ignore")
            try:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(base)
                model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
            except (OSError, ValueError, pickle.UnpicklingError) as exc:
                raise UserError(f"{base}: cannot load a Hugging Face model ({exc})") from None
            if lora:
                try:
                    import peft
                except ImportError:
                    raise UserError(
                        "hf:BASE+LORA needs peft (pip install 'baize-tui[train]')"
                    ) from None
                try:
                    model = peft.PeftModel.from_pretrained(model, lora)
                except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
                    raise UserError(
                        f"{lora}: cannot load the LoRA adapter onto {base} ({exc})"
                    ) from None
        model.to(self.device)
        model.eval()
        self.model = model
        config = getattr(model, "config", None)
        self._n_ctx = int(getattr(config, "max_position_embeddings", 2048) or 2048)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def describe(self) -> str:
        name = Path(self.base).name or self.base
        extra = f" + {Path(self.lora).name or self.lora}" if self.lora else ""
        return f"transformers · {name}{extra} on {self.device}"

    def _pieces(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event,
        stop: Sequence[str],
        stats: TurnStats,
    ) -> Iterator[str]:
        torch = self._torch
        import transformers

        with self._lock:
            inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            n_prompt = int(inputs["input_ids"].shape[1])
            stats.prompt_tokens = n_prompt
            if cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            stop_now = threading.Event()
            tokenizer = self.tokenizer

            class Stop(transformers.StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    stats.completion_tokens = int(input_ids.shape[1]) - n_prompt
                    done = cancel.is_set() or stop_now.is_set()
                    if not done and stop:
                        tail = tokenizer.decode(input_ids[0, n_prompt:][-16:])
                        done = any(s in tail for s in stop)
                    return torch.full((input_ids.shape[0],), done, dtype=torch.bool,
                                      device=input_ids.device)

            streamer = transformers.TextIteratorStreamer(
                tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=None
            )
            sample = params.temperature > 0
            kwargs: dict[str, Any] = dict(
                inputs,
                max_new_tokens=params.max_new_tokens,
                do_sample=sample,
                repetition_penalty=params.repeat_penalty,
                streamer=streamer,
                stopping_criteria=transformers.StoppingCriteriaList([Stop()]),
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                else tokenizer.eos_token_id,
            )
            if sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p,
                              top_k=params.top_k or None)
                if params.min_p:
                    kwargs["min_p"] = params.min_p
            failure: list[BaseException] = []
            output: list[Any] = []

            def work() -> None:
                try:
                    torch.manual_seed(stats.seed or 0)  # seeds CUDA too
                    with torch.inference_mode():
                        output.append(self.model.generate(**kwargs))
                except BaseException as exc:  # reported to the consumer below
                    failure.append(exc)
                    streamer.end()

            thread = threading.Thread(target=work, name="hf-generate", daemon=True)
            thread.start()
            try:
                for piece in streamer:
                    if piece:
                        yield piece
                    if cancel.is_set():
                        break
            finally:
                stop_now.set()
                thread.join()
            if failure:
                raise OperationFailed(f"generation failed: {failure[0]}") from None
            if output:
                stats.completion_tokens = int(output[0].shape[1]) - n_prompt
            if cancel.is_set():
                stats.finish_reason = "cancelled"
            elif stats.completion_tokens >= params.max_new_tokens:
                stats.finish_reason = "length"
            else:
                stats.finish_reason = "stop"

    def close(self) -> None:
        self.model = None
