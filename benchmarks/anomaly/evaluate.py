"""Old rules against new rules on the labelled fleet week, in a real Prometheus.

1. ``generate.py`` writes the week (OpenMetrics) and its incidents; ``promtool tsdb create-blocks-from
   openmetrics`` backfills it into a TSDB under a temporary directory.
2. For each rule set, a copy of that TSDB gets the set's recording rules backfilled with ``promtool tsdb
   create-blocks-from rules`` against a Prometheus serving the copy, one pass per dependency level (a rule
   reading another recording rule needs that one's samples first), Prometheus restarted between passes
   so it loads the new blocks.
3. Each alert's expression runs as a range query at the rule's evaluation interval over the labelled
   days; ``for:`` is applied as Prometheus applies it (pending from the first evaluation that returns the
   series, firing once it has been returned continuously for ``for``).
4. Each firing episode (one alert, one label set, firing without a gap) is matched to the incidents of
   its agent: it is a true alert when it overlaps an incident (grace: 30 minutes after the end), else a
   false alert. Alerts during the quiet night count as false. Time to detect is from the incident's start
   (for a creep, from when it reaches +20%) to the first firing evaluation.

Old rules: ``baseline.rules.yml`` (the bundled rules before issue 13, default config). New rules: the
generator's output for the default config. Both evaluated every minute. ClaudeExecutionTimeout (an
absolute limit, the same rule in both sets) and ClaudeExporterDown (``up`` is not in backfilled data) are
not anomaly detectors and are left out.

    python benchmarks/anomaly/evaluate.py [--short] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import Plan, full_plan, generate, short_plan  # noqa: E402

__all__ = ["Episode", "Result", "evaluate", "firing_episodes", "main", "score"]

BASELINE_RULES = HERE / "baseline.rules.yml"
EXCLUDED = ("ClaudeExecutionTimeout", "ClaudeExporterDown")
GRACE = 1800  # an alert this long after an incident's end still belongs to it
INTERVAL = "1m"


def _seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhdw])", text))


def new_rules_text() -> str:
    """The generator's rules for the default configuration, evaluated every minute."""
    from claude_exporter.config import parse_config
    from claude_exporter.rules import render_rules

    config = parse_config({"monitoring": {}, "exporter": {"rules": {"evaluation_interval": INTERVAL}}})
    return render_rules(config)


# --- Prometheus ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus serving ``data`` (no scraping, no rules) on a free loopback port."""

    def __init__(self, data: Path, work: Path) -> None:
        self.data, self.work = data, work
        self.config = work / "prometheus.yml"
        self.config.write_text("global: {scrape_interval: 1m}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = (self.work / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=100y",
                # Backfilled blocks stay as they are: compacting them would only burn the shared CPU.
                "--storage.tsdb.max-block-duration=2h",
                "--query.max-samples=200000000",
                "--query.timeout=10m",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"Prometheus did not start; see {self.work / 'prometheus.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def range_query(self, expr: str, start: int, end: int, step: int) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{params}", timeout=900) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(
                f"query failed ({e.code}): {e.read().decode(errors='replace')}\n{expr}"
            ) from None
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        return list(body["data"]["result"])


