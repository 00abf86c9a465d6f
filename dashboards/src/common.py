"""Shared defaults of the claude-exporter dashboards: variables, PromQL helpers, panel builders, rendering.

Every dashboard is built from these pieces, so the conventions hold everywhere by construction: panels and
queries use the ``${datasource}`` variable, every series is filtered by ``job`` and ``instance``, rates use
``$__rate_interval`` (or a window variable the dashboard declares), every panel has a unit, and the three
dashboards share a tag, links to each other and the Prometheus alert annotations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from claude_exporter.families import FAMILIES
from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as pm

TAG = "claude-exporter"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
ALL = ".*"
ALERTS = 'ALERTS{alertname=~"Claude.*", alertstate="firing"}'
UIDS = {"fleet": "claude-fleet", "agent": "claude-agent", "cost": "claude-cost"}

# The dashboard-filter labels each contract family carries, besides the target's job and instance; read
# from the family declarations.
FILTER_LABELS = frozenset({"agent", "model"})
FAMILY_LABELS: dict[str, frozenset[str]] = {f.name: frozenset(f.labels) & FILTER_LABELS for f in FAMILIES}
# Recording rules of the bundled rules (default config) that dashboards read: the adaptive bands.
SIGNAL_RECORD = "agent:claude_anomaly_signal"
FAMILY_LABELS.update(
    {f"{SIGNAL_RECORD}:{name}": frozenset({"agent"}) for name in ("rate10m", "upper", "lower")}
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def family_of(series: str) -> str:
    """The contract family a series name belongs to (histogram suffixes removed)."""
    if series in FAMILY_LABELS:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and base in FAMILY_LABELS:
            return base
    raise KeyError(f"{series} is not a contract metric")


def by(labels: Sequence[str]) -> str:
    """A ``by (...)`` clause, or nothing for a total."""
    return f" by ({', '.join(labels)})" if labels else ""


@dataclass(frozen=True)
class Scope:
    """The filters of one dashboard: ``job`` and ``instance`` always, plus its own variables.

    >>> Scope(("agent",)).sel("claude_executions_total", 'outcome="error"')
    'claude_executions_total{job=~"$job", instance=~"$instance", agent=~"$agent", outcome="error"}'

    A variable applies only to the families that carry its label (no ``model`` on execution metrics).
    """

    variables: tuple[str, ...] = ()

    def sel(self, series: str, *matchers: str) -> str:
        """``series{...}`` with the dashboard's filters and ``matchers``."""
        carried = FAMILY_LABELS[family_of(series)]
        # Recording rules judge an agent across all its instances: they carry no instance to filter by.
        labels = ['job=~"$job"'] + ([] if ":" in series else ['instance=~"$instance"'])
        labels += [f'{v}=~"${v}"' for v in self.variables if v in carried]
        return f"{series}{{{', '.join([*labels, *matchers])}}}"

    def rate(self, series: str, *matchers: str, window: str = RATE) -> str:
        """``rate(series{...}[window])``."""
        return f"rate({self.sel(series, *matchers)}[{window}])"

    def sum_rate(self, series: str, *matchers: str, group: Sequence[str] = (), window: str = RATE) -> str:
        """Per-second rate summed by ``group``."""
        return f"sum{by(group)} ({self.rate(series, *matchers, window=window)})"

    def gauge(self, series: str, *matchers: str, agg: str = "sum", group: Sequence[str] = ()) -> str:
        """A gauge aggregated with ``agg`` by ``group``."""
        return f"{agg}{by(group)} ({self.sel(series, *matchers)})"

    def quantile(self, q: float, histogram: str, *matchers: str, group: Sequence[str] = ()) -> str:
        """The ``q`` quantile of a histogram over ``$__rate_interval``, by ``group``."""
        rate = self.sum_rate(f"{histogram}_bucket", *matchers, group=(*group, "le"))
        return f"histogram_quantile({q}, {rate})"

    def mean(self, histogram: str, *matchers: str, group: Sequence[str] = (), window: str = RATE) -> str:
        """The mean observation of a histogram over ``window``, by ``group``."""
        total = self.sum_rate(f"{histogram}_sum", *matchers, group=group, window=window)
        count = self.sum_rate(f"{histogram}_count", *matchers, group=group, window=window)
        return f"{total} / {count}"

    def per_execution(
        self, series: str, *matchers: str, group: Sequence[str] = (), window: str = RATE
    ) -> str:
        """A counter's increase per finished execution (``claude_executions_total``), by ``group``."""
        num = self.sum_rate(series, *matchers, group=group, window=window)
        carried = FAMILY_LABELS["claude_executions_total"]
        den = self.sum_rate(
            "claude_executions_total", group=[g for g in group if g in carried], window=window
        )
        extra = [g for g in group if g not in carried]
        join = f" / ignoring({', '.join(extra)}) group_left " if extra else " / "
        return f"{num}{join}{den}"

    def percent(self, series: str, part: str, *whole: str, group: Sequence[str] = ()) -> str:
        """Percent of a counter's rate (restricted by ``whole``) that matches ``part``; 0, not absent,
        where nothing matched yet."""
        total = self.sum_rate(series, *whole, group=group)
        label = part.split("=", maxsplit=1)[0].rstrip("!~")
        share = self.sum_rate(series, part, *[m for m in whole if not m.startswith(label)], group=group)
        return f"100 * ({share} or {total} * 0) / {total}"

    def alerts(self, group: Sequence[str] = ()) -> str:
        """Firing Claude alerts counted by ``group``; alerts are not filtered by job or instance."""
        matchers = [f'{v}=~"${v}"' for v in self.variables if v in group]
        selector = ALERTS if not matchers else ALERTS[:-1] + ", " + ", ".join(matchers) + "}"
        return f"count{by(group)} ({selector})"


