"""The Grafana dashboards: in sync with their sources, valid against Grafana's schema, and following the
conventions (``${datasource}`` everywhere, job/instance filters, ``$__rate_interval``, units, contract
metrics only, shared tag, links and alert annotations). The queries themselves run in
test_dashboards_live.py, against a real Prometheus.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
GENERATOR = DASHBOARDS / "src" / "generate.py"
SCHEMA = DASHBOARDS / "schema" / "dashboard.schema.json"
GRAFANA = ROOT / "deploy" / "grafana"
FILES = {
    "claude-fleet.json": "claude-fleet",
    "claude-agent.json": "claude-agent",
    "claude-cost.json": "claude-cost",
}
TAG = "claude-exporter"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The contract's metric table (shared/CONTRACT.md): name -> labels, besides the target's job and instance.
AM = {"agent", "model"}
AT = {"agent", "task"}
CONTRACT: dict[str, set[str]] = {
    "claude_requests_total": AM | {"outcome"},
    "claude_request_duration_seconds": AM,
    "claude_time_to_first_token_seconds": AM,
    "claude_tokens_total": AM | {"type"},
    "claude_cost_usd_total": AM,
    "claude_cost_by_tier_usd_total": AM | {"tier"},  # proposed for the contract (issue 21)
    "claude_errors_total": AM | {"error_type", "error_code"},
    "claude_stop_reasons_total": AM | {"stop_reason"},
    "claude_code_blocks_executed_total": AM | {"tool", "outcome"},
    "claude_retries_total": AM | {"reason", "error_code"},
    "claude_rate_limited_total": AM | {"error_code"},
    "claude_ratelimit_limit": {"model", "resource"},
    "claude_ratelimit_remaining": {"model", "resource"},
    "claude_ratelimit_reset_timestamp_seconds": {"model", "resource"},
    "claude_requests_in_flight": {"agent"},
    "claude_executions_total": AT | {"outcome"},
    "claude_execution_duration_seconds": AT,
    "claude_execution_tokens": AT | {"type"},
    "claude_execution_requests": AT,
    "claude_executions_in_flight": AT,
    "claude_execution_longest_running_seconds": {"agent"},
    "claude_exporter_build_info": {"version", "anthropic_version"},
    "claude_exporter_label_overflow_total": {"label"},
    "claude_exporter_label_changes_total": {"label", "change"},
    "claude_exporter_unpriced_tokens_total": {"model", "reason"},
    "claude_exporter_internal_errors_total": {"stage"},
    "claude_exporter_events_total": {"source", "result"},
    "claude_cache_misses_total": AM | {"reason"},
    "claude_cache_missed_input_tokens_total": AM | {"reason"},
    "claude_refusals_total": AM | {"category"},
    "claude_cache_savings_usd_total": AM,
    # Proposed with the Claude Code receiver (issue 11): sources, and the Claude-Code-only families.
    "claude_agent_info": {"agent", "source"},
    "claude_code_sessions_total": {"agent"},
    "claude_code_tool_results_total": {"agent", "tool", "outcome"},
    "claude_code_tool_duration_seconds": {"agent", "tool"},
    "claude_code_lines_of_code_total": {"agent", "type"},
    "claude_code_commits_total": {"agent"},
    "claude_code_pull_requests_total": {"agent"},
    "claude_code_active_time_seconds_total": {"agent", "type"},
    "claude_code_edit_decisions_total": {"agent", "tool", "decision"},
    # Proposed with issue 19 (Claude Code's documented events); not in CONTRACT.md yet.
    "claude_code_tool_decisions_total": {"agent", "tool", "decision", "source"},
    "claude_code_compactions_total": {"agent", "trigger", "outcome"},
    "claude_code_internal_errors_total": {"agent"},
    "claude_code_retries_exhausted_total": {"agent"},
    "claude_code_retry_seconds_total": {"agent"},
}
HISTOGRAMS = {
    "claude_request_duration_seconds",
    "claude_time_to_first_token_seconds",
    "claude_execution_duration_seconds",
    "claude_execution_tokens",
    "claude_execution_requests",
}
TARGET_LABELS = {"job", "instance"}
# Recording rules of the bundled rules that dashboards may read (the adaptive bands), with their labels.
RECORDED = {
    rule["record"]
    for group in yaml.safe_load((ROOT / "alerting-rules" / "claude-exporter.rules.yml").read_text())["groups"]
    for rule in group["rules"]
    if "record" in rule
}
RECORDED_LABELS = {"agent", "signal", "band"}  # and job: the rules aggregate by (job, agent)
# ALERTS carries the alert's own labels; the dashboards only rely on these.
ALERT_LABELS = {"alertname", "alertstate", "agent", "severity"}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"\b([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"')
RANGE = re.compile(r"\[([^\]]*)\]")


# -- helpers (test_dashboards_live.py uses them too) -------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    """A committed dashboard."""
    return dict(json.loads((DASHBOARDS / name).read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    stack = list(dashboard.get("panels") or [])
    while stack:
        panel = stack.pop(0)
        yield panel
        stack.extend(panel.get("panels") or [])


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The template variables by name."""
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, expr)`` of every PromQL expression: panel targets and annotations."""
    for panel in panels(dashboard):
        for target in panel.get("targets") or []:
            yield f"panel {panel['id']} {panel['title']!r} query {target['refId']}", target["expr"]
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("expr"):
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def panel_query(dashboard: dict[str, Any], title: str, ref: str = "A") -> str:
    """The expression of query ``ref`` of the one panel titled ``title``."""
    (panel,) = [p for p in panels(dashboard) if p["title"] == title and p["type"] != "row"]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return str(target["expr"])


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(name, series selector)`` of every ``label_values(selector, label)`` variable."""
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"])
            assert match, f"{name}: {variable['query']}"
            selector = match.group(1)
            yield name, selector if "{" in selector else selector + "{}"


