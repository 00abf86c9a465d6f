"""Alert rules, one builder per alert family of the contract.

A builder gets one agent's settings (a named agent, or the defaults for every agent not named), returns
its rules and asks for the recording rules it reads through ``need``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from claude_exporter.config import AgentConfig, AlertConfig
from claude_exporter.rules.anomaly import (
    CREEP_SIGNALS,
    GAP,
    SIGNALS,
    Signal,
    band_rules,
    creep_rule,
    excursion_rule,
)
from claude_exporter.rules.recording import (
    BY,
    REMAINING_RECORD,
    SPEND_LIMIT_MATCHER,
    agent_matcher,
    duration,
    label_matcher,
    seconds,
    selector,
)

__all__ = [
    "ALERT_TITLES",
    "BUILDERS",
    "DEFAULT_RUNBOOK_URL",
    "Ctx",
    "Rule",
    "cache_hit_drop",
    "exporter_down",
    "ratelimit_remaining",
    "spend_limit",
    "timeout_le_regex",
]

DEFAULT_RUNBOOK_URL = "https://github.com/claude-exporter/claude-exporter/blob/main/alerting-rules/RUNBOOK.md"
# How long an execution that finished over the threshold keeps ClaudeExecutionTimeout firing: long enough
# for Alertmanager to see it at any scrape interval, short enough to resolve soon after.
TIMEOUT_WINDOW = 300.0

Rule = dict[str, Any]

ALERT_TITLES = {
    "execution_timeout": "ClaudeExecutionTimeout",
    "token_spike": "ClaudeTokenSpike",
    "error_rate": "ClaudeErrorRateHigh",
    "latency_drift": "ClaudeLatencyDrift",
    "rate_limited": "ClaudeRateLimited",
    "code_execution_failures": "ClaudeCodeExecutionFailing",
    "truncated_responses": "ClaudeResponsesTruncated",
    "spend_limit": "ClaudeSpendLimitReached",
    "cache_hit_drop": "ClaudeCacheHitRatioDrop",
    "anomaly": "ClaudeAnomaly",
    "slow_creep": "ClaudeSlowCreep",
    "cost_budget": "ClaudeCostBudgetBurn",
}


@dataclass
class Ctx:
    """Where a builder renders: which agent (and all its settings), the job matcher, the runbook, the
    recording-rule sink for shared windows, and the sink for the agent's own band rules."""

    agent: str | None
    named: tuple[str, ...]
    job: str
    runbook: str
    need: Callable[[str, float, float], str]
    settings: AgentConfig | None = None
    interval: float = 30.0
    records: Callable[[list[Rule]], None] = lambda rules: None

    @property
    def matcher(self) -> str:
        return agent_matcher(self.agent, self.named)

    def rec(self, family: str, window: float, offset: float = 0.0) -> str:
        """The recording rule's name, selected for this agent (and registered as needed)."""
        return self.need(family, window, offset) + selector(self.matcher)


def num(x: float | str) -> str:
    """A threshold as people write it: 150, 0.5."""
    return f"{float(x):g}"


def timeout_le_regex(threshold_s: float) -> str:
    """The ``le`` value prometheus_client writes for a bucket bound ("30.0", "1.5"), as an exact regex."""
    text = repr(float(threshold_s))
    if text.endswith(".0"):
        return text[:-2] + r"(\.0)?"
    return text.replace(".", r"\.")


def _fmt(text: str, **values: object) -> str:
    """``text`` with each ``<key>`` replaced; Go templates keep their ``{{ }}`` untouched."""
    for key, value in values.items():
        text = text.replace(f"<{key}>", str(value))
    return text


def _rule(
    ctx: Ctx, a: AlertConfig, *, title: str, expr: str, summary: str, description: str, **labels: str
) -> Rule:
    rule: Rule = {"alert": title, "expr": expr}
    if seconds(a.for_) > 0:
        rule["for"] = duration(a.for_)
    # A named agent's rules carry its name as a static label too: same value as the series' label, and it
    # keeps them distinct from the defaults' rules (promtool rejects rules with equal name and labels).
    named = {"agent": ctx.agent} if ctx.agent is not None else {}
    rule["labels"] = {"severity": a.severity, **named, **labels}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{ctx.runbook}#{title.lower()}",
    }
    return rule


def _p(a: AlertConfig, key: str, default: float | str) -> float | str:
    value = a.params.get(key)
    return default if value is None else value


