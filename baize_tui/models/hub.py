"""Get GGUF files from the Hugging Face hub (headless; no Textual).

``pull_gguf`` downloads one GGUF through huggingface_hub into the models directory: into a
hidden ``.NAME.partial`` file that a later run resumes (HTTP Range), checked against the hub's
sha256 (the LFS ``X-Linked-Etag``), and renamed to its final name only when complete and
verified. Progress is reported through a plain callback ``progress(stage, done, total)``; a
``threading.Event`` passed as ``cancel`` stops a download between chunks, keeping the partial
file for resume.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.models.discovery import ProgressFn
from baize_tui.paths import get_paths

DOWNLOAD_RETRIES = 5  # reconnect attempts (Range resume) after a dropped connection
RETRY_WAIT = 1.0  # seconds before the first reconnect; doubles, capped at 10 s
CHUNK = 1 << 20
DISK_MARGIN = 64 * 1024**2
HUB_DEFAULT_ENDPOINT = "https://huggingface.co"
class PullCancelled(OperationFailed):
    """A download stopped by ``cancel``; the partial file stays for the next run to resume."""


# ------------------------------------------------------------------------------------------
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


def _prepare_partial(dest: Path, state: dict[str, Any], size: int | None
                     ) -> tuple[Path, Path, int]:
    """The ``.NAME.partial`` file to write into, its state file, and how many bytes of it can
    be kept (0 unless an earlier pull of the very same file left them); checks disk space."""
    models_dir = dest.parent
    partial = models_dir / f".{dest.name}.partial"
    state_file = models_dir / f".{dest.name}.partial.json"
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
    return partial, state_file, have


def _stream(fh: Any, location: str, headers: dict[str, str], *, what: str, dest: Path,
            size: int | None, offset: int, hasher: _Hasher, progress: ProgressFn | None,
            stage: str, cancel: threading.Event | None, max_retries: int) -> int:
    """Append the file's bytes from ``offset`` to ``fh`` (reconnecting with a Range request
    after a dropped connection, at most ``max_retries`` times in a row); returns the size."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    transport = _transport_errors()
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
    return offset


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
    from huggingface_hub.utils import build_hf_headers

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
    state = {"repo": repo, "file": filename, "etag": etag, "size": size,
             "commit": meta.commit_hash}
    partial, state_file, have = _prepare_partial(dest, state, size)

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
            offset = _stream(fh, location, headers, what=what, dest=dest, size=size,
                             offset=offset, hasher=hasher, progress=progress, stage=stage,
                             cancel=cancel, max_retries=max_retries)
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
