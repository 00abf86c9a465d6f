"""Claude agent detail: one agent's latency, tokens, reliability, rate limits and executions."""

from __future__ import annotations

from common import (
    UIDS,
    PanelBuilder,
    Scope,
    agent_variable,
    cost_per_hour,
    heatmap_panel,
    model_variable,
    new_dashboard,
    query,
    request_error_percent,
    requests_per_second,
    stat_panel,
    thresholds,
    timeseries_panel,
    tokens_by_type_panel,
    tokens_per_execution,
)
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus

S = Scope(("agent", "model"))
QUANTILES = (0.5, 0.9, 0.99)
EXECUTION = "claude_execution_duration_seconds"
REQUEST = "claude_request_duration_seconds"
TTFT = "claude_time_to_first_token_seconds"


def percentiles(histogram: str) -> list[prometheus.Dataquery]:
    """p50, p90 and p99 of ``histogram``."""
    return [query(S.quantile(q, histogram), f"p{round(q * 100)}") for q in QUANTILES]


def heatmap_of(histogram: str) -> str:
    """Bucket rates of ``histogram``, for a heatmap."""
    return S.sum_rate(f"{histogram}_bucket", group=("le",))


def overview_stats() -> list[PanelBuilder]:
    """The agent right now."""
    return [
        stat_panel("Requests/s", "reqps", "Finished requests per second.", requests_per_second(S)),
        stat_panel(
            "Error rate",
            "percent",
            "Percent of finished requests that failed.",
            request_error_percent(S),
            steps=thresholds(("green", None), ("orange", 1.0), ("red", 5.0)),
            decimals=2,
        ),
        stat_panel("p95 request", "s", "95th percentile request wall time.", S.quantile(0.95, REQUEST)),
        stat_panel("p95 time to first token", "s", "Streaming requests only.", S.quantile(0.95, TTFT)),
        stat_panel(
            "Tokens/execution",
            "short",
            "Input (cache included) and output tokens per finished execution.",
            tokens_per_execution(S),
            decimals=0,
        ),
        stat_panel("Cost per hour", "currencyUSD", "Estimated spend rate.", cost_per_hour(S)),
        stat_panel(
            "Executions in flight",
            "short",
            "Executions of this agent running now.",
            S.gauge("claude_executions_in_flight"),
        ),
        stat_panel(
            "Longest running",
            "s",
            "Age of this agent's oldest running execution (0 when none runs).",
            S.gauge("claude_execution_longest_running_seconds", agg="max"),
            steps=thresholds(("green", None), ("red", 30.0)),
        ),
    ]


def latency_panels() -> list[PanelBuilder]:
    """Execution and request latency, percentiles and distributions, and time to first token."""
    return [
        timeseries_panel(
            "Execution time percentiles",
            "s",
            "Wall time of finished executions (all the requests of an agent loop). Not filtered by model.",
            percentiles(EXECUTION),
        ),
        timeseries_panel(
            "Request time percentiles",
            "s",
            "Request wall time, retries and the whole stream included.",
            percentiles(REQUEST),
        ),
        heatmap_panel(
            "Execution time distribution",
            "s",
            "Finished executions per second by duration bucket.",
            heatmap_of(EXECUTION),
        ),
        heatmap_panel(
            "Request time distribution",
            "s",
            "Finished requests per second by duration bucket.",
            heatmap_of(REQUEST),
        ),
        timeseries_panel(
            "Time to first token",
            "s",
            "Streaming requests: from the request start to the first content delta.",
            percentiles(TTFT),
        ),
        timeseries_panel(
            "Requests per execution",
            "short",
            "Agent-loop turns: requests made by one execution.",
            [
                query(S.mean("claude_execution_requests"), "mean"),
                query(S.quantile(0.95, "claude_execution_requests"), "p95"),
            ],
        ),
    ]


def token_panels() -> list[PanelBuilder]:
    """Tokens as billed, and per execution."""
    return [
        tokens_by_type_panel(S),
        timeseries_panel(
            "Tokens per execution by type",
            "short",
            "Mean tokens per finished execution; input includes cache writes and reads.",
            [query(tokens_per_execution(S, ("type",)), "{{type}}")],
            stack=True,
        ),
    ]


