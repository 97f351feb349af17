"""A cheap OpenAI-compatible server for throughput benchmarks: asyncio, HTTP/1.1 keep-alive.

tests/openai_server.py is a ``ThreadingHTTPServer``: one thread per connection, the GIL and a
``BaseHTTPRequestHandler`` parse per request. On a 2-core machine shared with the client under
test, that server's own CPU shows up as client "overhead" (the bare ``AsyncOpenAI`` anchor
reached only ~85 % of ideal against it). This one answers every ``POST .../chat/completions``
with the same pre-encoded JSON body after ``--latency`` seconds (``asyncio.sleep``, no thread),
so a request costs the server a header parse and one ``write``; ``GET .../models`` lists one
model. It is a benchmark neighbour, not a test double: no scripting, no streaming.

    python bench/async_openai_server.py --latency 0.3 --text "Answer 1: 61" [--port 0]

prints ``READY http://127.0.0.1:PORT/v1`` once listening, then serves until killed. The
number of requests served and the peak in flight are printed on SIGTERM (``DONE n peak``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal


class _Server:
    def __init__(self, latency: float, text: str, model: str) -> None:
        self.latency = latency
        self.count = 0
        self.in_flight = 0
        self.peak = 0
        body = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 400, "completion_tokens": 24, "total_tokens": 424}}
        self.completion = self._response(200, json.dumps(body).encode())
        models = {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "bench"}]}
        self.models = self._response(200, json.dumps(models).encode())
        self.not_found = self._response(404, b'{"error": {"message": "not found"}}')

    @staticmethod
    def _response(status: int, body: bytes) -> bytes:
        reason = {200: "OK", 404: "Not Found"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: keep-alive\r\n\r\n")
        return head.encode() + body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, rest = head.partition(b"\r\n")
                method, path, _ = request_line.decode("latin-1").split(" ", 2)
                length = 0
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                if method == "POST" and path.endswith("/chat/completions"):
                    self.count += 1
                    self.in_flight += 1
                    self.peak = max(self.peak, self.in_flight)
                    try:
                        await asyncio.sleep(self.latency)
                    finally:
                        self.in_flight -= 1
                    writer.write(self.completion)
                elif method == "GET" and path.endswith("/models"):
                    writer.write(self.models)
                else:
                    writer.write(self.not_found)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def _serve(args: argparse.Namespace) -> None:
    srv = _Server(args.latency, args.text.replace("\\n", "\n"), args.model)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://127.0.0.1:{port}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"DONE {srv.count} {srv.peak}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--text", default="Hello from the bench server.")
    parser.add_argument("--model", default="judge")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
