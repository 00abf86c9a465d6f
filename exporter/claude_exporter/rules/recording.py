"""Recording rules (``level:metric:operations``) and the PromQL helpers the alert rules share.

Every recording rule aggregates ``by (job, agent)``: an agent is judged across all its processes and pods,
however many Prometheus servers scraped them. ``instance`` and the external labels that tell Prometheus
replicas or shards apart are summed away, so an error rate spread thin over many pods still adds up, one
pod's restart (a counter reset, handled per series by ``rate``) moves the agent's figures by that pod's
share only, and a rule evaluated over remote-written data from several Prometheus fires once per agent.
One rule is rendered per window in use, so per-agent windows in the config only add the windows they need.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "BY",
    "DASHBOARD_WINDOW",
    "REMAINING_RECORD",
    "SPEND_LIMIT_CODES",
    "Family",
    "agent_matcher",
    "duration",
    "families",
    "label_matcher",
    "record_name",
    "recording_rules",
    "seconds",
    "selector",
]

# Kept on every aggregation: the question is about the agent, never one of its processes (see above).
BY = "job, agent"
# The API error codes of a spend limit (and the ramp limit on a new organization's growth): no retry helps,
# a person must raise the limit or wait for it to reset. ClaudeSpendLimitReached pages on them and
# ClaudeRateLimited leaves them out.
SPEND_LIMIT_CODES = (
    "enforced_spend_limit_reached",
    "contract_spend_limit_reached",
    "linked_organization_spend_limit_reached",
    "ramp_limit_exceeded",
)
SPEND_LIMIT_MATCHER = 'error_code=~"' + "|".join(SPEND_LIMIT_CODES) + '"'
# Always rendered, whatever the alerts use: the window the dashboards and the health figures use.
DASHBOARD_WINDOW = 300.0

_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")


def seconds(value: float | str) -> float:
    """A Prometheus duration ("1h30m") or a number of seconds, in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r}")
    units = dict(_UNITS)
    return sum(float(n) * units[u] for n, u in parts)


def duration(value: float | str) -> str:
    """The canonical Prometheus duration ("1h30m", "90s" becomes "1m30s"), so rule names are stable."""
    ms = round(seconds(value) * 1000)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in _UNITS:
        size_ms = round(size * 1000)
        if ms >= size_ms:
            out.append(f"{ms // size_ms}{unit}")
            ms %= size_ms
    return "".join(out)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def label_matcher(label: str, op: str, value: str) -> str:
    """One PromQL label matcher, the value quoted."""
    return f"{label}{op}{_quote(value)}"


def agent_matcher(agent: str | None, others: Iterable[str]) -> str:
    """``agent="a"`` for a named agent; for the defaults, every agent not named (empty when none is)."""
    if agent is not None:
        return label_matcher("agent", "=", agent)
    names = sorted(others)
    if not names:
        return ""
    # RE2 metacharacters escaped, so a name is always matched literally.
    return label_matcher("agent", "!~", "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", n) for n in names))


def selector(*matchers: str) -> str:
    """``{a, b}`` of the non-empty matchers, or nothing."""
    kept = [m for m in matchers if m]
    return "{" + ", ".join(kept) + "}" if kept else ""


def record_name(metric: str, op: str, window: float | str, offset: float | str | None = None) -> str:
    """``agent:<metric>:<op><window>[_offset<offset>]``."""
    name = f"agent:{metric}:{op}{duration(window)}"
    if offset:
        name += f"_offset{duration(offset)}"
    return name


@dataclass(frozen=True)
class Family:
    """A recording rule per window: ``expr(job_matcher, range)``, range being ``[w]`` or ``[w] offset o``."""

    metric: str
    op: str
    expr: Callable[[str, str], str]
    help: str


def _sum_rate(metric: str, sel: str, rng: str) -> str:
    return f"sum by ({BY}) (rate({metric}{sel}{rng}))"


def _percent(metric: str, job: str, bad: str, rng: str) -> str:
    # `or 0 * total` turns "no bad series yet" into 0%, and `> 0` drops agents without traffic instead of NaN.
    total = _sum_rate(metric, selector(job), rng)
    return f"100 * (\n  {_sum_rate(metric, selector(job, bad), rng)}\n  or\n  0 * {total}\n)\n/ ({total} > 0)"


