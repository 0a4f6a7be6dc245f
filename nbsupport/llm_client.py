"""Optional client for an OpenAI-compatible chat endpoint (off by default).

The course can ask an external LLM to *propose* anchor-term dictionary entries
and to *judge* completions. Nothing in the pipeline needs it: every notebook
works without it, and it is only used when a learner turns it on and points it
at a server (a local ``vllm``/``llama.cpp``/``ollama`` server, or a hosted one).

Configuration comes from environment variables only, never from notebooks or
files that could be committed:

``NBSUPPORT_LLM_BASE_URL``
    the API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is
    appended to it);
``NBSUPPORT_LLM_MODEL``
    the model name the server expects;
``NBSUPPORT_LLM_API_KEY``
    optional; sent as ``Authorization: Bearer <key>`` (local servers often
    need none).

Security rules this module keeps:

* the API key never appears in ``repr()``/``str()`` of the client, in
  exception messages, in log records, or in anything returned; any text taken
  from a server (which might echo the key back) is scrubbed before use, and
  exceptions are raised ``from None`` so no chained error carries it either;
* HTTP redirects are not followed, so the key is only ever sent to the
  configured URL;
* model output is parsed with :func:`json.loads` only (never ``eval``) and then
  validated against a JSON Schema with ``jsonschema``.

Transient failures (HTTP 429 and 5xx, connection errors and timeouts, answers
that are not the expected shape, not JSON, or not valid under the schema) are
retried with exponential backoff; other HTTP errors (400, 401, 404, ...) fail
at once with :class:`LLMError`.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Mapping

import jsonschema

ENV_BASE_URL = "NBSUPPORT_LLM_BASE_URL"   # e.g. http://localhost:8000/v1
ENV_MODEL = "NBSUPPORT_LLM_MODEL"
ENV_API_KEY = "NBSUPPORT_LLM_API_KEY"     # optional (local servers often need none)

_EXCERPT_CHARS = 300            # how much of a server's error body goes into a message
_MAX_RESPONSE_BYTES = 16 << 20  # refuse to buffer more than this from one response
_REDACTED = "***"
_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\r?\n?(.*?)\r?\n?[ \t]*```\Z",
                    re.DOTALL | re.IGNORECASE)

log = logging.getLogger(__name__)


class LLMError(RuntimeError):
    """The LLM request failed after its retries, or the answer was invalid.

    ``status`` is the HTTP status of a non-retried HTTP error (else ``None``);
    ``attempts`` is how many requests were made.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 attempts: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class LLMNotConfigured(LLMError):
    """The environment variables that configure the LLM client are missing."""


