"""Adaptive bands: each agent's normal learned from its own history, and the alerts that judge against it.

Five signals per agent, each over a short window (``window``, 10m): average execution time, tokens per
execution, the share of failed requests, the spend rate and requests per execution (agent-loop turns).
A window with fewer than ``min_executions`` executions is not recorded: sparse windows are too noisy to
learn from or to judge. Three levels of recording rules: the signals in one group at the rules' interval,
statistics and edges in a second group every 2 minutes (in order, so the edges read fresh statistics):

1. ``agent:claude_anomaly_signal:rate<window>{signal}``: the signal.
2. ``agent:claude_anomaly_signal:mean`` and ``:stddev`` ``{signal, band}``, the signal's mean and standard
   deviation over ``baseline_window`` ending an hour ago (``band="recent"``, only once ``min_history`` of
   windows were recorded), and, with ``seasonality``, over the hour around the same time yesterday
   (``band="daily"``) and last week (``band="weekly"``) where that history exists.
3. ``agent:claude_anomaly_signal:upper{signal, band}`` and ``:lower``: mean plus or minus ``sensitivity``
   standard deviations, at least ``floor_percent`` of the mean (and a signal's absolute floor) wide. The
   alerts judge against the highest upper edge (their ``band`` label says whose): a value is unusual only
   if it is above the last day's normal and above what was normal at this hour yesterday and last week,
   so a daily peak or a Monday morning is not an anomaly. The lower edge is the recent band's, for
   dashboards. One series per band, so no series changes its labels (a backfill has no staleness).

Alerts fire on upward excursions only (a drop in latency, tokens, errors or spend is no incident):
ClaudeLatencyDrift and ClaudeTokenSpike when their signal is above the upper edge and more than
``threshold_change_percent`` above its normal (the recent mean), ClaudeAnomaly likewise for the error
share, the spend rate and the turns, ClaudeSlowCreep when a signal's average over ``window`` (6h) is more
than ``threshold_change_percent`` above the same hours last week, which a creep cannot drag along.
"""

from __future__ import annotations

from dataclasses import dataclass

from claude_exporter.config import AgentConfig, AlertConfig
from claude_exporter.rules.recording import (
    BY,
    agent_matcher,
    duration,
    families,
    label_matcher,
    seconds,
    selector,
)

__all__ = [
    "BANDS",
    "BAND_INTERVAL",
    "CREEP_SIGNALS",
    "GAP",
    "LOWER",
    "SIGNALS",
    "SIGNAL_RECORD",
    "UPPER",
    "Signal",
    "band_rules",
    "creep_rule",
    "excursion_rule",
    "signal_record",
]

SIGNAL_RECORD = "agent:claude_anomaly_signal"
MEAN, STDDEV = f"{SIGNAL_RECORD}:mean", f"{SIGNAL_RECORD}:stddev"
UPPER, LOWER = f"{SIGNAL_RECORD}:upper", f"{SIGNAL_RECORD}:lower"
# The recent band ends this long before now (a quarter of a shorter baseline_window), so a change does not
# widen its own band while it is judged.
GAP = 3600.0
# How often the band statistics are evaluated (their own group): under the 5m lookback, so readers in other
# groups always find a sample, however the groups' evaluations interleave.
BAND_INTERVAL = 120.0
# Seasonal bands: the hour around the same time a day / a week ago.
SEASON_WINDOW = 3600.0
BANDS = {"daily": 86400.0, "weekly": 7 * 86400.0}
ON = f"on ({BY}, signal)"


@dataclass(frozen=True)
class Signal:
    """One judged signal: its recording family (a value over a window), the alert whose settings shape
    its band, what people call it, and the least band half-width in its unit."""

    name: str
    family: str
    owner: str
    what: str
    floor: float = 0.0


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("execution_duration", "duration_avg", "latency_drift", "average execution time"),
        Signal("tokens_per_execution", "tokens_avg", "token_spike", "tokens per execution"),
        # A single failure among a few requests is several percent: 2 points keep that from alerting.
        Signal("error_ratio", "request_errors", "anomaly", "the share of failed requests", 2.0),
        Signal("cost_rate", "cost", "anomaly", "the spend rate"),
        Signal("requests_per_execution", "requests_avg", "anomaly", "requests per execution"),
    )
}
# Per-execution signals: a traffic change moves the spend rate week over week, it does not move these.
CREEP_SIGNALS = ("execution_duration", "tokens_per_execution", "requests_per_execution")

Rule = dict[str, object]


def _num(x: float | str) -> str:
    return f"{float(x):g}"


def _owner(settings: AgentConfig, signal: Signal) -> AlertConfig:
    return settings.alert(signal.owner)


def signal_record(settings: AgentConfig, signal: Signal) -> str:
    """The level-1 record name of ``signal`` for an agent with ``settings`` (it carries the window)."""
    return f"{SIGNAL_RECORD}:rate{duration(_owner(settings, signal).params['window'])}"


