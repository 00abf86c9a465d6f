"""The configuration loader against hostile files (issue 9, section 6): every failure a ConfigError naming
its path, quickly and in bounded memory; every accepted value within its documented range."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from claude_exporter.config import ALERT_DEFAULTS, ConfigError, load_config, parse_config
from claude_exporter.config.loader import MAX_NUMBER_CHARS, MAX_YAML_DEPTH, MAX_YAML_NODES
from claude_exporter.config.schema import LIMITS, MAX_CONFIG_BYTES, limits_table, render
from claude_exporter.rules import render_rules
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent


def problems_of(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    return info.value.problems


def bomb(levels: int) -> str:
    """The billion-laughs pattern: each level nine aliases of the one before."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        prev = f"*l{i - 1}"
        lines.append(f"l{i}: &l{i} [{','.join([prev] * 9)}]")
    lines.append(f"monitoring: *l{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.unit
def test_a_small_alias_bomb_is_refused_before_it_is_expanded(tmp_path):
    text = bomb(6)  # half a million strings; the loader used to build and print them
    assert len(text) < 400
    [problem] = problems_of(tmp_path, text)
    assert problem == (
        f"{tmp_path / 'c.yaml'}: the document expands to over {MAX_YAML_NODES} values through its aliases"
    )


@pytest.mark.unit
def test_the_538_byte_bomb_is_refused_too(tmp_path):
    text = bomb(10)  # 3.5 billion strings: MemoryError before
    [problem] = problems_of(tmp_path, text)
    assert "expands to over" in problem


@pytest.mark.unit
def test_a_value_that_contains_itself_is_refused(tmp_path):
    [problem] = problems_of(tmp_path, "monitoring: &a {x: *a}\n")
    assert problem == f"{tmp_path / 'c.yaml'}:1:13: monitoring.x: an alias refers to a value that contains it"


@pytest.mark.unit
def test_aliases_and_merge_keys_within_the_limit_still_work():
    cfg = load_config(ROOT / "tests" / "data" / "fleet.yaml")
    assert cfg.agent("nightly_report").retention_days == 90


@pytest.mark.unit
@pytest.mark.parametrize("depth", [70, 1000, 100_000])
def test_deep_nesting_is_a_config_error(tmp_path, depth):
    [problem] = problems_of(tmp_path, "monitoring: " + "[" * depth + "]" * depth + "\n")
    # Ours at 65 levels; libyaml's scanner, reading ahead, may stop a deeper one first at its own 1000.
    assert problem.endswith(f"the document is nested over {MAX_YAML_DEPTH} levels deep") or problem.endswith(
        "exceeded maximum nesting depth"
    )


@pytest.mark.unit
def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    [problem] = problems_of(tmp_path, b"#" * (MAX_CONFIG_BYTES + 1))
    assert problem.endswith(f"over {MAX_CONFIG_BYTES} bytes, too large for a configuration")


@pytest.mark.unit
def test_an_integer_over_the_conversion_limit(tmp_path):
    [problem] = problems_of(tmp_path, "monitoring:\n  a:\n    retention_days: " + "9" * 5000 + "\n")
    assert problem == (
        f"{tmp_path / 'c.yaml'}:3:21: monitoring.a.retention_days: "
        f"a number of 5000 characters; a configuration's have {MAX_NUMBER_CHARS} at most"
    )


@pytest.mark.unit
def test_a_sexagesimal_number_is_a_string(tmp_path):
    # YAML 1.1 reads 1:59:59 as base 60 (a short line made an integer no error message could print, and
    # a long one took a minute to convert); YAML 1.2 and this loader read a string.
    [problem] = problems_of(tmp_path, "monitoring:\n  a:\n    retention_days: 1" + ":59" * 3000 + "\n")
    text = "1" + ":59" * 3000
    assert problem == f"monitoring.a.retention_days: must be an integer from 1 to 3650, got {render(text)}"


AT = "monitoring.a"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (
            {"alerts": [{"name": "execution_timeout", "threshold_ms": 5e-324}]},
            f"{AT}.alerts[0].threshold_ms: must be a number from 1 to 86400000, got 5e-324",
        ),
        (
            {"alerts": [{"name": "token_spike", "for": "99999999999999999999999y"}]},
            f'{AT}.alerts[0].for: must be a duration like "30s", "5m" or "1h", from 0s to 1y, '
            'got "99999999999999999999999y"',
        ),
        (
            {"alerts": [{"name": "token_spike", "min_executions": 10**400}]},
            f"{AT}.alerts[0].min_executions: must be an integer from 0 to 1000000000, "
            "got an integer of 401 digits",
        ),
        (
            {"alerts": [{"name": "error_rate", "severity": "high\nsummary: pwned"}]},
            f"{AT}.alerts[0].severity: must not contain control characters or line breaks, "
            'got "high\\nsummary: pwned"',
        ),
        ({"sampling_rate": float("nan")}, f"{AT}.sampling_rate: must be a number from 0 to 1, got NaN"),
        (
            {"code_tools": ["run\u2028python"]},
            f'{AT}.code_tools[0]: must not contain control characters or line breaks, got "run\u2028python"',
        ),
    ],
    ids=[
        "tiny-threshold",
        "endless-for",
        "400-digit-minimum",
        "severity-newline",
        "nan-rate",
        "tool-line-separator",
    ],
)
def test_values_that_broke_something_later_are_refused_now(block, problem):
    with pytest.raises(ConfigError) as info:
        parse_config({"monitoring": {"a": block}})
    assert info.value.problems == [problem]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("exporter", "problem"),
    [
        (
            {"pricing_overrides": {"m": {"input": 1e308, "output": 1}}},
            "exporter.pricing_overrides.m.input: must be a number from 0 to 1000000, got 1e+308",
        ),
        (
            {"health": {"window_seconds": 1e308}},
            "exporter.health.window_seconds: must be a number from 1 to 86400, got 1e+308",
        ),
        (
            {"label_caps": {"agent": 10**30}},
            "exporter.label_caps.agent: must be an integer from 1 to 100000, got " + str(10**30),
        ),
        ({"default_agent": "x" * 129}, "exporter.default_agent: must be at most 128 characters, got 129"),
        (
            {"rules": {"job": "a\tb"}},
            'exporter.rules.job: must not contain control characters or line breaks, got "a\\tb"',
        ),
    ],
    ids=["price", "health-window", "label-cap", "default-agent-long", "job-tab"],
)
def test_exporter_values_out_of_range(exporter, problem):
    with pytest.raises(ConfigError) as info:
        parse_config({"monitoring": {}, "exporter": exporter})
    assert info.value.problems == [problem]


