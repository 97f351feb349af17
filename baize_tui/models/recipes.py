"""Recipes: turn a known Baize model that exists only as a LoRA adapter or as HF weights
(``baize_tui.catalog``) into a GGUF with baize-convert; and :func:`pull`, which gets any model.

``plan_recipe`` says what a recipe will download, convert and write (for the user to confirm);
``run_recipe`` does it, reporting progress through ``progress(stage, done, total)``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from baize_tui.errors import OperationFailed, UserError
from baize_tui.models.discovery import DEFAULT_QUANT, ProgressFn, hf_cache_dir
from baize_tui.models.downloader import download_to_cache, pull_gguf
from baize_tui.models.hub import (
    HubFile,
    PullCancelled,
    _require_online,
    choose_gguf,
    list_hub_files,
)
from baize_tui.paths import get_paths

# Seconds of conversion work per billion parameters on a 4-core laptop (field reports: a 7B
# merge + Q4 takes about 5-15 min), plus llama.cpp's K-quant pass.
MERGE_SECONDS_PER_B = (45.0, 130.0)
KQUANT_SECONDS_PER_B = (5.0, 15.0)


# Recipes: known Baize models that exist only as adapters or HF weights
# ------------------------------------------------------------------------------------------

@dataclass
class RecipePlan:
    """What pulling a known Baize model will do, for the user to confirm before it starts."""

    repo: str
    kind: str  # "lora" or "merged"
    base: str | None  # the base repo a LoRA goes on
    quant: str  # canonical quant name, e.g. "q4_k_m"
    quant_label: str
    output: Path
    downloads: list[HubFile]  # the files fetched into the Hugging Face cache
    download_bytes: int
    n_params: int
    output_bytes: int
    temp_bytes: int  # the F16 intermediate of the K-quant route
    seconds: tuple[float, float]  # conversion time range (after the download)

    def describe(self) -> str:
        """A few lines telling the user what happens and what it costs."""
        from baize_tui.formatting import human_bytes

        lo, hi = (round(s / 60) for s in self.seconds)
        span = "under a minute" if hi < 1 else f"~{max(lo, 1)}-{max(hi, 1)} min"
        what = (f"{self.repo} is a LoRA adapter for {self.base}: download both, merge, quantize"
                if self.kind == "lora" else f"{self.repo} holds Hugging Face weights: download, "
                "convert, quantize")
        minutes = round(self.download_bytes / 12.5e6 / 60)
        at_100 = "under a minute" if minutes < 1 else f"~{minutes} min"
        return "\n".join([
            what,
            f"  download   {human_bytes(self.download_bytes)} into {hf_cache_dir()} "
            f"({at_100} at 100 Mbit/s; files already cached are reused)",
            f"  output     {self.output} ({self.quant_label}, ~{human_bytes(self.output_bytes)})",
            f"  disk       ~{human_bytes(self.download_bytes + self.output_bytes + self.temp_bytes)}"
            f" free needed at peak (incl. {human_bytes(self.temp_bytes)} temporary)",
            f"  time       {span} to convert after the download (4-core laptop)",
        ])


def _weight_files(files: list[HubFile]) -> list[HubFile]:
    """The files baize-convert needs: safetensors when present, else the .bin shards."""
    from fnmatch import fnmatch

    from baize_convert.hub import BIN_WEIGHTS, MODEL_META, SAFETENSORS_WEIGHTS
    from baize_convert.pipeline import ADAPTER_PATTERNS

    names = [f.path for f in files]
    has_st = any(n.endswith(".safetensors") for n in names)
    weights = SAFETENSORS_WEIGHTS if has_st else BIN_WEIGHTS
    patterns = MODEL_META + weights + ADAPTER_PATTERNS
    if any(n.endswith("adapter_model.safetensors") for n in names):
        patterns.remove("adapter_model.bin")
    return [f for f in files if "/" not in f.path and any(fnmatch(f.path, p) for p in patterns)]


def _estimate_params(weights: list[HubFile], dtype_bytes: int) -> int:
    total = sum(f.size or 0 for f in weights
                if f.path.endswith((".safetensors", ".bin")) and "adapter" not in f.path)
    return total // dtype_bytes


def plan_recipe(repo: str, quant: str | None = None) -> RecipePlan:
    """Ask the hub what a known Baize model needs (sizes) and plan its conversion."""
    from baize_convert.quantize import parse_quant
    from baize_tui.catalog import find_known

    known = find_known(repo)
    if known is None:
        raise UserError(f"{repo} is not a known Baize model")
    qt = parse_quant(quant or DEFAULT_QUANT)
    files = _weight_files(list_hub_files(known.repo))
    if not files:
        raise OperationFailed(f"{known.repo}: no weight or adapter files found on the hub")
    downloads = list(files)
    base_files: list[HubFile] = files
    if known.kind == "lora":
        assert known.base is not None
        base_files = _weight_files(list_hub_files(known.base))
        downloads += base_files
    dtype_bytes = 2
    config = next((f for f in base_files if f.path == "config.json"), None)
    if config is not None:
        dtype_bytes = 4 if _remote_dtype(config) == "float32" else 2
    n_params = max(_estimate_params(base_files, dtype_bytes), 1)
    output_bytes = int(n_params * qt.bits_per_weight / 8)
    temp_bytes = n_params * 2 if qt.via_llama else 0
    per_b = n_params / 1e9
    extra = KQUANT_SECONDS_PER_B if qt.via_llama else (0.0, 0.0)
    seconds = (per_b * (MERGE_SECONDS_PER_B[0] + extra[0]),
               per_b * (MERGE_SECONDS_PER_B[1] + extra[1]))
    name = known.repo.split("/")[-1]
    return RecipePlan(known.repo, known.kind, known.base, qt.name, qt.label,
                      get_paths().models_dir / f"{name}-{qt.label}.gguf", downloads,
                      sum(f.size or 0 for f in downloads), n_params, output_bytes, temp_bytes,
                      seconds)


def _remote_dtype(config: HubFile) -> str | None:
    path = download_to_cache(config.repo, "config.json", cache_dir=hf_cache_dir())
    try:
        return json.loads(Path(path).read_text()).get("torch_dtype")
    except (OSError, ValueError):
        return None


def _download_all(plan: RecipePlan, stage: str, progress: ProgressFn | None,
                  cancel: threading.Event | None) -> dict[str, Path]:
    """Fetch every file of ``plan`` into the Hugging Face cache through the one downloader
    (resumable, checked), reporting one running total; returns each repo's snapshot folder."""
    if progress:
        progress(stage, 0, plan.download_bytes)
    dirs: dict[str, Path] = {}
    cache = hf_cache_dir()
    done = 0
    for f in plan.downloads:
        def step(_stage: str, got: int, _total: int | None, before: int = done) -> None:
            if progress:
                progress(stage, min(before + got, plan.download_bytes), plan.download_bytes)

        local = download_to_cache(f.repo, f.path, cache_dir=cache, progress=step, stage=stage,
                                  cancel=cancel)
        done += f.size or 0  # cached files count as done too
        if progress:
            progress(stage, done, plan.download_bytes)
        dirs[f.repo] = local.parent
    return dirs


