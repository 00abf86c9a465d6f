"""The bill, from the Admin API: the analytics reports where they answer, the legacy reports otherwise.

* Analytics (``/v1/organizations/analytics/cost_report`` and ``usage_report``, the endpoints the docs
  point new integrations at; Claude Enterprise organizations, a key with ``read:analytics``): grouped by
  model, cost type and product. They have no service-tier dimension, so standard and batch spend are one
  figure there; claude.ai surfaces the exporter never sees (chat, Cowork, ...) are shown apart.
* Legacy (``/v1/organizations/cost_report`` grouped by description, ``usage_report/messages`` grouped by
  model and service tier): each token cost names its model and tier (standard or batch). The cost report
  leaves Priority Tier out (it is billed under its commitment), which ``Bill.priority_billed`` records:
  a report that does list priority items is compared on them.

An analytics answer of 401, 403 or 404 (an Admin key, an organization without the plan) falls back to
the legacy reports. Web-search fees without a model are shared out over the models (and tiers) by their
web searches in the usage report, since the exporter's estimate includes them per request.
"""

from __future__ import annotations

import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from claude_exporter.cli.reconcile.peer import Deadline, PeerHTTPError, ReconcileError, Shape, get_json
from claude_exporter.cli.reconcile.report import ALL_TIERS, PRIORITY, STANDARD, TIERS, Day, iso

__all__ = ["ANALYTICS", "LEGACY", "Bill", "billed"]

LEGACY = ("/v1/organizations/cost_report", "/v1/organizations/usage_report/messages")
ANALYTICS = ("/v1/organizations/analytics/cost_report", "/v1/organizations/analytics/usage_report")
_MAX_PAGES = 100  # a week is one page; this only stops a server that never says has_more: false
_FALLBACK = {400, 401, 403, 404}  # refused (a key, a plan, a range it does not serve): legacy answers
# claude.ai surfaces billed on the analytics reports that no instrumented client or Claude Code reports.
_SEAT_SURFACES = {"chat", "cowork", "office_agent", "claude_in_chrome", "claude_design", "claude-tag"}

Canonical = Callable[[str], str]


@dataclass
class Bill:
    """Billed USD per (day, model, tier), tokens per (day, model), costs not per model per (day, kind)."""

    source: str
    usd: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    tokens: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    other: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    priority_billed: bool = False  # the cost report itemised priority spend (the legacy one does not)
    by_tier: bool = True  # False: standard and batch are one figure (tier ALL_TIERS)
    final_until: datetime | None = None  # the analytics export's watermark: later buckets are incomplete


def _pages(
    base: str,
    path: str,
    headers: dict[str, str],
    params: list[tuple[str, str]],
    deadline: Deadline,
    on_page: Callable[[Shape], None] | None = None,
) -> Iterator[Shape]:
    source = f"Admin API {path}"
    page: str | None = None
    for _ in range(_MAX_PAGES):
        query = list(params) + ([("page", page)] if page else [])
        body = get_json(
            f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(query)}", headers, source, deadline
        )
        buckets = list(body.obj()["data"].items())
        more = body["has_more"].flag()
        if on_page is not None:
            on_page(body)
        yield from buckets
        if not more:
            return
        page = body["next_page"].text(optional=True)
        if not page:
            raise ReconcileError(f"{source}: has_more without a next_page")
    raise ReconcileError(f"{source}: more than {_MAX_PAGES} pages")


def _watermark(bill: Bill, start: datetime) -> Callable[[Shape], None]:
    """Keeps the earliest ``data_refreshed_at`` of the pages (null: nothing exported yet, from ``start``)."""

    def read(body: Shape) -> None:
        field = body["data_refreshed_at"]
        text = field.text(optional=True)
        try:
            when = start if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise field.fail("an RFC 3339 time") from None
        when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
        bill.final_until = when if bill.final_until is None else min(bill.final_until, when)

    return read


def _day(bucket: Shape) -> str:
    start = bucket.obj()["starting_at"]
    text = start.text(optional=True) or ""
    try:
        datetime.strptime(text[:10], "%Y-%m-%d")
    except ValueError:
        raise start.fail("an RFC 3339 time") from None
    return text[:10]


def billed(
    base: str, key: str, days: list[Day], canonical: Canonical, deadline: Deadline, analytics_key: str = ""
) -> Bill:
    """The bill for ``days``: from the analytics reports if they answer, else from the legacy ones."""
    if not days:
        return Bill("none")
    window = [("starting_at", iso(days[0].start)), ("ending_at", iso(days[-1].end)), ("bucket_width", "1d")]
    try:
        return _analytics(base, analytics_key or key, window, days[0].start, canonical, deadline)
    except PeerHTTPError as err:
        if err.status not in _FALLBACK:
            raise
    return _legacy(base, key, window, canonical, deadline)


def _headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "user-agent": "claude-exporter reconcile"}


