"""The SDK middleware: runs once per HTTP attempt, inside the SDK's retry loop.

It sees what the wrappers around ``create`` cannot: each retry and why (the previous attempt's status, a
timeout or a connection failure), every 429, and the ``anthropic-ratelimit-*`` headers. The headers are
kept by reference in a short queue and parsed only when Prometheus scrapes.

The middleware is added to a client the first time that client makes a measured request, so clients
created before ``instrument()`` are covered too; ``uninstrument()`` takes it out again.
"""

from __future__ import annotations

import weakref
from typing import Any

from anthropic import APIConnectionError, Middleware
from anthropic._middleware import AsyncCallNext, CallNext
from anthropic._request import APIRequest

from claude_exporter.instrumentation.extract import retry_reason
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
            raise
        _seen(call, response)
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
            raise
        _seen(call, response)
        return response


def _seen(call: Any, response: Any) -> None:
    try:
        http = response.http_response
        status = http.status_code
        call.rec.recent_headers.append(http.headers)
        if status >= 400:
            call.last_reason = str(status)
            if status == 429:
                call.labels.series.add_rate_limited()
    except Exception:
        # Another middleware may short-circuit with a parsed model: nothing to read then.
        if not hasattr(response, "http_response"):
            return
        rec = STATE.recorder
        if rec is not None:
            rec.fault("middleware")


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
