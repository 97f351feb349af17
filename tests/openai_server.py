"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks just enough of the OpenAI REST API for ``openai.OpenAI`` / ``AsyncOpenAI`` to talk
to it over real HTTP: ``POST /v1/chat/completions`` (non-streaming JSON and streaming SSE)
and ``GET /v1/models``. Every reply is scripted, so tests decide exactly what each request
gets, including failures.

Usage::

    from openai_server import OpenAITestServer, Reply, Error, Drop, Malformed

    with OpenAITestServer(reply=lambda req: "Hi!", latency=0.05) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        server.push(Error.rate_limit(retry_after=0.2), Error(500), Drop())  # next three requests
        ...
        server.requests[-1].body["messages"]     # what the client sent
        server.requests[-1].headers["authorization"]

API (stable; other tests rely on it):

``OpenAITestServer(reply=None, latency=0.0, model="test-model", chunk_size=8, chunk_delay=0.0)``
    ``reply`` decides what a request gets when the queue (see ``push``) is empty: a callable
    ``reply(body: dict) -> Action`` called with the parsed JSON request body, or a fixed
    Action. The default replies ``"Hello from the test server."``.
    ``latency`` (seconds) is slept before each response; ``chunk_size`` characters per SSE
    delta and ``chunk_delay`` seconds between streamed chunks.
    Start and stop it with ``with`` or ``start()`` / ``stop()``; ``base_url`` is
    ``"http://127.0.0.1:PORT/v1"``, ``url`` is the same without ``/v1``.

An *Action* is one of:

- ``str``: a successful completion with that text (``finish_reason="stop"``).
- ``Reply(text, finish_reason="stop", usage=None, latency=None, headers=None,
  drop_after_chunks=None)``: the same with control over finish reason, usage
  (``{"prompt_tokens": .., "completion_tokens": ..}``; estimated when ``None``), a per-request
  latency overriding the server's, extra response headers, and (streaming only) a connection
  dropped after N content chunks.
- ``Error(status, message="...", code=None, type=None, headers=None, retry_after=None)``: an
  HTTP error with an OpenAI-style JSON error body. ``Error.rate_limit(retry_after=1.0)`` is a
  429 with ``Retry-After`` (whole seconds) and ``retry-after-ms``;
  ``Error.rate_limit(retry_after=1.0, ms=False)`` sends only ``Retry-After``.
