"""A fake Anthropic Admin API (usage and cost reports): a real HTTP server on 127.0.0.1.

It serves the legacy ``GET /v1/organizations/cost_report`` and ``GET /v1/organizations/usage_report/messages``
and, with ``analytics=True``, the analytics ``GET /v1/organizations/analytics/cost_report`` and
``.../analytics/usage_report`` (404 otherwise, as for an organization without the plan), in the documented
shapes (daily buckets, ``data`` / ``has_more`` / ``next_page``, amounts as decimal strings in cents), from
rows a test adds. As the real reports do, the cost reports leave Priority Tier spend out (a cost row with
``service_tier="priority"`` is never served), and only the legacy ones have a service-tier dimension.
Runnable example::

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
previous answer; ``group_by[]`` names the dimensions of each bucket's rows (legacy cost report:
``description`` gives every dimension). Every request is recorded in ``requests`` (path and query, never
the key). ``answers`` maps a path to raw bytes served instead of the report (hostile-peer tests).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["CostRow", "FakeAdminAPI", "UsageRow"]

_DAY = timedelta(days=1)
_COST = "/v1/organizations/cost_report"
_USAGE = "/v1/organizations/usage_report/messages"
_ANALYTICS_COST = "/v1/organizations/analytics/cost_report"
_ANALYTICS_USAGE = "/v1/organizations/analytics/usage_report"
_LEGACY_USAGE_FIELDS: dict[str, None] = dict.fromkeys(
    ("model", "api_key_id", "workspace_id", "service_tier", "context_window", "inference_geo", "speed")
)
_ANALYTICS_USAGE_FIELDS: dict[str, None] = dict.fromkeys(
    (
        "model",
        "product",
        "context_window",
        "inference_geo",
        "rbac_group_id",
        "requests",
        "slack_channel_id",
        "speed",
    )
)


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
    product: str | None = None  # analytics only: chat, claude_code, ...; None for API traffic


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
    service_tier: str = "standard"
    product: str | None = None  # analytics only


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

    def __init__(self, key: str = "sk-ant-admin-fake", analytics: bool = False) -> None:
        self.key = key
        self.analytics = analytics
        self.costs: list[CostRow] = []
        self.usage: list[UsageRow] = []
        self.requests: list[_Seen] = []
        # path -> raw body answered with status 200 instead of the report: for hostile-peer tests.
        self.answers: dict[str, bytes] = {}
        # the analytics reports' data_refreshed_at: None for the end of the requested range
        self.refreshed_at: str | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- data ----------------------------------------------------------------------------------------

    def add_cost(self, day: str, model: str | None, usd: float, **fields: Any) -> None:
        with self._lock:
            self.costs.append(CostRow(day, model, usd, **fields))

    def add_usage(self, day: str, model: str, **fields: Any) -> None:
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
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-admin-api",
            daemon=True,
        )
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
        builders: dict[str, tuple[list[Any], Callable[[list[Any], list[str]], list[dict[str, Any]]]]] = {
            _COST: (self.costs, self._cost_results),
            _USAGE: (self.usage, self._usage_results),
        }
        if self.analytics:
            builders[_ANALYTICS_COST] = (self.costs, self._analytics_cost_results)
            builders[_ANALYTICS_USAGE] = (self.usage, self._analytics_usage_results)
        if parts.path not in builders:
            self._send(
                handler, 404, {"type": "error", "error": {"type": "not_found_error", "message": parts.path}}
            )
            return
        rows, build = builders[parts.path]
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
        groups = query.get("group_by[]", [])
        data = [
            {
                "starting_at": _stamp(d),
                "ending_at": _stamp(d + _DAY),
                "results": build([r for r in rows if _day(r.day) == d], groups),
            }
            for d in page
        ]
        more = offset + limit < len(days)
        self._send(
            handler,
            200,
            {
                "data": data,
                "has_more": more,
                "next_page": str(offset + limit) if more else None,
                **(
                    {"data_refreshed_at": self.refreshed_at or _stamp(end), "organization_id": "org_fake"}
                    if "analytics" in parts.path
                    else {}
                ),
            },
        )

    @staticmethod
    def _cost_results(rows: list[CostRow], groups: list[str]) -> list[dict[str, Any]]:
        rows = [r for r in rows if r.service_tier != "priority"]  # billed under the commitment
        if "description" not in groups:  # one total per day (or per workspace)
            totals: dict[str | None, Decimal] = defaultdict(Decimal)
            for r in rows:
                totals[r.workspace_id if "workspace_id" in groups else None] += Decimal(str(r.usd)) * 100
            return [
                {
                    "amount": str(total.normalize()),
                    "currency": "USD",
                    "cost_type": None,
                    "model": None,
                    "description": None,
                    "service_tier": None,
                    "token_type": None,
                    "context_window": None,
                    "workspace_id": workspace,
                    "inference_geo": None,
                }
                for workspace, total in totals.items()
            ]
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
    def _analytics_cost_results(rows: list[CostRow], groups: list[str]) -> list[dict[str, Any]]:
        dims = [g for g in ("model", "cost_type", "product") if g in groups]
        totals: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
        for r in rows:
            if r.service_tier == "priority":
                continue
            values = {"model": r.model, "cost_type": r.cost_type, "product": r.product}
            totals[tuple(values[g] for g in dims)] += Decimal(str(r.usd)) * 100
        out = []
        for key, total in totals.items():
            named = dict(zip(dims, key, strict=True))
            out.append(
                {
                    "amount": f"{total:.6f}",  # fractional cents, as the analytics reports write them
                    "list_amount": f"{total:.6f}",
                    "currency": "USD",
                    "cost_type": named.get("cost_type"),
                    "model": named.get("model"),
                    "product": named.get("product"),
                    "context_window": None,
                    "inference_geo": None,
                    "rbac_group_id": None,
                    "requests": None,
                    "speed": None,
                    "token_type": None,
                }
            )
        return out

    @staticmethod
    def _merge(rows: list[UsageRow], dims: Sequence[str]) -> dict[tuple[Any, ...], list[int]]:
        merged: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 6)
        for r in rows:
            values = {"model": r.model, "service_tier": r.service_tier, "product": r.product}
            acc = merged[tuple(values[g] for g in dims)]
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
        return merged

    @staticmethod
    def _usage_fields(v: list[int]) -> dict[str, Any]:
        return {
            "uncached_input_tokens": v[0],
            "output_tokens": v[1],
            "cache_read_input_tokens": v[2],
            "cache_creation": {"ephemeral_5m_input_tokens": v[3], "ephemeral_1h_input_tokens": v[4]},
            "server_tool_use": {"web_search_requests": v[5]},
        }

    @classmethod
    def _usage_rows(
        cls, rows: list[UsageRow], groups: list[str], dims: Sequence[str], nulls: dict[str, None]
    ) -> list[dict[str, Any]]:
        """One row per group of the requested ``dims``; ``nulls`` are the report's other fields."""
        dims = [g for g in dims if g in groups]
        return [
            {**nulls, **dict(zip(dims, key, strict=True)), **cls._usage_fields(v)}
            for key, v in cls._merge(rows, dims).items()
        ]

    @classmethod
    def _usage_results(cls, rows: list[UsageRow], groups: list[str]) -> list[dict[str, Any]]:
        return cls._usage_rows(rows, groups, ("model", "service_tier"), _LEGACY_USAGE_FIELDS)

    @classmethod
    def _analytics_usage_results(cls, rows: list[UsageRow], groups: list[str]) -> list[dict[str, Any]]:
        return cls._usage_rows(rows, groups, ("model", "product"), _ANALYTICS_USAGE_FIELDS)

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
