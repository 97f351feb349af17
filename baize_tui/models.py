"""Find GGUF models on disk and get them from the Hugging Face hub (headless; no Textual).

Discovery looks in the models directory (``baize-tui paths models``), in the directories
listed in config ``[model] dirs``, and in the Hugging Face cache. Each file is described from
its GGUF header alone (a memory-mapped walk of the key/value and tensor-info sections; no
weights are read), and a truncated or corrupt file is listed as broken, with the reason.

``pull_gguf`` downloads one GGUF through huggingface_hub into the models directory: into a
hidden ``.NAME.partial`` file that a later run resumes (HTTP Range), checked against the hub's
sha256 (the LFS ``X-Linked-Etag``), and renamed to its final name only when complete and
verified. ``plan_recipe``/``run_recipe`` turn a known Baize model that exists only as a LoRA
adapter or as HF weights (``baize_tui.catalog``) into a GGUF with baize-convert.

Progress is reported through a plain callback ``progress(stage, done, total)`` so the CLI
(rich) and the TUI (messages from a worker thread) can both draw it; a ``threading.Event``
passed as ``cancel`` stops a download between chunks, keeping the partial file for resume.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.gguf_header import GGUFHeaderError, file_type_label, read_header
from baize_tui.paths import get_paths

ProgressFn = Callable[[str, int, "int | None"], None]
"""``progress(stage, done, total)``: ``done``/``total`` in bytes (total None when unknown)."""

DEFAULT_QUANT = "q4_k_m"
DOWNLOAD_RETRIES = 5  # reconnect attempts (Range resume) after a dropped connection
RETRY_WAIT = 1.0  # seconds before the first reconnect; doubles, capped at 10 s
CHUNK = 1 << 20
DISK_MARGIN = 64 * 1024**2
HUB_DEFAULT_ENDPOINT = "https://huggingface.co"
# Seconds of conversion work per billion parameters on a 4-core laptop (../shared/notes §12:
# a 7B merge + Q4 is about 5-15 min), plus llama.cpp's K-quant pass.
MERGE_SECONDS_PER_B = (45.0, 130.0)
KQUANT_SECONDS_PER_B = (5.0, 15.0)


class PullCancelled(OperationFailed):
    """A download stopped by ``cancel``; the partial file stays for the next run to resume."""


# ------------------------------------------------------------------------------------------
# GGUF header
# ------------------------------------------------------------------------------------------

def read_gguf_header(path: Path) -> dict[str, Any]:
    """Metadata of a GGUF from its header only; raises :class:`GGUFHeaderError` if broken.

    Returns the architecture, name, type, file_type, context_length and chat template, the
    tensor count, the parameter count and the byte where the data ends (the header reader
    checks that every tensor's data lies inside the file, so a cut download fails here).
    """
    header = read_header(path)
    type_counts: dict[int, int] = {}
    for tensor in header.tensors:
        if len(tensor.shape) >= 2:
            type_counts[tensor.type_id] = type_counts.get(tensor.type_id, 0) + 1
    template = header.get("tokenizer.chat_template")
    return {
        "version": header.version,
        "architecture": header.architecture,
        "name": header.get("general.name"),
        "type": header.get("general.type") or "model",
        "file_type": header.get("general.file_type"),
        "main_tensor_type": max(type_counts, key=type_counts.__getitem__) if type_counts else None,
        "context_length": header.get("{arch}.context_length") if header.architecture else None,
        "chat_template": template if isinstance(template, str) else None,
        "n_tensors": len(header.tensors),
        "n_params": header.n_params,
        "data_end": max((header.data_start + t.offset + t.n_bytes for t in header.tensors),
                        default=header.data_start),
    }


def _quant_label(header: dict[str, Any]) -> str:
    import gguf

    if header["file_type"] is not None:
        return file_type_label(header["file_type"])
    if header["main_tensor_type"] is not None:
        return gguf.GGMLQuantizationType(header["main_tensor_type"]).name
    return "unknown"


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
        header = read_gguf_header(path)
    except GGUFHeaderError as exc:
        model.error = str(exc)
    except OSError as exc:
        model.error = f"cannot read: {exc.strerror or exc}"
    except Exception as exc:  # a header walk must never take the list down
        model.error = f"corrupt GGUF ({type(exc).__name__}: {exc})"
    else:
        template = header["chat_template"]
        model.architecture = header["architecture"]
        model.quant = _quant_label(header)
        model.context_length = header["context_length"]
        model.has_chat_template = bool(template)
        model.baize_template = bool(template) and "[|Human|]" in template
        model.kind = "adapter" if header["type"] == "adapter" else "model"
        model.n_params = header["n_params"]
        model.extra = {"general_name": header["name"]}
        if model.kind == "model":
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
    if not model.path.resolve().is_relative_to(models_dir):
        where = ("the Hugging Face cache (use `hf cache delete`)" if model.source.startswith("hf:")
                 else str(model.path.parent))
        raise UserError(f"{model.path} is not in the models directory ({models_dir}) but in "
                        f"{where}; delete it there yourself")
    was_default = model.is_default
    model.path.unlink()
    if was_default:
        from baize_tui.config import set_value

        set_value("model.default", "")
    return model


# ------------------------------------------------------------------------------------------
# The hub
# ------------------------------------------------------------------------------------------

def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read from the environment now."""
    values = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((v or "").strip().lower() in ("1", "true", "yes", "on") for v in values)


def hub_endpoint() -> str:
    """The hub URL (HF_ENDPOINT, read now: huggingface_hub reads it once at import)."""
    return (os.environ.get("HF_ENDPOINT") or HUB_DEFAULT_ENDPOINT).rstrip("/")


def _offline_error(what: str) -> OperationFailed:
    return OperationFailed(
        f"cannot download {what}: HF_HUB_OFFLINE is set; unset it to download. "
        "Models already on disk still work (see `baize-tui models list`)"
    )


def _require_online(what: str) -> None:
    if is_offline():
        raise _offline_error(what)


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into one-line baize-tui errors."""
    from huggingface_hub import errors as hf_errors

    try:
        yield
    except hf_errors.OfflineModeIsEnabled:
        raise _offline_error(what) from None
    except hf_errors.GatedRepoError:
        raise OperationFailed(f"{what}: the repository is gated; accept its license on the hub "
                              "and log in (`hf auth login`)") from None
    except hf_errors.RepositoryNotFoundError:
        raise UserError(f"{what}: no such repository on the hub (or it is private: log in "
                        "with `hf auth login`)") from None
    except hf_errors.RevisionNotFoundError:
        raise UserError(f"{what}: no such revision on the hub") from None
    except hf_errors.EntryNotFoundError:
        raise UserError(f"{what}: no such file in the repository") from None
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise OperationFailed(f"{what}: the hub answered HTTP {status}; try again later") from None
    except _transport_errors() as exc:
        raise OperationFailed(
            f"cannot reach the Hugging Face hub at {hub_endpoint()} ({type(exc).__name__}: {exc}); "
            "check the network. Models already on disk still work (see `baize-tui models list`)"
        ) from None


@dataclass(frozen=True)
class HubFile:
    """A file in a hub repository, with what the listing says about it."""

    repo: str
    path: str
    size: int | None
    sha256: str | None


def list_hub_files(repo: str, revision: str = "main") -> list[HubFile]:
    """Every file of a model repository, with sizes and LFS sha256 (one API call)."""
    _require_online(repo)
    from huggingface_hub import HfApi

    with hub_errors(repo):
        info = HfApi(endpoint=hub_endpoint()).model_info(repo, revision=revision,
                                                         files_metadata=True)
    return [HubFile(repo, s.rfilename, s.size, s.lfs.sha256 if s.lfs else None)
            for s in (info.siblings or [])]


def _quant_pattern(quant: str) -> re.Pattern[str]:
    from baize_convert.quantize import ALIASES

    label = ALIASES.get(quant.strip().lower(), quant.strip().lower()).upper()
    return re.compile(rf"(?<![A-Z0-9]){re.escape(label)}(?![A-Z0-9_])")


def choose_gguf(files: list[HubFile], repo: str, *, quant: str | None = None) -> HubFile:
    """The one .gguf in ``files`` matching ``quant`` (or the only one); errors list choices."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    if not ggufs:
        raise UserError(f"{repo} has no .gguf files; if it holds Hugging Face weights, convert "
                        f"them: baize-convert merge --base {repo} --quantize q4")
    pool = ggufs
    if quant:
        pattern = _quant_pattern(quant)
        pool = [f for f in ggufs if pattern.search(Path(f.path).name.upper())]
    if len(pool) == 1:
        return pool[0]
    listing = ", ".join(f.path for f in ggufs)
    if not pool:
        raise UserError(f"{repo} has no .gguf file for quant {quant!r}; it has: {listing}")
    raise UserError(f"{repo} has {len(pool)} matching .gguf files; name one (or use --quant): "
                    + ", ".join(f.path for f in pool))


def _checksum_kind(etag: str | None) -> str | None:
    if etag and re.fullmatch(r"[0-9a-f]{64}", etag):
        return "sha256"
    if etag and re.fullmatch(r"[0-9a-f]{40}", etag):
        return "git-sha1"
    return None


class _Hasher:
    def __init__(self, kind: str | None, size: int | None) -> None:
        self.kind, self.size = kind, size
        self.reset()

    def reset(self) -> None:
        if self.kind == "git-sha1":
            self.h = hashlib.sha1(b"blob %d\0" % (self.size or 0))
        else:
            self.h = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.h.update(data)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


class _Dropped(Exception):
    """The connection broke mid-body; the caller reconnects with a Range request."""


def _chunks(resp: Any, transport: tuple[type[BaseException], ...]) -> Iterator[bytes]:
    try:
        yield from resp.iter_bytes()  # as received: a drop loses nothing already read
    except transport as exc:
        raise _Dropped(f"{type(exc).__name__}: {exc}") from None


def _lock(fh: Any, name: str) -> None:
    """One pull per file at a time: two writers would interleave into the same partial file."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"another pull of {name} is running; wait for it to finish") from None


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _disk_error(path: Path, exc: OSError) -> OperationFailed:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return OperationFailed(f"disk full while writing {path.parent}: {exc.strerror}; the "
                               "partial download was deleted, free some space and run again")
    return OperationFailed(f"cannot write {path}: {exc.strerror or exc}")


def pull_gguf(repo: str, filename: str, *, revision: str = "main",
              progress: ProgressFn | None = None, cancel: threading.Event | None = None,
              force: bool = False, retries: int | None = None) -> Path:
    """Download ``filename`` from hub repo ``repo`` into the models directory; returns its path.

    Resumes a ``.NAME.partial`` left by an interrupted run when the hub still serves the same
    file (same etag and size), reconnects with a Range request when the connection drops,
    verifies the sha256 (LFS files) or git blob id against the hub's etag, and renames the
    file into place only then. A checksum mismatch or a full disk deletes the partial file.
    """
    if not filename.lower().endswith(".gguf"):
        raise UserError(f"{filename}: only .gguf files can be pulled; for Hugging Face weights "
                        "use `baize-convert merge`")
    what = f"{repo}/{filename}"
    _require_online(what)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    endpoint = hub_endpoint()
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    with hub_errors(what):
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    size, etag = meta.size, meta.etag
    kind = _checksum_kind(etag)
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / Path(filename).name
    if dest.exists() and not force:
        if size is not None and dest.stat().st_size == size:
            if progress:
                progress(f"have {dest.name}", size, size)
            return dest
        raise UserError(f"{dest} exists with different contents; `baize-tui models rm "
                        f"{dest.name}` it first or pass --force")
    partial = models_dir / f".{dest.name}.partial"
    state_file = models_dir / f".{dest.name}.partial.json"
    state = {"repo": repo, "file": filename, "etag": etag, "size": size,
             "commit": meta.commit_hash}
    try:
        old = json.loads(state_file.read_text()) if state_file.exists() else None
    except (OSError, ValueError):
        old = None
    have = partial.stat().st_size if partial.exists() else 0
    if old is None or {k: old.get(k) for k in ("repo", "file", "etag", "size")} != \
            {k: state[k] for k in ("repo", "file", "etag", "size")} or \
            (size is not None and have > size):
        partial.unlink(missing_ok=True)
        have = 0
    if size is not None and _free_bytes(models_dir) < size - have + DISK_MARGIN:
        from baize_tui.formatting import human_bytes

        raise OperationFailed(
            f"not enough disk space in {models_dir}: {dest.name} needs "
            f"{human_bytes(size - have)} more, {human_bytes(_free_bytes(models_dir))} free"
        )
    state_file.write_text(json.dumps(state))

    hasher = _Hasher(kind, size)
    stage = f"download {dest.name}"
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    location = meta.location or url
    if not location.startswith(endpoint):
        headers.pop("authorization", None)  # a CDN's signed URL gets no hub token
    max_retries = DOWNLOAD_RETRIES if retries is None else retries

    def fail_clean(exc: BaseException) -> None:
        partial.unlink(missing_ok=True)
        state_file.unlink(missing_ok=True)
        raise exc

    transport = _transport_errors()
    try:
        with partial.open("ab+") as fh:
            _lock(fh, dest.name)
            fh.seek(0)
            for block in iter(lambda: fh.read(CHUNK), b""):
                hasher.update(block)  # resuming: the hash covers what is already on disk
            fh.seek(0, os.SEEK_END)
            offset = have
            if progress:
                progress(stage, offset, size)
            attempt = 0
            while size is None or offset < size:
                req = dict(headers)
                if offset:
                    req["Range"] = f"bytes={offset}-"
                try:
                    with hub_errors(what), get_session().stream(
                            "GET", location, headers=req, follow_redirects=True,
                            timeout=60) as resp:
                        if resp.status_code >= 400:
                            resp.read()
                            hf_raise_for_status(resp)
                        if offset and resp.status_code == 200:  # Range ignored: start over
                            fh.seek(0)
                            fh.truncate()
                            hasher.reset()
                            offset = 0
                        for chunk in _chunks(resp, transport):
                            if cancel is not None and cancel.is_set():
                                raise PullCancelled(f"download of {dest.name} cancelled at "
                                                    f"{offset:,} bytes; pull again to resume")
                            fh.write(chunk)
                            hasher.update(chunk)
                            offset += len(chunk)
                            attempt = 0
                            if progress:
                                progress(stage, offset, size)
                        if size is not None and offset < size:
                            raise _Dropped(f"connection closed at {offset:,} bytes")
                except _Dropped as exc:
                    attempt += 1
                    if attempt > max_retries:
                        fh.flush()
                        total = f"{size:,}" if size is not None else "?"
                        raise OperationFailed(
                            f"download of {dest.name} interrupted at {offset:,} of {total} bytes "
                            f"({exc}); run the same pull again to resume") from None
                    time.sleep(min(RETRY_WAIT * 2 ** (attempt - 1), 10.0))
                    continue
                if size is None:
                    break
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        fail_clean(_disk_error(dest, exc))
    if size is not None and offset != size:
        fail_clean(OperationFailed(f"{dest.name}: got {offset:,} bytes, the hub said {size:,}"))
    if kind is not None:
        digest = hasher.hexdigest()
        if digest != etag:
            fail_clean(OperationFailed(
                f"checksum mismatch for {what}: the hub says {kind} {etag}, the download has "
                f"{digest}; the file was deleted, pull again"))
    if progress:
        progress(stage, offset, size if size is not None else offset)
    os.replace(partial, dest)
    state_file.unlink(missing_ok=True)
    return dest


# ------------------------------------------------------------------------------------------
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
    from huggingface_hub import hf_hub_download

    with hub_errors(f"{config.repo}/config.json"):
        path = hf_hub_download(config.repo, "config.json", endpoint=hub_endpoint(),
                               cache_dir=hf_cache_dir())
    try:
        return json.loads(Path(path).read_text()).get("torch_dtype")
    except (OSError, ValueError):
        return None


def _callback_bar(progress: ProgressFn | None, stage: str, state: dict[str, int],
                  total: int) -> type:
    """A tqdm stand-in that huggingface_hub drives, forwarding to ``progress``."""

    class Bar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: float | None = 1) -> None:
            state["done"] += int(n or 0)
            if progress:
                progress(stage, min(state["done"], total), total)

        def close(self) -> None:
            pass

        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *a, **k: None

    return Bar


def run_recipe(plan: RecipePlan, *, progress: ProgressFn | None = None, quiet: bool = True,
               force: bool = False) -> Path:
    """Download what ``plan`` lists into the Hugging Face cache, then merge/convert into GGUF.

    The conversion is baize-convert's ``run_merge`` (disk check, temp file, self-check, rename);
    with ``quiet=False`` it draws its own rich progress bar.
    """
    _require_online(plan.repo)
    from huggingface_hub import hf_hub_download

    from baize_convert.pipeline import MergeRequest, check_disk, run_merge

    if plan.output.exists() and not force:
        raise UserError(f"{plan.output} exists; `baize-tui models rm {plan.output.name}` it "
                        "first or pass --force")
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    check_disk(plan.output.parent, plan.output_bytes + plan.temp_bytes, f"writing {plan.output.name}")
    stage = f"download {plan.repo}" + (f" + {plan.base}" if plan.base else "")
    state = {"done": 0}
    bar = _callback_bar(progress, stage, state, plan.download_bytes)
    if progress:
        progress(stage, 0, plan.download_bytes)
    dirs: dict[str, Path] = {}
    cache = hf_cache_dir()
    for f in plan.downloads:
        before = state["done"]
        with hub_errors(f"{f.repo}/{f.path}"):
            local = hf_hub_download(f.repo, f.path, endpoint=hub_endpoint(), cache_dir=cache,
                                    tqdm_class=bar)  # type: ignore[arg-type]
        state["done"] = before + (f.size or 0)  # cached files count as done too
        if progress:
            progress(stage, state["done"], plan.download_bytes)
        dirs[f.repo] = Path(local).parent
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
        return run_recipe(plan_recipe(repo, quant), progress=progress, force=force)
    _require_online(repo)
    if file is None:
        file = choose_gguf(list_hub_files(repo, revision), repo, quant=quant).path
    return pull_gguf(repo, file, revision=revision, progress=progress, cancel=cancel, force=force)
