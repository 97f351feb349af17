"""A local stand-in for the Hugging Face hub: real HTTP on 127.0.0.1, the hub's URL layout.

Serve a directory of fake repos (``ROOT/org/name/...files``) and point ``HF_ENDPOINT`` at
``server.url``; ``huggingface_hub`` and baize-tui then talk to it as to huggingface.co:

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``?blobs=true`` adds
  sizes and LFS info), as ``HfApi.model_info`` / ``repo_info`` call them;
- ``GET /api/models/{repo}/tree/{rev}[/path]`` (one page), as ``list_repo_tree`` and
  ``snapshot_download`` call it;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag``, and for LFS
  files ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``; ``Range: bytes=N-[M]`` answers 206;
- errors the way the hub signals them (404 + ``X-Error-Code: RepoNotFound`` / ``EntryNotFound`` /
  ``RevisionNotFound``).

Fault injection: ``drop_after(file, n, times)`` closes the connection after ``n`` body bytes,
``corrupt(file)`` serves one flipped byte (same length, same advertised checksum). Every request
is recorded in ``server.requests`` as ``(method, path, range_header)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = {".gguf", ".safetensors", ".bin", ".model", ".pt", ".pth"}
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the hub sends as the ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """A threaded HTTP server serving ``root`` in the hub's layout; use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str, str | None]] = []
        self._drops: dict[str, list[int]] = {}  # "org/name/file" -> [after_bytes, times_left]
        self._corrupt: set[str] = set()
        # "org/name/file" -> (bytes per chunk, seconds between chunks, full speed once set)
        self._throttles: dict[str, tuple[int, float, threading.Event]] = {}
        self._meta: dict[tuple[str, int, int], tuple[str, bool]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup ---------------------------------------------------------------------------
    def add_repo(self, repo_id: str, source: Path | None = None,
                 files: dict[str, bytes] | None = None) -> Path:
        """Create repo ``org/name`` from a directory (copied) and/or in-memory files."""
        target = self.root / repo_id
        if source is not None:
            shutil.copytree(source, target, dirs_exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        for rel, data in (files or {}).items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(data)
        return target

    def throttle(self, repo_file: str, chunk: int = 4096, every_s: float = 0.02
                 ) -> threading.Event:
        """Send ``repo_file`` slowly (``chunk`` bytes each ``every_s`` seconds) until the
        returned event is set, then the rest at full speed: a download that stays active
        for as long as a test needs, and then ends."""
        release = threading.Event()
        self._throttles[repo_file] = (chunk, every_s, release)
        return release

    def drop_after(self, repo_file: str, n_bytes: int, times: int = 1) -> None:
        """Close the connection after ``n_bytes`` of the body of the next ``times`` GETs."""
        self._drops[repo_file] = [n_bytes, times]

    def corrupt(self, repo_file: str) -> None:
        """Serve this file with one byte flipped (length and advertised sha256 unchanged)."""
        self._corrupt.add(repo_file)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repo model ----------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path | None:
        path = self.root / repo_id
        return path if repo_id.count("/") == 1 and path.is_dir() else None

    def files(self, repo_id: str) -> list[str]:
        base = self.root / repo_id
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def commit(self, repo_id: str) -> str:
        base = self.root / repo_id
        digest = hashlib.sha1(repo_id.encode())
        for rel in self.files(repo_id):
            digest.update(f"{rel}:{(base / rel).stat().st_size}\n".encode())
        return digest.hexdigest()

    def file_meta(self, path: Path) -> tuple[str, bool]:
        """(etag, is_lfs): the sha256 for LFS files, the git blob id otherwise."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key not in self._meta:
                lfs = path.suffix in LFS_SUFFIXES
                if lfs:
                    h = hashlib.sha256()
                    with path.open("rb") as fh:
                        for block in iter(lambda: fh.read(1 << 20), b""):
                            h.update(block)
                    etag = h.hexdigest()
                else:
                    etag = git_blob_sha1(path.read_bytes())
                self._meta[key] = (etag, lfs)
            return self._meta[key]

    def entry(self, repo_id: str, rel: str, *, tree: bool) -> dict:
        path = self.root / repo_id / rel
        etag, lfs = self.file_meta(path)
        size = path.stat().st_size
        blob = git_blob_sha1(path.read_bytes()) if lfs else etag
        if tree:
            out: dict = {"type": "file", "path": rel, "size": size, "oid": blob}
            if lfs:
                out["lfs"] = {"oid": etag, "size": size, "pointerSize": 134}
            return out
        out = {"rfilename": rel, "size": size, "blobId": blob}
        if lfs:
            out["lfs"] = {"sha256": etag, "size": size, "pointerSize": 134}
        return out


class _Handler(BaseHTTPRequestHandler):
    """The hub's endpoints; :func:`_make_handler` binds it to one :class:`HubServer`."""

    hub: HubServer
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _record(self) -> None:
        self.hub.requests.append((self.command, urlsplit(self.path).path, self.headers.get("Range")))

    def _error(self, status: int, code: str | None, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _check_rev(self, repo_id: str, rev: str) -> bool:
        if rev in ("main", self.hub.commit(repo_id)):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._record()
        self._route()

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._record()
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")]
        query = parse_qs(parts.query)
        if len(segs) >= 4 and segs[:2] == ["api", "models"]:
            repo_id = "/".join(segs[2:4])
            if self.hub.repo_dir(repo_id) is None:
                return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            rest = segs[4:]
            if not rest or rest[0] == "revision":
                rev = rest[1] if len(rest) > 1 else "main"
                if not self._check_rev(repo_id, rev):
                    return None
                blobs = query.get("blobs", ["false"])[0].lower() == "true"
                siblings = [self.hub.entry(repo_id, f, tree=False) if blobs else {"rfilename": f}
                            for f in self.hub.files(repo_id)]
                return self._json({"id": repo_id, "modelId": repo_id, "sha": self.hub.commit(repo_id),
                                   "private": False, "disabled": False, "gated": False,
                                   "tags": [], "siblings": siblings})
            if rest[0] == "tree" and len(rest) >= 2:
                if not self._check_rev(repo_id, rest[1]):
                    return None
                prefix = "/".join(rest[2:])
                names = [f for f in self.hub.files(repo_id)
                         if not prefix or f.startswith(prefix.rstrip("/") + "/")]
                return self._json([self.hub.entry(repo_id, f, tree=True) for f in names])
            return self._error(404, None, "not found")
        if len(segs) >= 5 and segs[2] == "resolve":
            repo_id = "/".join(segs[:2])
            if self.hub.repo_dir(repo_id) is None:
                return self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            if not self._check_rev(repo_id, segs[3]):
                return None
            return self._file(repo_id, "/".join(segs[4:]))
        return self._error(404, None, "not found")

    def _file(self, repo_id: str, rel: str) -> None:
        path = self.hub.root / repo_id / rel
        if not path.is_file():
            return self._error(404, "EntryNotFound", f"{rel} does not exist on main")
        etag, lfs = self.hub.file_meta(path)
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", self.hub.commit(repo_id))
        self.send_header("ETag", f'"{etag}"')
        if lfs:
            self.send_header("X-Linked-Etag", f'"{etag}"')
            self.send_header("X-Linked-Size", str(size))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return None
        self._body(path, f"{repo_id}/{rel}", start, end, size)
        return None

    def _body(self, path: Path, key: str, start: int, end: int, size: int) -> None:
        """Bytes ``start..end`` of ``path``, with the faults set for ``key`` (drop, corrupt,
        throttle)."""
        drop = self.hub._drops.get(key)
        limit = None
        if drop and drop[1] > 0:
            drop[1] -= 1
            limit = drop[0]
        flip = size // 2 if key in self.hub._corrupt else -1
        sent = 0
        slow = self.hub._throttles.get(key)
        with path.open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos <= end:
                step = 64 * 1024
                if slow is not None and not slow[2].is_set():
                    step = slow[0]
                    slow[2].wait(slow[1])
                chunk = fh.read(min(step, end - pos + 1))
                if not chunk:
                    break
                if pos <= flip < pos + len(chunk):
                    i = flip - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if limit is not None and sent + len(chunk) > limit:
                    chunk = chunk[: max(limit - sent, 0)]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                pos += len(chunk)

def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"hub": hub})
