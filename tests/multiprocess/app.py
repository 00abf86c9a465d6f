"""A tiny web app served by real gunicorn (WSGI, sync workers) and uvicorn (ASGI) worker processes.

``/call`` runs one execution of agent "web" that makes one real SDK request to the fake API named by
``FAKE_ANTHROPIC_URL`` and answers with the worker's pid; ``/metrics`` is the exporter's own endpoint
(``make_wsgi_app``) or, under ASGI, the same registry rendered. ``instrument()`` runs in every worker
at import, with ``PROMETHEUS_MULTIPROC_DIR`` set by the test, so the workers share their metrics.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anthropic
import claude_exporter
from prometheus_client import REGISTRY, generate_latest

MODEL = "claude-haiku-4-5"
MESSAGES: Any = [{"role": "user", "content": "hi"}]

claude_exporter.instrument()
_URL = os.environ["FAKE_ANTHROPIC_URL"]
_client = anthropic.Anthropic(base_url=_URL, api_key="test-key", max_retries=0)
_async_client = anthropic.AsyncAnthropic(base_url=_URL, api_key="test-key", max_retries=0)
_metrics = claude_exporter.make_wsgi_app()


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/call":
        with claude_exporter.execution("handle", agent="web"):
            _client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return _metrics(environ, start_response)


Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/call":
        async with claude_exporter.execution("handle", agent="web"):
            await _async_client.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
        body = str(os.getpid()).encode()
    else:
        body = generate_latest(REGISTRY)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
