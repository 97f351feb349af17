"""The OpenAI-compatible engine against a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from openai_server import Drop, Error, OpenAITestServer, Reply

from baize_tui.chat import ChatSession
from baize_tui.engines import SamplingParams, open_engine
from baize_tui.engines.openai_api import OpenAIEngine
from baize_tui.errors import OperationFailed, UserError
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT, to_messages

KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def server() -> Iterator[OpenAITestServer]:
    with OpenAITestServer(chunk_size=4) as srv:
        yield srv


def make_engine(server: OpenAITestServer, **kwargs) -> OpenAIEngine:
    return OpenAIEngine("baize-test", base_url=server.base_url, api_key=KEY, max_retries=0,
                        timeout=10, **kwargs)


def test_streams_pieces_and_sends_chat_roles(server: OpenAITestServer) -> None:
    server.set_reply(Reply("Hello from the test server.", usage={"prompt_tokens": 42,
                                                                 "completion_tokens": 7}))
    engine = make_engine(server)
    messages = to_messages(None, [("Hi", "Hello!")], "How are you?")
    gen = engine.stream(messages, SamplingParams(max_new_tokens=64, seed=9))
    pieces = list(gen)
    assert "".join(pieces) == "Hello from the test server."
    assert len(pieces) > 3  # really streamed, in the server's 4-character chunks
    assert gen.stats.finish_reason == "stop"
    assert (gen.stats.prompt_tokens, gen.stats.completion_tokens) == (42, 7)
    assert gen.stats.ttft_s is not None
    body = server.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": BAIZE_SYSTEM_PROMPT}
    assert body["messages"] == messages
    assert body["stream"] is True and body["model"] == "baize-test"
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        1.0, 0.95, 64, 9)
    for name in ("top_k", "min_p", "repeat_penalty"):  # off by default: OpenAI never sees them
        assert name not in body
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert "127.0.0.1" in engine.describe() and KEY not in engine.describe()


def test_extra_sampling_params_go_to_compatible_servers(server: OpenAITestServer) -> None:
    engine = make_engine(server)
    list(engine.stream([{"role": "user", "content": "x"}],
                       SamplingParams(top_k=20, min_p=0.05, repeat_penalty=1.1)))
    body = server.requests[-1].body
    assert (body["top_k"], body["min_p"], body["repeat_penalty"]) == (20, 0.05, 1.1)


def test_session_cuts_at_stop_string_and_reports_length(server: OpenAITestServer) -> None:
    engine = make_engine(server)
    session = ChatSession(engine, system_prompt="Be terse.")
    server.push("  Sure thing.\n[|Human|]and the model goes on")
    turn = session.send("Do it")
    assert turn.run() == "Sure thing."
    assert turn.stats.finish_reason == "stop"
    assert server.requests[-1].body["messages"][0] == {"role": "system", "content": "Be terse."}
    server.push(Reply("cut short", finish_reason="length"))
    turn = session.send("More")
    assert turn.run() == "cut short" and turn.stats.finish_reason == "length"
    sent = server.requests[-1].body["messages"]
    assert sent[1:3] == [{"role": "user", "content": "Do it"},
                         {"role": "assistant", "content": "Sure thing."}]


def test_cancel_stops_the_stream(server: OpenAITestServer) -> None:
    server.chunk_delay = 0.02
    server.set_reply("x" * 400)
    cancel = threading.Event()
    gen = make_engine(server).stream([{"role": "user", "content": "go"}], SamplingParams(), cancel)
    got = []
    for piece in gen:
        got.append(piece)
        cancel.set()
    assert len(got) == 1 and gen.stats.finish_reason == "cancelled"


def test_http_errors_are_one_clear_line(server: OpenAITestServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    engine = make_engine(server)
    msgs = [{"role": "user", "content": "hi"}]
    server.push(Error(500, "the GPU caught fire"))
    with pytest.raises(OperationFailed, match="HTTP 500: the GPU caught fire") as info:
        list(engine.stream(msgs, SamplingParams()))
    assert info.value.exit_code == 1
    server.push(Error(401, "Incorrect API key provided"))
    with pytest.raises(UserError, match="rejected the API key") as info:
        list(engine.stream(msgs, SamplingParams()))
    assert info.value.exit_code == 2
    server.push(Error.rate_limit(retry_after=0))
    with pytest.raises(OperationFailed, match="HTTP 429"):
        list(engine.stream(msgs, SamplingParams()))
    server.push(Error(404, "no such model"))
    with pytest.raises(UserError, match="'baize-test' not found"):
        list(engine.stream(msgs, SamplingParams()))
    server.push(Drop())
    with pytest.raises(OperationFailed, match="cannot reach"):
        list(engine.stream(msgs, SamplingParams()))
    # The key was sent on every request, yet never logged or shown.
    assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in server.requests)
    assert caplog.records, "expected the client's debug logging to be captured"
    assert KEY not in caplog.text
    assert KEY[-12:] not in caplog.text


def test_stream_broken_midway_saves_partial_reply_as_error(server: OpenAITestServer) -> None:
    from baize_tui.history import HistoryStore

    server.push(Reply("partial answer that breaks", drop_after_chunks=2))
    with HistoryStore() as store:
        session = ChatSession(make_engine(server), history=store)
        turn = session.send("hello")
        with pytest.raises(OperationFailed, match="broke off|cannot reach"):
            turn.run()
        assert turn.stats.finish_reason == "error"
        thread = store.thread(session.conversation_id)
        assert [m.role for m in thread] == ["user", "assistant"]
        assert thread[0].text == "hello"
        assert thread[1].finish_reason == "error" and thread[1].text == "partial"
        assert not thread[1].complete


def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpenAIEngine("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=5)
    with pytest.raises(OperationFailed, match=f"cannot reach http://127.0.0.1:{port}/v1"):
        list(engine.stream("hi", SamplingParams()))


def test_key_sources(monkeypatch: pytest.MonkeyPatch, server: OpenAITestServer) -> None:
    # No key and OpenAI itself: a clear usage error.
    with pytest.raises(UserError, match="OPENAI_API_KEY") as info:
        open_engine("openai:gpt-4o-mini", config={"openai": {}})
    assert info.value.exit_code == 2
    # A local server needs no key.
    engine = open_engine("openai:m", config={"openai": {}}, base_url=server.base_url)
    assert "".join(engine.stream("hi", SamplingParams())) == "Hello from the test server."
    # The key comes from the config, else from the environment.
    engine = open_engine("openai:m", config={"openai": {"api_key": "sk-from-config",
                                                        "base_url": server.base_url}})
    list(engine.stream("hi", SamplingParams()))
    assert server.requests[-1].headers["authorization"] == "Bearer sk-from-config"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    engine = open_engine("openai:m", config={"openai": {"api_key": "sk-from-config"}},
                         base_url=server.base_url)
    list(engine.stream("hi", SamplingParams()))
    assert server.requests[-1].headers["authorization"] == "Bearer sk-from-env"
    with pytest.raises(UserError, match="model name"):
        open_engine("openai:", config={"openai": {}})