@pytest.mark.unit
@pytest.mark.parametrize("name", ["a\nb", "tab\there", "x" * 129, "nul\x00", "\x7f"])
def test_agent_names_must_be_label_safe(name):
    with pytest.raises(ConfigError) as info:
        parse_config({"monitoring": {name: None}})
    [problem] = info.value.problems
    assert problem.startswith("monitoring") and ": is not a usable agent name: it must" in problem


@pytest.mark.unit
def test_the_limits_table_in_the_docs_is_the_schema_s():
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    start, end = (
        "<!-- limits:start (generated from LIMITS; a test keeps it in step) -->\n",
        "<!-- limits:end -->",
    )
    assert start in doc and end in doc
    assert doc.split(start, 1)[1].split(end, 1)[0] == limits_table()


@pytest.mark.unit
def test_every_limit_is_enforced_at_its_edges():
    """Each numeric key: its bounds accepted, just past them refused (the table is the truth)."""
    for key, limit in LIMITS.items():
        if limit.kind not in ("number", "integer") or not key.startswith("monitoring.AGENT.alerts[]."):
            continue
        field = key.rsplit(".", 1)[1]
        name = next(alert for alert, table in ALERT_DEFAULTS.items() if field in table)

        def parse(value: Any, name: str = name, field: str = field) -> Any:
            return parse_config({"monitoring": {"a": {"alerts": [{"name": name, field: value}]}}})

        high = int(limit.high) if limit.kind == "integer" else limit.high
        parse(high)
        with pytest.raises(ConfigError):
            parse(high + 1 if limit.kind == "integer" else high * 1.01)
        if not limit.low_open:
            parse(int(limit.low) if limit.kind == "integer" else limit.low)
        with pytest.raises(ConfigError):
            parse(limit.low if limit.low_open else limit.low - 1)


# -- routing: any severity a config may hold reaches a receiver ------------------------------------------


def route(severity: str) -> str:
    done = subprocess.run(
        [
            "amtool",
            "config",
            "routes",
            "test",
            "--config.file=deploy/alertmanager.yml",
            f"severity={severity}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.system
def test_severities_route_as_documented():
    assert [route(s) for s in ("critical", "high", "page")] == ["page"] * 3
    assert [route(s) for s in ("medium", "warning", "low", "info", "ticket")] == ["ticket"] * 5


@pytest.mark.system
@settings(max_examples=5, deadline=None)
@given(
    st.text(
        st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='"\\,{}='),
        min_size=1,
        max_size=20,
    )
)
def test_any_accepted_severity_reaches_a_receiver(severity):
    cfg = parse_config({"monitoring": {"a": {"alerts": [{"name": "error_rate", "severity": severity}]}}})
    assert cfg.agent("a").alert("error_rate").severity == severity
    assert route(severity) in ("page", "ticket")


# -- the class: any document, any value ------------------------------------------------------------------

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["5m", "0s", "99999999999999y", "1h30m", "high", "run_python"]),
)
_keys = st.sampled_from(
    [
        "metrics",
        "alerts",
        "sampling_rate",
        "retention_days",
        "code_tools",
        "name",
        "threshold_ms",
        "for",
        "window",
        "baseline_window",
        "severity",
        "enabled",
        "min_executions",
        "threshold_percent",
        "execution_timeout",
        "token_spike",
        "error_rate",
        "server",
        "port",
        "label_caps",
        "agent",
        "pricing_overrides",
        "input",
        "output",
        "health",
        "window_seconds",
        "rules",
        "job",
        "default_agent",
    ]
)
_tree = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(_keys | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_docs = st.fixed_dictionaries(
    {"monitoring": st.dictionaries(st.text(max_size=6), _tree, max_size=2)}, optional={"exporter": _tree}
)


@pytest.mark.unit
@settings(max_examples=80, deadline=None)
@given(_docs)
def test_any_document_is_a_config_or_a_config_error_and_rules_render(doc):
    try:
        cfg = parse_config(doc)
    except ConfigError as err:
        assert err.problems and all(re.match(r"^[^\n]+: ", p) for p in err.problems)
        return
    text = render_rules(cfg)
    assert yaml.safe_load(text)["groups"]


@pytest.mark.unit
@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_are_a_config_or_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as err:
        assert err.problems and err.source == str(path)