def run_recipe(plan: RecipePlan, *, progress: ProgressFn | None = None, quiet: bool = True,
               force: bool = False, cancel: threading.Event | None = None) -> Path:
    """Download what ``plan`` lists into the Hugging Face cache, then merge/convert into GGUF.

    The conversion is baize-convert's ``run_merge`` (disk check, temp file, self-check, rename);
    with ``quiet=False`` it draws its own rich progress bar. ``cancel`` stops the downloads
    (:class:`PullCancelled`); a conversion that has started runs to its end.
    """
    _require_online(plan.repo)
    from baize_convert.pipeline import MergeRequest, check_disk, run_merge

    if plan.output.exists() and not force:
        raise UserError(f"{plan.output} exists; `baize-tui models rm {plan.output.name}` it "
                        "first or pass --force")
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    check_disk(plan.output.parent, plan.output_bytes + plan.temp_bytes, f"writing {plan.output.name}")
    stage = f"download {plan.repo}" + (f" + {plan.base}" if plan.base else "")
    dirs = _download_all(plan, stage, progress, cancel)
    if cancel is not None and cancel.is_set():
        raise PullCancelled(f"{stage}: cancelled before converting; the downloads stay in the "
                            "Hugging Face cache")
    name = plan.repo.split("/")[-1]
    convert_stage = f"convert {name} → {plan.quant_label}"
    if progress:
        progress(convert_stage, 0, None)
    if plan.kind == "lora":
        assert plan.base is not None
        request = MergeRequest(base=str(dirs[plan.base]), loras=[str(dirs[plan.repo])],
                               quant=plan.quant, output=plan.output, name=name, force=force)
    else:
        request = MergeRequest(base=str(dirs[plan.repo]), loras=[], quant=plan.quant,
                               output=plan.output, name=name, force=force)
    result = run_merge(request, quiet=quiet,
                       progress_cb=(lambda _stage, done, total: progress(convert_stage, done, total))
                       if progress else None)
    if progress:
        progress(convert_stage, 1, 1)
    return result.output


def pull(repo: str, file: str | None = None, *, quant: str | None = None,
         revision: str = "main", progress: ProgressFn | None = None,
         cancel: threading.Event | None = None, force: bool = False) -> Path:
    """Get a GGUF for ``repo`` without a confirmation step (the TUI/CLI plan recipes first).

    A known Baize model (catalog) runs its recipe; any other repo must hold GGUF files, and
    ``file`` or ``quant`` picks one.
    """
    from baize_tui.catalog import find_known

    if file is None and find_known(repo) is not None:
        return run_recipe(plan_recipe(repo, quant), progress=progress, force=force,
                          cancel=cancel)
    _require_online(repo)
    if file is None:
        file = choose_gguf(list_hub_files(repo, revision), repo, quant=quant).path
    return pull_gguf(repo, file, revision=revision, progress=progress, cancel=cancel, force=force)