def _run(*args: str) -> None:
    out = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def backfill_series(plan: Plan, work: Path) -> Path:
    """Generate the week and backfill it; returns the TSDB directory."""
    files = generate(plan, work)
    tsdb = work / "tsdb"
    tsdb.mkdir()
    for f in files:
        _run("promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(f), str(tsdb))
        f.unlink()
    return tsdb


def _levels(rules: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Recording rules by dependency level: level n reads only raw series and levels below n."""
    names = {r["record"] for r in rules}
    level: dict[str, int] = {}

    def of(rule: dict[str, Any]) -> int:
        name = rule["record"]
        if name not in level:
            level[name] = 0  # cycles cannot happen in valid rules; this only guards the recursion
            deps = [n for n in names if n != name and _refers(rule["expr"], n)]
            level[name] = 1 + max((of(by_name[d][0]) for d in deps), default=-1)
        return level[name]

    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rules:
        by_name.setdefault(r["record"], []).append(r)
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rules:
        out.setdefault(of(r), []).append(r)
    return [out[k] for k in sorted(out)]


def _refers(expr: str, name: str) -> bool:
    return re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr) is not None


def _needed(groups: list[dict[str, Any]]) -> set[str]:
    """Record names the evaluated alerts read, directly or through other recording rules."""
    exprs = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") and r["alert"] not in EXCLUDED]
    records: dict[str, list[str]] = {r["record"]: [] for g in groups for r in g["rules"] if "record" in r}
    for g in groups:
        for r in g["rules"]:
            if "record" in r:
                records[r["record"]].append(r["expr"])
    needed: set[str] = set()
    while exprs:
        expr = exprs.pop()
        for name, bodies in records.items():
            if name not in needed and _refers(expr, name):
                needed.add(name)
                exprs.extend(bodies)
    return needed


def backfill_rules(rules_text: str, tsdb: Path, work: Path, plan: Plan) -> Prometheus:
    """Backfill the recording rules the evaluated alerts read into ``tsdb``, level by level; returns
    Prometheus serving the result (the rules only dashboards read are skipped: they cost time)."""
    groups = yaml.safe_load(rules_text)["groups"]
    needed = _needed(groups)
    recording: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (g, r) for g in groups for r in g["rules"] if r.get("record") in needed
    ]
    prom = Prometheus(tsdb, work)
    prom.start()
    by_id = {id(r): g for g, r in recording}
    for n, level in enumerate(_levels([r for _, r in recording])):
        file = work / f"level{n}.rules.yml"
        per_group: dict[str, dict[str, Any]] = {}
        for rule in level:
            g = by_id[id(rule)]
            entry = {"name": g["name"], "interval": g.get("interval", INTERVAL), "rules": []}
            per_group.setdefault(g["name"], entry)["rules"].append(rule)
        file.write_text(yaml.safe_dump({"groups": list(per_group.values())}, sort_keys=False))
        out = work / f"level{n}-blocks"
        _run(
            "promtool", "tsdb", "create-blocks-from", "rules", "-q",
            f"--url={prom.url}", f"--start={plan.start}", f"--end={plan.end}",
            f"--output-dir={out}", str(file),
        )  # fmt: skip
        prom.stop()
        for block in out.iterdir():
            if block.is_dir():
                shutil.move(str(block), tsdb / block.name)
        prom.start()
    return prom


# --- alerts ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    alert: str
    labels: tuple[tuple[str, str], ...]
    start: int  # first firing evaluation
    end: int  # last firing evaluation

    @property
    def agent(self) -> str:
        return dict(self.labels).get("agent", "")


def firing_episodes(alert: str, series: list[dict[str, Any]], for_s: int, step: int) -> Iterator[Episode]:
    """Firing runs of each series of a range query of the alert's expression, ``for`` applied."""
    for s in series:
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__"))
        times = [int(float(t)) for t, _ in s["values"]]
        active_at = prev = None
        firing_from = last_firing = None
        for t in times:
            if prev is None or t - prev > step:  # a missed evaluation resets pending and firing
                if firing_from is not None and last_firing is not None:
                    yield Episode(alert, labels, firing_from, last_firing)
                active_at, firing_from, last_firing = t, None, None
            prev = t
            if t - active_at >= for_s:
                if firing_from is None:
                    firing_from = t
                last_firing = t
        if firing_from is not None and last_firing is not None:
            yield Episode(alert, labels, firing_from, last_firing)


def run_alerts(prom: Prometheus, rules_text: str, plan: Plan) -> list[Episode]:
    episodes = []
    step = _seconds(INTERVAL)
    for group in yaml.safe_load(rules_text)["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule or rule["alert"] in EXCLUDED:
                continue
            for_s = _seconds(rule.get("for", "0s"))
            # Start early by `for`, so an alert pending when the labelled days begin is judged right.
            series = prom.range_query(rule["expr"], plan.evaluated_from - for_s, plan.end, step)
            static = {k: str(v) for k, v in (rule.get("labels") or {}).items()}
            for s in series:
                s["metric"] = {**s["metric"], **static}
            episodes += [
                e for e in firing_episodes(rule["alert"], series, for_s, step) if e.end >= plan.evaluated_from
            ]
    return episodes


# --- scoring --------------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    episodes: list[Episode]
    true_alerts: int = 0
    false_alerts: int = 0
    quiet_night_alerts: int = 0
    detected: dict[str, list[float | None]] = field(default_factory=dict)  # kind -> minutes to detect
    false_by_alert: dict[str, int] = field(default_factory=dict)
    false_episodes: list[Episode] = field(default_factory=list)
    false_per_agent_week: float = 0.0

    @property
    def precision(self) -> float:
        total = self.true_alerts + self.false_alerts
        return self.true_alerts / total if total else 1.0

    @property
    def recall(self) -> float:
        found = [m for ms in self.detected.values() for m in ms]
        return sum(m is not None for m in found) / len(found) if found else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "quiet_night_alerts": self.quiet_night_alerts,
            "false_per_agent_week": self.false_per_agent_week,
            "false_by_alert": self.false_by_alert,
            "minutes_to_detect": self.detected,
            "false_episodes": [
                {"alert": e.alert, "labels": dict(e.labels), "start": _iso(e.start), "end": _iso(e.end)}
                for e in self.false_episodes
            ],
        }


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(t))


def score(name: str, episodes: list[Episode], plan: Plan) -> Result:
    result = Result(name, episodes)
    incidents = [i for i in plan.incidents if i.kind != "quiet_night"]
    quiet = [i for i in plan.incidents if i.kind == "quiet_night"]
    first: dict[int, int] = {}
    for e in episodes:
        hits = [
            n for n, i in enumerate(incidents)
            if i.agent == e.agent and e.start <= i.end + GRACE and e.end >= i.start
        ]  # fmt: skip
        if hits:
            result.true_alerts += 1
            for n in hits:
                first[n] = min(first.get(n, e.start), max(e.start, incidents[n].start))
            continue
        result.false_alerts += 1
        result.false_episodes.append(e)
        result.false_by_alert[e.alert] = result.false_by_alert.get(e.alert, 0) + 1
        if any(q.agent == e.agent and e.start <= q.end and e.end >= q.start for q in quiet):
            result.quiet_night_alerts += 1
    for n, i in enumerate(incidents):
        minutes = None if n not in first else (first[n] - i.detect_from) / 60
        result.detected.setdefault(i.kind, []).append(minutes)
    weeks = plan.days / 7
    result.false_per_agent_week = result.false_alerts / len(plan.agents) / weeks
    return result


def evaluate(plan: Plan, work: Path, *, log: bool = True) -> dict[str, Result]:
    def say(text: str) -> None:
        if log:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    say("generating and backfilling the series")
    base = backfill_series(plan, work)
    results = {}
    for name, text in (("old", BASELINE_RULES.read_text()), ("new", new_rules_text())):
        set_dir = work / name
        set_dir.mkdir()
        tsdb = set_dir / "tsdb"
        shutil.copytree(base, tsdb, copy_function=os.link)  # blocks are immutable: hard links suffice
        say(f"{name} rules: backfilling recording rules")
        prom = backfill_rules(text, tsdb, set_dir, plan)
        try:
            say(f"{name} rules: evaluating alerts")
            results[name] = score(name, run_alerts(prom, text, plan), plan)
        finally:
            prom.stop()
    return results


def _fmt_minutes(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    caught = f"{len(found)}/{len(values)}"
    if not found:
        return f"{caught}, -"
    return f"{caught}, {statistics.median(found):.0f} min (max {max(found):.0f})"


def table(results: dict[str, Result]) -> str:
    """The comparison as a Markdown table."""
    kinds = sorted({k for r in results.values() for k in r.detected})
    names = list(results)
    rows = [
        "| | " + " | ".join(f"{n} rules" for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| precision | " + " | ".join(f"{results[n].precision:.2f}" for n in names) + " |",
        "| recall | " + " | ".join(f"{results[n].recall:.2f}" for n in names) + " |",
        "| true / false alerts | "
        + " | ".join(f"{results[n].true_alerts} / {results[n].false_alerts}" for n in names)
        + " |",
        "| false alerts per agent per week | "
        + " | ".join(f"{results[n].false_per_agent_week:.2f}" for n in names)
        + " |",
        "| alerts in the quiet night | "
        + " | ".join(str(results[n].quiet_night_alerts) for n in names)
        + " |",
    ]
    for kind in kinds:
        rows.append(
            f"| {kind}: caught, median time to detect | "
            + " | ".join(_fmt_minutes(results[n].detected.get(kind, [])) for n in names)
            + " |"
        )
    rows.append(
        "| false alerts by alert | "
        + " | ".join(
            ", ".join(f"{a} {c}" for a, c in sorted(results[n].false_by_alert.items())) or "-" for n in names
        )
        + " |"
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="one labelled day after one day of history")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--keep", type=Path, help="work in this directory and keep it (default: a temporary one)"
    )
    args = parser.parse_args()
    plan = short_plan() if args.short else full_plan()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        results = evaluate(plan, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="anomaly-bench-") as tmp:
            results = evaluate(plan, Path(tmp))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({n: r.as_dict() for n, r in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
