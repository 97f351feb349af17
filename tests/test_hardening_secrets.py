"""Hardening, secrets: credentials in endpoint URLs never reach the log (httpx lines included),
and a key a server echoes back never reaches raw.jsonl, failed.jsonl or an export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hardening_helpers import tui
from openai_server import OpenAITestServer

from baize_tui.redact import (
    RedactingFilter,
    SecretStream,
    forget_secrets,
    redact_text,
    redact_url,
    register_secret,
    scrub,
    scrub_secrets,
)

KEY = "sk-test-Zq8uniqueSECRET42"


@pytest.fixture(autouse=True)
def no_leftover_secrets() -> None:
    forget_secrets()


@pytest.mark.parametrize("url", [
    f"http://user:{KEY}@host:8000/v1",
    f"http://{KEY}@host/v1",
    f"https://host/v1?api-key={KEY}",
    f"https://host/v1?x=1&key={KEY}&y=2",
    f"https://host/v1?access_token={KEY}",
    f"https://host/v1?SIG={KEY}",
])
def test_url_credentials_are_redacted(url: str) -> None:
    cleaned = redact_url(url)
    assert KEY not in cleaned and "***" in cleaned
    assert cleaned.split("//")[1].split("/")[0].endswith(url.split("@")[-1].split("/")[0]
                                                         if "@" in url else "host")
    assert redact_text(f'HTTP Request: POST {url}/chat "HTTP/1.1 200 OK"').count(KEY) == 0
    assert redact_url("https://host/v1?model=x") == "https://host/v1?model=x"


def test_registered_keys_and_bearer_tokens_are_redacted_everywhere() -> None:
    register_secret(KEY)
    data = {"transcript": f"you sent Authorization: Bearer {KEY}", "nested": [KEY, 3],
            "error": f"echo {KEY}"}
    cleaned = scrub(data)
    assert KEY not in json.dumps(cleaned) and cleaned["nested"][1] == 3
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "sent %s", (KEY,), None)
    RedactingFilter().filter(record)
    assert KEY not in record.getMessage()


def log_text(home: Path) -> str:
    log = home / "cache" / "baize-tui.log"
    return log.read_text() if log.exists() else ""


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_ask_never_logs_a_key_in_the_endpoint_url(baize_home: Path, form: str) -> None:
    with OpenAITestServer(reply="Hello there.") as server:
        host = server.base_url.split("//")[1]
        url = (f"http://user:{KEY}@{host}" if form == "userinfo"
               else f"{server.base_url}?api-key={KEY}")
        out = tui("ask", "-m", "openai:m", "--base-url", url, "-v", "hi")
    assert KEY not in out.stdout + out.stderr
    logged = log_text(baize_home)
    assert "HTTP Request" in logged or out.returncode != 0, (logged, out.stderr)
    assert KEY not in logged


def echo_authorization(server: OpenAITestServer):  # noqa: ANN201 - a reply callable
    def reply(body: dict) -> str:
        headers = {k.lower(): v for k, v in server.requests[-1].headers.items()}
        auth = headers.get("authorization", "")
        return f"[Human] what did I send? [AI] You sent {auth} to me. [Human] thanks [AI] ok"
    return reply


def test_an_echoed_key_never_reaches_the_run_files_or_exports(baize_home: Path,
                                                              tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("first\nsecond\n")
    out_dir = tmp_path / "run"
    with OpenAITestServer() as server:
        server.set_reply(echo_authorization(server))
        run = tui("selfchat", "run", "--seeds", str(seeds), "--out", str(out_dir), "--model",
                  "m", "--base-url", server.base_url, env={"OPENAI_API_KEY": KEY})
        assert any(KEY in str(r.headers) for r in server.requests)  # the key was sent
    assert run.returncode == 0, run.stderr
    export = tmp_path / "export.json"
    assert tui("selfchat", "export", str(out_dir), "-o", str(export)).returncode == 0
    written = [p for p in out_dir.iterdir() if p.is_file()] + [export]
    assert (out_dir / "raw.jsonl").read_text().count("***") >= 1
    for path in written:
        assert KEY not in path.read_text(), path
    assert KEY not in log_text(baize_home) + run.stdout + run.stderr


def test_scrub_secrets_masks_registered_keys_and_a_half_streamed_one() -> None:
    register_secret(KEY)
    assert scrub_secrets(f"a {KEY} b {KEY}") == "a *** b ***"
    assert scrub_secrets("see https://h/v1?token=abc") == "see https://h/v1?token=abc"  # as typed
    half = f"you sent Bearer {KEY[:10]}"
    assert scrub_secrets(half) == half  # a finished text that merely starts like a key
    assert KEY[:10] not in scrub_secrets(half, partial=True)
    assert scrub_secrets(f"ends with {KEY[:3]}", partial=True).endswith(KEY[:3])  # too short


def test_secret_stream_never_prints_a_key_split_across_pieces() -> None:
    register_secret(KEY)
    text = f"You sent Bearer {KEY} to me, and {KEY[:8]} is not all of it."
    for size in (1, 3, 7, len(text)):
        stream = SecretStream()
        shown = "".join(stream.feed(text[i:i + size]) for i in range(0, len(text), size))
        shown += stream.flush()
        assert KEY not in shown
        assert shown == f"You sent Bearer *** to me, and {KEY[:8]} is not all of it."


def test_a_chat_turn_masks_a_key_split_across_pieces_for_every_caller() -> None:
    """The masking lives in the turn itself, so the app, ``ask`` and a library caller all get
    it: the pieces never carry the key, nor the turn's final text or the session's memory."""
    from ui_helpers import ScriptedEngine

    from baize_tui.chat import ChatSession
    from baize_tui.engines.base import SamplingParams

    register_secret(KEY)
    text = f"You sent Bearer {KEY} to me, and {KEY[:8]} is not all of it."
    engine = ScriptedEngine([text[i:i + 3] for i in range(0, len(text), 3)])
    session = ChatSession(engine, params=SamplingParams(max_new_tokens=200))
    turn = session.send("what did I send?")
    pieces = list(turn)
    expected = f"You sent Bearer *** to me, and {KEY[:8]} is not all of it."
    assert "".join(pieces) == expected and all(KEY not in p for p in pieces)
    assert turn.text == expected and session.turns[-1].assistant == expected


def history_bytes(home: Path) -> bytes:
    """Every byte of the history database, its WAL and journal included."""
    return b"".join(p.read_bytes() for p in (home / "data").glob("history.sqlite3*"))


def echo_header_reply(server: OpenAITestServer):  # noqa: ANN201 - a reply callable
    def reply(body: dict) -> str:
        auth = {k.lower(): v for k, v in server.requests[-1].headers.items()}["authorization"]
        return f"Your header was {auth!r}; your key is {auth.split()[-1]}."
    return reply


@pytest.mark.parametrize("source", ["env", "config"])
def test_ask_with_a_server_echoing_the_key_keeps_it_out_of_history_exports_logs(
        baize_home: Path, tmp_path: Path, source: str) -> None:
    from baize_tui.config import set_value

    with OpenAITestServer(chunk_size=5) as server:
        server.set_reply(echo_header_reply(server))
        env = {"OPENAI_API_KEY": KEY} if source == "env" else {"OPENAI_API_KEY": ""}
        if source == "config":
            set_value("openai.api_key", KEY)
        out = tui("ask", "-m", "openai:m", "--base-url", server.base_url, "-v", "hi", env=env)
        assert any(KEY in str(r.headers) for r in server.requests)  # the key was sent
    assert out.returncode == 0, out.stderr
    assert "Your header was" in out.stdout and "***" in out.stdout
    assert KEY not in out.stdout + out.stderr
    db = history_bytes(baize_home)
    assert b"Your header was" in db and KEY.encode() not in db
    export = tmp_path / "chat.json"
    assert tui("history", "export", "1", "-o", str(export)).returncode == 0
    shown = tui("history", "show", "1")
    assert "Your header was" in export.read_text() + shown.stdout
    assert KEY not in export.read_text() + shown.stdout + log_text(baize_home)


def test_the_app_chatting_through_an_endpoint_stores_no_echoed_key(baize_home: Path) -> None:
    import asyncio

    from ui_helpers import ready, send

    from baize_tui.history import HistoryStore
    from baize_tui.ui.app import BaizeApp
    from baize_tui.ui.widgets import MessageView

    async def chat(server: OpenAITestServer) -> None:
        config = {"model": {"default": "openai:m"},
                  "openai": {"base_url": server.base_url, "api_key": KEY}}
        history = HistoryStore()
        app = BaizeApp(model="openai:m", config=config, history=history)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = await ready(pilot, app)
            await send(pilot, screen, "what did I send?")
            # nor shown: neither while it streamed (pieces of 4 characters) nor once finished
            reply = list(screen.query(MessageView))[-1]
            assert "Your header was" in reply.text and "***" in reply.text
            assert KEY not in reply.text and KEY not in str(app.export_screenshot())
        history.close()

    with OpenAITestServer(chunk_size=4) as server:
        server.set_reply(echo_header_reply(server))
        asyncio.run(chat(server))
        assert any(KEY in str(r.headers) for r in server.requests)
    db = history_bytes(baize_home)
    assert b"Your header was" in db and KEY.encode() not in db
    assert KEY not in log_text(baize_home)
