"""Claude fleet overview: every agent in one table (SDK agents and Claude Code sessions), fleet totals,
the agents drifting from baseline, and what only Claude Code reports."""

from __future__ import annotations

from common import (
    ALERTS,
    SIGNAL_RECORD,
    UIDS,
    Column,
    PanelBuilder,
    Scope,
    agent_variable,
    bargauge_panel,
    by_source,
    cost_per_hour,
    new_dashboard,
    query,
    request_error_percent,
    requests_per_second,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    tokens_per_execution,
    window_variable,
    zero_filled,
)
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

S = Scope(("agent",))
AGENT = ("agent",)
ERROR_STEPS = (("green", None), ("orange", 1.0), ("red", 5.0))
# Colours follow the bundled alerts' defaults: latency drift at +50 %, token spike at +150 %.
DRIFT_STEPS = (("green", None), ("orange", 25.0), ("red", 50.0))
SPIKE_STEPS = (("green", None), ("orange", 75.0), ("red", 150.0))
ALERT_STEPS = (("green", None), ("red", 1.0))
RECENT, BASELINE = "$recent", "$baseline"


def p95_execution(group: tuple[str, ...] = ()) -> str:
    """95th percentile execution time."""
    return S.quantile(0.95, "claude_execution_duration_seconds", group=group)


def change_percent(recent: str, baseline: str) -> str:
    """How far ``recent`` is above (or below) ``baseline``, in percent."""
    return f"100 * (({recent}) / ({baseline}) - 1)"


def overview_stats() -> list[PanelBuilder]:
    """The fleet's totals, right now."""
    return [
        stat_panel(
            "Agents seen",
            "short",
            "Agents that have made requests on the selected targets since their exporters started.",
            f"count({S.gauge('claude_requests_total', agg='count', group=AGENT)})",
        ),
        stat_panel(
            "Requests/s", "reqps", "Finished Messages API requests per second.", requests_per_second(S)
        ),
        stat_panel(
            "Error rate",
            "percent",
            "Percent of finished requests that failed (retries exhausted, or not retryable).",
            request_error_percent(S),
            steps=thresholds(*ERROR_STEPS),
            decimals=2,
        ),
        stat_panel(
            "p95 execution time", "s", "95th percentile wall time of finished executions.", p95_execution()
        ),
        stat_panel(
            "Cost per hour", "currencyUSD", "Estimated spend rate, from the pricing table.", cost_per_hour(S)
        ),
        stat_panel(
            "Executions in flight",
            "short",
            "Executions running now (a request made outside execution() counts as one).",
            S.gauge("claude_executions_in_flight"),
        ),
        stat_panel(
            "Longest running",
            "s",
            "Age of the oldest execution still running, across the selected agents.",
            S.gauge("claude_execution_longest_running_seconds", agg="max"),
            steps=thresholds(("green", None), ("red", 30.0)),
        ),
        stat_panel(
            "Firing alerts",
            "short",
            "Claude alerts firing in Prometheus, on every target.",
            f"count({ALERTS}) or vector(0)",
            steps=thresholds(*ALERT_STEPS),
        ),
    ]


def agents_table() -> PanelBuilder:
    """One row per agent: the fleet's main view."""
    code_blocks = f"60 * {S.sum_rate('claude_code_blocks_executed_total', group=AGENT)}"
    claude_code = S.gauge("claude_agent_info", 'source="claude_code"', agg="max", group=AGENT)
    columns = [
        Column("Requests/s", requests_per_second(S, AGENT), "reqps", decimals=3),
        Column("Error %", request_error_percent(S, AGENT), "percent", thresholds(*ERROR_STEPS), decimals=2),
        Column("p95 execution", p95_execution(AGENT), "s"),
        Column("Tokens/execution", tokens_per_execution(S, AGENT), "short", decimals=0),
        Column("Cost/hour", cost_per_hour(S, AGENT), "currencyUSD"),
        Column("Code blocks/min", zero_filled(S, code_blocks, AGENT), "short"),
        Column("Claude Code", zero_filled(S, claude_code, AGENT), "bool_yes_no"),
        Column("Firing alerts", zero_filled(S, S.alerts(AGENT), AGENT), "short", thresholds(*ALERT_STEPS), 0),
    ]
    return table_panel(
        "Agents",
        "One row per agent, over the last $__rate_interval. Click an agent for its detail dashboard.",
        AGENT,
        columns,
        height=9,
        sort_by="Requests/s",
    )