def _analytics(
    base: str,
    key: str,
    window: list[tuple[str, str]],
    start: datetime,
    canonical: Canonical,
    deadline: Deadline,
) -> Bill:
    bill = Bill("analytics", by_tier=False)
    watermark = _watermark(bill, start)
    headers = _headers(key)
    groups = [
        ("group_by[]", "model"),
        ("group_by[]", "cost_type"),
        ("group_by[]", "product"),
        ("limit", "31"),
    ]
    search_fees: dict[str, float] = defaultdict(float)
    for bucket in _pages(base, ANALYTICS[0], headers, [*window, *groups], deadline, watermark):
        day = _day(bucket)
        for item in bucket["results"].items(optional=True):
            usd = item.obj()["amount"].cents()
            kind = item["cost_type"].text(optional=True) or "tokens"
            model = item["model"].text(optional=True)
            product = item["product"].text(optional=True)
            if product in _SEAT_SURFACES:
                bill.other[(day, f"claude.ai {product}")] += usd
            elif kind in {"tokens", "web_search"} and model:
                bill.usd[(day, canonical(model), ALL_TIERS)] += usd
            elif kind == "web_search":
                search_fees[day] += usd
            else:
                bill.other[(day, kind)] += usd
    searches: dict[tuple[str, str, str], int] = defaultdict(int)
    groups = [("group_by[]", "model"), ("group_by[]", "product"), ("limit", "31")]
    for bucket in _pages(base, ANALYTICS[1], headers, [*window, *groups], deadline, watermark):
        day = _day(bucket)
        for item in bucket["results"].items(optional=True):
            model = item.obj()["model"].text(optional=True)
            if not model or item["product"].text(optional=True) in _SEAT_SURFACES:
                continue
            bill.tokens[(day, canonical(model))] += _tokens(item)
            searches[(day, canonical(model), ALL_TIERS)] += _searches(item)
    _share(bill, search_fees, searches)
    return bill


def _legacy(
    base: str, key: str, window: list[tuple[str, str]], canonical: Canonical, deadline: Deadline
) -> Bill:
    bill = Bill("legacy")
    headers = _headers(key)
    search_fees: dict[str, float] = defaultdict(float)
    params = [*window, ("group_by[]", "description"), ("limit", "31")]
    for bucket in _pages(base, LEGACY[0], headers, params, deadline):
        day = _day(bucket)
        for item in bucket["results"].items(optional=True):
            usd = item.obj()["amount"].cents()
            kind = item["cost_type"].text(optional=True) or "tokens"
            model = item["model"].text(optional=True)
            tier = item["service_tier"].text(optional=True) or STANDARD
            if kind == "tokens" and model:
                if tier == PRIORITY:
                    bill.priority_billed = True
                bill.usd[(day, canonical(model), tier if tier in TIERS else STANDARD)] += usd
            elif kind == "web_search":
                search_fees[day] += usd
            else:
                bill.other[(day, kind)] += usd
    searches: dict[tuple[str, str, str], int] = defaultdict(int)
    params = [*window, ("group_by[]", "model"), ("group_by[]", "service_tier"), ("limit", "31")]
    for bucket in _pages(base, LEGACY[1], headers, params, deadline):
        day = _day(bucket)
        for item in bucket["results"].items(optional=True):
            model = item.obj()["model"].text(optional=True)
            if not model:
                continue
            tier = item["service_tier"].text(optional=True) or STANDARD
            bill.tokens[(day, canonical(model))] += _tokens(item)
            n = _searches(item)
            if tier != PRIORITY or bill.priority_billed:  # fees on tiers the report leaves out stay out
                searches[(day, canonical(model), tier if tier in TIERS else STANDARD)] += n
    _share(bill, search_fees, searches)
    return bill


def _tokens(item: Shape) -> int:
    cache = item["cache_creation"].obj(optional=True)
    written = (
        0
        if cache.is_null
        else cache["ephemeral_5m_input_tokens"].count() + cache["ephemeral_1h_input_tokens"].count()
    )
    return (
        item["uncached_input_tokens"].count()
        + item["output_tokens"].count()
        + item["cache_read_input_tokens"].count()
        + written
    )


def _searches(item: Shape) -> int:
    tools = item["server_tool_use"].obj(optional=True)
    return 0 if tools.is_null else tools["web_search_requests"].count()


def _share(bill: Bill, fees: dict[str, float], searches: dict[tuple[str, str, str], int]) -> None:
    """Each day's web-search fees without a model, over the (model, tier) rows by their searches."""
    for day, fee in fees.items():
        mine = {(m, t): n for (d, m, t), n in searches.items() if d == day and n}
        total = sum(mine.values())
        if not total:
            bill.other[(day, "web_search")] += fee
            continue
        for (model, tier), n in mine.items():
            bill.usd[(day, model, tier)] += fee * n / total
