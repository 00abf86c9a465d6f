"""A fake Anthropic Admin API (usage and cost reports): a real HTTP server on 127.0.0.1.

It serves ``GET /v1/organizations/cost_report`` and ``GET /v1/organizations/usage_report/messages`` in the
documented shapes (daily buckets, ``data`` / ``has_more`` / ``next_page``, amounts as decimal strings in
cents), from rows a test adds. Runnable example::

    >>> import json, urllib.request
    >>> from claude_exporter.testing.admin_api import FakeAdminAPI
    >>> with FakeAdminAPI(key="sk-ant-admin-test") as admin:
    ...     admin.add_cost("2026-11-20", "claude-sonnet-4-5", 1.25)
    ...     query = "?starting_at=2026-11-20T00:00:00Z&group_by[]=description"
    ...     req = urllib.request.Request(
    ...         admin.url + "/v1/organizations/cost_report" + query,
    ...         headers={"x-api-key": "sk-ant-admin-test", "anthropic-version": "2023-06-01"},
    ...     )
    ...     body = json.load(urllib.request.urlopen(req))
    ...     [(r["model"], r["amount"]) for r in body["data"][0]["results"]]
    [('claude-sonnet-4-5', '125')]

Rules: a missing or wrong ``x-api-key`` gets 401 with an ``authentication_error`` body; buckets are UTC
days that start on or after ``starting_at`` and end at or before ``ending_at`` (default: seven days on);
``limit`` buckets per page (cost report default 7, at most 31); ``page`` is the ``next_page`` token of the
previous answer. Every request is recorded in ``requests`` (path and query, never the key).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["CostRow", "FakeAdminAPI", "UsageRow"]

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class CostRow:
    """One cost item of a day: ``usd`` dollars of ``cost_type`` (tokens, web_search, code_execution,
    session_usage) for ``model`` (``None`` for costs that are not per model)."""

    day: str
    model: str | None
    usd: float
    cost_type: str = "tokens"
    token_type: str | None = "uncached_input_tokens"
    service_tier: str | None = "standard"
    workspace_id: str | None = None


@dataclass(frozen=True)
class UsageRow:
    """One model's tokens and server-tool requests on a day."""

    day: str
    model: str
    uncached_input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    web_search_requests: int = 0


@dataclass
class _Seen:
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)


def _day(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeAdminAPI:
    """The fake; use as a context manager (or ``start()`` / ``stop()``)."""

    def __init__(self, key: str = "sk-ant-admin-fake") -> None:
        self.key = key
        self.costs: list[CostRow] = []
        self.usage: list[UsageRow] = []
        self.requests: list[_Seen] = []
        # path -> raw body answered with status 200 instead of the report: for hostile-peer tests.
        self.answers: dict[str, bytes] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- data ----------------------------------------------------------------------------------------

    def add_cost(self, day: str, model: str | None, usd: float, **fields: Any) -> None:
        with self._lock:
            self.costs.append(CostRow(day, model, usd, **fields))

    def add_usage(self, day: str, model: str, **fields: int) -> None:
        with self._lock:
            self.usage.append(UsageRow(day, model, **fields))

    # -- server --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAdminAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                fake._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-admin-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAdminAPI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- answers -------------------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        with self._lock:
            self.requests.append(_Seen(parts.path, query))
        if handler.headers.get("x-api-key") != self.key:
            self._send(
                handler,
                401,
                {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
            )
            return
        raw = self.answers.get(parts.path)
        if raw is not None:
            self._send_raw(handler, 200, raw)
            return
        if parts.path == "/v1/organizations/cost_report":
            rows: list[Any] = self.costs
            build: Callable[[list[Any], bool], list[dict[str, Any]]] = self._cost_results
        elif parts.path == "/v1/organizations/usage_report/messages":
            rows = self.usage
            build = self._usage_results
        else:
            self._send(
                handler, 404, {"type": "error", "error": {"type": "not_found_error", "message": parts.path}}
            )
            return
        try:
            start = _instant(query["starting_at"][0])
            end = _instant(query["ending_at"][0]) if "ending_at" in query else start + 7 * _DAY
            limit = int(query.get("limit", ["7"])[0])
            offset = int(query.get("page", ["0"])[0])
        except (KeyError, ValueError) as err:
            self._send(
                handler,
                400,
                {"type": "error", "error": {"type": "invalid_request_error", "message": str(err)}},
            )
            return
        limit = max(1, min(limit, 31))
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if first < start:
            first += _DAY
        days = []
        day = first
        while day + _DAY <= end:
            days.append(day)
            day += _DAY
        page = days[offset : offset + limit]
        grouped = "group_by[]" in query
        data = [
            {
                "starting_at": _stamp(d),
                "ending_at": _stamp(d + _DAY),
                "results": build([r for r in rows if _day(r.day) == d], grouped),
            }
            for d in page
        ]
        more = offset + limit < len(days)
        self._send(
            handler, 200, {"data": data, "has_more": more, "next_page": str(offset + limit) if more else None}
        )

    @staticmethod
    def _cost_results(rows: list[CostRow], grouped: bool) -> list[dict[str, Any]]:
        if not grouped:  # one ungrouped total per day
            total = sum((Decimal(str(r.usd)) * 100 for r in rows), Decimal(0))
            return (
                [
                    {
                        "amount": str(total.normalize()),
                        "currency": "USD",
                        "cost_type": None,
                        "model": None,
                        "description": None,
                        "service_tier": None,
                        "token_type": None,
                        "context_window": None,
                        "workspace_id": None,
                        "inference_geo": None,
                    }
                ]
                if rows
                else []
            )
        return [
            {
                "amount": str((Decimal(str(r.usd)) * 100).normalize()),
                "currency": "USD",
                "cost_type": r.cost_type,
                "model": r.model,
                "description": f"{r.model or r.cost_type} {r.token_type or ''}".strip(),
                "service_tier": r.service_tier if r.cost_type == "tokens" else None,
                "token_type": r.token_type if r.cost_type == "tokens" else None,
                "context_window": "0-200k" if r.cost_type == "tokens" else None,
                "workspace_id": r.workspace_id,
                "inference_geo": None,
            }
            for r in rows
        ]

    @staticmethod
    def _usage_results(rows: list[UsageRow], grouped: bool) -> list[dict[str, Any]]:
        merged: dict[str | None, list[int]] = defaultdict(lambda: [0] * 6)
        for r in rows:
            acc = merged[r.model if grouped else None]
            for i, value in enumerate(
                (
                    r.uncached_input_tokens,
                    r.output_tokens,
                    r.cache_read_input_tokens,
                    r.cache_creation_5m,
                    r.cache_creation_1h,
                    r.web_search_requests,
                )
            ):
                acc[i] += value
        return [
            {
                "model": model,
                "uncached_input_tokens": v[0],
                "output_tokens": v[1],
                "cache_read_input_tokens": v[2],
                "cache_creation": {"ephemeral_5m_input_tokens": v[3], "ephemeral_1h_input_tokens": v[4]},
                "server_tool_use": {"web_search_requests": v[5]},
                "api_key_id": None,
                "workspace_id": None,
                "service_tier": None,
                "context_window": None,
                "inference_geo": None,
                "speed": None,
            }
            for model, v in merged.items()
        ]

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        FakeAdminAPI._send_raw(handler, status, json.dumps(body).encode())

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(data)
