"""The estimate, from Prometheus: what the exporter recorded per model and UTC day.

Prometheus keeps a week of it across restarts and instances (a local ``/metrics`` scrape could only say
"since this process started"). Each figure is ``sum by (...) (increase(F{selector}[1d]))`` evaluated at
the end of the day:

* ``claude_cost_usd_total`` by model: the total estimate;
* ``claude_cost_by_tier_usd_total`` by model and tier: the priority and batch parts of it. The standard
  part is the total less those two, so an exporter without the tier family counts everything as standard;
* ``claude_tokens_total`` by model, less ``claude_exporter_unpriced_tokens_total{reason="platform"}``:
  Bedrock and Vertex requests share a model's series but are billed by their platform, so their tokens
  are kept apart, never joined to the first-party row through the canonical model id.
"""

from __future__ import annotations

import math
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from claude_exporter.cli.reconcile.peer import Deadline, ReconcileError, get_json, printable, shown
from claude_exporter.cli.reconcile.report import BATCH, PRIORITY, STANDARD, Day

__all__ = ["Estimate", "estimated"]

_EPSILON = 1e-9  # USD: the total less its tiers, within float noise of zero, is zero

Canonical = Callable[[str], str]


@dataclass
class Estimate:
    """Estimated USD per (day, model, tier), first-party tokens and platform tokens per (day, model)."""

    usd: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    tokens: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    platform_tokens: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


def _query(
    prometheus: str, family: str, matchers: str, by: tuple[str, ...], day: Day, deadline: Deadline
) -> list[tuple[dict[str, str], float]]:
    seconds = int((day.end - day.start).total_seconds())
    query = f"sum by ({', '.join(by)}) (increase({family}{{{matchers}}}[{seconds}s]))"
    params = urllib.parse.urlencode({"query": query, "time": f"{day.end.timestamp():.3f}"})
    source = f"Prometheus at {shown(prometheus)} /api/v1/query"
    body = get_json(f"{prometheus.rstrip('/')}/api/v1/query?{params}", {}, source, deadline).obj()
    if body["status"].value != "success":
        kind, error = body["errorType"].value, body["error"].value
        said = ": ".join(t for t in (kind, error) if isinstance(t, str) and t)
        raise ReconcileError(f"{source}: query failed{': ' + printable(said) if said else ''}")
    out = []
    for sample in body["data"].obj()["result"].items():
        metric = sample.obj()["metric"].obj(optional=True)
        labels = {name: metric[name].text(optional=True) or "" for name in by} if not metric.is_null else {}
        pair = sample["value"]
        values = list(pair.items())
        if len(values) != 2:
            raise pair.fail("a [time, value] pair")
        out.append((labels, values[1].number_text()))
    return out


def estimated(
    prometheus: str, days: list[Day], canonical: Canonical, selector: str, deadline: Deadline
) -> Estimate:
    """Per (day, model, tier) cost and per (day, model) tokens the exporter recorded (``selector``, e.g.
    ``job="claude"``, narrows the series)."""
    est = Estimate()
    platform_matchers = ",".join(m for m in (selector, 'reason="platform"') if m)
    for day in days:
        label = day.label
        total: dict[str, float] = defaultdict(float)
        for labels, value in _query(prometheus, "claude_cost_usd_total", selector, ("model",), day, deadline):
            if math.isfinite(value):
                total[canonical(labels.get("model", ""))] += value
        parts: dict[tuple[str, str], float] = defaultdict(float)
        family = "claude_cost_by_tier_usd_total"
        for labels, value in _query(prometheus, family, selector, ("model", "tier"), day, deadline):
            tier = labels.get("tier", "")
            if math.isfinite(value) and tier in {PRIORITY, BATCH}:
                parts[(canonical(labels.get("model", "")), tier)] += value
        for model in set(total) | {m for m, _ in parts}:
            standard = (
                total.get(model, 0.0) - parts.get((model, PRIORITY), 0.0) - parts.get((model, BATCH), 0.0)
            )
            est.usd[(label, model, STANDARD)] += 0.0 if abs(standard) < _EPSILON else standard
        for (model, tier), value in parts.items():
            est.usd[(label, model, tier)] += value
        tokens: dict[str, float] = defaultdict(float)
        for labels, value in _query(prometheus, "claude_tokens_total", selector, ("model",), day, deadline):
            if math.isfinite(value):
                tokens[labels.get("model", "")] += value
        family = "claude_exporter_unpriced_tokens_total"
        for labels, value in _query(prometheus, family, platform_matchers, ("model",), day, deadline):
            raw = labels.get("model", "")
            if math.isfinite(value) and value > 0:
                # a model label's platform tokens leave its first-party count
                moved = min(value, tokens.get(raw, 0.0))
                tokens[raw] = tokens.get(raw, 0.0) - moved
                est.platform_tokens[(label, canonical(raw))] += round(value)
        for raw, value in tokens.items():
            est.tokens[(label, canonical(raw))] += round(value)
    return est
