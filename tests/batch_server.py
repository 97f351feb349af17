"""A real OpenAI Files + Batches server on 127.0.0.1 for tests and benchmarks.

The client under test is the real ``openai`` library talking HTTP; this server plays the
provider. It implements what the batch self-chat driver uses:

- ``POST /v1/files`` (multipart upload, ``purpose=batch``), ``GET /v1/files`` (list),
  ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
- ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches`` (cursor list with
  ``after`` / ``limit``), ``POST /v1/batches/{id}/cancel``.

A batch moves one status per ``polls_per_state`` retrieves: ``validating`` -> ``in_progress``
-> ``finalizing`` -> ``completed`` (no clocks, so tests never sleep for it). Validation
checks every input line (JSON, unique ``custom_id``, ``method``, ``url`` = the batch's
endpoint, a ``body``) and the limits ``max_requests`` / ``max_bytes``; a bad input fails the
whole batch with ``errors``, like the real service. When a batch finishes, every request is
answered by the scripted ``reply(body) -> Action`` (the same Actions as
``tests/openai_server.py``: a ``str`` or ``Reply`` is a 200 line in the output file, an
``Error`` a line in the error file). ``Malformed`` writes its bytes as a broken output line.

``server.plan(JobPlan(...))`` scripts the next created batch: ``expire_after=N`` lets N
requests finish and expires the rest (``batch_expired`` lines in the error file, status
``expired``); ``fail="message"`` fails validation; ``unknown_ids=K`` adds K result lines for
custom ids that were never submitted; ``garbage_lines=K`` adds K unparsable output lines.
``server.control_errors`` queues HTTP errors (``openai_server.Error``) answered to the next
control-plane requests (files and batches endpoints).

``server.hook = fn(event, obj)`` is called after an event is applied and before the response
is sent: ``"file"`` (upload stored), ``"batch"`` (batch created), ``"retrieve"``,
``"content"``, ``"cancel"``. When it returns an ``Error``, the client gets that error
although the event happened (a batch created, then a 500: the case where a blind retry
would submit everything twice).

Bookkeeping for assertions: ``server.batches`` / ``server.files`` (dicts by id),
``server.submitted`` (every custom id of every created batch, in order),
``server.requests`` (``(method, path)`` of every HTTP request).

``python tests/batch_server.py`` serves from its own process and prints ``READY <base_url>``.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from openai_server import Error, Malformed, Reply

STATES = ("validating", "in_progress", "finalizing", "completed")
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class JobPlan:
    """How the next created batch behaves (see the module docstring)."""

    expire_after: int | None = None
    fail: str | None = None
    unknown_ids: int = 0
    garbage_lines: int = 0


@dataclass
class _Batch:
    obj: dict[str, Any]
    lines: list[dict[str, Any]]
    plan: JobPlan
    polls: int = 0


@dataclass
class _File:
    obj: dict[str, Any]
    data: bytes


@dataclass
class BatchTestServer:
    """The provider side of the Batch API on ``127.0.0.1:<free port>``."""

    reply: Any = "Hello from the batch server."
    polls_per_state: int = 1
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    hook: Callable[[str, dict[str, Any]], Any] | None = None
    batches: dict[str, _Batch] = field(default_factory=dict)
    files: dict[str, _File] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    control_errors: collections.deque = field(default_factory=collections.deque)
    _plans: collections.deque = field(default_factory=collections.deque)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _ids: int = 0
    _httpd: Any = None
    _thread: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> BatchTestServer:
        """Serve in a daemon thread."""
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="batch-test-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> BatchTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # -- scripting ----------------------------------------------------------------------
    def plan(self, *plans: JobPlan) -> None:
        """Script the next created batches, one plan each."""
        with self._lock:
            self._plans.extend(plans)

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:06d}"

    def _fire(self, event: str, obj: dict[str, Any]) -> None:
        if self.hook is not None:
            answer = self.hook(event, obj)
            if isinstance(answer, Error):  # the event happened, but the client hears an error
                raise _Answer(answer)

    # -- files ----------------------------------------------------------------------------
    def add_file(self, name: str, data: bytes, purpose: str) -> dict[str, Any]:
        """Store a file; returns its File object."""
        with self._lock:
            fid = self._new_id("file")
            obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                   "filename": name, "purpose": purpose, "status": "processed",
                   "expires_at": None, "status_details": None}
            self.files[fid] = _File(obj, data)
        return obj

    # -- batches --------------------------------------------------------------------------
    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """``POST /v1/batches``."""
        fid = body.get("input_file_id")
        if fid not in self.files:
            return 400, {"error": {"message": f"No such file: {fid}", "type": "invalid_request_error"}}
        if body.get("completion_window") != "24h":
            return 400, {"error": {"message": "completion_window must be 24h",
                                   "type": "invalid_request_error"}}
        data = self.files[fid].data
        lines = []
        for raw in data.splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"__bad__": raw.decode("utf-8", "replace")})
        now = int(time.time())
        with self._lock:
            bid = self._new_id("batch")
            plan = self._plans.popleft() if self._plans else JobPlan()
            obj = {"id": bid, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                   "input_file_id": fid, "completion_window": "24h", "status": "validating",
                   "output_file_id": None, "error_file_id": None, "created_at": now,
                   "in_progress_at": None, "expires_at": now + 86400, "finalizing_at": None,
                   "completed_at": None, "failed_at": None, "expired_at": None,
                   "cancelling_at": None, "cancelled_at": None,
                   "request_counts": {"total": 0, "completed": 0, "failed": 0},
                   "metadata": body.get("metadata")}
            self.batches[bid] = _Batch(obj, lines, plan)
            self.submitted.extend(str(x.get("custom_id")) for x in lines)
        return 200, obj

    def _validate(self, b: _Batch) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        size = self.files[b.obj["input_file_id"]].obj["bytes"]
        if b.plan.fail:
            errors.append({"code": "invalid_request", "message": b.plan.fail, "line": None})
        if len(b.lines) > self.max_requests:
            errors.append({"code": "too_many_requests",
                           "message": f"{len(b.lines)} requests, more than {self.max_requests}"})
        if size > self.max_bytes:
            errors.append({"code": "file_too_large", "message": f"{size} bytes > {self.max_bytes}"})
        seen: set[str] = set()
        for n, line in enumerate(b.lines, 1):
            cid = line.get("custom_id")
            bad = ("__bad__" in line or not isinstance(cid, str) or cid in seen
                   or line.get("method") != "POST" or line.get("url") != b.obj["endpoint"]
                   or not isinstance(line.get("body"), dict))
            if bad:
                errors.append({"code": "invalid_line", "message": f"line {n} is invalid", "line": n})
            seen.add(str(cid))
        return errors

    def advance(self, b: _Batch) -> None:
        """One status step (called on retrieve)."""
        status = b.obj["status"]
        now = int(time.time())
        if status in TERMINAL:
            return
        if status == "cancelling":
            self._finish(b, "cancelled", done=0)
            return
        b.polls += 1
        if b.polls < self.polls_per_state:
            return
        b.polls = 0
        if status == "validating":
            errors = self._validate(b)
            if errors:
                b.obj.update(status="failed", failed_at=now,
                             errors={"object": "list", "data": errors})
                return
            b.obj.update(status="in_progress", in_progress_at=now)
            b.obj["request_counts"]["total"] = len(b.lines)
        elif status == "in_progress":
            if b.plan.expire_after is not None:
                self._finish(b, "expired", done=b.plan.expire_after)
                return
            b.obj.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            self._finish(b, "completed", done=len(b.lines))

    def _answer(self, line: dict[str, Any], n: int) -> tuple[bool, bytes]:
        """One result line: (to the output file?, bytes)."""
        cid = line.get("custom_id")
        body = line.get("body") or {}
        action = self.reply
        for _ in range(8):
            if callable(action) and not isinstance(action, (Reply, Error, Malformed)):
                action = action(body)
        if isinstance(action, str):
            action = Reply(action)
        rid = f"batch_req_{n:06d}"
        if isinstance(action, Malformed):
            return True, action.body
        if isinstance(action, Error):
            err = {"message": action.message, "type": action.type or "invalid_request_error",
                   "param": None, "code": action.code}
            rec = {"id": rid, "custom_id": cid, "error": None,
                   "response": {"status_code": action.status, "request_id": f"req_{n}",
                                "body": {"error": err}}}
            return False, json.dumps(rec).encode()
        usage = action.usage or {"prompt_tokens": len(json.dumps(body.get("messages"))) // 4,
                                 "completion_tokens": len(action.text) // 4 + 1}
        usage = dict(usage, total_tokens=usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        completion = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0,
                      "model": body.get("model"),
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": action.text},
                                   "logprobs": None, "finish_reason": action.finish_reason}],
                      "usage": usage}
        rec = {"id": rid, "custom_id": cid, "error": None,
               "response": {"status_code": 200, "request_id": f"req_{n}", "body": completion}}
        return True, json.dumps(rec, ensure_ascii=False).encode()

    def _finish(self, b: _Batch, status: str, *, done: int) -> None:
        now = int(time.time())
        out: list[bytes] = []
        err: list[bytes] = []
        code = {"expired": "batch_expired", "cancelled": "batch_cancelled"}.get(status)
        for n, line in enumerate(b.lines):
            if n < done:
                ok, data = self._answer(line, n)
                (out if ok else err).append(data)
            else:
                rec = {"id": f"batch_req_{n:06d}", "custom_id": line.get("custom_id"),
                       "response": None,
                       "error": {"code": code, "message": f"request not run: the batch {status}"}}
                err.append(json.dumps(rec).encode())
        for k in range(b.plan.unknown_ids):
            out.append(json.dumps({"id": f"batch_req_x{k}", "custom_id": f"nobody:{k}:t", "error": None,
                                   "response": {"status_code": 200, "request_id": "r",
                                                "body": {"choices": []}}}).encode())
        out[1:1] = [b"{garbage line, not json"] * b.plan.garbage_lines
        failed = len(err)
        b.obj["request_counts"] = {"total": len(b.lines), "completed": len(b.lines) - failed,
                                   "failed": failed}
        if out:
            b.obj["output_file_id"] = self.add_file(f"{b.obj['id']}_output.jsonl",
                                                    b"\n".join(out) + b"\n", "batch_output")["id"]
        if err:
            b.obj["error_file_id"] = self.add_file(f"{b.obj['id']}_error.jsonl",
                                                   b"\n".join(err) + b"\n", "batch_output")["id"]
        b.obj.update(status=status, **{f"{status}_at": now})


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Parse a multipart/form-data body into ``{name: (filename, data)}``."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    parts: dict[str, tuple[str | None, bytes]] = {}
    for chunk in raw.split(b"--" + boundary):
        if not chunk.strip() or chunk.strip() == b"--":
            continue
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        disp = head.decode("utf-8", "replace")
        name = disp.split('name="', 1)[1].split('"', 1)[0] if 'name="' in disp else ""
        filename = disp.split('filename="', 1)[1].split('"', 1)[0] if 'filename="' in disp else None
        parts[name] = (filename, data)
    return parts


class _Answer(Exception):
    """Raised by a hook's ``Error``: sent instead of the real response."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: BatchTestServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = (f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "x-request-id: req_batch_test\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)
            self.wfile.flush()
        except OSError:  # the client was killed meanwhile
            self.close_connection = True

    def _route(self, method: str) -> None:
        srv = self.server.owner
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        with srv._lock:
            srv.requests.append((method, url.path))
            injected = srv.control_errors.popleft() if srv.control_errors else None
        if injected is not None:
            self._send(injected.status, {"error": {"message": injected.message,
                                                   "type": injected.type or "api_error",
                                                   "code": injected.code}})
            return
        parts = [p for p in url.path.split("/") if p][1:]  # drop "v1"
        try:
            status, payload, ctype = self._dispatch(srv, method, parts, raw, parse_qs(url.query))
        except _Answer as answer:
            err = answer.error
            status, ctype = err.status, "application/json"
            payload = {"error": {"message": err.message, "type": err.type or "api_error",
                                 "code": err.code}}
        except Exception as exc:  # a bug in a scripted reply: answer 500 naming it
            status, payload, ctype = 500, {"error": {"message": f"batch server: {exc!r}"}}, "application/json"
        self._send(status, payload, ctype)

    def _dispatch(self, srv: BatchTestServer, method: str, parts: list[str], raw: bytes,
                  query: dict[str, list[str]]) -> tuple[int, Any, str]:
        js = "application/json"
        if parts == ["files"] and method == "POST":
            form = _multipart(self.headers.get("content-type", ""), raw)
            name, data = form.get("file", (None, b""))
            purpose = form.get("purpose", (None, b""))[1].decode()
            obj = srv.add_file(name or "upload.jsonl", data, purpose)
            srv._fire("file", obj)
            return 200, obj, js
        if parts == ["files"] and method == "GET":
            listed = [f.obj for f in srv.files.values()
                      if not query.get("purpose") or f.obj["purpose"] == query["purpose"][0]]
            return 200, {"object": "list", "data": listed, "has_more": False}, js
        if len(parts) >= 2 and parts[0] == "files":
            f = srv.files.get(parts[1])
            if f is None:
                return 404, {"error": {"message": f"No such File object: {parts[1]}"}}, js
            if method == "DELETE":
                srv.files.pop(parts[1], None)
                return 200, {"id": parts[1], "object": "file", "deleted": True}, js
            if parts[2:] == ["content"]:
                srv._fire("content", f.obj)
                return 200, f.data, "application/octet-stream"
            return 200, f.obj, js
        if parts == ["batches"] and method == "POST":
            status, obj = srv.create_batch(json.loads(raw or b"{}"))
            if status == 200:
                srv._fire("batch", obj)
            return status, obj, js
        if parts == ["batches"] and method == "GET":
            return 200, self._list_batches(srv, query), js
        if len(parts) >= 2 and parts[0] == "batches":
            b = srv.batches.get(parts[1])
            if b is None:
                return 404, {"error": {"message": f"No batch found with id '{parts[1]}'."}}, js
            with srv._lock:
                if parts[2:] == ["cancel"] and method == "POST":
                    if b.obj["status"] not in TERMINAL:
                        b.obj.update(status="cancelling", cancelling_at=int(time.time()))
                    event = "cancel"
                else:
                    srv.advance(b)
                    event = "retrieve"
                obj = json.loads(json.dumps(b.obj))
            srv._fire(event, obj)
            return 200, obj, js
        return 404, {"error": {"message": f"no route {method} /{'/'.join(parts)}"}}, js

    @staticmethod
    def _list_batches(srv: BatchTestServer, query: dict[str, list[str]]) -> dict[str, Any]:
        items = [b.obj for b in reversed(list(srv.batches.values()))]  # newest first
        after = (query.get("after") or [""])[0]
        if after:
            ids = [x["id"] for x in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int((query.get("limit") or ["20"])[0])
        page = items[:limit]
        return {"object": "list", "data": page, "has_more": len(items) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; print ``READY <base_url>``.

    ``--text`` is every reply; ``--expire N:K`` makes the N-th created batch (1-based) expire
    after K requests.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Batch API test server")
    parser.add_argument("--text", default="Hello from the batch server.")
    parser.add_argument("--expire", metavar="N:K")
    args = parser.parse_args(argv)
    server = BatchTestServer(args.text)
    if args.expire:
        n, k = (int(x) for x in args.expire.split(":"))
        server.plan(*([JobPlan()] * (n - 1)), JobPlan(expire_after=k))
    server.start()
    print(f"READY {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
