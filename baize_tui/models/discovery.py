"""Find GGUF models on disk and describe each from its header (headless; no Textual).

Discovery looks in the models directory (``baize-tui paths models``), in the directories
listed in config ``[model] dirs``, and in the Hugging Face cache. Each file is described from
its GGUF header alone (a memory-mapped walk of the key/value and tensor-info sections; no
weights are read), and a truncated or corrupt file is listed as broken, with the reason.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError
from baize_tui.gguf_header import GGUFHeaderError, read_header
from baize_tui.model_checks import model_problem
from baize_tui.paths import get_paths

ProgressFn = Callable[[str, int, "int | None"], None]
"""``progress(stage, done, total)``: ``done``/``total`` in bytes (total None when unknown)."""

DEFAULT_QUANT = "q4_k_m"
# GGUF header
# ------------------------------------------------------------------------------------------

def read_gguf_header(path: Path) -> dict[str, Any]:
    """Metadata of a GGUF from its header only; raises :class:`GGUFHeaderError` if broken.

    Returns the architecture, name, type, file_type, context_length and chat template, the
    tensor count, the parameter count and the byte where the data ends (the header reader
    checks that every tensor's data lies inside the file, so a cut download fails here).
    A dict view of :class:`~baize_tui.gguf_header.GGUFInfo`, which new code should use.
    """
    info = read_header(path).info()
    return {
        "version": info.version,
        "architecture": info.architecture,
        "name": info.name,
        "type": info.kind,
        "file_type": info.file_type,
        "main_tensor_type": info.main_tensor_type,
        "context_length": info.context_length,
        "chat_template": info.chat_template,
        "n_tensors": info.n_tensors,
        "n_params": info.n_params,
        "data_end": info.data_end,
    }


# ------------------------------------------------------------------------------------------
# Discovery
# ------------------------------------------------------------------------------------------

@dataclass
class ModelFile:
    """One GGUF file found on disk, described from its header."""

    name: str  # the file name; what ``models rm`` / ``models default`` accept
    path: Path
    size: int
    source: str  # "models", "config", or "hf:org/name" (the Hugging Face cache)
    architecture: str | None = None
    quant: str | None = None
    context_length: int | None = None
    has_chat_template: bool = False
    baize_template: bool = False  # the template renders the Baize [|Human|]/[|AI|] format
    kind: str = "model"  # "model" or "adapter" (a GGUF LoRA)
    n_params: int | None = None
    error: str | None = None  # why the file is broken; None when it reads fine
    is_default: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def broken(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["broken"] = self.broken
        data.pop("extra")
        return data


_describe_cache: dict[tuple[str, int, int], ModelFile] = {}
_cache_lock = threading.Lock()


def describe(path: Path, source: str = "models") -> ModelFile:
    """Describe one GGUF from its header; never raises for a bad file (it comes back broken)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return ModelFile(path.name, path, 0, source, error=f"cannot read: {exc.strerror or exc}")
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        cached = _describe_cache.get(key)
    if cached is not None:
        return ModelFile(**{**cached.__dict__, "source": source, "extra": dict(cached.extra)})
    model = ModelFile(path.name, path, st.st_size, source)
    try:
        info = read_header(path).info()
    except GGUFHeaderError as exc:
        model.error = str(exc)
    except OSError as exc:
        model.error = f"cannot read: {exc.strerror or exc}"
    except Exception as exc:  # a header walk must never take the list down
        model.error = f"corrupt GGUF ({type(exc).__name__}: {exc})"
    else:
        template = info.chat_template
        model.architecture = info.architecture
        model.quant = info.quant_label
        model.context_length = info.context_length
        model.has_chat_template = bool(template)
        model.baize_template = bool(template) and "[|Human|]" in (template or "")
        model.kind = "adapter" if info.kind == "adapter" else "model"
        model.n_params = info.n_params
        model.extra = {"general_name": info.name}
        # a header without tensors (or architecture) is no model
        model.error = model_problem({"n_tensors": info.n_tensors, "type": info.kind,
                                     "architecture": info.architecture})
        if model.kind == "model" and not model.error:
            from baize_tui.vocab_check import cached_vocab_error

            known, vocab = cached_vocab_error(path)  # probed by `models list` / on load
            if known and vocab:
                model.error = f"llama.cpp cannot load its vocabulary: {vocab}"
    with _cache_lock:
        _describe_cache[key] = model
    return ModelFile(**{**model.__dict__, "extra": dict(model.extra)})


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does)."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def search_dirs() -> list[tuple[Path, str]]:
    """Where GGUF files are looked for: (directory, source label), in order."""
    from baize_tui.config import load_config

    dirs = [(get_paths().models_dir, "models")]
    for entry in load_config()["model"].get("dirs") or []:
        dirs.append((Path(str(entry)).expanduser(), "config"))
    return dirs