def reliability_panels() -> list[PanelBuilder]:
    """Outcomes, errors, retries, 429s, rate-limit headroom, stop reasons and code execution."""
    stop_share = (
        f"100 * {S.sum_rate('claude_stop_reasons_total', group=('stop_reason',))}"
        f" / ignoring(stop_reason) group_left {S.sum_rate('claude_stop_reasons_total')}"
    )
    failing_blocks = S.percent("claude_code_blocks_executed_total", 'outcome!="success"', group=("tool",))
    return [
        timeseries_panel(
            "Requests by outcome",
            "reqps",
            "Finished requests per second.",
            [query(S.sum_rate("claude_requests_total", group=("outcome",)), "{{outcome}}")],
            stack=True,
        ),
        timeseries_panel(
            "Errors by type and code",
            "reqps",
            "Failed requests per second by SDK exception class and the API's error_code (none when absent; "
            "the runbook's Error codes section says what each means and what to do).",
            [
                query(
                    S.sum_rate("claude_errors_total", group=("error_type", "error_code")),
                    "{{error_type}} {{error_code}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Retries and 429s",
            "reqps",
            "Attempts the SDK retried, by HTTP status or failure, and every 429 response received, by "
            "error_code (a spend-limit code means no retry can help).",
            [
                query(
                    S.sum_rate("claude_retries_total", group=("reason", "error_code")),
                    "retry {{reason}} {{error_code}}",
                ),
                query(S.sum_rate("claude_rate_limited_total", group=("error_code",)), "429 {{error_code}}"),
            ],
        ),
        timeseries_panel(
            "Rate-limit headroom",
            "percent",
            "Remaining over limit, from the last anthropic-ratelimit-* headers each exporter saw for each "
            "model (class). Per API key (exporter), not per agent.",
            [
                query(
                    f"100 * {S.sel('claude_ratelimit_remaining')} / {S.sel('claude_ratelimit_limit')}",
                    "{{instance}} {{model}} {{resource}}",
                )
            ],
            max_value=100,
        ),
        timeseries_panel(
            "Time to rate-limit reset",
            "s",
            "Seconds until each rate-limit window resets (negative: the reset time has passed).",
            [
                query(
                    f"{S.sel('claude_ratelimit_reset_timestamp_seconds')} - time()",
                    "{{instance}} {{model}} {{resource}}",
                )
            ],
            min_value=None,
        ),
        timeseries_panel(
            "Stop reasons",
            "percent",
            "Share of finished requests by stop reason; max_tokens and refusal mean truncated answers.",
            [query(stop_share, "{{stop_reason}}")],
            stack=True,
            max_value=100,
        ),
        timeseries_panel(
            "Refusals by category",
            "reqps",
            "Responses that stopped with refusal, per second, by the category in stop_details (cyber, bio, "
            "frontier_llm, reasoning_extraction, general_harms; none when the API names none).",
            [query(S.sum_rate("claude_refusals_total", group=("category",)), "{{category}}")],
            stack=True,
        ),
        timeseries_panel(
            "Code-execution outcomes",
            "ops",
            "Code-execution tool results per second, by tool and outcome.",
            [
                query(
                    S.sum_rate("claude_code_blocks_executed_total", group=("tool", "outcome")),
                    "{{tool}} {{outcome}}",
                )
            ],
            stack=True,
        ),
        timeseries_panel(
            "Code-execution failures",
            "percent",
            "Percent of code blocks that exited non-zero or hit a tool error, by tool.",
            [query(failing_blocks, "{{tool}}")],
            max_value=100,
        ),
    ]


def execution_panels() -> list[PanelBuilder]:
    """Executions finished, running now, and the longest running."""
    return [
        timeseries_panel(
            "Executions by outcome",
            "ops",
            "Finished executions per second.",
            [query(S.sum_rate("claude_executions_total", group=("outcome",)), "{{outcome}}")],
            stack=True,
        ),
        timeseries_panel(
            "Average execution time by task",
            "s",
            "Mean wall time of finished executions, per task.",
            [query(S.mean(EXECUTION, group=("task",)), "{{task}}")],
        ),
        timeseries_panel(
            "In flight",
            "short",
            "Executions running now, by task, and Messages API requests in flight.",
            [
                query(S.gauge("claude_executions_in_flight", group=("task",)), "executions: {{task}}"),
                query(S.gauge("claude_requests_in_flight"), "requests"),
            ],
        ),
        timeseries_panel(
            "Longest running execution",
            "s",
            "Age of the oldest execution still running; a rising line is a stuck agent.",
            [query(S.gauge("claude_execution_longest_running_seconds", agg="max"), "longest running")],
        ),
    ]


def build() -> db.Dashboard:
    """The agent detail dashboard."""
    sections = [
        ("Now", overview_stats()),
        ("Latency", latency_panels()),
        ("Tokens", token_panels()),
        ("Reliability and limits", reliability_panels()),
        ("Executions", execution_panels()),
    ]
    return new_dashboard(
        UIDS["agent"],
        "Claude agent detail",
        "One agent instrumented by claude-exporter: latency, tokens, errors, retries, limits, executions.",
        [agent_variable(multi=False), model_variable()],
        sections,
    )
