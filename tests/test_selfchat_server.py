"""The OpenAI-compatible test server itself, driven by the real ``openai`` client."""

from __future__ import annotations

import openai
import pytest
from openai_server import Drop, Error, Malformed, OpenAITestServer, Reply

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server():
    with OpenAITestServer() as srv:
        yield srv


def client(srv: OpenAITestServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0, **kw)


def test_plain_and_recorded(server: OpenAITestServer) -> None:
    server.set_reply(lambda body: f"echo {body['messages'][-1]['content']}")
    resp = client(server).chat.completions.create(model="m", messages=MSG, temperature=0.5)
    assert resp.choices[0].message.content == "echo hi"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens > 0
    req = server.requests[-1]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.body["temperature"] == 0.5 and req.body["messages"] == MSG


def test_streaming_with_usage(server: OpenAITestServer) -> None:
    server.push(Reply("Hello streaming world", usage={"prompt_tokens": 3, "completion_tokens": 4}))
    stream = client(server).chat.completions.create(
        model="m", messages=MSG, stream=True, stream_options={"include_usage": True})
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "Hello streaming world"
    assert len(pieces) > 2 and finish == "stop"
    assert usage.prompt_tokens == 3 and usage.total_tokens == 7


def test_stream_dropped_midway(server: OpenAITestServer) -> None:
    server.push(Reply("a long reply that never ends", drop_after_chunks=1))
    with pytest.raises(openai.APIConnectionError):
        list(client(server).chat.completions.create(model="m", messages=MSG, stream=True))


def test_injected_failures(server: OpenAITestServer) -> None:
    c = client(server)
    server.push(Error.rate_limit(retry_after=2.5), Error(500), Drop(), Malformed(), Error(401))
    with pytest.raises(openai.RateLimitError) as rl:
        c.chat.completions.create(model="m", messages=MSG)
    assert rl.value.response.headers["retry-after"] == "3"
    assert rl.value.response.headers["retry-after-ms"] == "2500"
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="m", messages=MSG)
    with pytest.raises(openai.APIConnectionError):
        c.chat.completions.create(model="m", messages=MSG)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=MSG)
    with pytest.raises(ValueError):
        raw.parse()
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="m", messages=MSG)
    assert server.count == 5
    # back to the fallback reply, and the models list works
    assert c.chat.completions.create(model="m", messages=MSG).choices[0].message.content
    assert [m.id for m in c.models.list()] == ["test-model"]


def test_latency_timeout(server: OpenAITestServer) -> None:
    server.push(Reply("slow", latency=1.0))
    with pytest.raises(openai.APITimeoutError):
        client(server, timeout=0.2).chat.completions.create(model="m", messages=MSG)