def _ggufs_under(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*.gguf")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue  # our temporary files, hidden folders
        if path.is_file():
            yield path


def _hf_cache_ggufs(cache: Path) -> Iterator[tuple[Path, str]]:
    if not cache.is_dir():
        return
    for repo_dir in sorted(cache.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        for path in sorted((repo_dir / "snapshots").glob("*/**/*.gguf")):
            if path.is_file():
                yield path, f"hf:{repo}"


def default_model() -> str:
    """The ``model.default`` setting (a spec: a GGUF path, openai:MODEL, hf:...)."""
    from baize_tui.config import load_config

    return str(load_config()["model"].get("default") or "")


def list_models(*, include_hf_cache: bool = True) -> list[ModelFile]:
    """Every GGUF found, models directory first; broken files are listed, never raised."""
    seen: set[str] = set()
    found: list[ModelFile] = []
    default = default_model()
    default_real = os.path.realpath(default) if default else None

    def add(path: Path, source: str) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        model = describe(path, source)
        model.is_default = default_real is not None and real == default_real
        found.append(model)

    for directory, source in search_dirs():
        for path in _ggufs_under(directory):
            add(path, source)
    if include_hf_cache:
        for path, source in _hf_cache_ggufs(hf_cache_dir()):
            add(path, source)
    return found


def check_vocabularies(models: list[ModelFile]) -> list[ModelFile]:
    """Probe (once per file version, in a child process) every model GGUF's vocabulary in
    llama.cpp and mark those it cannot load as broken."""
    from baize_tui.vocab_check import vocab_error

    for model in models:
        if model.broken or model.kind != "model":
            continue
        error = vocab_error(model.path)
        if error:
            model.error = f"llama.cpp cannot load its vocabulary: {error}"
            with _cache_lock:
                _describe_cache.clear()  # the next describe() sees the cached verdict
    return models


def find_model(name: str, *, include_hf_cache: bool = True) -> ModelFile:
    """The one model called ``name``: a path, a file name, or a file name without .gguf."""
    candidate = Path(name).expanduser()
    if candidate.suffix == ".gguf" and candidate.is_file() and (os.sep in name or "/" in name):
        model = describe(candidate.absolute(), "path")
        default = default_model()
        model.is_default = bool(default) and os.path.realpath(default) == os.path.realpath(candidate)
        return model
    models = list_models(include_hf_cache=include_hf_cache)
    matches = [m for m in models if name in (m.name, m.path.stem, str(m.path))]
    if not matches:
        known = ", ".join(m.name for m in models) or "none (see `baize-tui models pull`)"
        raise UserError(f"no model named {name!r}; models found: {known}")
    if len(matches) > 1:
        paths = "; ".join(str(m.path) for m in matches)
        raise UserError(f"{name!r} matches {len(matches)} files ({paths}); give the full path")
    return matches[0]


def set_default(name: str) -> ModelFile:
    """Make a GGUF the default model (config ``model.default`` = its absolute path)."""
    from baize_tui.config import set_value

    model = find_model(name)
    if model.broken:
        raise UserError(f"{model.path} is broken ({model.error}); pick another model")
    if model.kind == "adapter":
        raise UserError(f"{model.path} is a LoRA adapter, not a model; pick a model GGUF")
    set_value("model.default", str(model.path.absolute()))
    model.is_default = True
    return model


def remove_model(name: str) -> ModelFile:
    """Delete a GGUF from the models directory; clears the default if it pointed there.

    Files elsewhere (config dirs, the Hugging Face cache) are the user's or another tool's:
    they are not deleted here, the error says where they are.
    """
    model = find_model(name)
    models_dir = get_paths().models_dir.resolve()
    # where the entry itself lives: a symbolic link in the models dir is removed (the link
    # only, never its target), whatever it points at
    location = model.path.absolute().parent.resolve()
    if not location.is_relative_to(models_dir):
        where = ("the Hugging Face cache (use `hf cache delete`)" if model.source.startswith("hf:")
                 else str(location))
        raise UserError(f"{model.path} is not in the models directory ({models_dir}) but in "
                        f"{where}; delete it there yourself")
    was_default = model.is_default
    model.path.unlink()
    if was_default:
        from baize_tui.config import set_value

        set_value("model.default", "")
    return model
