"""The SDK middleware: runs once per HTTP attempt, inside the SDK's retry loop.

It sees what the wrappers around ``create`` cannot: each retry and why (the previous attempt's status, a
timeout or a connection failure), every 429, and the ``anthropic-ratelimit-*`` headers. The headers are
kept by reference in a short queue and parsed only when Prometheus scrapes.

The middleware is added to a client the first time that client makes a measured request, so clients
created before ``instrument()`` are covered too; ``uninstrument()`` takes it out again.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from anthropic import APIConnectionError, Middleware
from anthropic._middleware import AsyncCallNext, CallNext
from anthropic._request import APIRequest

from claude_exporter.instrumentation.extract import NO_CODE, error_code_of_body, retry_reason
from claude_exporter.recording.state import CURRENT_CALL, STATE

__all__ = ["MIDDLEWARE", "ExporterMiddleware", "attach", "detach_all", "track"]


class ExporterMiddleware(Middleware):
    """Per-attempt accounting for the request in ``CURRENT_CALL``."""

    def handle(self, request: APIRequest, call_next: CallNext) -> Any:
        call = CURRENT_CALL.get()
        if call is None:
            return call_next(request)
        if request.retries_taken:
            call.retried()
        try:
            response = call_next(request)
        except APIConnectionError as exc:
            call.last_reason = retry_reason(exc)
            call.last_code = NO_CODE
            raise
        if _seen(call, response) in _CODED:
            _coded(call, response, None)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> Any:
        call = CURRENT_CALL.get()
        if call is None:
            return await call_next(request)
        if request.retries_taken:
            call.retried()
        try:
            response = await call_next(request)
        except APIConnectionError as exc:
            call.last_reason = retry_reason(exc)
            call.last_code = NO_CODE
            raise
        if _seen(call, response) in _CODED:
            try:
                body = await response.http_response.aread()
            except Exception:
                body = None
            _coded(call, response, body)
        return response


# Attempts whose error_code is read from the body: the SDK closes a retried response unread, so only here
# is the code of a 429 or 529 that is retried visible. Error bodies are small; nothing else is read.
_CODED = frozenset({429, 529})


def _coded(call: Any, response: Any, body: bytes | None) -> None:
    """Count a 429 by its error_code and keep the code for the retry that follows."""
    try:
        http = response.http_response
        if body is None:
            body = http.read()
        code = error_code_of_body(json.loads(body)) if body else NO_CODE
    except Exception:
        code = NO_CODE  # not JSON, or a stream already consumed: the attempt still counts
    call.last_code = code
    if call.last_reason == "429":
        try:
            call.labels.rate_limited(code)
        except Exception:
            rec = STATE.recorder
            if rec is not None:
                rec.fault("middleware")


def _seen(call: Any, response: Any) -> int | None:
    """Note the attempt's status and headers; returns the status (None when there is no response)."""
    try:
        http = response.http_response
        status = http.status_code
        call.rec.recent_headers.append((call.labels.model, http.headers))
        if status >= 400:
            call.last_reason = str(status)
            call.last_code = NO_CODE
        return int(status)
    except Exception:
        # Another middleware may short-circuit with a parsed model: nothing to read then.
        if not hasattr(response, "http_response"):
            return None
        rec = STATE.recorder
        if rec is not None:
            rec.fault("middleware")
        return None


MIDDLEWARE = ExporterMiddleware()
_ATTACHED: weakref.WeakSet[Any] = weakref.WeakSet()


def attach(client: Any) -> None:
    """Add the middleware to ``client`` (its chain is built in ``__init__``, so rebuild it)."""
    client._middleware = (*client._middleware, MIDDLEWARE)
    client._middleware_chain = client._build_middleware_chain()
    _ATTACHED.add(client)


def track(client: Any) -> None:
    """Remember a client that carries the middleware already (a copy), so uninstrument() finds it."""
    if MIDDLEWARE in getattr(client, "_middleware", ()):
        _ATTACHED.add(client)


def detach_all() -> None:
    for client in list(_ATTACHED):
        client._middleware = tuple(m for m in client._middleware if m is not MIDDLEWARE)
        client._middleware_chain = client._build_middleware_chain()
    _ATTACHED.clear()