def execution_timeout(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    t_s = (a.threshold if a.threshold is not None else 30000.0) / 1000.0
    w = duration(_p(a, "window", TIMEOUT_WINDOW))
    sel = selector(ctx.job, ctx.matcher)
    bucket = "claude_execution_duration_seconds_bucket" + selector(
        ctx.job, ctx.matcher, label_matcher("le", "=~", timeout_le_regex(t_s))
    )
    count = f"claude_execution_duration_seconds_count{sel}"
    by = f"{BY}, task"
    # count - bucket{le=threshold} is exact because the exporter adds the threshold to the buckets. The
    # second branch covers a series born with its first (slow) execution, where increase() sees nothing:
    # judged per series (a new pod of an agent whose other pods are old), then summed over the agent.
    finished = (
        f"sum by ({by}) (\n  increase({count}[{w}])\n  - ignoring(le)\n  increase({bucket}[{w}])\n) > 0\n"
        f"or\nsum by ({by}) (\n  (\n    {count}\n    - ignoring(le)\n    {bucket}\n  ) > 0\n"
        f"  unless\n  {count} offset {w}\n)"
    )
    running = f"max by ({BY}) (claude_execution_longest_running_seconds{sel}) > {num(t_s)}"
    limit = duration(t_s)
    return [
        _rule(
            ctx,
            a,
            title="ClaudeExecutionTimeout",
            expr=finished,
            summary="Agent executions finished over the timeout.",
            description=_fmt(
                "Agent {{ $labels.agent }}: "
                '{{ printf "%.0f" $value }} execution(s) of task {{ $labels.task }} took longer than <limit> '
                "in the last <w>.",
                limit=limit,
                w=w,
            ),
            execution="finished",
        ),
        _rule(
            ctx,
            a,
            title="ClaudeExecutionTimeout",
            expr=running,
            summary="An agent execution is running past the timeout.",
            description=_fmt(
                "Agent {{ $labels.agent }}: an execution has been running for "
                "{{ $value | humanizeDuration }}, past the <limit> timeout.",
                limit=limit,
            ),
            execution="running",
        ),
    ]


def _band_alert(
    ctx: Ctx, a: AlertConfig, *, signals: tuple[str, ...], title: str, summary: str, what: str
) -> list[Rule]:
    """Signals above their adaptive band (rules.anomaly) and more than the threshold above normal."""
    assert ctx.settings is not None
    judged = [SIGNALS[s] for s in signals]
    for signal in judged:
        ctx.records(band_rules(ctx.job, ctx.agent, ctx.named, ctx.settings, signal, ctx.interval, bands=True))
    threshold = float(a.threshold if a.threshold is not None else 100)
    description = _fmt(
        "Agent {{ $labels.agent }}: <what> over the last <w> is "
        '{{ printf "%.0f" $value }}% above its normal (its mean over the <b> up to <gap> ago) and '
        "above its {{ $labels.band }} band (threshold <t>%, <k> standard deviations).",
        what=what,
        w=duration(_p(a, "window", 600)),
        b=duration(_p(a, "baseline_window", 86400)),
        gap=duration(min(GAP, seconds(_p(a, "baseline_window", 86400)) / 4)),
        t=num(threshold),
        k=num(_p(a, "sensitivity", 3)),
    )
    expr = excursion_rule(ctx.matcher, ctx.settings, judged, threshold)
    return [_rule(ctx, a, title=title, expr=expr, summary=summary, description=description)]


def slow_creep(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    """Each per-execution signal's average over the window against the same hours last week."""
    assert ctx.settings is not None
    rules = []
    for name in CREEP_SIGNALS:
        signal: Signal = SIGNALS[name]
        ctx.records(
            band_rules(ctx.job, ctx.agent, ctx.named, ctx.settings, signal, ctx.interval, bands=False)
        )
        description = _fmt(
            "Agent {{ $labels.agent }}: <what> over the last <w> is "
            '{{ printf "%.0f" $value }}% above the same hours last week (threshold <t>%).',
            what=signal.what,
            w=duration(_p(a, "window", 6 * 3600)),
            t=num(a.threshold if a.threshold is not None else 15),
        )
        rules.append(
            _rule(
                ctx,
                a,
                title="ClaudeSlowCreep",
                expr=creep_rule(ctx.matcher, ctx.settings, signal, a, ctx.interval),
                summary="An agent is slowly drifting from last week.",
                description=description,
                signal=name,
            )
        )
    return rules


def _ratio(
    ctx: Ctx,
    a: AlertConfig,
    *,
    family: str,
    volume: str,
    min_key: str,
    title: str,
    summary: str,
    what: str,
    unit: str,
) -> list[Rule]:
    """A share of bad events over a window, with at least ``min_key`` events in it."""
    w = seconds(_p(a, "window", 300))
    n = num(_p(a, min_key, 10))
    threshold = num(a.threshold if a.threshold is not None else 5)
    expr = f"{ctx.rec(family, w)} > {threshold}\nand on ({BY}) {ctx.rec(volume, w)} * {num(w)} >= {n}"
    description = _fmt(
        'Agent {{ $labels.agent }}: {{ printf "%.1f" $value }}% of <what> '
        "over the last <w> (threshold <t>%, at least <n> <unit>).",
        what=what,
        w=duration(w),
        t=threshold,
        n=n,
        unit=unit,
    )
    return [_rule(ctx, a, title=title, expr=expr, summary=summary, description=description)]


def rate_limited(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    w = seconds(_p(a, "window", 300))
    per_minute = num(a.threshold if a.threshold is not None else 1)
    description = _fmt(
        'Agent {{ $labels.agent }} got {{ printf "%.1f" $value }} 429 responses '
        "per minute over the last <w> (threshold <t>).",
        w=duration(w),
        t=per_minute,
    )
    expr = f"{ctx.rec('rate_limited', w)} * 60 > {per_minute}"
    return [
        _rule(
            ctx,
            a,
            title="ClaudeRateLimited",
            expr=expr,
            summary="Claude requests are rate limited.",
            description=description,
            reason="throttled",
        )
    ]


def ratelimit_remaining(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    """The rate-limit headers belong to the API key, not to an agent: one rule for the whole job, one alert
    per model class and resource however many processes share the key (the lowest figure reported)."""
    remaining = num(_p(a, "remaining_percent", 10))
    # A reset time in the past means the limit has refilled since that process's last response: its
    # gauge is stale, so it is left out before taking the minimum.
    expr = (
        f"min by (job, model, resource) (\n  {REMAINING_RECORD} < {remaining}\n"
        f"  unless on (job, instance, model, resource)\n"
        f"  claude_ratelimit_reset_timestamp_seconds{selector(ctx.job)} < time()\n)"
    )
    description = _fmt(
        'Only {{ printf "%.1f" $value }}% of the {{ $labels.resource }} rate limit is left'
        "{{ with $labels.model }} for {{ . }}{{ end }} (threshold <t>%).",
        t=remaining,
    )
    return [
        _rule(
            ctx,
            a,
            title="ClaudeRateLimited",
            expr=expr,
            summary="The Claude API rate limit is nearly used up.",
            description=description,
            reason="low_remaining",
        )
    ]


def cost_budget(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    if a.threshold is None:
        return []  # off unless a budget is configured
    w = seconds(_p(a, "window", 3600))
    budget = num(a.threshold)
    description = _fmt(
        'Agent {{ $labels.agent }} is spending {{ printf "%.2f" $value }} USD per '
        "hour over the last <w> (budget <b> USD per hour).",
        w=duration(w),
        b=budget,
    )
    expr = f"{ctx.rec('cost', w)} * 3600 > {budget}"
    return [
        _rule(
            ctx,
            a,
            title="ClaudeCostBudgetBurn",
            expr=expr,
            summary="Claude spend is over budget.",
            description=description,
        )
    ]


def spend_limit(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    """Requests failing on a spend limit: no retry helps, so it pages on the first one."""
    w = duration(_p(a, "window", 600))
    n = num(a.threshold if a.threshold is not None else 1)
    errors = "claude_errors_total" + selector(ctx.job, ctx.matcher, SPEND_LIMIT_MATCHER)
    by = f"{BY}, error_code"
    # The second branch covers a series born with its first error, where increase() sees nothing yet: per
    # series, so a new process of an agent that failed the same way before still counts.
    expr = (
        f"sum by ({by}) (increase({errors}[{w}])) >= {n}\n"
        f"or\nsum by ({by}) (\n  {errors}\n  unless\n  {errors} offset {w}\n) >= {n}"
    )
    description = _fmt(
        "Agent {{ $labels.agent }}: requests fail with {{ $labels.error_code }} "
        '({{ printf "%.0f" $value }} in the last <w>). No retry helps: raise the limit in the Console or '
        "wait for it to reset.",
        w=w,
    )
    return [
        _rule(
            ctx,
            a,
            title="ClaudeSpendLimitReached",
            expr=expr,
            summary="Claude requests fail on a spend limit.",
            description=description,
        )
    ]


def cache_hit_drop(ctx: Ctx, a: AlertConfig) -> list[Rule]:
    """The prompt-cache hit ratio fell against its baseline while cache writes rose: a broken prefix."""
    w = seconds(_p(a, "window", 900))
    b = seconds(_p(a, "baseline_window", 7200))
    n = num(_p(a, "min_requests", 10))
    floor = num(_p(a, "min_baseline_percent", 20))
    threshold = num(a.threshold if a.threshold is not None else 50)
    recent, baseline = ctx.rec("cache_hit", w), ctx.rec("cache_hit", b, w)
    expr = (
        f"(\n  1 - {recent}\n  / {baseline}\n) * 100 > {threshold}\n"
        f"and on ({BY}) {ctx.rec('cache_writes', w)} > {ctx.rec('cache_writes', b, w)}\n"
        f"and on ({BY}) {baseline} * 100 >= {floor}\n"
        f"and on ({BY}) {ctx.rec('requests', w)} * {num(w)} >= {n}"
    )
    description = _fmt(
        "Agent {{ $labels.agent }}: the prompt-cache hit ratio fell "
        '{{ printf "%.0f" $value }}% over the last <w> against the <b> before (threshold <t>%) while cache '
        "writes rose: the cached prefix changed (see claude_cache_misses_total by reason).",
        w=duration(w),
        b=duration(b),
        t=threshold,
    )
    return [
        _rule(
            ctx,
            a,
            title="ClaudeCacheHitRatioDrop",
            expr=expr,
            summary="The prompt cache stopped hitting.",
            description=description,
        )
    ]


BUILDERS: Mapping[str, Callable[[Ctx, AlertConfig], list[Rule]]] = {
    "execution_timeout": execution_timeout,
    "token_spike": partial(
        _band_alert,
        signals=("tokens_per_execution",),
        title="ClaudeTokenSpike",
        summary="Tokens per execution spiked.",
        what="tokens per execution",
    ),
    "error_rate": partial(
        _ratio,
        family="request_errors",
        volume="requests",
        min_key="min_requests",
        title="ClaudeErrorRateHigh",
        summary="Claude requests are failing.",
        what="Messages API requests failed",
        unit="requests",
    ),
    "latency_drift": partial(
        _band_alert,
        signals=("execution_duration",),
        title="ClaudeLatencyDrift",
        summary="Execution time drifted up.",
        what="average execution time",
    ),
    "rate_limited": rate_limited,
    "code_execution_failures": partial(
        _ratio,
        family="code_failures",
        volume="code_blocks",
        min_key="min_blocks",
        title="ClaudeCodeExecutionFailing",
        summary="Code blocks run by Claude are failing.",
        what="code blocks failed (nonzero exit or tool error)",
        unit="blocks",
    ),
    "truncated_responses": partial(
        _ratio,
        family="truncated",
        volume="stop_reasons",
        min_key="min_requests",
        title="ClaudeResponsesTruncated",
        summary="Claude responses are cut short.",
        what="responses stopped at max_tokens or refusal",
        unit="responses",
    ),
    "spend_limit": spend_limit,
    "cache_hit_drop": cache_hit_drop,
    "anomaly": partial(
        _band_alert,
        signals=("error_ratio", "cost_rate", "requests_per_execution"),
        title="ClaudeAnomaly",
        summary="An agent left its normal band.",
        what="{{ $labels.signal }}",
    ),
    "slow_creep": slow_creep,
    "cost_budget": cost_budget,
}


def exporter_down(job: str, runbook: str, severity: str, for_: float) -> list[Rule]:
    """ClaudeExporterDown: the target is down, or no target of the job exists at all."""
    rule: Rule = {
        "alert": "ClaudeExporterDown",
        "expr": f"up{selector(job)} == 0\nor\nabsent(up{selector(job)})",
    }
    if for_ > 0:
        rule["for"] = duration(for_)
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": "claude-exporter is down.",
        "description": _fmt(
            "Prometheus has not scraped claude-exporter{{ with $labels.instance }} at {{ . }}{{ end }} "
            "(job {{ $labels.job }}) for <for>: its agents are not monitored.",
            **{"for": duration(for_)},
        ),
        "runbook_url": f"{runbook}#claudeexporterdown",
    }
    return [rule]