# -- queries shared by the dashboards ---------------------------------------------------------------------


def requests_per_second(s: Scope, group: Sequence[str] = ()) -> str:
    """Finished requests per second."""
    return s.sum_rate("claude_requests_total", group=group)


def request_error_percent(s: Scope, group: Sequence[str] = ()) -> str:
    """Percent of finished requests that failed."""
    return s.percent("claude_requests_total", 'outcome="error"', group=group)


def cost_per_hour(s: Scope, group: Sequence[str] = ()) -> str:
    """Estimated spend per hour, from the pricing table."""
    return f"3600 * {s.sum_rate('claude_cost_usd_total', group=group)}"


def by_source(s: Scope, series: str, *matchers: str) -> str:
    """A counter's rate split by where its agents' data comes from (``claude_agent_info``: sdk or
    claude_code). The join is within each exporter (job, instance), where every agent has one source."""
    keys = ("job", "instance", "agent")
    rate = s.sum_rate(series, *matchers, group=keys)
    info = s.sel("claude_agent_info")
    return f"sum by (source) ({rate} * on ({', '.join(keys)}) group_left (source) {info})"


def tokens_per_execution(s: Scope, group: Sequence[str] = (), window: str = RATE) -> str:
    """Tokens (input with cache, and output) per finished execution."""
    return s.per_execution("claude_execution_tokens_sum", group=group, window=window)


def tokens_by_type_panel(s: Scope) -> PanelBuilder:
    """Tokens per second by billing type, stacked."""
    return timeseries_panel(
        "Tokens/s by type",
        "short",
        "As the API bills them: input excludes the cache_creation and cache_read tokens.",
        [query(s.sum_rate("claude_tokens_total", group=("type",)), "{{type}}")],
        stack=True,
    )


def zero_filled(s: Scope, expr: str, group: Sequence[str]) -> str:
    """``expr``, with 0 for each ``group`` that made requests but has no such series (no failures yet...)."""
    return f"{expr} or {requests_per_second(s, group)} * 0"


# -- variables ---------------------------------------------------------------------------------------------


def datasource_variable() -> db.DatasourceVariable:
    """The Prometheus data source every panel and query goes through."""
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, label: str, query: str, *, multi: bool = True) -> db.QueryVariable:
    """A label-values variable; ``multi`` ones offer "All" (matching everything, ``.*``)."""
    variable = (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(multi)
    )
    return variable.all_value(ALL) if multi else variable


