"""Claude cost: spend by agent and model, cost per execution, prompt-cache effect and projected spend."""

from __future__ import annotations

from common import (
    UIDS,
    Column,
    PanelBuilder,
    Scope,
    agent_variable,
    bargauge_panel,
    by_source,
    cost_per_hour,
    model_variable,
    new_dashboard,
    query,
    stat_panel,
    table_panel,
    textbox_variable,
    thresholds,
    timeseries_panel,
    tokens_by_type_panel,
    tokens_per_execution,
    window_variable,
)
from grafana_foundation_sdk.builders import dashboard as db

S = Scope(("agent", "model"))
COST = "claude_cost_usd_total"
TOKENS = "claude_tokens_total"
PROMPT = 'type=~"input|cache_creation|cache_read"'
CACHE_READ = 'type="cache_read"'
CACHE_WRITE = 'type="cache_creation"'
UNPRICED_STEPS = (("green", None), ("red", 1e-9))
# Cache reads bill at 0.1x the base input price (the price list's rule), so each saves 0.9x of it;
# 5-minute cache writes bill at 1.25x, a 0.25x premium. $input_price is USD per million input tokens.
SAVED_PER_READ = "0.9 * $input_price / 1e6"
WRITE_PREMIUM = "0.25 * $input_price / 1e6"
SAVINGS_NOTE = (
    "An approximation: PromQL has no per-model prices, so this multiplies cache tokens by the one base input "
    "price in the 'Input price' variable (USD per million tokens; 3 = Claude Sonnet). Saved = cache-read "
    "tokens x 0.9 x price (reads bill at 0.1x input). Write premium = cache-write tokens x 0.25 x price "
    "(5-minute writes bill at 1.25x; 1-hour writes at 2x, so the premium is understated for them). Models "
    "whose cache reads bill below 0.1x save slightly more. For a mixed fleet, filter one model and set its "
    "price."
)


def projected_daily(group: tuple[str, ...] = ()) -> str:
    """Spend per day at the rate of the last $projection."""
    return f"86400 * {S.sum_rate(COST, group=group, window='$projection')}"


def cost_per_request(group: tuple[str, ...] = ()) -> str:
    """Estimated cost per finished request."""
    return f"{S.sum_rate(COST, group=group)} / {S.sum_rate('claude_requests_total', group=group)}"


def cache_hit_percent(group: tuple[str, ...] = ()) -> str:
    """Share of prompt tokens (input, cache writes, cache reads) served from the cache."""
    return S.percent(TOKENS, CACHE_READ, PROMPT, group=group)


def spend_stats() -> list[PanelBuilder]:
    """Spend now, projected, and in the dashboard's time range."""
    return [
        stat_panel(
            "Spend per hour", "currencyUSD", "Estimated spend rate, from the pricing table.", cost_per_hour(S)
        ),
        stat_panel(
            "Projected daily spend",
            "currencyUSD",
            "The spend rate of the last $projection, times 86400 seconds.",
            projected_daily(),
        ),
        stat_panel(
            "Spend in range",
            "currencyUSD",
            "Estimated spend over the dashboard's time range.",
            f"sum(increase({S.sel(COST)}[$__range]))",
        ),
        stat_panel(
            "Cost per execution",
            "currencyUSD",
            "Spend per finished execution (the model filter applies to spend only).",
            S.per_execution(COST),
            decimals=4,
        ),
        stat_panel(
            "Cost per request", "currencyUSD", "Spend per finished request.", cost_per_request(), decimals=4
        ),
        stat_panel(
            "Cache hit ratio",
            "percent",
            "Share of prompt tokens (input + cache writes + cache reads) read from the prompt cache.",
            cache_hit_percent(),
            decimals=1,
        ),
        stat_panel(
            "Est. cache savings per hour",
            "currencyUSD",
            SAVINGS_NOTE,
            f"3600 * {SAVED_PER_READ} * {S.sum_rate(TOKENS, CACHE_READ)}",
        ),
        stat_panel(
            "Unpriced tokens/s",
            "short",
            "Tokens of models missing from the pricing table: their cost is not counted. "
            "Add the model to the pricing overrides.",
            f"{S.sum_rate('claude_exporter_unpriced_tokens_total')} or vector(0)",
            steps=thresholds(*UNPRICED_STEPS),
        ),
    ]


