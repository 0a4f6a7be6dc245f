"""A scripted fake OpenAI-compatible server on 127.0.0.1, shared by the tests of
nbsupport.llm_client, the anchor proposals and the LLM judge. Each test queues the
(status, body[, headers]) replies it wants and inspects the requests received."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nbsupport.llm_client import LLMClient

KEY = "sk-test-SECRET-0123456789"


def answer(content: str) -> dict:
    """A chat-completions response whose first choice says ``content``."""
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]}


class FakeServer:
    def __init__(self) -> None:
        self.replies: list[tuple] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers),
                                            "json": body})
                    reply = server.replies.pop(0) if server.replies else (
                        500, {"error": "no scripted reply"})
                status, payload, *extra = reply
                headers = extra[0] if extra else {}
                if isinstance(payload, (dict, list)):
                    data = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    data = payload.encode()
                else:
                    data = payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.01}, daemon=True)

    def script(self, *replies: tuple) -> None:
        self.replies.extend(replies)

    def client(self, **kwargs) -> LLMClient:
        params = {"base_url": self.url, "model": "fake-model", "api_key": KEY,
                  "timeout": 5.0, "max_retries": 3, "backoff": 0}
        params.update(kwargs)
        return LLMClient(**params)


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):  # autouse in every module that imports it
    # urllib honours *_proxy variables; loopback requests must go direct.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    fake = FakeServer()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
        fake.thread.join(timeout=5)