def target_variables() -> list[db.QueryVariable]:
    """``job`` and ``instance``: the scrape targets that run the exporter."""
    return [
        query_variable("job", "Job", "label_values(claude_exporter_build_info, job)"),
        query_variable(
            "instance", "Instance", 'label_values(claude_exporter_build_info{job=~"$job"}, instance)'
        ),
    ]


def agent_variable(*, multi: bool = True) -> db.QueryVariable:
    """The agents that made requests on the selected targets."""
    query = 'label_values(claude_requests_total{job=~"$job", instance=~"$instance"}, agent)'
    return query_variable("agent", "Agent", query, multi=multi)


def model_variable() -> db.QueryVariable:
    """The models the selected agents called."""
    query = 'label_values(claude_requests_total{job=~"$job", instance=~"$instance", agent=~"$agent"}, model)'
    return query_variable("model", "Model", query)


def window_variable(name: str, label: str, choices: Sequence[str], description: str) -> db.CustomVariable:
    """A range-window choice (the first of ``choices`` is the default), for baselines and projections."""
    first = choices[0]
    return (
        db.CustomVariable(name)
        .label(label)
        .description(description)
        .values(",".join(choices))
        .current(dm.VariableOption(text=first, value=first, selected=True))
        .options([dm.VariableOption(text=c, value=c, selected=c == first) for c in choices])
    )


def textbox_variable(name: str, label: str, default: str, description: str) -> db.TextBoxVariable:
    """A free-text value (a price, say) that queries use as a number."""
    return (
        db.TextBoxVariable(name)
        .label(label)
        .description(description)
        .default_value(default)
        .current(dm.VariableOption(text=default, value=default, selected=True))
    )


# -- dashboard -------------------------------------------------------------------------------------------