def _sel(matcher: str, signal: Signal, band: str | None = None) -> str:
    return selector(
        matcher, label_matcher("signal", "=", signal.name), label_matcher("band", "=", band) if band else ""
    )


def _count(interval: float, span: float) -> str:
    """Evaluations (of the signal's group) in ``span``, at least one."""
    return _num(max(1, int(span // interval)))


def band_rules(
    job: str,
    agent: str | None,
    named: tuple[str, ...],
    settings: AgentConfig,
    signal: Signal,
    interval: float,
    *,
    bands: bool,
) -> list[Rule]:
    """The recording rules of one signal for one agent (or the defaults): the signal, and with ``bands``
    its mean and standard deviation per band, and the band's edges."""
    a = _owner(settings, signal)
    matcher = agent_matcher(agent, named)
    scope = ", ".join(m for m in (job, matcher) if m)
    w = seconds(a.params["window"])
    rng = f"[{duration(w)}]"
    fam = families[signal.family]
    volume = families["executions"].expr(scope, rng)
    name = signal_record(settings, signal)
    # Static labels equal to the series' own: rules of one name then differ in labels, as promtool asks.
    static = {"signal": signal.name, **({"agent": agent} if agent is not None else {})}
    rules: list[Rule] = [
        {
            "record": name,
            "expr": f"(\n{fam.expr(scope, rng)}\n)\nand on ({BY})\n{volume} * {_num(w)} >= "
            f"{_num(a.params['min_executions'])}",
            "labels": dict(static),
        }
    ]
    if not bands:
        return rules
    src = name + _sel(matcher, signal)
    seasons = [b for b in BANDS if b in str(a.params["seasonality"])]
    # Per band: the range the statistics cover, and how many of its windows must have been recorded.
    baseline = seconds(a.params["baseline_window"])
    recent = f"[{duration(baseline)}] offset {duration(min(GAP, baseline / 4))}"
    history = min(seconds(a.params["min_history"]), baseline)
    ranges = {"recent": (recent, _count(interval, history))}
    for band in seasons:
        seasonal = f"[{duration(SEASON_WINDOW)}] offset {duration(BANDS[band] - SEASON_WINDOW / 2)}"
        ranges[band] = (seasonal, _count(interval, SEASON_WINDOW / 2))
    for stat, fn in ((MEAN, "avg_over_time"), (STDDEV, "stddev_over_time")):
        parts = [
            f"label_replace(\n  {fn}({src}{rng_})\n  and {ON}\n  count_over_time({src}{rng_}) >= {n},\n"
            f'  "band", "{band}", "", ""\n)'
            for band, (rng_, n) in ranges.items()
        ]
        rules.append({"record": stat, "expr": "\nor\n".join(parts), "labels": dict(static)})
    k = _num(a.params["sensitivity"])
    floor_share = float(a.params["floor_percent"]) / 100

    def edge(band: str, op: str) -> str:
        mean = MEAN + _sel(matcher, signal, band)
        least = f"{_num(floor_share)} * {mean}" + (f" + {_num(signal.floor)}" if signal.floor else "")
        return f"{mean}\n{op} ({k} * {STDDEV}{_sel(matcher, signal, band)} > {least}\nor\n{least})"

    upper = "\nor\n".join(f"(\n{edge(band, '+')}\n)" for band in ranges)
    rules.append({"record": UPPER, "expr": upper, "labels": dict(static)})
    rules.append(
        {"record": LOWER, "expr": f"clamp_min(\n{edge('recent', '-')}\n, 0)", "labels": dict(static)}
    )
    return rules


def excursion_rule(matcher: str, settings: AgentConfig, signals: list[Signal], threshold: float) -> str:
    """The expression of a band alert: each signal above its upper edge and more than ``threshold``
    percent above its normal; the value is that percentage, the ``band`` label the binding band."""
    parts = []
    for signal in signals:
        sel = _sel(matcher, signal)
        parts.append(
            f"(\n  (\n    {signal_record(settings, signal)}{sel}\n    > {ON} group_left (band)\n"
            f"    topk by ({BY}, signal) (1, {UPPER}{sel})\n  )\n"
            f"  / {ON} group_left\n  {MEAN}{_sel(matcher, signal, 'recent')}\n"
            f"  - 1\n) * 100 > {_num(threshold)}"
        )
    return "\nor\n".join(parts)


def creep_rule(matcher: str, settings: AgentConfig, signal: Signal, a: AlertConfig, interval: float) -> str:
    """A signal's average over ``window`` against the same hours a week before."""
    w = seconds(a.params["window"])
    src = signal_record(settings, signal) + _sel(matcher, signal)
    now, before = f"[{duration(w)}]", f"[{duration(w)}] offset 1w"
    half = _count(interval, w / 2)
    return (
        f"(\n  avg_over_time({src}{now})\n  / {ON}\n  avg_over_time({src}{before})\n  - 1\n) * 100 > "
        f"{_num(a.threshold if a.threshold is not None else 15)}\n"
        f"and {ON} count_over_time({src}{now}) >= {half}\n"
        f"and {ON} count_over_time({src}{before}) >= {half}"
    )