def degradation_panels() -> list[PanelBuilder]:
    """Agents whose execution time or tokens per execution moved away from their own baseline."""
    recent_time = S.mean("claude_execution_duration_seconds", group=AGENT, window=RECENT)
    baseline_time = S.mean("claude_execution_duration_seconds", group=AGENT, window=BASELINE)
    recent_tokens = tokens_per_execution(S, AGENT, RECENT)
    baseline_tokens = tokens_per_execution(S, AGENT, BASELINE)
    time_change = change_percent(recent_time, baseline_time)
    token_change = change_percent(recent_tokens, baseline_tokens)
    explain = (
        "Each agent's recent window ($recent) against its baseline window ($baseline). "
        "Positive: slower, or more tokens per execution, than usual."
    )
    columns = [
        Column("Avg execution (recent)", recent_time, "s"),
        Column("Avg execution (baseline)", baseline_time, "s"),
        Column("Execution time change %", time_change, "percent", thresholds(*DRIFT_STEPS), 1),
        Column("Tokens/execution (recent)", recent_tokens, "short", decimals=0),
        Column("Tokens/execution (baseline)", baseline_tokens, "short", decimals=0),
        Column("Tokens change %", token_change, "percent", thresholds(*SPIKE_STEPS), 1),
    ]
    return [
        table_panel("Degrading agents", explain, AGENT, columns, sort_by="Execution time change %"),
        timeseries_panel(
            "Execution time vs baseline",
            "percent",
            explain,
            [query(time_change, "{{agent}}")],
            min_value=None,
        ),
        timeseries_panel(
            "Tokens per execution vs baseline",
            "percent",
            explain,
            [query(token_change, "{{agent}}")],
            min_value=None,
        ),
    ]


# (signal label, panel title, unit): the signals the bundled rules learn a band for (see the runbook).
SIGNALS = (
    ("execution_duration", "Execution time and its band", "s"),
    ("tokens_per_execution", "Tokens per execution and its band", "short"),
    ("error_ratio", "Failed requests and their band", "percent"),
    ("cost_rate", "Spend rate and its band", "currencyUSD"),
    ("requests_per_execution", "Requests per execution and their band", "short"),
)
DASHED = [
    dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
    dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
]


def band_panels() -> list[PanelBuilder]:
    """Each agent's signals against its adaptive band (recording rules of the bundled alert rules)."""
    panels: list[PanelBuilder] = []
    for signal, title, unit in SIGNALS:
        matcher = f'signal="{signal}"'
        value = S.sel(f"{SIGNAL_RECORD}:rate10m", matcher)
        # The alerts judge against the highest band (recent, same hour yesterday, same hour last week).
        upper = f"max by (agent) ({S.sel(f'{SIGNAL_RECORD}:upper', matcher)})"
        lower = f"max by (agent) ({S.sel(f'{SIGNAL_RECORD}:lower', matcher)})"
        explain = (
            "The signal over 10 minutes (solid), and the band the bundled alerts judge it against (dashed): "
            "the highest upper edge of the agent's recent, daily and weekly bands, and the recent band's "
            "lower edge. Absent while an agent has too few executions or too little history to judge."
        )
        panel = timeseries_panel(
            title,
            unit,
            explain,
            [
                query(value, "{{agent}}"),
                query(upper, "{{agent}} upper"),
                query(lower, "{{agent}} lower"),
            ],
            width=8,
        )
        for ref in ("B", "C"):
            panel = panel.override_by_query(ref, DASHED)
        panels.append(panel)
    return panels


def trend_panels() -> list[PanelBuilder]:
    """The table's main columns over time, one series per agent."""
    return [
        timeseries_panel(
            "Requests/s by agent",
            "reqps",
            "Finished requests per second.",
            [query(requests_per_second(S, AGENT), "{{agent}}")],
        ),
        timeseries_panel(
            "Error rate by agent",
            "percent",
            "Percent of finished requests that failed.",
            [query(request_error_percent(S, AGENT), "{{agent}}")],
        ),
        timeseries_panel(
            "p95 execution time by agent",
            "s",
            "95th percentile execution wall time.",
            [query(p95_execution(AGENT), "{{agent}}")],
        ),
        timeseries_panel(
            "Cost per hour by agent",
            "currencyUSD",
            "Estimated spend rate, stacked.",
            [query(cost_per_hour(S, AGENT), "{{agent}}")],
            stack=True,
        ),
    ]


