"""Every metric family the exporter exposes, declared once.

The collectors (:mod:`claude_exporter.exposition.collectors`), the README's metrics table (generated and
checked by a test), the dashboards' label table and the tests' oracles are all derived from
:data:`FAMILIES`. Pure data: nothing here imports prometheus_client or the SDK.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BY_NAME",
    "DURATION_BUCKETS",
    "FAMILIES",
    "METRIC_GROUPS",
    "REQUEST_BUCKETS",
    "SEED_GROUPS",
    "TOKEN_BUCKETS",
    "TOKEN_TYPE_GROUPS",
    "TTFT_BUCKETS",
    "Family",
    "duration_buckets",
]

# OpenTelemetry GenAI conventions: 0.01 s doubling to 81.92 s, then the long tail agents live in.
DURATION_BUCKETS: tuple[float, ...] = (*(round(0.01 * 2**i, 2) for i in range(14)), 120.0, 300.0, 600.0)
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(13))  # 1 ... 16777216
REQUEST_BUCKETS: tuple[float, ...] = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)  # agent-loop turns

# The names the config's ``metrics:`` list takes: the seed's five, then the extensions. Each enables the
# families that name it; a family that names none is always on. A list that names only seed metrics
# leaves the extensions on (the seed's list predates them); one that names any extension is taken as the
# whole list.
METRIC_GROUPS: tuple[str, ...] = (
    "execution_duration_ms",
    "tokens_used_input",
    "tokens_used_output",
    "code_blocks_executed",
    "error_rate_percent",
    "cost_usd",
    "time_to_first_token_ms",
    "retries",
    "rate_limits",
    "stop_reasons",
)
SEED_GROUPS: frozenset[str] = frozenset(METRIC_GROUPS[:5])
# Token ``type`` label values and the seed metric that enables each.
TOKEN_TYPE_GROUPS: dict[str, str] = {
    "input": "tokens_used_input",
    "cache_creation": "tokens_used_input",
    "cache_read": "tokens_used_input",
    "output": "tokens_used_output",
}


def duration_buckets(extra_seconds: Iterable[float] = ()) -> tuple[float, ...]:
    """The duration buckets plus every configured timeout threshold, so the timeout alert is exact."""
    return tuple(sorted({*DURATION_BUCKETS, *(float(s) for s in extra_seconds if s > 0)}))


@dataclass(frozen=True)
class Family:
    """One metric family: what Prometheus sees, and which seed metric enables it."""

    name: str  # as exposed; counters end in _total
    type: str  # counter | histogram | gauge
    help: str
    labels: tuple[str, ...]
    meaning: str = ""  # the README's column; the help text when empty
    enabled_by: tuple[str, ...] = ()  # METRIC_GROUPS names; empty: always on
    multiprocess_mode: str = ""  # gauges only: how worker processes combine (prometheus_client's modes)

    @property
    def base(self) -> str:
        """The family name prometheus_client takes (without the counter's ``_total``)."""
        return self.name[: -len("_total")] if self.type == "counter" else self.name


_AM = ("agent", "model")
_AT = ("agent", "task")

FAMILIES: tuple[Family, ...] = (
    Family("claude_requests_total", "counter", "Finished Messages API requests.", (*_AM, "outcome"),
           "finished requests (success, error)"),
    Family("claude_request_duration_seconds", "histogram",
           "Request wall time, retries and the whole stream included.", _AM,
           enabled_by=("execution_duration_ms",)),
    Family("claude_time_to_first_token_seconds", "histogram",
           "Streaming requests: time from the request start to the first content delta.", _AM,
           enabled_by=("time_to_first_token_ms",)),
    Family("claude_tokens_total", "counter", "Tokens as the API bills them; input excludes cache tokens.",
           (*_AM, "type"), "input, output, cache_creation, cache_read, as billed",
           enabled_by=("tokens_used_input", "tokens_used_output")),
    Family("claude_cost_usd_total", "counter", "Estimated cost from the pricing table, in USD.", _AM,
           enabled_by=("cost_usd",)),
    Family("claude_cost_by_tier_usd_total", "counter",
           "Estimated cost by the response's usage.service_tier (standard, priority, batch), in USD.",
           (*_AM, "tier"),
           "`claude_cost_usd_total` split by `usage.service_tier`: standard, priority, batch (a tier the "
           "price list does not name: `__other__`), so priority and batch spend can be kept apart",
           enabled_by=("cost_usd",)),
    Family("claude_errors_total", "counter",
           "Failed requests by SDK exception class name and the API's error_code (none when absent).",
           (*_AM, "error_type", "error_code"),
           "failed requests by SDK exception class and the API's `error_code` (the SDK's known codes, "
           "`__other__`, `none` when absent)", enabled_by=("error_rate_percent",)),
    Family("claude_stop_reasons_total", "counter", "Finished requests by stop reason.",
           (*_AM, "stop_reason"), "end_turn, max_tokens, tool_use, refusal, ...",
           enabled_by=("stop_reasons",)),
    Family("claude_code_blocks_executed_total", "counter",
           "Code-execution tool results by tool and outcome.", (*_AM, "tool", "outcome"),
           "code-execution results: success, nonzero_exit, tool_error", enabled_by=("code_blocks_executed",)),
    Family("claude_retries_total", "counter",
           "Retried attempts by the status or failure that caused them, and that attempt's error_code.",
           (*_AM, "reason", "error_code"),
           'attempts the SDK retried, by cause ("429", "529", "timeout", ...), with that attempt\'s '
           "`error_code`",
           enabled_by=("retries",)),
    Family("claude_rate_limited_total", "counter", "429 responses, every attempt, by error_code.",
           (*_AM, "error_code"), "every 429 attempt, by its `error_code` (a spend limit is not throttling)",
           enabled_by=("rate_limits",)),
    Family("claude_ratelimit_limit", "gauge", "From the anthropic-ratelimit-*-limit headers.",
           ("model", "resource"), multiprocess_mode="mostrecent"),
    Family("claude_ratelimit_remaining", "gauge", "From the anthropic-ratelimit-*-remaining headers.",
           ("model", "resource"), multiprocess_mode="mostrecent"),
    Family("claude_ratelimit_reset_timestamp_seconds", "gauge",
           "From the anthropic-ratelimit-*-reset headers, as a Unix timestamp.", ("model", "resource"),
           multiprocess_mode="mostrecent"),
    Family("claude_requests_in_flight", "gauge", "Requests in progress.", ("agent",),
           multiprocess_mode="livesum"),
    Family("claude_executions_total", "counter", "Finished executions.", (*_AT, "outcome"),
           "finished executions (success, error)"),
    Family("claude_execution_duration_seconds", "histogram", "Execution wall time.", _AT,
           enabled_by=("execution_duration_ms",)),
    Family("claude_execution_tokens", "histogram",
           "Tokens per execution over all its requests; input includes cache writes and reads.",
           (*_AT, "type"), enabled_by=("tokens_used_input", "tokens_used_output")),
    Family("claude_execution_requests", "histogram", "Requests per execution (agent-loop turns).", _AT),
    Family("claude_executions_in_flight", "gauge", "Executions in progress.", _AT,
           multiprocess_mode="livesum"),
    Family("claude_execution_longest_running_seconds", "gauge",
           "Age of the oldest running execution, 0 when none.", ("agent",),
           "age of the oldest running execution, so a hung agent shows while it hangs",
           multiprocess_mode="livemax"),
    Family("claude_exporter_build_info", "gauge", "Always 1; the exporter and SDK versions as labels.",
           ("version", "anthropic_version"), multiprocess_mode="max"),
    Family("claude_exporter_label_overflow_total", "counter", "Label values folded into __overflow__.",
           ("label",)),
    Family("claude_exporter_label_changes_total", "counter",
           "Label values the admission rule changed: not_a_string, replaced, control_stripped, truncated, "
           "empty.", ("label", "change"),
           "label values changed by the admission rule (docs/reliability.md)"),
    Family("claude_exporter_unpriced_tokens_total", "counter",
           "Tokens the pricing table cannot price, by model and reason (model, platform, speed, geo).",
           ("model", "reason"),
           "tokens the price table cannot price: reason `model` (not in the table), `platform` (Bedrock, "
           "Vertex), `speed` (fast mode without fast rates), `inference_geo` (a geo off the list)"),
    Family("claude_exporter_internal_errors_total", "counter",
           "Faults inside the shim, swallowed so the caller's request is never affected.", ("stage",)),
    Family("claude_exporter_events_total", "counter", "Ingested events.", ("source", "result"),
           "ingested events: accepted, rejected, or duplicate (a re-sent OTLP record or request, dropped)"),
    Family("claude_cache_misses_total", "counter",
           "Responses whose prompt cache missed, by the reason the API diagnosed (Message.diagnostics).",
           (*_AM, "reason"),
           "responses whose prompt cache missed, by the API's diagnosis (system_changed, tools_changed, "
           "messages_changed, model_changed, previous_message_not_found, unavailable)",
           enabled_by=("cost_usd",)),
    Family("claude_cache_missed_input_tokens_total", "counter",
           "Input tokens that would have been cache reads had the prefix matched, by miss reason.",
           (*_AM, "reason"), enabled_by=("cost_usd",)),
    Family("claude_cache_savings_usd_total", "counter",
           "Estimated USD the prompt-cache reads saved against paying the input price for them.", _AM,
           "what cache reads saved against the input price, at each request's own rates",
           enabled_by=("cost_usd",)),
    Family("claude_refusals_total", "counter",
           "Responses that stopped with refusal, by stop_details.category (none when the API names none).",
           (*_AM, "category"),
           "refusals by `stop_details.category` (cyber, bio, frontier_llm, reasoning_extraction, "
           "general_harms, none)", enabled_by=("stop_reasons",)),
    # Claude Code (ingest.claude_code): each agent's source, and what only Claude Code reports.
    Family("claude_agent_info", "gauge", "Always 1: where each agent's data comes from (sdk, claude_code).",
           ("agent", "source"), "always 1: `sdk` or `claude_code`, to split by source (a join on agent)",
           multiprocess_mode="max"),
    Family("claude_code_sessions_total", "counter", "Claude Code sessions started.", ("agent",)),
    Family("claude_code_tool_results_total", "counter", "Claude Code tool results by tool and outcome.",
           ("agent", "tool", "outcome"), "Claude Code tool results (Bash, Edit, Read ...): success, failure"),
    Family("claude_code_tool_duration_seconds", "histogram", "Claude Code tool run time, by tool.",
           ("agent", "tool")),
    Family("claude_code_lines_of_code_total", "counter", "Lines of code Claude Code added or removed.",
           ("agent", "type"), "lines of code Claude Code added, removed"),
    Family("claude_code_commits_total", "counter", "Git commits Claude Code made.", ("agent",)),
    Family("claude_code_pull_requests_total", "counter", "Pull requests Claude Code opened.", ("agent",)),
    Family("claude_code_active_time_seconds_total", "counter",
           "Time Claude Code was in active use (type user) or working (type cli).", ("agent", "type")),
    Family("claude_code_edit_decisions_total", "counter",
           "Edit-tool permission decisions (accept, reject) by tool.", ("agent", "tool", "decision")),
    Family("claude_code_tool_decisions_total", "counter",
           "Claude Code tool permission decisions by tool, decision and who decided.",
           ("agent", "tool", "decision", "source"),
           "`tool_decision` events: decision accept, reject; source config, hook, user_permanent, "
           "user_temporary, user_abort, user_reject, other"),
    Family("claude_code_compactions_total", "counter", "Claude Code context compactions.",
           ("agent", "trigger", "outcome"), "trigger auto, manual, other; outcome success, failure"),
    Family("claude_code_internal_errors_total", "counter", "Internal errors the Claude Code CLI reported.",
           ("agent",)),
    Family("claude_code_retries_exhausted_total", "counter",
           "Claude Code requests that gave up after more than one attempt.", ("agent",)),
    Family("claude_code_retry_seconds_total", "counter",
           "Time Claude Code spent on the attempts of requests that gave up.", ("agent",)),
)  # fmt: skip

BY_NAME: dict[str, Family] = {family.name: family for family in FAMILIES}
