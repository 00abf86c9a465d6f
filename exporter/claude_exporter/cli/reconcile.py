"""``claude-exporter reconcile``: estimated cost against the bill, per model and UTC day.

Billed: the Admin API's cost report (``GET /v1/organizations/cost_report``, daily buckets grouped by
description, so each token cost names its model) and usage report (``GET
/v1/organizations/usage_report/messages`` grouped by model: billed tokens and web searches).

Estimated: what the exporter recorded, read back from Prometheus, the one place that keeps a week of it
across restarts and instances: ``sum by (model) (increase(claude_cost_usd_total[1d]))`` (and the same for
``claude_tokens_total``) evaluated at the end of each day. A local ``/metrics`` scrape could only say
"since this process started", which never lines up with a billing day.

The two sides name models differently (a request may say ``claude-sonnet-4-5``, the bill
``claude-sonnet-4-5-20250929``, a Bedrock client an ARN): both are joined on the price table's canonical
id. The cost report puts web-search fees on a row without a model; they are shared out over the models by
their web searches in the usage report, since the exporter's estimate includes them per model. Code
execution and session runtime are billed by time that no response reports: shown apart, never flagged.
Only complete UTC days are compared (the current day's bill is not final).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "ADMIN_URL",
    "Day",
    "ReconcileError",
    "Row",
    "billed",
    "compare",
    "days_since",
    "estimated",
    "render",
]

ADMIN_URL = "https://api.anthropic.com"
_DAY = timedelta(days=1)
_SINCE = re.compile(r"^(\d+)([dh])$")
_TIMEOUT = 30.0
_MAX_PAGES = 100  # a week is one page; this only stops a server that never says has_more: false


class ReconcileError(Exception):
    """A source could not be read; the message names it and what went wrong (never the key)."""


@dataclass(frozen=True)
class Day:
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m-%d")


@dataclass
class Figures:
    usd: float = 0.0
    tokens: int = 0
    searches: int = 0


@dataclass(frozen=True)
class Row:
    """One line of the report: a model on a day (``model`` None: a cost that is not per model)."""

    day: str
    model: str
    estimated_usd: float | None
    billed_usd: float | None
    estimated_tokens: int | None = None
    billed_tokens: int | None = None
    note: str = ""

    @property
    def difference(self) -> float | None:
        if self.estimated_usd is None or self.billed_usd is None:
            return None
        return self.estimated_usd - self.billed_usd

    def off_by_more_than(self, percent: float) -> bool:
        diff = self.difference
        if diff is None:
            return False
        if self.billed_usd == 0:
            return abs(diff) > 0.005  # something estimated, nothing billed (or the reverse): half a cent
        return abs(diff) / abs(self.billed_usd or 1) * 100 > percent


def days_since(since: str, now: datetime) -> list[Day]:
    """The complete UTC days that overlap the last ``since`` (``7d``, ``48h``) before ``now``."""
    m = _SINCE.match(since.strip())
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f'--since must be a number of days or hours such as "7d" or "48h", not {since!r}')
    span = timedelta(days=int(m.group(1))) if m.group(2) == "d" else timedelta(hours=int(m.group(1)))
    today = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    first = (now - span).astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    day = first
    while day < today:
        out.append(Day(day, day + _DAY))
        day += _DAY
    return out


# --------------------------------------------------------------------------------------------- sources


def _get_json(url: str, headers: Mapping[str, str], what: str) -> Any:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        detail = ""
        try:
            body = json.load(err)
            detail = f": {body.get('error', {}).get('message') or body.get('error')}"
        except Exception:
            pass
        raise ReconcileError(f"{what} answered HTTP {err.code}{detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ReconcileError(f"{what} could not be reached: {err}") from None
    except ValueError:
        raise ReconcileError(f"{what} did not answer JSON") from None


def _admin_pages(base: str, path: str, key: str, params: list[tuple[str, str]], what: str) -> Iterator[Any]:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "user-agent": "claude-exporter reconcile"}
    page: str | None = None
    for _ in range(_MAX_PAGES):
        query = list(params) + ([("page", page)] if page else [])
        body = _get_json(f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(query)}", headers, what)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or "has_more" not in body:
            raise ReconcileError(f"{what}: unexpected answer (no data / has_more)")
        yield from body["data"]
        if not body["has_more"]:
            return
        page = body.get("next_page")
        if not isinstance(page, str) or not page:
            raise ReconcileError(f"{what}: has_more without a next_page")
    raise ReconcileError(f"{what}: more than {_MAX_PAGES} pages")


def _usd_from_cents(amount: object, what: str) -> float:
    try:
        value = Decimal(str(amount)) / 100
    except InvalidOperation:
        raise ReconcileError(f"{what}: amount {amount!r} is not a decimal string") from None
    if not value.is_finite():
        raise ReconcileError(f"{what}: amount {amount!r} is not finite")
    return float(value)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


Canonical = Callable[[str], str]


def billed(
    base: str, key: str, days: list[Day], canonical: Canonical
) -> tuple[dict[tuple[str, str], Figures], dict[tuple[str, str], float]]:
    """From the Admin API: ``(figures per (day, model), costs per (day, cost_type) not per model)``."""
    if not days:
        return {}, {}
    window = [("starting_at", _iso(days[0].start)), ("ending_at", _iso(days[-1].end)), ("bucket_width", "1d")]
    limit = [("limit", "31")]
    per_model: dict[tuple[str, str], Figures] = defaultdict(Figures)
    other: dict[tuple[str, str], float] = defaultdict(float)
    search_fees: dict[str, float] = defaultdict(float)
    what = "Admin API cost report"
    for bucket in _admin_pages(
        base, "/v1/organizations/cost_report", key, [*window, ("group_by[]", "description"), *limit], what
    ):
        day = str(bucket.get("starting_at", ""))[:10]
        for item in bucket.get("results") or ():
            usd = _usd_from_cents(item.get("amount"), what)
            kind = item.get("cost_type") or "tokens"
            model = item.get("model")
            if kind == "tokens" and isinstance(model, str) and model:
                per_model[(day, canonical(model))].usd += usd
            elif kind == "web_search":
                search_fees[day] += usd
            else:
                other[(day, str(kind))] += usd
    what = "Admin API usage report"
    params = [*window, ("group_by[]", "model"), *limit]
    for bucket in _admin_pages(base, "/v1/organizations/usage_report/messages", key, params, what):
        day = str(bucket.get("starting_at", ""))[:10]
        for item in bucket.get("results") or ():
            model = item.get("model")
            if not isinstance(model, str) or not model:
                continue
            cache = item.get("cache_creation") or {}
            tools = item.get("server_tool_use") or {}
            figures = per_model[(day, canonical(model))]
            figures.tokens += (
                _int(item.get("uncached_input_tokens"))
                + _int(item.get("output_tokens"))
                + _int(item.get("cache_read_input_tokens"))
                + _int(cache.get("ephemeral_5m_input_tokens"))
                + _int(cache.get("ephemeral_1h_input_tokens"))
            )
            figures.searches += _int(tools.get("web_search_requests"))
    # Web-search fees carry no model on the cost report: share them out by each model's searches.
    for day, fee in search_fees.items():
        searches = {m: f.searches for (d, m), f in per_model.items() if d == day and f.searches}
        total = sum(searches.values())
        if not total:
            other[(day, "web_search")] += fee
            continue
        for model, n in searches.items():
            per_model[(day, model)].usd += fee * n / total
    return dict(per_model), dict(other)


def estimated(
    prometheus: str, days: list[Day], canonical: Canonical, selector: str = ""
) -> dict[tuple[str, str], Figures]:
    """Per (day, model) cost and tokens the exporter recorded, from Prometheus (``selector``, e.g.
    ``job="claude"``, narrows the series)."""
    out: dict[tuple[str, str], Figures] = defaultdict(Figures)
    what = f"Prometheus at {prometheus}"
    for day in days:
        seconds = int((day.end - day.start).total_seconds())
        for family, attr in (("claude_cost_usd_total", "usd"), ("claude_tokens_total", "tokens")):
            query = f"sum by (model) (increase({family}{{{selector}}}[{seconds}s]))"
            params = urllib.parse.urlencode({"query": query, "time": f"{day.end.timestamp():.3f}"})
            body = _get_json(f"{prometheus.rstrip('/')}/api/v1/query?{params}", {}, what)
            if not isinstance(body, dict) or body.get("status") != "success":
                raise ReconcileError(
                    f"{what}: query failed: {body.get('error') if isinstance(body, dict) else body}"
                )
            for sample in body.get("data", {}).get("result", []):
                model = sample.get("metric", {}).get("model", "")
                try:
                    value = float(sample["value"][1])
                except (KeyError, IndexError, TypeError, ValueError):
                    raise ReconcileError(f"{what}: a sample without a value") from None
                if not math.isfinite(value):
                    continue
                figures = out[(day.label, canonical(model))]
                if attr == "usd":
                    figures.usd += value
                else:
                    figures.tokens += round(value)
    return dict(out)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------------------- comparison


def compare(
    est: Mapping[tuple[str, str], Figures],
    bill: Mapping[tuple[str, str], Figures],
    other: Mapping[tuple[str, str], float],
    days: list[Day],
) -> list[Row]:
    rows: list[Row] = []
    for day in days:
        label = day.label
        models = sorted({m for d, m in est if d == label} | {m for d, m in bill if d == label})
        for model in models:
            e, b = est.get((label, model)), bill.get((label, model))
            rows.append(
                Row(
                    label,
                    model,
                    e.usd if e is not None else 0.0,
                    b.usd if b is not None else 0.0,
                    e.tokens if e is not None else 0,
                    b.tokens if b is not None else 0,
                )
            )
        for (d, kind), usd in sorted(other.items()):
            if d == label:
                rows.append(Row(label, f"({kind.replace('_', ' ')})", None, usd, note="not estimated"))
    return rows


def render(rows: list[Row], days: list[Day], tolerance: float, sources: str) -> str:
    head = ["day", "model", "estimated USD", "billed USD", "difference", "tokens est.", "tokens billed", ""]
    table = [head]
    flagged = compared = 0
    for row in rows:
        diff = row.difference
        flag = row.off_by_more_than(tolerance)
        if diff is not None:
            compared += 1
            flagged += flag
        if diff is None:
            change = "-"
        elif row.billed_usd:
            change = f"{diff:+.4f} ({diff / row.billed_usd * 100:+.2f}%)"
        else:
            change = f"{diff:+.4f}"
        table.append(
            [
                row.day,
                row.model,
                "-" if row.estimated_usd is None else f"{row.estimated_usd:.4f}",
                "-" if row.billed_usd is None else f"{row.billed_usd:.4f}",
                change,
                "-" if row.estimated_tokens is None else f"{row.estimated_tokens:,}",
                "-" if row.billed_tokens is None else f"{row.billed_tokens:,}",
                f"OFF BY >{tolerance:g}%" if flag else row.note,
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    right = {2, 3, 4, 5, 6}
    lines = [
        f"Reconciliation of {days[0].label} .. {days[-1].label} (complete UTC days)"
        if days
        else "No complete day to compare.",
        sources,
        "",
    ]
    for r in table:
        lines.append(
            "  ".join(
                c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
    lines += ["", f"{flagged} of {compared} model-days differ by more than {tolerance:g}%."]
    return "\n".join(lines) + "\n"