class _Retryable(Exception):
    """Internal: an attempt failed in a way worth retrying (message is the reason)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: the Authorization header must only go to the configured URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None  # urllib then raises HTTPError with the 3xx status


def _scrub(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    if secret:
        text = text.replace(secret, _REDACTED)
    return text


def _excerpt(text: str, limit: int = _EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_fence(content: str) -> str:
    """Remove surrounding whitespace and an optional ```json ... ``` fence."""
    content = content.strip()
    match = _FENCE.match(content)
    if match:
        content = match.group(1).strip()
    return content


@dataclass(frozen=True)
class LLMClient:
    """A minimal client for ``POST {base_url}/chat/completions``.

    Build it with :meth:`from_env` in notebooks; the constructor is for tests.
    ``max_retries`` counts the attempts after the first; ``backoff`` is the
    first pause in seconds, doubled after each retry. The API key is excluded
    from ``repr()`` and never appears in messages.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    max_retries: int = 3          # attempts after the first
    backoff: float = 1.0          # seconds, doubled each retry (tests pass 0)

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.lower().startswith(
                ("http://", "https://")):
            scheme = self.base_url.split(":", 1)[0] if isinstance(self.base_url, str) else None
            raise ValueError("LLM base_url must start with http:// or https:// "
                             f"(got scheme {scheme!r})")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("LLM model must be a non-empty string")
        if self.api_key is not None:
            # A control character would make http.client raise with the header
            # value (the key) in its message; reject it here without echoing it.
            if not isinstance(self.api_key, str) or any(
                    ord(c) < 32 or ord(c) == 127 for c in self.api_key):
                raise ValueError("LLM api_key must be a string without control characters")
        if self.timeout <= 0:
            raise ValueError("LLM timeout must be positive")
        if self.max_retries < 0:
            raise ValueError("LLM max_retries must be >= 0")
        if self.backoff < 0:
            raise ValueError("LLM backoff must be >= 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "LLMClient":
        """Build a client from ``NBSUPPORT_LLM_*`` environment variables.

        ``environ`` defaults to :data:`os.environ`. ``kwargs`` set the other
        fields (``timeout``, ``max_retries``, ``backoff``); the URL, model and
        key can only come from the environment. Raises
        :class:`LLMNotConfigured` when the base URL or the model is missing.
        """
        env = os.environ if environ is None else environ
        for name in ("base_url", "model", "api_key"):
            if name in kwargs:
                raise TypeError(f"from_env() takes {name} from the environment only")
        base_url = (env.get(ENV_BASE_URL) or "").strip()
        model = (env.get(ENV_MODEL) or "").strip()
        api_key = (env.get(ENV_API_KEY) or "").strip() or None
        missing = [name for name, value in ((ENV_BASE_URL, base_url), (ENV_MODEL, model))
                   if not value]
        if missing:
            raise LLMNotConfigured(
                f"the LLM client is not configured: set {ENV_BASE_URL} (e.g. "
                f"http://localhost:8000/v1) and {ENV_MODEL}, and {ENV_API_KEY} if the "
                f"server needs a key (missing: {', '.join(missing)})")
        return cls(base_url=base_url, model=model, api_key=api_key, **kwargs)

    @property
    def endpoint(self) -> str:
        """The full URL requests are posted to."""
        return f"{self.base_url.rstrip('/')}/chat/completions"

    def chat_json(self, messages: list[dict], schema: dict, temperature: float = 0.0,
                  max_tokens: int | None = None) -> Any:
        """Send ``messages`` and return the answer parsed as JSON and valid under ``schema``.

        The request asks for structured output (``response_format`` of type
        ``json_schema``); the answer's ``choices[0].message.content`` may still
        be wrapped in a ```json fence, which is removed. Retries on 429/5xx,
        connection errors, malformed responses, non-JSON content and content
        that fails the schema; raises :class:`LLMError` at once on any other
        HTTP error, and after the last attempt otherwise. Raises
        :class:`ValueError` (before any request) if ``schema`` is not a valid
        JSON Schema or ``messages`` is not a non-empty list of dicts.
        """
        validator = _validator(schema)
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a non-empty list of dicts")
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
        }
        if max_tokens is not None:
            payload["max_tokens"] = int(max_tokens)
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
        data = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"

        attempts = self.max_retries + 1
        reason = "no attempt made"
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                delay = self.backoff * (2 ** (attempt - 2))
                log.warning("LLM attempt %d/%d failed (%s); retrying in %.1fs",
                            attempt - 1, attempts, reason, delay)
                if delay > 0:
                    time.sleep(delay)
            try:
                raw = self._post(data, headers, attempt)
                return self._parse(raw, validator)
            except _Retryable as exc:
                reason = _scrub(str(exc), self.api_key)
        message = _scrub(f"LLM request failed after {attempts} attempt"
                         f"{'s' if attempts != 1 else ''}; last error: {reason}", self.api_key)
        log.debug("%s", message)
        raise LLMError(message, attempts=attempts) from None

    # -- one attempt --------------------------------------------------------------

    def _post(self, data: bytes, headers: dict[str, str], attempt: int) -> bytes:
        """POST once; return the body of a 2xx answer, or raise _Retryable / LLMError."""
        request = urllib.request.Request(self.endpoint, data=data, headers=headers,
                                         method="POST")
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.read(_MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                body = exc.read(64 * 1024).decode("utf-8", "replace")
            except Exception:  # noqa: BLE001 - the body is only informative
                body = ""
            finally:
                exc.close()
            detail = _excerpt(_scrub(body, self.api_key)) or (exc.reason or "")
            detail = _scrub(str(detail), self.api_key)
            if status == 429 or status >= 500:
                raise _Retryable(f"HTTP {status}: {detail}") from None
            message = _scrub(f"LLM endpoint answered HTTP {status} (not retried): {detail}",
                             self.api_key)
            log.debug("%s", message)
            raise LLMError(message, status=status, attempts=attempt) from None
        except urllib.error.URLError as exc:
            raise _Retryable(f"connection error: {exc.reason}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from None

    def _parse(self, raw: bytes, validator: Any) -> Any:
        """The validated JSON answer inside a chat-completions response body."""
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Retryable("response body is not JSON: "
                             + _excerpt(raw.decode("utf-8", "replace"), 120)) from None
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise _Retryable("response has no string choices[0].message.content: "
                             + _excerpt(json.dumps(body)[:1000], 120))
        text = _strip_fence(content)
        try:
            answer = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _Retryable(f"answer content is not JSON ({exc.msg}): "
                             + _excerpt(text, 120)) from None
        error = _best_error(validator, answer)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise _Retryable(f"answer does not match the schema at {where}: "
                             + _excerpt(error.message, 200))
        return answer


def _validator(schema: dict) -> Any:
    """A jsonschema validator for ``schema``; ValueError if the schema itself is invalid."""

    if not isinstance(schema, dict):
        raise ValueError("schema must be a JSON Schema dict")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON Schema: {exc.message}") from None
    return cls(schema)


def _best_error(validator: Any, instance: Any) -> Any:

    return jsonschema.exceptions.best_match(validator.iter_errors(instance))


def is_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment configures a usable client (base URL and model set).

    ``environ`` defaults to :data:`os.environ`. Never raises.
    """
    try:
        LLMClient.from_env(environ)
    except (LLMError, ValueError):
        return False
    return True
