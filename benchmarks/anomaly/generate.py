"""A labelled fleet: simulated claude-exporter scrapes in OpenMetrics, with injected incidents.

Five agents run executions as a Poisson process whose rate follows a daily rhythm (quiet nights, a busy
afternoon) and a weekend dip, with day-to-day variation. Each execution draws its duration, tokens and
agent-loop turns (requests) from log-normal and Poisson distributions; some fail. The counters and
histograms the exporter would expose are "scraped" every minute into the contract's families:
``claude_execution_duration_seconds``, ``claude_execution_tokens``, ``claude_execution_requests``
(histograms), ``claude_executions_total``, ``claude_requests_total``, ``claude_cost_usd_total`` and
``claude_retries_total``. Histograms carry a reduced bucket set (the execution-timeout bound and ``+Inf``)
to keep the files small; no rule under test reads other buckets.

Incidents are injected on top and written to ``incidents.json`` with their kind, agent, start and end:
a latency step, a 5%-per-day latency creep, a token blow-up, an error burst, a retry storm (the agent loop
re-asking: three times the turns, mostly small requests), and a quiet night (traffic at a tenth) that is
normal and must not alert.

The output is one OpenMetrics file per 2-hour block (``om/<start>.om``): ``promtool tsdb
create-blocks-from openmetrics`` in Prometheus 2.42 re-reads its whole input once per 2-hour block, so
one file per block keeps the backfill linear.

    python benchmarks/anomaly/generate.py --out DIR [--short]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Agent", "Incident", "Plan", "full_plan", "generate", "short_plan"]

STEP = 60  # seconds between scrapes
BLOCK = 7200  # Prometheus' 2-hour block
DAY = 86400
JOB = "claude-exporter"
MODEL = "claude-sonnet-4-6"
PRICE_IN, PRICE_OUT = 3e-6, 15e-6  # USD per token
TIMEOUT_LE = "30.0"  # the default execution_timeout bucket, as prometheus_client writes it


@dataclass(frozen=True)
class Agent:
    """One agent's normal: executions per minute at the daily peak, medians and spreads."""

    name: str
    peak_per_minute: float
    duration_s: float
    tokens_in: float
    tokens_out: float
    turns: float  # mean requests per execution
    error_ratio: float  # share of executions that fail
    night: float = 0.12  # night traffic against the peak
    weekend: float = 0.35  # Saturday and Sunday traffic against a weekday
    sigma: float = 0.45  # log-normal spread of durations and tokens


@dataclass(frozen=True)
class Incident:
    """An injected change; ``kind`` quiet_night is normal behaviour, every other kind must be caught.

    ``detect_from`` is when the incident becomes detectable: its start, or for a creep the moment it
    reaches ``magnitude`` (``creep_per_day`` compounding from ``start``)."""

    kind: str
    agent: str
    start: int
    end: int
    magnitude: float
    detect_from: int


@dataclass
class Plan:
    start: int  # first scrape (Unix seconds, 2h-aligned)
    history_days: int  # normal behaviour before the evaluated days (rules learn from it)
    days: int  # evaluated days
    agents: tuple[Agent, ...]
    incidents: list[Incident] = field(default_factory=list)
    seed: int = 13

    @property
    def evaluated_from(self) -> int:
        return self.start + self.history_days * DAY

    @property
    def end(self) -> int:
        return self.evaluated_from + self.days * DAY


AGENTS = (
    Agent("support-bot", 6.0, 6.0, 3000, 500, 2.0, 0.01),
    Agent("code-executor", 3.0, 14.0, 12000, 2000, 6.0, 0.02),
    Agent("report-writer", 1.5, 9.0, 20000, 4000, 3.0, 0.01),
    Agent("triage", 4.0, 3.0, 1500, 200, 1.5, 0.005),
    Agent("batch-summarizer", 2.0, 8.0, 8000, 800, 2.5, 0.01, night=0.6, weekend=1.0),  # batch: every day
)


def _ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def _incident(kind: str, agent: str, start: str, hours: float, magnitude: float) -> Incident:
    s = _ts(start)
    return Incident(kind, agent, s, s + round(hours * 3600), magnitude, s)


def _creep(agent: str, start: str, until: str, per_day: float, detect_at: float) -> Incident:
    """A compounding creep; detectable once it reaches ``detect_at`` (e.g. 1.2 for +20%)."""
    s = _ts(start)
    reach = s + round(math.log(detect_at) / math.log(1 + per_day) * DAY)
    return Incident("creep", agent, s, _ts(until), per_day, reach)


