"""The one downloader: a file from the Hugging Face hub, resumable and checked (headless).

Both ``models pull`` (:func:`pull_gguf`, into the models directory) and the recipes
(:func:`download_to_cache`, into the Hugging Face cache) fetch every byte through
:func:`download`, which

- asks the hub for the file's size, etag and commit (``huggingface_hub.get_hf_file_metadata``);
- writes into a hidden ``.NAME.partial`` beside the destination, with a ``.partial.json`` state
  file, so that a later run resumes it (HTTP Range) when the hub still serves the same file
  (same etag and size), and reconnects with a Range request when the connection drops;
- verifies the sha256 (LFS files: the ``X-Linked-Etag``) or git blob id (other files) against the
  hub's etag, and renames the file into place only then; a mismatch or a full disk deletes it;
- reports progress through ``progress(stage, done, total)`` and stops between chunks once the
  ``threading.Event`` passed as ``cancel`` is set (:class:`PullCancelled`), keeping the partial
  file for the next run.

Why the bytes do not go through ``hf_hub_download`` (checked in huggingface_hub 2.4.0's
``file_download.py``): ``_download_to_tmp_and_move`` writes into a process-unique
``<etag>.<uuid>.incomplete`` and unlinks it in a ``finally`` on any exception (a dropped
connection after its retries, KeyboardInterrupt, or a cancel raised from a ``tqdm_class``), so
nothing survives for a later run to resume; ``http_get`` resumes only within one call, after
``ConnectError``/``TimeoutException``/``RemoteProtocolError``, and reads the body in
``DOWNLOAD_CHUNK_SIZE`` (10 MiB) buffered chunks, so a drop loses up to 10 MiB and a cancel
waits for the next 10 MiB; nothing compares the bytes with the sha256 etag (only the size is
checked). Xet-backed repositories are fetched over plain HTTP here (the resolve URL serves them),
as ``HF_HUB_DISABLE_XET=1`` would make huggingface_hub do.

What huggingface_hub does here: the metadata request, the HTTP session, headers and token
(``build_hf_headers``), status-to-exception mapping (``hf_raise_for_status``), and for the cache
its layout: :func:`download_to_cache` puts the verified file at ``blobs/<etag>`` of the repo's
cache folder and then calls ``hf_hub_download``, which finds the blob and only links it into
``snapshots/<commit>/`` and writes ``refs/<revision>``; files already cached are returned by
``try_to_load_from_cache`` without any transfer.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.models.discovery import ProgressFn
from baize_tui.models.hub import (
    PullCancelled,
    _require_online,
    _transport_errors,
    hub_endpoint,
    hub_errors,
)
from baize_tui.paths import get_paths

DOWNLOAD_RETRIES = 5  # reconnect attempts (Range resume) after a dropped connection
RETRY_WAIT = 1.0  # seconds before the first reconnect; doubles, capped at 10 s
CHUNK = 1 << 20
DISK_MARGIN = 64 * 1024**2


@dataclass(frozen=True)
class RemoteFile:
    """One file on the hub as its metadata request describes it."""

    repo: str
    filename: str
    revision: str
    location: str  # where the bytes are (the resolve URL, or the CDN it redirects to)
    size: int | None
    etag: str | None  # sha256 for LFS files, the git blob id otherwise
    commit: str | None


def remote_file(repo: str, filename: str, revision: str = "main") -> RemoteFile:
    """Ask the hub for ``filename``'s size, etag and commit (one HEAD request)."""
    what = f"{repo}/{filename}"
    _require_online(what)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint = hub_endpoint()
    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
    with hub_errors(what):
        meta = get_hf_file_metadata(url, endpoint=endpoint)
    return RemoteFile(repo, filename, revision, meta.location or url, meta.size, meta.etag,
                      meta.commit_hash)


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
            f"{human_bytes(size - have)} more plus a {human_bytes(DISK_MARGIN)} safety margin, "
            f"{human_bytes(_free_bytes(models_dir))} free"
        )
    state_file.write_text(json.dumps(state))
    return partial, state_file, have


