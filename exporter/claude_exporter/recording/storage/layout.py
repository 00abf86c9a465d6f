"""Which series field is which metric family: the one table both storages and the exposition read.

A request series (one per agent and model) and an execution series (one per agent and task) keep each
family in a field; the label values after (agent, model) or (agent, task) are the field's keys, named by
the family's declared labels (:mod:`claude_exporter.families`), never restated here.
"""

from __future__ import annotations

__all__ = ["EXEC_FIELDS", "KEYED", "MISSES", "REQUEST_FIELDS", "TOKEN_TYPES"]

#: The ``type`` label of ``claude_tokens_total``, in the order a series keeps its token counts.
TOKEN_TYPES = ("input", "output", "cache_creation", "cache_read")

#: Request-series field -> family. ``outcomes`` is (success, error); ``tokens`` is by TOKEN_TYPES.
REQUEST_FIELDS: dict[str, str] = {
    "outcomes": "claude_requests_total",
    "duration": "claude_request_duration_seconds",
    "ttft": "claude_time_to_first_token_seconds",
    "tokens": "claude_tokens_total",
    "cost": "claude_cost_usd_total",
    "tiers": "claude_cost_by_tier_usd_total",
    "savings": "claude_cache_savings_usd_total",
    "rate_limited": "claude_rate_limited_total",
    "stops": "claude_stop_reasons_total",
    "errors": "claude_errors_total",
    "retries": "claude_retries_total",
    "code": "claude_code_blocks_executed_total",
    "refusals": "claude_refusals_total",
}
#: The request-series fields that are counts keyed by the family's labels after agent and model
#: (``tiers``: USD by service tier).
KEYED: tuple[str, ...] = ("rate_limited", "stops", "errors", "retries", "code", "refusals", "tiers")
#: ``misses``: per reason, responses and the input tokens they missed (two families, one key).
MISSES: tuple[str, str] = ("claude_cache_misses_total", "claude_cache_missed_input_tokens_total")

#: Execution-series field -> (family, the ``type`` label where the family has one).
EXEC_FIELDS: dict[str, tuple[str, str | None]] = {
    "outcomes": ("claude_executions_total", None),
    "duration": ("claude_execution_duration_seconds", None),
    "tokens_in": ("claude_execution_tokens", "input"),
    "tokens_out": ("claude_execution_tokens", "output"),
    "requests": ("claude_execution_requests", None),
}