def full_plan() -> Plan:
    """A week of history (Mon 2026-11-09 on), then the labelled week (Mon 2026-11-16 to Mon 2026-11-23)."""
    quiet = [_incident("quiet_night", a.name, "2026-11-21T00:00", 6, 0.1) for a in AGENTS]
    return Plan(
        start=_ts("2026-11-09T00:00"),
        history_days=7,
        days=7,
        agents=AGENTS,
        incidents=[
            _incident("retry_storm", "batch-summarizer", "2026-11-16T14:00", 1, 3.0),
            _incident("latency_step", "code-executor", "2026-11-17T10:00", 3, 1.8),
            _incident("error_burst", "triage", "2026-11-17T19:30", 0.75, 0.25),
            _creep("support-bot", "2026-11-18T00:00", "2026-11-23T00:00", 0.05, 1.2),
            _incident("token_blowup", "report-writer", "2026-11-19T15:00", 1, 3.5),
            _incident("retry_storm", "triage", "2026-11-19T17:00", 1, 3.0),
            _incident("error_burst", "code-executor", "2026-11-20T11:00", 0.75, 0.25),
            _incident("latency_step", "triage", "2026-11-20T16:00", 2, 1.8),
            _incident("token_blowup", "batch-summarizer", "2026-11-22T03:00", 1, 3.5),
            *quiet,
        ],
    )


def short_plan() -> Plan:
    """One day of history, one labelled day (no creep: it needs a week of history to be judged)."""
    quiet = [_incident("quiet_night", a.name, "2026-11-17T00:00", 6, 0.1) for a in AGENTS]
    return Plan(
        start=_ts("2026-11-16T00:00"),
        history_days=1,
        days=1,
        agents=AGENTS,
        incidents=[
            _incident("latency_step", "code-executor", "2026-11-17T09:00", 2, 1.8),
            _incident("token_blowup", "report-writer", "2026-11-17T12:00", 1, 3.5),
            _incident("retry_storm", "batch-summarizer", "2026-11-17T15:00", 1, 3.0),
            _incident("error_burst", "triage", "2026-11-17T18:00", 0.75, 0.25),
            *quiet,
        ],
    )


def _load(agent: Agent, t: int, day_level: float) -> float:
    """Executions per minute at ``t``: the daily rhythm (peak 14:00 UTC), the weekend dip, the day's level."""
    hour = (t % DAY) / 3600
    shape = math.exp(-(((hour - 14) / 4.5) ** 2))
    rate = agent.peak_per_minute * (agent.night + (1 - agent.night) * shape) * day_level
    weekday = datetime.fromtimestamp(t, timezone.utc).weekday()
    return rate * (agent.weekend if weekday >= 5 else 1.0)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class _Counters:
    """One agent's cumulative series, as the exporter would expose them."""

    dur_le: float = 0.0
    dur_count: float = 0.0
    dur_sum: float = 0.0
    tok_count: float = 0.0
    tok_in: float = 0.0
    tok_out: float = 0.0
    req_hist_sum: float = 0.0
    exec_ok: float = 0.0
    exec_err: float = 0.0
    req_ok: float = 0.0
    req_err: float = 0.0
    cost: float = 0.0
    retries: float = 0.0


def _active(incidents: list[Incident], agent: str, t: int) -> dict[str, Incident]:
    return {i.kind: i for i in incidents if i.agent == agent and i.start <= t < i.end}


def _minute(
    agent: Agent, c: _Counters, t: int, day_level: float, incidents: list[Incident], rng: random.Random
) -> None:
    """Executions finishing in the minute before the scrape at ``t``."""
    active = _active(incidents, agent.name, t)
    lam = _load(agent, t, day_level)
    if "quiet_night" in active:
        lam *= active["quiet_night"].magnitude
    slow = 1.0 + 0.1 * (lam / agent.peak_per_minute)  # the API a little slower under load
    turns, tokens_x, err = agent.turns, 1.0, agent.error_ratio
    req_err = agent.error_ratio / 2
    if "latency_step" in active:
        slow *= active["latency_step"].magnitude
    if "creep" in active:
        slow *= (1 + active["creep"].magnitude) ** ((t - active["creep"].start) / DAY)
    if "token_blowup" in active:
        tokens_x = active["token_blowup"].magnitude
    if "error_burst" in active:
        err = active["error_burst"].magnitude
        req_err = err / 2
    storm = "retry_storm" in active
    if storm:
        turns *= active["retry_storm"].magnitude
        tokens_x, slow = 1.3, slow * 1.3
    for _ in range(_poisson(rng, lam)):
        d = agent.duration_s * slow * rng.lognormvariate(0, agent.sigma)
        t_in = round(agent.tokens_in * tokens_x * rng.lognormvariate(0, agent.sigma))
        t_out = round(agent.tokens_out * tokens_x * rng.lognormvariate(0, agent.sigma))
        k = 1 + _poisson(rng, turns - 1)
        failed = rng.random() < err
        c.dur_count += 1
        c.dur_sum += d
        c.dur_le += d <= float(TIMEOUT_LE)
        c.tok_count += 1
        c.tok_in += t_in
        c.tok_out += t_out
        c.req_hist_sum += k
        c.exec_err += failed
        c.exec_ok += not failed
        bad = sum(rng.random() < req_err for _ in range(k))
        c.req_err += bad
        c.req_ok += k - bad
        c.cost += t_in * PRICE_IN + t_out * PRICE_OUT
        c.retries += _poisson(rng, k * (0.5 if storm else 0.02))


