"""docs/claude-exporter.yaml, the example configuration the README points at: check-config accepts it, it
names every section and key the schema has, and what it calls the defaults are the defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from claude_exporter import cli
from claude_exporter.config import _AGENT_KEYS, ALERT_DEFAULTS, default_config, load_config
from claude_exporter.config.exporter import (
    _EXPORTER_KEYS,
    EventLogConfig,
    LabelCaps,
    OtlpConfig,
    ServerConfig,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "claude-exporter.yaml"
RELATIVE = EXAMPLE.relative_to(ROOT).as_posix()
FULL_AGENT = "claude_code_executor"  # the agent that spells out every key with its default
# The exporter's sections that are dataclasses, by their key: every field with a default is shown.
SECTIONS = {"server": ServerConfig, "label_caps": LabelCaps, "event_log": EventLogConfig, "otlp": OtlpConfig}


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    loaded = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_check_config_accepts_it(capsys):
    assert cli.main(["check-config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{EXAMPLE}: valid")


def test_the_readme_configuration_section_points_at_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    assert f"claude-exporter check-config {RELATIVE}" in section


def test_every_section_of_the_schema_is_in_it(data):
    assert set(data["exporter"]) == set(_EXPORTER_KEYS)
    agent = data["monitoring"][FULL_AGENT]
    assert set(agent) == set(_AGENT_KEYS)
    for name, cls in SECTIONS.items():
        shown = set(data["exporter"][name])
        # A None default (no token file, OTLP "on for serve") may be a comment: YAML null is not always valid.
        wanted = {f.name for f in dataclasses.fields(cls) if f.default is not None}
        assert wanted <= shown <= {f.name for f in dataclasses.fields(cls)}, name
    alerts = {entry["name"]: entry for entry in agent["alerts"]}
    assert list(alerts) == list(ALERT_DEFAULTS)  # every alert, in the schema's order
    for name, defaults in ALERT_DEFAULTS.items():
        wanted = {key for key, value in defaults.items() if value is not None}
        assert wanted <= set(alerts[name]) - {"name"} <= set(defaults), name


def test_what_it_shows_as_defaults_are_the_defaults():
    example, default = load_config(EXAMPLE), default_config()
    for field in dataclasses.fields(example):
        if field.name not in ("agents", "defaults", "source"):
            assert getattr(example, field.name) == getattr(default, field.name), field.name
    assert dataclasses.replace(example.agents[FULL_AGENT], name=default.defaults.name) == default.defaults