def family(series: str) -> str:
    """The contract family a series name belongs to (histogram suffixes removed)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and base in HISTOGRAMS:
            return base
    return series


def selectors(expr: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``(metric, {label: operator})`` of every ``metric{...}`` selector in ``expr``."""
    for match in SELECTOR.finditer(expr):
        yield match.group(1), {label: op for label, op in MATCHER.findall(match.group(2))}


def window_variables(dashboard: dict[str, Any]) -> set[str]:
    """The custom (window choice) variables, usable as ranges."""
    return {name for name, v in variables(dashboard).items() if v["type"] == "custom"}


# -- generation ------------------------------------------------------------------------------------------


@pytest.mark.system
def test_committed_dashboards_match_the_generator(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DASHBOARDS / name).read_bytes(), (
            f"dashboards/{name} is out of date: run python dashboards/src/generate.py"
        )


@pytest.mark.system
def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], check=True, capture_output=True)
    check = [sys.executable, str(GENERATOR), "--out", str(tmp_path), "--check"]
    ok = subprocess.run(check, capture_output=True, check=False)
    assert ok.returncode == 0
    (tmp_path / "claude-cost.json").write_text("{}\n")
    stale = subprocess.run(check, capture_output=True, text=True, check=False)
    assert stale.returncode == 1
    assert "claude-cost.json" in stale.stderr


@pytest.mark.unit
def test_output_is_deterministic_json() -> None:
    for name in FILES:
        text = (DASHBOARDS / name).read_text()
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# -- schema --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_dashboard_validates_against_grafana_schema(name: str, validator: jsonschema.Draft7Validator) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(load(name))]
    assert not errors, "\n".join(errors[:20])


@pytest.mark.unit
def test_schema_rejects_a_broken_dashboard(validator: jsonschema.Draft7Validator) -> None:
    broken = load("claude-fleet.json")
    broken["panels"][1]["gridPos"] = {"h": "tall", "w": 3}
    broken["templating"]["list"][0]["type"] = "nonsense"
    paths = {e.json_path for e in validator.iter_errors(broken)}
    assert any(p.startswith("$.panels[1]") for p in paths), paths
    assert any(p.startswith("$.templating.list[0]") for p in paths), paths


# -- conventions ---------------------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("name", "uid"), sorted(FILES.items()))
def test_stable_uid_shared_tag_links_and_alert_annotation(name: str, uid: str) -> None:
    dashboard = load(name)
    assert dashboard["uid"] == uid
    assert TAG in dashboard["tags"]
    assert dashboard.get("id") is None
    links = [link for link in dashboard["links"] if link["type"] == "dashboards"]
    assert links and all(link["tags"] == [TAG] and link["includeVars"] and link["keepTime"] for link in links)
    annotations = [a for a in dashboard["annotations"]["list"] if a.get("expr", "").startswith("ALERTS{")]
    assert len(annotations) == 1
    assert 'alertname=~"Claude.*"' in annotations[0]["expr"]
    assert annotations[0]["enable"] is True
    assert annotations[0]["datasource"] == DATASOURCE


@pytest.mark.unit
def test_the_three_dashboards_share_the_tag_they_link_by() -> None:
    tags = [set(load(name)["tags"]) for name in FILES]
    assert set.intersection(*tags) == {TAG}


