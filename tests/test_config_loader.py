"""The configuration's YAML loader against hostile files (issue 18, rows 12 and 13): tags a configuration
has no use for, numbers no configuration holds, and files under the size cap built to cost seconds and
hundreds of megabytes; each is one ConfigError naming the file, line, column and key path, refused while
reading. libyaml's parser and PyYAML's pure-Python one (the fallback) give the same answers."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from claude_exporter.config import ConfigError, load_config, parse_config
from claude_exporter.config.loader import (
    MAX_NUMBER_CHARS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    YAMLRefused,
    _PyLoader,
    parse_yaml,
)
from claude_exporter.config.schema import MAX_CONFIG_BYTES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
LOADERS = [pytest.param(None, id="libyaml"), pytest.param(_PyLoader, id="python")]
ONLY = "(only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map)"


def problem_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [problem] = info.value.problems
    return problem.removeprefix(str(path))


def rate(value: str) -> str:
    return f"monitoring:\n  a:\n    sampling_rate: {value}\n"


AT = ":3:20: monitoring.a.sampling_rate: "


def refused(tag: str) -> str:
    return AT + f'the tag "{tag}" is not accepted in a configuration {ONLY}'


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("!!bool maybe", AT + '"maybe" is not a boolean (tag !!bool)'),
        ("!!timestamp x", refused("!!timestamp")),
        ("!!int ''", AT + '"" is not an integer (tag !!int)'),
        ("!!float _", AT + '"_" is not a number (tag !!float)'),
        ("!!set [1]", refused("!!set")),
        ("9" * 400, AT + f"a number of 400 characters; a configuration's have {MAX_NUMBER_CHARS} at most"),
        (
            "-0." + "9" * 400,
            AT + f"a number of 403 characters; a configuration's have {MAX_NUMBER_CHARS} at most",
        ),
        ('!!binary "aGk="', refused("!!binary")),
        ("!!python/name:os.system x", refused("!!python/name:os.system")),
        ("!local 1", refused("!local")),
        ("!!omap [{a: 1}]", refused("!!omap")),
        ("!!str [1]", AT + "the tag !!str cannot mark a list"),
        ("!!map [1]", AT + "the tag !!map cannot mark a list"),
        ("!!seq {a: 1}", AT + "the tag !!seq cannot mark a mapping"),
        ("!!merge x", refused("!!merge")),
        ("0b_", AT + '"0b_" is not a number'),
        # Not octal in YAML 1.1: the string "0o8", a problem of validation.
        ("0o8", 'monitoring.a.sampling_rate: must be a number from 0 to 1, got "0o8"'),
        ("._", AT + '"._" is not a number'),
        ("!!int 0x", AT + '"0x" is not an integer (tag !!int)'),
    ],
)
def test_a_value_no_configuration_holds_is_one_line_naming_its_path(tmp_path, value, problem):
    assert problem_of(tmp_path, rate(value)).startswith(problem)


@pytest.mark.unit
def test_the_tag_is_quoted_so_a_line_break_in_it_stays_in_its_line(tmp_path):
    got = problem_of(tmp_path, rate("!<tag:x%0Ay> 1"))
    assert got == AT + f'the tag "tag:x\\ny" is not accepted in a configuration {ONLY}'


@pytest.mark.unit
def test_a_key_with_a_refused_tag_is_named_as_a_key(tmp_path):
    got = problem_of(tmp_path, "monitoring:\n  !!binary aGk=: {}\n")
    assert got == f':2:3: monitoring (a key): the tag "!!binary" is not accepted in a configuration {ONLY}'


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!float 1", 1.0),
        ("!!int 0x1F", 31),
        ("!!bool yes", True),
        ("!!null ''", None),
        ("!!str 12", "12"),
        ("1:30", "1:30"),  # base 60 in YAML 1.1; a string here, as in YAML 1.2
        ("2001-12-14", "2001-12-14"),  # a timestamp in YAML 1.1
        ("1_000", 1000),
        ("0o17", "0o17"),
        ("017", 15),
        ("-.inf", float("-inf")),
        ("off", False),
    ],
)
@pytest.mark.parametrize("loader", LOADERS)
def test_core_tags_and_plain_values_read_as_before(value, expected, loader):
    data, _ = parse_yaml(f"x: {value}\n".encode(), "c.yaml", loader=loader)
    assert data == {"x": expected}


LAST = MAX_YAML_NODES - 3


def flow_list() -> str:
    return "monitoring: [" + "1," * ((MAX_CONFIG_BYTES - 16) // 2) + "1]\n"


def block_list() -> str:
    return "monitoring:\n" + "- 1\n" * ((MAX_CONFIG_BYTES - 12) // 4)


def sexagesimal() -> str:
    return "monitoring:\n  a:\n    retention_days: 1" + ":5" * 200_000 + "\n"


def deep(levels: int) -> str:
    return "monitoring: " + "[" * levels + "]" * levels + "\n"


def block_deep(levels: int) -> str:
    return "monitoring:\n" + "".join(" " * i + "-\n" for i in range(1, levels))


COSTLY = [
    # The document, its key and the list are three values: the item LAST is one too many.
    (
        "flow-list",
        flow_list(),
        f":1:{14 + 2 * LAST}: monitoring[{LAST}]: the document holds over {MAX_YAML_NODES}",
    ),
    (
        "block-list",
        block_list(),
        f":{LAST + 2}:3: monitoring[{LAST}]: the document holds over {MAX_YAML_NODES}",
    ),
    ("sexagesimal", sexagesimal(), "monitoring.a.retention_days: must be an integer from 1 to 3650, got "),
    ("deep-flow", deep(70), f":1:{13 + MAX_YAML_DEPTH - 1}: monitoring[0][0]"),
    ("deep-block", block_deep(1000), f":{MAX_YAML_DEPTH + 1}:"),
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "problem", "loader"),
    [
        pytest.param(text, problem, loader, id=f"{name}-{'python' if loader else 'libyaml'}")
        for name, text, problem in COSTLY
        for loader in (None, _PyLoader)
        if not (loader and name.endswith("list"))  # the pure-Python parser takes seconds to reach the limit
    ],
)
def test_a_costly_file_under_the_size_cap_is_refused_where_the_limit_is_crossed(text, problem, loader):
    """Refused while reading: the problem names the value at the limit, so nothing past it was composed."""
    assert len(text.encode()) <= MAX_CONFIG_BYTES
    with pytest.raises((YAMLRefused, ConfigError)) as refused:
        data, _ = parse_yaml(text.encode(), "c.yaml", loader=loader)
        parse_config(data, "c.yaml")
    err = refused.value
    line = err.line("") if isinstance(err, YAMLRefused) else err.problems[0]
    assert line.startswith(problem), line


@pytest.mark.unit
def test_a_large_fleet_still_loads(tmp_path):
    """The value limit leaves room: 150 agents, each with eight configured alerts."""
    alerts = "".join(
        f"      - {{name: {name}, severity: high, for: 5m}}\n"
        for name in ("execution_timeout", "token_spike", "error_rate", "latency_drift", "rate_limited",
                     "code_execution_failures", "truncated_responses", "spend_limit")
    )  # fmt: skip
    text = "monitoring:\n" + "".join(
        f"  agent_{i}:\n    sampling_rate: 0.5\n    retention_days: 30\n    code_tools: [run_python]\n"
        + "    alerts:\n"
        + alerts
        for i in range(150)
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert len(cfg.agents) == 150 and cfg.agent("agent_149").alert("spend_limit").severity == "high"


@pytest.mark.unit
@pytest.mark.parametrize("loader", LOADERS)
def test_both_parsers_read_the_fleet_alike(loader):
    text = (ROOT / "tests" / "data" / "fleet.yaml").read_bytes()
    data, duplicates = parse_yaml(text, "fleet.yaml", loader=loader)
    assert duplicates == []
    assert data == yaml.safe_load(text)  # the same values as PyYAML's safe loader, merge keys included


# -- the class: any document with any tags -----------------------------------------------------------------

# Weighted to the tags PyYAML's safe loader has constructors for (those broke it: KeyError, IndexError,
# AttributeError, TypeError); a tag it has none for was already a YAML error.
_TAGS = st.sampled_from(
    ["", "", "", "", "!!str ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!seq ", "!!map ", "!!set ",
     "!!timestamp ", "!!binary ", "!!omap ", "!!pairs ", "!local ", "! ", "!<tag:yaml.org,2002:int> "]
)  # fmt: skip
_SCALARS = st.sampled_from(
    ["maybe", "''", "_", "._", "0b", "0x", "0o8", "1:2:3", "2001-13-45", "<<", "=", "~", "yes", ".inf",
     "-.nan", "1_0", "0.5", "7", "5m", "high", "9" * 70, '"a\\nb"', "[]", "{}", "aGk="]
)  # fmt: skip
_KEYS = st.sampled_from(["monitoring", "a", "sampling_rate", "alerts", "name", "<<", "exporter", "1"])


def _node(depth: int) -> st.SearchStrategy[str]:
    scalar = st.builds(lambda t, v: t + v, _TAGS, _SCALARS)
    if depth == 0:
        return scalar
    inner = _node(depth - 1)
    seq = st.builds(lambda t, items: t + "[" + ", ".join(items) + "]", _TAGS, st.lists(inner, max_size=3))
    pairs = st.lists(st.tuples(st.builds(lambda t, k: t + k, _TAGS, _KEYS), inner), max_size=3)
    mapping = st.builds(lambda t, ps: t + "{" + ", ".join(f"{k}: {v}" for k, v in ps) + "}", _TAGS, pairs)
    return scalar | seq | mapping


@pytest.mark.unit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.builds(lambda v: f"monitoring: {{a: {v}}}\n", _node(3)))
def test_any_document_with_any_tags_is_a_config_or_one_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tags") / "c.yaml"
    path.write_text(text)
    try:
        load_config(path)
    except ConfigError as err:
        assert err.problems and all(p and "\n" not in p for p in err.problems)
    with contextlib.suppress(yaml.YAMLError, YAMLRefused):  # the pure-Python parser: nothing else either
        parse_yaml(text.encode(), "c.yaml", loader=_PyLoader)


# -- the real command -----------------------------------------------------------------------------------


@pytest.mark.system
def test_serve_with_a_hostile_config_exits_2_with_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(rate("!!bool maybe"))
    done = subprocess.run(
        [sys.executable, "-m", "claude_exporter", "serve", "--port", "0", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"claude-exporter serve: {config}{AT}" + '"maybe" is not a boolean (tag !!bool)'
    ]