def _series(agent: Agent, c: _Counters) -> Iterator[tuple[str, str, str, float]]:
    """``(family, type, sample line without value, value)`` of every series of ``agent``."""
    base = f'job="{JOB}",instance="{agent.name}:9466",agent="{agent.name}"'
    task = base + ',task="run"'
    model = base + f',model="{MODEL}"'
    dur = "claude_execution_duration_seconds"
    yield dur, "histogram", f'{dur}_bucket{{{task},le="{TIMEOUT_LE}"}}', c.dur_le
    yield dur, "histogram", f'{dur}_bucket{{{task},le="+Inf"}}', c.dur_count
    yield dur, "histogram", f"{dur}_count{{{task}}}", c.dur_count
    yield dur, "histogram", f"{dur}_sum{{{task}}}", c.dur_sum
    tok = "claude_execution_tokens"
    for kind, total in (("input", c.tok_in), ("output", c.tok_out)):
        labels = f'{task},type="{kind}"'
        yield tok, "histogram", f'{tok}_bucket{{{labels},le="+Inf"}}', c.tok_count
        yield tok, "histogram", f"{tok}_count{{{labels}}}", c.tok_count
        yield tok, "histogram", f"{tok}_sum{{{labels}}}", total
    req = "claude_execution_requests"
    yield req, "histogram", f'{req}_bucket{{{task},le="+Inf"}}', c.dur_count
    yield req, "histogram", f"{req}_count{{{task}}}", c.dur_count
    yield req, "histogram", f"{req}_sum{{{task}}}", c.req_hist_sum
    yield "claude_executions", "counter", f'claude_executions_total{{{task},outcome="success"}}', c.exec_ok
    yield "claude_executions", "counter", f'claude_executions_total{{{task},outcome="error"}}', c.exec_err
    yield "claude_requests", "counter", f'claude_requests_total{{{model},outcome="success"}}', c.req_ok
    yield "claude_requests", "counter", f'claude_requests_total{{{model},outcome="error"}}', c.req_err
    yield "claude_cost_usd", "counter", f"claude_cost_usd_total{{{model}}}", c.cost
    yield "claude_retries", "counter", f'claude_retries_total{{{model},reason="429"}}', c.retries


def _write_block(path: Path, rows: dict[str, tuple[str, list[str]]]) -> None:
    lines: list[str] = []
    for family in sorted(rows):
        kind, samples = rows[family]
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(samples)
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n")


def generate(plan: Plan, out: Path) -> list[Path]:
    """Writes ``out/om/*.om`` (one per 2-hour block) and ``out/incidents.json``; returns the .om files."""
    om = out / "om"
    om.mkdir(parents=True, exist_ok=True)
    rng = random.Random(plan.seed)
    counters = {a.name: _Counters() for a in plan.agents}
    days = plan.history_days + plan.days
    levels = {(a.name, d): rng.lognormvariate(0, 0.08) for a in plan.agents for d in range(days)}
    files = []
    for block in range(plan.start, plan.end, BLOCK):
        # Per series, its samples in time order: series-major keeps each series' appends in order.
        per_series: dict[str, tuple[str, str, list[str]]] = {}
        for t in range(block, block + BLOCK, STEP):
            for agent in plan.agents:
                day_level = levels[(agent.name, (t - plan.start) // DAY)]
                _minute(agent, counters[agent.name], t, day_level, plan.incidents, rng)
                for family, kind, line, value in _series(agent, counters[agent.name]):
                    entry = per_series.setdefault(line, (family, kind, []))
                    entry[2].append(f"{line} {value:.12g} {t}")
        rows: dict[str, tuple[str, list[str]]] = {}
        for family, kind, samples in per_series.values():
            rows.setdefault(family, (kind, []))[1].extend(samples)
        path = om / f"{block}.om"
        _write_block(path, rows)
        files.append(path)
    meta = {
        "start": plan.start,
        "evaluated_from": plan.evaluated_from,
        "end": plan.end,
        "step": STEP,
        "agents": [asdict(a) for a in plan.agents],
        "incidents": [asdict(i) for i in plan.incidents],
    }
    (out / "incidents.json").write_text(json.dumps(meta, indent=2) + "\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--short", action="store_true", help="one day of history and one labelled day")
    args = parser.parse_args()
    files = generate(short_plan() if args.short else full_plan(), args.out)
    print(f"wrote {len(files)} OpenMetrics files and incidents.json under {args.out}")


if __name__ == "__main__":
    main()
