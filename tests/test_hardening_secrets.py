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
    forget_secrets,
    redact_text,
    redact_url,
    register_secret,
    scrub,
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
