"""Settings reach what they govern: a label cap folds models into ``__overflow__`` yet each is priced by its
own price, per-agent ``metrics`` lists pick families, ``retention_days`` reaches the local Prometheus, and
root logging at INFO does not turn the event log on."""

from __future__ import annotations

import logging
from pathlib import Path

import claude_exporter as ce
import pytest
from claude_exporter.cli.localstack import LocalStack
from claude_exporter.config import parse_config
from claude_exporter.exposition import eventlog
from claude_exporter.recording.pricing import load_price_table
from claude_exporter.testing import Reply
from conftest import has, is_close, kw, requests, val
from prometheus_client import CollectorRegistry

OPUS, HAIKU = "claude-opus-4-6", "claude-haiku-4-5"


def _caps(**caps: int):
    return parse_config({"exporter": {"label_caps": caps}, "monitoring": {}})


# Once `model` folds into __overflow__, each later model is priced as the one it names.
@pytest.mark.integration
def test_overflowed_models_are_priced_each_by_its_own_price(fresh, fake_anthropic):
    registry = CollectorRegistry()
    ce.instrument(_caps(model=1), registry=registry)
    client = fake_anthropic.client(max_retries=0)
    fake_anthropic.script(
        Reply(input_tokens=1, output_tokens=1),
        Reply(input_tokens=1_000_000, output_tokens=0),
        Reply(input_tokens=500, output_tokens=0),
    )
    client.messages.create(**kw(OPUS))  # takes the one model slot
    client.messages.create(**kw(HAIKU))  # folded
    client.messages.create(**kw("claude-made-up-9"))  # folded, and not in the price table
    haiku = load_price_table().lookup(HAIKU)
    assert haiku is not None
    cost = val(registry, "claude_cost_usd_total", agent="default", model="__overflow__")
    assert is_close(cost, haiku.input)  # 1M haiku input tokens, not opus's price
    assert val(registry, "claude_exporter_unpriced_tokens_total", model="__overflow__", reason="model") == 500


# `metrics:` enables families per agent.
@pytest.mark.integration
def test_metrics_list_enables_families_per_agent(fresh, fake_anthropic):
    config = parse_config(
        {
            "monitoring": {
                "seedlike": {"metrics": ["execution_duration_ms"]},  # seed names only: extensions stay on
                "curated": {"metrics": ["execution_duration_ms", "stop_reasons"]},  # an extension: exact list
                "full": {},
            }
        }
    )
    registry = CollectorRegistry()
    ce.instrument(config, registry=registry)
    client = fake_anthropic.client(max_retries=0)
    model = kw()["model"]
    for agent in ("seedlike", "curated", "full"):
        with ce.execution("t", agent=agent):
            client.messages.create(**kw())
        assert requests(registry, agent=agent) == (1, 0)  # always on
        assert has(registry, "claude_request_duration_seconds_count", agent=agent, model=model)
    assert has(registry, "claude_tokens_total", agent="full", model=model, type="input")
    for agent in ("seedlike", "curated"):
        assert not has(registry, "claude_tokens_total", agent=agent, model=model, type="input")
        assert not has(registry, "claude_execution_tokens_count", agent=agent, task="t", type="input")
    assert has(registry, "claude_cost_usd_total", agent="seedlike", model=model)
    assert not has(registry, "claude_cost_usd_total", agent="curated", model=model)
    assert has(registry, "claude_stop_reasons_total", agent="curated", model=model, stop_reason="end_turn")


# `retention_days` reaches the Prometheus the project starts.
@pytest.mark.unit
def test_retention_days_reaches_the_local_prometheus(tmp_path: Path):
    config = parse_config({"monitoring": {"a": {"retention_days": 30}, "b": {"retention_days": 90}}})
    argv = LocalStack(config, "127.0.0.1:1", tmp_path, print).prometheus_argv(9090)
    assert "--storage.tsdb.retention.time=90d" in argv


# The event log costs nothing per request unless asked for (a config file or a handler of its own).
@pytest.mark.integration
def test_root_logging_at_info_does_not_turn_the_event_log_on(instrumented, fake_anthropic, monkeypatch):
    built: list[object] = []
    real = eventlog.event_fields
    monkeypatch.setattr(
        eventlog, "event_fields", lambda record, now=None: built.append(record) or real(record)
    )
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # what logging.basicConfig(level=INFO) does
    try:
        client = fake_anthropic.client(max_retries=0)
        client.messages.create(**kw())
        assert built == []
        own = logging.NullHandler()
        events = logging.getLogger(eventlog.LOGGER_NAME)
        events.addHandler(own)  # asking for it explicitly
        try:
            client.messages.create(**kw())
        finally:
            events.removeHandler(own)
        assert len(built) == 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