def claude_code_panels() -> list[PanelBuilder]:
    """Claude Code sessions beside the SDK agents: sources, and what only Claude Code reports."""
    agents = f"count by (source) ({S.gauge('claude_agent_info', agg='max', group=('agent', 'source'))})"
    tools = S.sum_rate("claude_code_tool_results_total", group=("tool", "outcome"))
    return [
        bargauge_panel(
            "Agents by source",
            "short",
            "Agents fed by the Anthropic SDK (sdk) and by Claude Code's telemetry (claude_code).",
            agents,
            "{{source}}",
            width=6,
        ),
        timeseries_panel(
            "Requests/s by source",
            "reqps",
            "Finished requests of SDK agents and of Claude Code sessions, stacked.",
            [query(by_source(S, "claude_requests_total"), "{{source}}")],
            stack=True,
            width=9,
        ),
        timeseries_panel(
            "Claude Code sessions/min by agent",
            "short",
            "Claude Code sessions started per minute (claude -p runs, interactive sessions).",
            [query(f"60 * {S.sum_rate('claude_code_sessions_total', group=AGENT)}", "{{agent}}")],
            width=9,
        ),
        timeseries_panel(
            "Claude Code tool results/s",
            "ops",
            "Tool results (Bash, Edit, Read ...) by outcome; Bash also counts as code blocks.",
            [query(tools, "{{tool}} {{outcome}}")],
            width=8,
        ),
        timeseries_panel(
            "Lines of code/min",
            "short",
            "Lines Claude Code added and removed per minute.",
            [
                query(
                    f"60 * {S.sum_rate('claude_code_lines_of_code_total', group=('type',))}",
                    "{{type}}",
                )
            ],
            width=8,
        ),
        timeseries_panel(
            "Commits and pull requests/h",
            "short",
            "Git commits and pull requests Claude Code made, per hour.",
            [
                query(f"3600 * {S.sum_rate('claude_code_commits_total')}", "commits"),
                query(f"3600 * {S.sum_rate('claude_code_pull_requests_total')}", "pull requests"),
            ],
            width=8,
        ),
        timeseries_panel(
            "Claude Code active time",
            "s",
            "Seconds of active use per second of wall time: by people (user) and by Claude Code (cli).",
            [query(S.sum_rate("claude_code_active_time_seconds_total", group=("type",)), "{{type}}")],
        ),
        timeseries_panel(
            "Telemetry received/s",
            "ops",
            "OTLP records and hooks accepted and rejected by the exporters. A Claude Code fleet that "
            "goes quiet here stopped sending: see the runbook's 'Claude Code telemetry stopped arriving'.",
            [
                query(
                    S.sum_rate("claude_exporter_events_total", group=("source", "result")),
                    "{{source}} {{result}}",
                )
            ],
        ),
    ]


def exporter_panels() -> list[PanelBuilder]:
    """The exporters behind the data: versions, and the cardinality protection at work."""
    build = S.gauge(
        "claude_exporter_build_info", agg="count", group=("instance", "version", "anthropic_version")
    )
    overflow = S.sum_rate("claude_exporter_label_overflow_total", group=("label",))
    return [
        bargauge_panel(
            "Exporter versions",
            "short",
            "Running exporters by instance, exporter version and anthropic SDK version.",
            build,
            "{{instance}} {{version}} (anthropic {{anthropic_version}})",
        ),
        timeseries_panel(
            "Label values folded into __overflow__",
            "ops",
            "Above zero, a label cap was reached: raise the cap or fix the label's source.",
            [query(f'{overflow} or label_replace(vector(0), "label", "none", "", "")', "{{label}}")],
        ),
    ]


def build() -> db.Dashboard:
    """The fleet dashboard."""
    variables = [
        agent_variable(),
        window_variable(
            "recent", "Recent window", ["10m", "5m", "15m", "30m"], "Compared with the baseline."
        ),
        window_variable(
            "baseline", "Baseline window", ["1h", "3h", "6h", "24h"], "The reference for degradation."
        ),
    ]
    sections = [
        ("Fleet now", overview_stats()),
        ("Agents", [agents_table()]),
        ("Degradation against baseline", degradation_panels()),
        ("Adaptive bands", band_panels()),
        ("Trends", trend_panels()),
        ("Claude Code", claude_code_panels()),
        ("Exporters", exporter_panels()),
    ]
    return new_dashboard(
        UIDS["fleet"],
        "Claude fleet overview",
        "Every agent instrumented by claude-exporter: load, errors, latency, tokens, cost, alerts and drift.",
        variables,
        sections,
    )
