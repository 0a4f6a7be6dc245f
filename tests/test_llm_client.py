"""Tests for nbsupport.llm_client against a scripted fake OpenAI-compatible server.

The server listens on 127.0.0.1 (an ephemeral port) only; each test queues the
(status, body) replies it wants and inspects the requests the client made.
"""
from __future__ import annotations

import json
import logging
import socket

import pytest

from nbsupport import llm_client
from nbsupport.llm_client import LLMClient, LLMError, LLMNotConfigured
from fake_llm import KEY, answer

SCHEMA = {
    "type": "object",
    "properties": {
        "terms": {"type": "array", "items": {"type": "string"}},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["terms", "score"],
    "additionalProperties": False,
}
VALID = {"terms": ["Hogwarts", "Mystic Academy"], "score": 7}
MESSAGES = [{"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "Propose anchor terms."}]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- success ------------------------------------------------------------------------

def test_valid_answer_is_parsed_and_request_is_well_formed(server):
    server.script((200, answer(json.dumps(VALID))))
    result = server.client().chat_json(MESSAGES, SCHEMA)

    assert result == VALID
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    body = req["json"]
    assert body["model"] == "fake-model"
    assert body["messages"] == MESSAGES
    assert body["temperature"] == 0.0
    assert "max_tokens" not in body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
    }


def test_trailing_slash_max_tokens_and_no_key(server):
    server.script((200, answer(json.dumps(VALID))))
    client = server.client(base_url=server.url + "/", api_key=None)
    assert client.chat_json(MESSAGES, SCHEMA, temperature=0.5, max_tokens=64) == VALID
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert "authorization" not in {k.lower() for k in req["headers"]}
    assert req["json"]["max_tokens"] == 64
    assert req["json"]["temperature"] == 0.5


@pytest.mark.parametrize("content", [
    "```json\n" + json.dumps(VALID) + "\n```",
    "  \n```json\n" + json.dumps(VALID, indent=2) + "\n```\n  ",
    "```\n" + json.dumps(VALID) + "\n```",
])
def test_fenced_json_is_accepted(server, content):
    server.script((200, answer(content)))
    assert server.client().chat_json(MESSAGES, SCHEMA) == VALID
    assert len(server.requests) == 1


# -- retries ------------------------------------------------------------------------

def test_retries_500_then_429_then_success(server):
    server.script((500, {"error": "boom"}),
                  (429, {"error": "slow down"}),
                  (200, answer(json.dumps(VALID))))
    assert server.client().chat_json(MESSAGES, SCHEMA) == VALID
    assert len(server.requests) == 3
    # every attempt re-sends the same request
    assert all(r["json"] == server.requests[0]["json"] for r in server.requests)


def test_not_json_content_is_retried(server):
    server.script((200, answer("Sure! Here are some terms: Hogwarts")),
                  (200, answer(json.dumps(VALID))))
    assert server.client().chat_json(MESSAGES, SCHEMA) == VALID
    assert len(server.requests) == 2


def test_malformed_response_body_is_retried(server):
    server.script((200, "<html>not json</html>"),
                  (200, {"choices": []}),
                  (200, {"choices": [{"message": {"content": None}}]}),
                  (200, answer(json.dumps(VALID))))
    assert server.client().chat_json(MESSAGES, SCHEMA) == VALID
    assert len(server.requests) == 4


def test_schema_failure_on_every_attempt_raises(server):
    bad = {"terms": "Hogwarts", "score": 99}
    server.script(*[(200, answer(json.dumps(bad)))] * 10)
    client = server.client(max_retries=2)
    with pytest.raises(LLMError) as info:
        client.chat_json(MESSAGES, SCHEMA)
    assert len(server.requests) == client.max_retries + 1 == 3
    message = str(info.value)
    assert "3 attempts" in message
    assert "schema" in message
    assert info.value.attempts == 3


def test_never_evaluates_model_output(server):
    # a Python expression is not JSON: it must be rejected, not evaluated
    server.script(*[(200, answer("{'terms': ['x'], 'score': __import__('os').getpid()}"))] * 2)
    with pytest.raises(LLMError, match="not JSON"):
        server.client(max_retries=1).chat_json(MESSAGES, SCHEMA)


# -- non-retried errors -------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_fail_immediately(server, status):
    server.script((status, {"error": {"message": "nope"}}),
                  (200, answer(json.dumps(VALID))))
    with pytest.raises(LLMError) as info:
        server.client().chat_json(MESSAGES, SCHEMA)
    assert len(server.requests) == 1
    assert str(status) in str(info.value)
    assert "nope" in str(info.value)
    assert info.value.status == status


def test_redirects_are_not_followed(server):
    server.script((302, "", {"Location": "http://127.0.0.1:1/elsewhere"}))
    with pytest.raises(LLMError, match="302"):
        server.client().chat_json(MESSAGES, SCHEMA)
    assert len(server.requests) == 1


# -- secrecy of the key -------------------------------------------------------------

def test_echoed_key_is_scrubbed(server, caplog):
    caplog.set_level(logging.DEBUG, logger="nbsupport.llm_client")
    client = server.client(max_retries=1)
    assert KEY not in repr(client)
    assert KEY not in str(client)

    # a non-retried error whose body echoes the key
    server.script((401, {"error": f"invalid api key {KEY} (Bearer {KEY})"}))
    with pytest.raises(LLMError) as info:
        client.chat_json(MESSAGES, SCHEMA)
    assert "401" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert info.value.__cause__ is None

    # retried errors that echo it, then the final "after N attempts" error
    server.script((500, f"server error for key {KEY}"),
                  (200, answer(f"not json {KEY}")))
    with pytest.raises(LLMError) as info:
        client.chat_json(MESSAGES, SCHEMA)
    assert "2 attempts" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in caplog.text
    assert len(server.requests) == 3


def test_key_with_control_characters_is_rejected_without_echo():
    bad_key = "sk-evil\r\nX-Injected: 1"
    with pytest.raises(ValueError) as info:
        LLMClient(base_url="http://127.0.0.1:1/v1", model="m", api_key=bad_key)
    assert bad_key not in str(info.value)
    assert "sk-evil" not in str(info.value)


# -- connection failures ------------------------------------------------------------

def test_connection_refused_is_retried_then_raises():
    client = LLMClient(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m",
                       api_key=KEY, timeout=1.0, max_retries=1, backoff=0)
    with pytest.raises(LLMError) as info:
        client.chat_json(MESSAGES, SCHEMA)
    assert "2 attempts" in str(info.value)
    assert "connection" in str(info.value).lower()
    assert KEY not in str(info.value)


def test_invalid_schema_is_rejected_before_any_request(server):
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        server.client().chat_json(MESSAGES, {"type": "no-such-type"})
    assert server.requests == []


# -- configuration ------------------------------------------------------------------

def test_from_env_missing_variables():
    with pytest.raises(LLMNotConfigured) as info:
        LLMClient.from_env({})
    assert isinstance(info.value, LLMError)
    assert llm_client.ENV_BASE_URL in str(info.value)
    assert llm_client.ENV_MODEL in str(info.value)
    assert not llm_client.is_configured({})
    assert not llm_client.is_configured({llm_client.ENV_BASE_URL: "http://localhost:8000/v1"})
    assert not llm_client.is_configured({llm_client.ENV_MODEL: "m"})
    with pytest.raises(LLMNotConfigured, match=llm_client.ENV_MODEL):
        LLMClient.from_env({llm_client.ENV_BASE_URL: "http://localhost:8000/v1"})


def test_from_env_with_variables(monkeypatch):
    env = {llm_client.ENV_BASE_URL: "http://localhost:8000/v1", llm_client.ENV_MODEL: "qwen",
           llm_client.ENV_API_KEY: KEY}
    client = LLMClient.from_env(env, timeout=5.0, backoff=0)
    assert client.base_url == "http://localhost:8000/v1"
    assert client.model == "qwen"
    assert client.api_key == KEY
    assert client.timeout == 5.0 and client.backoff == 0
    assert KEY not in repr(client)
    assert llm_client.is_configured(env)

    no_key = LLMClient.from_env({llm_client.ENV_BASE_URL: "https://api.example/v1",
                                 llm_client.ENV_MODEL: "m"})
    assert no_key.api_key is None

    # environ defaults to os.environ
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert llm_client.is_configured()
    assert LLMClient.from_env().model == "qwen"
    monkeypatch.delenv(llm_client.ENV_MODEL)
    assert not llm_client.is_configured()

    with pytest.raises(TypeError):
        LLMClient.from_env(env, api_key="other")


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000/v1", ""])
def test_base_url_must_be_http(url):
    with pytest.raises(ValueError, match="http"):
        LLMClient(base_url=url, model="m")
    assert not llm_client.is_configured({llm_client.ENV_BASE_URL: url or "x", llm_client.ENV_MODEL: "m"})