def _per(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/ ({denominator} > 0)"


def _families() -> dict[str, Family]:
    def f(metric: str, op: str, help: str, expr: Callable[[str, str], str]) -> Family:
        return Family(metric, op, expr, help)

    tokens_sum = "claude_execution_tokens_sum"
    return {
        "requests": f(
            "claude_requests",
            "rate",
            "Messages API requests per second.",
            lambda j, r: _sum_rate("claude_requests_total", selector(j), r),
        ),
        "request_errors": f(
            "claude_request_error_rate_percent",
            "ratio_rate",
            "Share of requests that failed, in percent.",
            lambda j, r: _percent("claude_requests_total", j, 'outcome="error"', r),
        ),
        "executions": f(
            "claude_executions",
            "rate",
            "Finished executions per second.",
            lambda j, r: _sum_rate("claude_executions_total", selector(j), r),
        ),
        "execution_errors": f(
            "claude_execution_error_rate_percent",
            "ratio_rate",
            "Share of executions that failed, in percent.",
            lambda j, r: _percent("claude_executions_total", j, 'outcome="error"', r),
        ),
        "duration_avg": f(
            "claude_execution_duration_seconds",
            "avg_rate",
            "Average execution wall time, seconds.",
            lambda j, r: _per(
                _sum_rate("claude_execution_duration_seconds_sum", selector(j), r),
                _sum_rate("claude_execution_duration_seconds_count", selector(j), r),
            ),
        ),
        "duration_p95": f(
            "claude_execution_duration_seconds",
            "p95_rate",
            "95th percentile of execution wall time, seconds.",
            lambda j, r: (
                f"histogram_quantile(0.95,\n  sum by ({BY}, le) "
                f"(rate(claude_execution_duration_seconds_bucket{selector(j)}{r}))\n)"
            ),
        ),
        "request_p95": f(
            "claude_request_duration_seconds",
            "p95_rate",
            "95th percentile of request wall time, seconds.",
            lambda j, r: (
                f"histogram_quantile(0.95,\n  sum by ({BY}, le) "
                f"(rate(claude_request_duration_seconds_bucket{selector(j)}{r}))\n)"
            ),
        ),
        "tokens_avg": f(
            "claude_execution_tokens",
            "avg_rate",
            "Tokens (input + output) per execution.",
            # Each execution observes both types once, so the input count is the number of executions.
            lambda j, r: _per(
                _sum_rate(tokens_sum, selector(j), r),
                _sum_rate("claude_execution_tokens_count", selector(j, 'type="input"'), r),
            ),
        ),
        "requests_avg": f(
            "claude_execution_requests",
            "avg_rate",
            "Requests (agent-loop turns) per execution.",
            lambda j, r: _per(
                _sum_rate("claude_execution_requests_sum", selector(j), r),
                _sum_rate("claude_execution_requests_count", selector(j), r),
            ),
        ),
        "cost_avg": f(
            "claude_execution_cost_usd",
            "avg_rate",
            "Estimated USD per execution.",
            lambda j, r: _per(
                _sum_rate("claude_cost_usd_total", selector(j), r),
                _sum_rate("claude_executions_total", selector(j), r),
            ),
        ),
        "cost": f(
            "claude_cost_usd",
            "rate",
            "Estimated USD per second.",
            lambda j, r: _sum_rate("claude_cost_usd_total", selector(j), r),
        ),
        "rate_limited": f(
            "claude_rate_limited",
            "rate",
            "429 responses per second, every attempt, spend limits left out (ClaudeSpendLimitReached).",
            lambda j, r: _sum_rate(
                "claude_rate_limited_total", selector(j, SPEND_LIMIT_MATCHER.replace("=~", "!~")), r
            ),
        ),
        "cache_hit": f(
            "claude_cache_hit",
            "ratio_rate",
            "Share of prompt tokens read from the prompt cache (0..1): reads / (input + writes + reads).",
            lambda j, r: _per(
                _sum_rate("claude_tokens_total", selector(j, 'type="cache_read"'), r),
                _sum_rate("claude_tokens_total", selector(j, 'type=~"input|cache_creation|cache_read"'), r),
            ),
        ),
        "cache_writes": f(
            "claude_cache_write_tokens",
            "rate",
            "Prompt-cache write tokens per second.",
            lambda j, r: _sum_rate("claude_tokens_total", selector(j, 'type="cache_creation"'), r),
        ),
        "code_blocks": f(
            "claude_code_blocks_executed",
            "rate",
            "Code-execution tool results per second.",
            lambda j, r: _sum_rate("claude_code_blocks_executed_total", selector(j), r),
        ),
        "code_failures": f(
            "claude_code_block_failure_percent",
            "ratio_rate",
            "Share of code blocks that failed (nonzero exit or tool error), in percent.",
            lambda j, r: _percent("claude_code_blocks_executed_total", j, 'outcome!="success"', r),
        ),
        "stop_reasons": f(
            "claude_stop_reasons",
            "rate",
            "Finished responses (with a stop reason) per second.",
            lambda j, r: _sum_rate("claude_stop_reasons_total", selector(j), r),
        ),
        "truncated": f(
            "claude_truncated_responses_percent",
            "ratio_rate",
            "Share of responses that stopped at max_tokens or refusal, in percent.",
            lambda j, r: _percent("claude_stop_reasons_total", j, 'stop_reason=~"max_tokens|refusal"', r),
        ),
    }


families: dict[str, Family] = _families()

# What the dashboard window always gets, in this order (which is also the output order).
_DASHBOARD = (
    "requests",
    "request_errors",
    "request_p95",
    "executions",
    "execution_errors",
    "duration_avg",
    "duration_p95",
    "tokens_avg",
    "requests_avg",
    "cost_avg",
    "cost",
    "rate_limited",
    "code_blocks",
    "code_failures",
    "stop_reasons",
    "truncated",
    "cache_hit",
    "cache_writes",
)

REMAINING_RECORD = "resource:claude_ratelimit_remaining_percent:ratio"


def recording_rules(job_matcher: str, needed: Iterable[tuple[str, float, float]]) -> list[dict[str, str]]:
    """Rules for the dashboard window and ``needed`` ``(family, window_s, offset_s)``, in a fixed order."""
    wanted = {(name, DASHBOARD_WINDOW, 0.0) for name in _DASHBOARD} | set(needed)
    order = {name: i for i, name in enumerate(_DASHBOARD)}
    rules = []
    for name, window, offset in sorted(wanted, key=lambda k: (order[k[0]], k[2], k[1])):
        fam = families[name]
        rng = f"[{duration(window)}]" + (f" offset {duration(offset)}" if offset else "")
        rules.append(
            {"record": record_name(fam.metric, fam.op, window, offset), "expr": fam.expr(job_matcher, rng)}
        )
    rules.append(
        {
            "record": REMAINING_RECORD,
            "expr": (
                f"100 * claude_ratelimit_remaining{selector(job_matcher)}\n"
                f"/ (claude_ratelimit_limit{selector(job_matcher)} > 0)"
            ),
        }
    )
    return rules