- ``Drop()``: the connection is closed without any response.
- ``Malformed(body=b"{not json", status=200, content_type="application/json")``: raw bytes.
- a callable ``(body: dict) -> Action``, evaluated per request (an exception it raises
  becomes a 500 whose message names it, so a broken script shows up in the client's error).

``server.push(*actions)`` queues actions consumed one per request, first in first out, before
``reply`` is consulted. ``server.set_reply(reply)`` swaps the fallback; ``server.latency`` may be
changed at any time.

Every request is recorded in ``server.requests`` (a list of ``RecordedRequest(method, path,
headers, body, time, status, answered)``; header names lower-case, ``body`` the parsed JSON or
``None``, ``status``/``answered`` the status sent and when its head went out, ``None`` for a
dropped connection), also for requests that got an error or a dropped connection.
``server.count`` is how many were received; ``server.clear()`` forgets them.
``server.in_flight`` / ``server.max_in_flight`` track concurrency.

``python tests/openai_server.py --latency 0.3 --text "..."`` serves from its own process and
prints ``READY <base_url>`` (used by bench/selfchat_bench.py).

Streaming (``"stream": true``) sends ``data: {chunk}`` events whose
``choices[0].delta.content`` carry the text, a last choice chunk with ``finish_reason``, a
usage chunk (empty ``choices``) when ``stream_options.include_usage`` is set, then
``data: [DONE]``, sent with chunked transfer encoding (so a dropped stream is an error the
client sees, not a short reply). The server is a ``ThreadingHTTPServer`` speaking HTTP/1.1
keep-alive with TCP_NODELAY, each plain response written in one ``write``, so it keeps up with
dozens of concurrent clients.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TEXT = "Hello from the test server."


@dataclass
class Reply:
    """A successful completion (see the module docstring)."""

    text: str
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    latency: float | None = None
    headers: dict[str, str] | None = None
    drop_after_chunks: int | None = None


@dataclass
class Error:
    """An HTTP error with an OpenAI-style JSON body."""

    status: int
    message: str = "injected error"
    code: str | None = None
    type: str | None = None
    headers: dict[str, str] | None = None
    retry_after: float | None = None
    ms: bool = True
    latency: float | None = None

    @classmethod
    def rate_limit(cls, retry_after: float = 1.0, *, ms: bool = True, code: str | None = None) -> Error:
        """A 429 carrying ``Retry-After`` (and ``retry-after-ms`` unless ``ms=False``)."""
        return cls(429, "Rate limit reached (injected)", code=code, type="rate_limit_error",
                   retry_after=retry_after, ms=ms)


@dataclass
class Drop:
    """Close the connection without answering."""

    latency: float | None = None


@dataclass
class Malformed:
    """Answer with these raw bytes."""

    body: bytes = b'{"choices": [ this is not json'
    status: int = 200
    content_type: str = "application/json"
    latency: float | None = None


Action = str | Reply | Error | Drop | Malformed | Callable[[dict], Any]


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.monotonic)
    #: the status the server answered with, and when its response went out (monotonic)
    status: int | None = None
    answered: float | None = None


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    #: the POST being answered on this connection (its status and time are filled in)
    record: RecordedRequest | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default
        return

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover
            pass

    # -- plumbing -----------------------------------------------------------------------
    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                 "x-request-id: req_test"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)
        self.wfile.flush()
        self._answered(status)

    def _answered(self, status: int) -> None:
        if self.record is not None and self.record.status is None:
            self.record.status, self.record.answered = status, time.monotonic()

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- endpoints ----------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        srv = self.server.owner
        srv._record(self, None)
        if self.path.rstrip("/").endswith("/models"):
            body = {"object": "list", "data": [{"id": srv.model, "object": "model",
                                                 "created": 0, "owned_by": "test"}]}
            self._send(200, json.dumps(body).encode())
        else:
            self._send(404, json.dumps({"error": {"message": "not found"}}).encode())

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        srv = self.server.owner
        body = self._read_body()
        self.record = srv._record(self, body)
        with srv._lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            self._handle_post(srv, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in a scripted reply: answer 500 saying so
            msg = f"test server: {type(exc).__name__}: {exc}"
            try:
                self._send(500, json.dumps({"error": {"message": msg}}).encode())
            except OSError:
                self.close_connection = True
        finally:
            with srv._lock:
                srv.in_flight -= 1

    def _handle_post(self, srv: OpenAITestServer, body: Any) -> None:
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            return
        action = srv._next_action(body if isinstance(body, dict) else {})
        latency = getattr(action, "latency", None)
        delay = srv.latency if latency is None else latency
        if delay > 0:
            time.sleep(delay)
        if isinstance(action, Drop):
            self._drop()
        elif isinstance(action, Malformed):
            self._send(action.status, action.body, action.content_type)
        elif isinstance(action, Error):
            self._send_error(action)
        elif body is None or not isinstance(body, dict):
            self._send(400, json.dumps({"error": {"message": "body is not JSON",
                                                  "type": "invalid_request_error"}}).encode())
        elif body.get("stream"):
            self._stream(srv, body, action)
        else:
            self._complete(srv, body, action)

    def _send_error(self, err: Error) -> None:
        headers = dict(err.headers or {})
        if err.retry_after is not None:
            headers["Retry-After"] = str(max(0, int(err.retry_after + 0.999)))
            if err.ms:
                headers["retry-after-ms"] = str(int(err.retry_after * 1000))
        payload = {"error": {"message": err.message, "type": err.type or "api_error",
                             "param": None, "code": err.code}}
        self._send(err.status, json.dumps(payload).encode(), headers=headers)

    def _usage(self, body: dict, reply: Reply) -> dict[str, int]:
        if reply.usage is not None:
            usage = dict(reply.usage)
        else:
            prompt = json.dumps(body.get("messages", ""), ensure_ascii=False)
            usage = {"prompt_tokens": _estimate_tokens(prompt),
                     "completion_tokens": _estimate_tokens(reply.text)}
        usage.setdefault("prompt_tokens", 0)
        usage.setdefault("completion_tokens", 0)
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return usage

    def _complete(self, srv: OpenAITestServer, body: dict, reply: Reply) -> None:
        payload = {
            "id": f"chatcmpl-{srv.count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or srv.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": self._usage(body, reply),
        }
        self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                   headers=reply.headers)

    def _stream(self, srv: OpenAITestServer, body: dict, reply: Reply) -> None:
        model = body.get("model") or srv.model
        base = {"id": f"chatcmpl-{srv.count}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def event(choices: list, **extra: Any) -> bytes:
            data = dict(base, choices=choices, **extra)
            return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"

        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream", "Cache-Control: no-cache",
                "Transfer-Encoding: chunked", "x-request-id: req_test"]
        head += [f"{k}: {v}" for k, v in (reply.headers or {}).items()]

        def send(data: bytes, prefix: bytes = b"") -> None:
            self.wfile.write(prefix + f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        send(event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                     "finish_reason": None}]),
             prefix=("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        self._answered(200)
        size = max(1, srv.chunk_size)
        pieces = [reply.text[i:i + size] for i in range(0, len(reply.text), size)]
        for n, piece in enumerate(pieces):
            if reply.drop_after_chunks is not None and n >= reply.drop_after_chunks:
                self._drop()
                return
            if srv.chunk_delay > 0:
                time.sleep(srv.chunk_delay)
            send(event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
        if reply.drop_after_chunks is not None and reply.drop_after_chunks <= len(pieces):
            self._drop()
            return
        out = event([{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}])
        if (body.get("stream_options") or {}).get("include_usage"):
            out += event([], usage=self._usage(body, reply))
        out += b"data: [DONE]\n\n"
        self.wfile.write(f"{len(out):x}\r\n".encode() + out + b"\r\n0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: OpenAITestServer


class OpenAITestServer:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>`` in a background thread."""

    def __init__(self, reply: Action | None = None, *, latency: float = 0.0,
                 model: str = "test-model", chunk_size: int = 8, chunk_delay: float = 0.0) -> None:
        self.reply: Action = DEFAULT_TEXT if reply is None else reply
        self.latency = latency
        self.model = model
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.requests: list[RecordedRequest] = []
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: collections.deque[Action] = collections.deque()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> OpenAITestServer:
        """Bind a free port and serve in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            return self
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the openai client: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    # -- scripting ----------------------------------------------------------------------
    def push(self, *actions: Action) -> None:
        """Queue actions for the next requests, one each, before ``reply`` applies."""
        with self._lock:
            self._queue.extend(actions)

    def set_reply(self, reply: Action) -> None:
        """Replace the fallback reply."""
        self.reply = reply

    def clear(self) -> None:
        """Forget recorded requests and queued actions."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self.count = 0
            self.max_in_flight = 0

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> RecordedRequest:
        rec = RecordedRequest(handler.command, handler.path,
                              {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
            self.count += 1
        return rec

    def _next_action(self, body: dict) -> Reply | Error | Drop | Malformed:
        with self._lock:
            action: Any = self._queue.popleft() if self._queue else self.reply
        for _ in range(8):  # resolve callables (a callable may return another)
            if callable(action) and not isinstance(action, (Reply, Error, Drop, Malformed)):
                action = action(body)
            else:
                break
        if isinstance(action, str):
            return Reply(action)
        if isinstance(action, (Reply, Error, Drop, Malformed)):
            return action
        return Error(500, f"test server: bad scripted action {action!r}")


def main(argv: list[str] | None = None) -> None:
    """``python tests/openai_server.py [--latency S] [--text T] [--port N]``: serve until killed.

    Prints ``READY <base_url>`` on stdout once listening (benchmarks run the server in its
    own process so it does not share the client's interpreter lock).
    """
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = OpenAITestServer(args.text.replace("\\n", "\n"), latency=args.latency)
    httpd = _Server(("127.0.0.1", args.port), _Handler)
    httpd.owner = server
    server._httpd = httpd
    print(f"READY {server.base_url}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