def alerts_annotation() -> db.AnnotationQuery:
    """Firing Claude alerts from Prometheus, drawn on every time series."""
    return (
        db.AnnotationQuery()
        .name("Claude alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(ALERTS)
        .target(db.AnnotationTarget().type("dashboard").limit(100))
    )


Variable = cogbuilder.Builder[dm.VariableModel]
PanelBuilder = cogbuilder.Builder[dm.Panel]
Section = tuple[str, Sequence[PanelBuilder]]


def new_dashboard(
    uid: str, title: str, description: str, variables: Sequence[Variable], sections: Sequence[Section]
) -> db.Dashboard:
    """A dashboard with the shared tag, links, alert annotations and time settings, its variables after
    ``datasource``, ``job`` and ``instance``, and its sections: a row heading then the row's panels."""
    builder = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            db.DashboardLink("Claude dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
        .annotation(alerts_annotation())
        .with_variable(datasource_variable())
    )
    for variable in [*target_variables(), *variables]:
        builder = builder.with_variable(variable)
    for title_, panels in sections:
        builder = builder.with_row(db.Row(title_).collapsed(False))
        for panel in panels:
            builder = builder.with_panel(panel)
    return builder


def agent_link() -> dict[str, object]:
    """A data link from an ``agent`` cell to the agent detail dashboard, keeping time and targets."""
    url = (
        f"/d/{UIDS['agent']}/claude-agent?${{__url_time_range}}&${{datasource:queryparam}}"
        "&${job:queryparam}&${instance:queryparam}&var-agent=${__value.raw}"
    )
    return {"title": "Agent detail", "url": url}


# -- queries and panels ------------------------------------------------------------------------------------


def query(
    expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False
) -> prometheus.Dataquery:
    """A Prometheus query through ``${datasource}``."""
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


class _Targeted(Protocol):
    def with_target(self: P, target: Any) -> P: ...


P = TypeVar("P", bound=_Targeted)


def _with_targets(panel: P, targets: Sequence[prometheus.Dataquery]) -> P:
    """Attach ``targets`` with refIds A, B, C ..."""
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def thresholds(*steps: tuple[str, float | None]) -> db.ThresholdsConfig:
    """Absolute thresholds from ``(color, from value)`` steps; the first step's value is None."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for c, v in steps])
    )


def neutral() -> db.ThresholdsConfig:
    """A single green step: no colouring by value."""
    return thresholds(("green", None))


def timeseries_panel(
    title: str,
    unit: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    *,
    stack: bool = False,
    width: int = 12,
    height: int = 8,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A time series panel; ``stack`` stacks the series (for parts of a whole)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(30 if stack else 10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(cm.TooltipDisplayMode.MULTI)
            .sort(cm.SortOrder.DESCENDING)
        )
        .stacking(
            common_builders.StackingConfig().mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE)
        )
    )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return _with_targets(panel, targets)


def stat_panel(
    title: str,
    unit: str,
    description: str,
    expr: str,
    *,
    steps: db.ThresholdsConfig | None = None,
    width: int = 3,
    height: int = 4,
    decimals: int | None = None,
) -> stat.Panel:
    """A single instant value, coloured by ``steps``."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .thresholds(steps or neutral())
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .text_mode(cm.BigValueTextMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return _with_targets(panel, [query(expr, instant=True)])


@dataclass(frozen=True)
class Column:
    """One value column of a table: its header, instant query, unit and optional colouring."""

    name: str
    expr: str
    unit: str
    steps: db.ThresholdsConfig | None = None
    decimals: int | None = None


def table_panel(
    title: str,
    description: str,
    group: Sequence[str],
    columns: Sequence[Column],
    *,
    width: int = 24,
    height: int = 8,
    sort_by: str | None = None,
) -> table.Panel:
    """One row per ``group`` value (joined from one instant query per column); agents link to their detail."""
    rename = {label: label.capitalize() for label in group}
    rename.update({f"Value #{chr(ord('A') + i)}": c.name for i, c in enumerate(columns)})
    order = {name: i for i, name in enumerate(rename)}  # by the frames' own field names
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit("short")
        .span(width)
        .height(height)
        .cell_height(cm.TableCellHeight.SM)
        .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]))
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "indexByName": order, "renameByName": rename},
            )
        )
    )
    if sort_by is not None:
        panel = panel.sort_by([common_builders.TableSortByFieldState().display_name(sort_by).desc(True)])
    if "agent" in group:
        panel = panel.override_by_name("Agent", [dm.DynamicConfigValue(id_val="links", value=[agent_link()])])
    for column in columns:
        props = [dm.DynamicConfigValue(id_val="unit", value=column.unit)]
        if column.decimals is not None:
            props.append(dm.DynamicConfigValue(id_val="decimals", value=column.decimals))
        if column.steps is not None:
            props.append(dm.DynamicConfigValue(id_val="thresholds", value=column.steps.build()))
            props.append(dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}))
        panel = panel.override_by_name(column.name, props)
    return _with_targets(panel, [query(c.expr, instant=True, table_format=True) for c in columns])


def heatmap_panel(
    title: str, unit: str, description: str, histogram_rate: str, *, width: int = 12, height: int = 8
) -> heatmap.Panel:
    """A heatmap of a histogram's bucket rates (``sum by (le) (rate(x_bucket))``), the y axis in ``unit``."""
    panel = (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit("ops")
        .span(width)
        .height(height)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .cell_values(heatmap.CellValues().unit("ops"))
        .color(heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME).scheme("Oranges"))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .show_legend()
    )
    target = query(histogram_rate, "{{le}}").format(pm.PromQueryFormat.HEATMAP)
    return _with_targets(panel, [target])


def bargauge_panel(
    title: str, unit: str, description: str, expr: str, legend: str, *, width: int = 12, height: int = 8
) -> bargauge.Panel:
    """Horizontal bars of an instant query, one per series, largest first."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(neutral())
        .min(0)
    )
    return _with_targets(panel, [query(f"sort_desc({expr})", legend, instant=True)])


# -- rendering -----------------------------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def render(dashboard: db.Dashboard) -> str:
    """Deterministic JSON: panel ids numbered in order, keys sorted, two-space indent, final newline."""
    data = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    for number, panel in enumerate(_panels(data["panels"]), start=1):
        panel["id"] = number
    return json.dumps(data, sort_keys=True, indent=2) + "\n"