def breakdown_panels() -> list[PanelBuilder]:
    """Who spends: agents, models, and the pairs."""
    pair = ("agent", "model")
    share = f"100 * {S.sum_rate(COST, group=pair)} / ignoring(agent, model) group_left {S.sum_rate(COST)}"
    columns = [
        Column("Cost/hour", cost_per_hour(S, pair), "currencyUSD"),
        Column("Share %", share, "percent", decimals=1),
        Column("Projected per day", projected_daily(pair), "currencyUSD"),
        Column("Cost/request", cost_per_request(pair), "currencyUSD", decimals=4),
    ]
    return [
        timeseries_panel(
            "Spend per hour by agent",
            "currencyUSD",
            "Estimated spend rate, stacked.",
            [query(cost_per_hour(S, ("agent",)), "{{agent}}")],
            stack=True,
        ),
        timeseries_panel(
            "Spend per hour by source",
            "currencyUSD",
            "Estimated spend rate of SDK agents (sdk) and Claude Code sessions (claude_code), stacked.",
            [query(f"3600 * {by_source(S, COST)}", "{{source}}")],
            stack=True,
        ),
        timeseries_panel(
            "Spend per hour by model",
            "currencyUSD",
            "Estimated spend rate, stacked.",
            [query(cost_per_hour(S, ("model",)), "{{model}}")],
            stack=True,
        ),
        table_panel(
            "Spend by agent and model",
            "Each agent and model pair over the last $__rate_interval; projections over $projection.",
            pair,
            columns,
            width=16,
            sort_by="Cost/hour",
        ),
        bargauge_panel(
            "Projected daily spend by agent",
            "currencyUSD",
            "The spend rate of the last $projection, times 86400 seconds.",
            projected_daily(("agent",)),
            "{{agent}}",
            width=8,
        ),
    ]


def efficiency_panels() -> list[PanelBuilder]:
    """What a unit of work costs, over time."""
    return [
        timeseries_panel(
            "Cost per execution by agent",
            "currencyUSD",
            "Spend per finished execution (the model filter applies to spend only).",
            [query(S.per_execution(COST, group=("agent",)), "{{agent}}")],
            width=8,
        ),
        timeseries_panel(
            "Cost per request by model",
            "currencyUSD",
            "Spend per finished request.",
            [query(cost_per_request(("model",)), "{{model}}")],
            width=8,
        ),
        timeseries_panel(
            "Tokens per execution by agent",
            "short",
            "Input (cache included) and output tokens per finished execution: the driver of cost.",
            [query(tokens_per_execution(S, ("agent",)), "{{agent}}")],
            width=8,
        ),
    ]


def cache_panels() -> list[PanelBuilder]:
    """The prompt cache: how much it serves and what it saves."""
    read_share = S.percent(TOKENS, CACHE_READ, group=("model",))
    return [
        tokens_by_type_panel(S),
        timeseries_panel(
            "Cache hit ratio and cache-read share by model",
            "percent",
            "Hit ratio: cache-read tokens over prompt tokens (input + cache writes + reads). "
            "Share: cache-read tokens over all tokens, output included.",
            [
                query(cache_hit_percent(("model",)), "hit ratio {{model}}"),
                query(read_share, "cache-read share {{model}}"),
            ],
            max_value=100,
        ),
        timeseries_panel(
            "Estimated cache savings",
            "currencyUSD",
            SAVINGS_NOTE,
            [
                query(f"3600 * {SAVED_PER_READ} * {S.sum_rate(TOKENS, CACHE_READ)}", "saved per hour"),
                query(
                    f"3600 * {WRITE_PREMIUM} * {S.sum_rate(TOKENS, CACHE_WRITE)}",
                    "write premium per hour",
                ),
            ],
        ),
        timeseries_panel(
            "Unpriced tokens by model",
            "short",
            "Tokens per second of models missing from the pricing table: spend above leaves them out.",
            [query(S.sum_rate("claude_exporter_unpriced_tokens_total", group=("model",)), "{{model}}")],
        ),
    ]


def build() -> db.Dashboard:
    """The cost dashboard."""
    variables = [
        agent_variable(),
        model_variable(),
        window_variable(
            "projection", "Projection window", ["1h", "6h", "24h", "15m"], "The spend rate projections use."
        ),
        textbox_variable(
            "input_price",
            "Input price (USD/MTok)",
            "3",
            "Base input price per million tokens, only for the estimated cache savings.",
        ),
    ]
    sections = [
        ("Spend", spend_stats()),
        ("Spend by agent and model", breakdown_panels()),
        ("Efficiency", efficiency_panels()),
        ("Prompt cache", cache_panels()),
    ]
    return new_dashboard(
        UIDS["cost"],
        "Claude cost",
        "Estimated spend of the agents instrumented by claude-exporter, from its offline pricing table.",
        variables,
        sections,
    )