def _datasource_refs(node: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from _datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasource_refs(value, f"{path}[{i}]")


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_every_datasource_reference_is_the_variable(name: str) -> None:
    dashboard = load(name)
    refs = list(_datasource_refs(dashboard))
    assert refs
    wrong = [(path, ref) for path, ref in refs if ref != DATASOURCE]
    assert not wrong, wrong
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
    source = variables(dashboard)["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_job_and_instance_variables(name: str) -> None:
    found = variables(load(name))
    assert found["job"]["query"] == "label_values(claude_exporter_build_info, job)"
    assert found["instance"]["query"] == 'label_values(claude_exporter_build_info{job=~"$job"}, instance)'
    for var in ("job", "instance"):
        assert found[var]["multi"] and found[var]["includeAll"], var
        assert found[var]["datasource"] == DATASOURCE


@pytest.mark.unit
def test_agent_dashboard_variables() -> None:
    found = variables(load("claude-agent.json"))
    assert found["agent"]["multi"] is False
    assert "agent" in found["agent"]["query"]
    assert found["model"]["multi"] is True
    assert 'agent=~"$agent"' in found["model"]["query"]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_every_panel_has_a_unit(name: str) -> None:
    for panel in panels(load(name)):
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"].get("unit"), panel["title"]
        if panel["type"] == "table":
            columns = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byName"]
            units = {
                o["matcher"]["options"] for o in columns if any(p["id"] == "unit" for p in o["properties"])
            }
            renamed = panel["transformations"][-1]["options"]["renameByName"]
            values = {v for k, v in renamed.items() if k.startswith("Value #")}
            assert values == units, panel["title"]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_every_metric_and_label_is_in_the_contract(name: str) -> None:
    dashboard = load(name)
    exprs = list(queries(dashboard)) + list(variable_queries(dashboard))
    for where, expr in exprs:
        bare = STRING.sub('""', expr)
        named = set(re.findall(r"(?<![\w:])(claude_\w+)", bare))
        found = list(selectors(expr))
        assert found, f"{where}: no selector in {expr}"
        for metric, matchers in found:
            if metric == "ALERTS":
                assert set(matchers) <= ALERT_LABELS, f"{where}: {matchers}"
                continue
            if ":" in metric:
                assert metric in RECORDED, f"{where}: {metric} is not recorded by the bundled rules"
                assert set(matchers) <= RECORDED_LABELS | TARGET_LABELS, f"{where}: {matchers}"
                continue
            base = family(metric)
            assert base in CONTRACT, f"{where}: {metric} is not a contract metric"
            allowed = CONTRACT[base] | TARGET_LABELS | ({"le"} if metric.endswith("_bucket") else set())
            assert set(matchers) <= allowed, f"{where}: {metric} has no label {set(matchers) - allowed}"
        assert named <= {m for m, _ in found}, f"{where}: a metric without a selector: {named}"


@pytest.mark.unit
def test_contract_copy_matches_the_exporter() -> None:
    from claude_exporter.families import FAMILIES

    assert {family.name: set(family.labels) for family in FAMILIES} == CONTRACT


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_every_selector_is_filtered_by_job_and_instance(name: str) -> None:
    for where, expr in queries(load(name)):
        for metric, matchers in selectors(expr):
            if metric in RECORDED:  # an agent across all its instances: no instance label to filter
                assert matchers.get("job") == "=~" and "instance" not in matchers, f"{where}: {metric}"
                assert 'job=~"$job"' in expr, where
            elif metric != "ALERTS":
                assert matchers.get("job") == "=~" and matchers.get("instance") == "=~", f"{where}: {metric}"
                assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, where


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_every_range_uses_the_rate_interval_or_a_window_variable(name: str) -> None:
    dashboard = load(name)
    allowed = {"$__rate_interval", "$__range"} | {f"${v}" for v in window_variables(dashboard)}
    ranges = 0
    for where, expr in queries(dashboard):
        for window in RANGE.findall(STRING.sub('""', expr)):
            ranges += 1
            assert window in allowed, f"{where}: [{window}] (use $__rate_interval)"
        assert not re.search(r"\b(rate|increase|irate)\((?![^()]*\[)", expr), f"{where}: rate without a range"
    assert ranges


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(FILES))
def test_panels_have_unique_ids_and_titles_and_descriptions(name: str) -> None:
    found = list(panels(load(name)))
    ids = [p["id"] for p in found]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in found if p["type"] != "row"]
    assert len(titles) == len(set(titles))
    for panel in found:
        assert panel["title"]
        if panel["type"] != "row":
            assert panel.get("description"), panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]


# -- provisioning ------------------------------------------------------------------------------------------


@pytest.mark.unit
def test_provisioned_datasource() -> None:
    config = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://127.0.0.1:9090"


@pytest.mark.unit
def test_provisioned_dashboards_provider_loads_the_dashboards_folder() -> None:
    config = yaml.safe_load((GRAFANA / "dashboards" / "claude.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    path = Path(provider["options"]["path"])
    assert path.is_absolute()
    assert path.name == DASHBOARDS.name == "dashboards"
    assert all((DASHBOARDS / name).is_file() for name in FILES)