def _stream(fh: Any, location: str, headers: dict[str, str], *, what: str, label: str,
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
                        raise PullCancelled(f"download of {label} cancelled at "
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
                    f"download of {label} interrupted at {offset:,} of {total} bytes "
                    f"({exc}); run the same pull again to resume") from None
            time.sleep(min(RETRY_WAIT * 2 ** (attempt - 1), 10.0))
            continue
        if size is None:
            break
    return offset


def _fill(partial: Path, remote: RemoteFile, have: int, kind: str | None, *,
          label: str, progress: ProgressFn | None, stage: str, cancel: threading.Event | None,
          max_retries: int) -> int:
    """Append the rest of the file to ``partial`` (hashing what is already there first);
    returns the size reached. ``OSError`` from writing propagates."""
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"
    if not remote.location.startswith(hub_endpoint()):
        headers.pop("authorization", None)  # a CDN's signed URL gets no hub token
    hasher = _Hasher(kind, remote.size)
    with partial.open("ab+") as fh:
        _lock(fh, label)
        fh.seek(0)
        for block in iter(lambda: fh.read(CHUNK), b""):
            hasher.update(block)  # resuming: the hash covers what is already on disk
        fh.seek(0, os.SEEK_END)
        if progress:
            progress(stage, have, remote.size)
        offset = _stream(fh, remote.location, headers, what=f"{remote.repo}/{remote.filename}",
                         label=label, size=remote.size, offset=have, hasher=hasher,
                         progress=progress, stage=stage, cancel=cancel, max_retries=max_retries)
        fh.flush()
        os.fsync(fh.fileno())
    if kind is not None and hasher.hexdigest() != remote.etag:
        raise _Mismatch(f"checksum mismatch for {remote.repo}/{remote.filename}: the hub says "
                        f"{kind} {remote.etag}, the download has {hasher.hexdigest()}; the file "
                        "was deleted, pull again")
    return offset


class _Mismatch(OperationFailed):
    """The bytes do not match the hub's checksum or size (the partial file is deleted)."""


def download(remote: RemoteFile, dest: Path, *, progress: ProgressFn | None = None,
             stage: str | None = None, cancel: threading.Event | None = None,
             retries: int | None = None, label: str | None = None) -> Path:
    """Fetch ``remote`` into ``dest`` (resumable, verified, renamed into place); returns ``dest``.

    ``stage`` names the progress stage (default ``download NAME``) and ``label`` the file in
    messages (default ``dest``'s name); ``retries`` bounds the reconnects in a row after a
    dropped connection (default :data:`DOWNLOAD_RETRIES`).
    """
    label = label or dest.name
    stage = stage or f"download {label}"
    state = {"repo": remote.repo, "file": remote.filename, "etag": remote.etag,
             "size": remote.size, "commit": remote.commit}
    partial, state_file, have = _prepare_partial(dest, state, remote.size)

    def fail_clean(exc: BaseException) -> None:
        partial.unlink(missing_ok=True)
        state_file.unlink(missing_ok=True)
        raise exc

    offset = 0
    try:
        offset = _fill(partial, remote, have, _checksum_kind(remote.etag), label=label,
                       progress=progress, stage=stage, cancel=cancel,
                       max_retries=DOWNLOAD_RETRIES if retries is None else retries)
    except OSError as exc:
        fail_clean(_disk_error(dest, exc))
    except _Mismatch as exc:
        fail_clean(exc)
    if remote.size is not None and offset != remote.size:
        fail_clean(OperationFailed(f"{label}: got {offset:,} bytes, the hub said "
                                   f"{remote.size:,}"))
    if progress:
        progress(stage, offset, remote.size if remote.size is not None else offset)
    os.replace(partial, dest)
    state_file.unlink(missing_ok=True)
    return dest


def pull_gguf(repo: str, filename: str, *, revision: str = "main",
              progress: ProgressFn | None = None, cancel: threading.Event | None = None,
              force: bool = False, retries: int | None = None) -> Path:
    """Download ``filename`` from hub repo ``repo`` into the models directory; returns its path.

    A file already there with the hub's size is kept (nothing downloaded); one with other
    contents is refused unless ``force``. The transfer is :func:`download`'s.
    """
    from baize_tui.model_checks import check_hub_names

    check_hub_names(repo, filename)
    if not filename.lower().endswith(".gguf"):
        raise UserError(f"{filename}: only .gguf files can be pulled; for Hugging Face weights "
                        "use `baize-convert merge`")
    remote = remote_file(repo, filename, revision)
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / Path(filename).name
    if dest.exists() and not force:
        if remote.size is not None and dest.stat().st_size == remote.size:
            if progress:
                progress(f"have {dest.name}", remote.size, remote.size)
            return dest
        raise UserError(f"{dest} exists with different contents; `baize-tui models rm "
                        f"{dest.name}` it first or pass --force")
    return download(remote, dest, progress=progress, cancel=cancel, retries=retries)


def download_to_cache(repo: str, filename: str, *, cache_dir: Path, revision: str = "main",
                      progress: ProgressFn | None = None, stage: str | None = None,
                      cancel: threading.Event | None = None) -> Path:
    """``filename`` of ``repo`` in the Hugging Face cache (fetched by :func:`download` unless
    already cached at the hub's current commit); returns its ``snapshots/`` path."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    remote = remote_file(repo, filename, revision)
    cached = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=remote.commit)
    if isinstance(cached, str):
        return Path(cached)
    what = f"{repo}/{filename}"
    if remote.etag:  # the hub always sends one; without it the library fetches by itself
        blob = cache_dir / repo_folder_name(repo_id=repo, repo_type="model") / "blobs" / \
            remote.etag
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            download(remote, blob, progress=progress, stage=stage, cancel=cancel, label=what)
    with hub_errors(what):
        return Path(hf_hub_download(repo, filename, revision=revision, endpoint=hub_endpoint(),
                                    cache_dir=cache_dir))
