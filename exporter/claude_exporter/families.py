"""Metric families declared once: name, type, help and labels; exposition, the README's table, the
dashboards' label table and the tests derive from these declarations.

(The families that predate this module are still declared in ``exposition``; they move here with the
core's consolidation. Every family added since is declared here only.)
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily

__all__ = ["CACHE_MISSED_TOKENS", "CACHE_MISSES", "CACHE_SAVINGS", "FAMILIES", "REFUSALS", "Family"]


@dataclass(frozen=True)
class Family:
    """One metric family as Prometheus shows it (counters with their ``_total``)."""

    name: str
    type: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...]

    @property
    def base(self) -> str:
        """The name prometheus_client takes (without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    def counter(self) -> CounterMetricFamily:
        """An empty family to fill at scrape time."""
        return CounterMetricFamily(self.base, self.help, labels=self.labels)


CACHE_MISSES = Family(
    "claude_cache_misses_total",
    "counter",
    "Responses whose prompt cache missed, by the reason the API diagnosed (Message.diagnostics).",
    ("agent", "model", "reason"),
)
CACHE_MISSED_TOKENS = Family(
    "claude_cache_missed_input_tokens_total",
    "counter",
    "Input tokens that would have been cache reads had the prefix matched, by miss reason.",
    ("agent", "model", "reason"),
)
REFUSALS = Family(
    "claude_refusals_total",
    "counter",
    "Responses that stopped with refusal, by stop_details.category (none when the API names none).",
    ("agent", "model", "category"),
)

CACHE_SAVINGS = Family(
    "claude_cache_savings_usd_total",
    "counter",
    "Estimated USD the prompt-cache reads saved against paying the input price for them.",
    ("agent", "model"),
)

FAMILIES: tuple[Family, ...] = (CACHE_MISSES, CACHE_MISSED_TOKENS, CACHE_SAVINGS, REFUSALS)
