"""Cardinality caps: per-label caps (agent, task, model, and the open-ended labels) and per-family
combination caps, with every fold counted in claude_exporter_label_overflow_total."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import claude_exporter as ce
import httpx2
import pytest
from claude_exporter.config import parse_config
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from claude_exporter.testing._replies import message_body
from conftest import MODEL, USER, executions, label_values, requests, val
from prometheus_client import CollectorRegistry

OVERFLOW = "__overflow__"


def overflow(reg, label: str) -> float:
    return val(reg, "claude_exporter_label_overflow_total", label=label)


def total_requests(reg) -> float:
    return sum(
        sample.value
        for family in reg.collect()
        if family.name == "claude_requests"
        for sample in family.samples
        if sample.name == "claude_requests_total"
    )


@contextmanager
def capped(**caps: int) -> Iterator[CollectorRegistry]:
    """Instrumented with these label caps (config ``exporter.label_caps``), always undone."""
    config = parse_config({"monitoring": {}, "exporter": {"label_caps": caps}})
    registry = CollectorRegistry()
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    try:
        ce.instrument(config, registry=registry)
        yield registry
    finally:
        ce.uninstrument()


def in_process_client():
    """The real SDK over an in-process transport that answers every request like the fake does.

    Only for the 10,000-request bomb: over loopback HTTP it takes 12-14 s alone (a TCP connection per
    request), which would blow the suite's time budget, and the cap logic under test never sees the
    transport. Every other cardinality test below runs over real HTTP.
    """
    body = json.dumps(message_body(Reply(), model=MODEL, msg_id="msg_bomb")).encode()

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    transport = httpx2.MockTransport(answer)
    return anthropic.Anthropic(
        api_key="test-key",
        base_url="http://fake.invalid",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )


@pytest.mark.unit
def test_agent_name_bomb_stays_within_the_default_cap(reg):
    n, cap = 10_000, 200
    client = in_process_client()
    for i in range(n):
        with ce.execution("bomb", agent=f"agent-{i:05d}"):
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)

    agents = label_values(reg, "agent")
    for family, values in agents.items():
        assert len(values) <= cap + 1, family
    assert agents["claude_requests"] == {f"agent-{i:05d}" for i in range(cap)} | {OVERFLOW}
    # Nothing is lost: every request is counted, the folded ones under __overflow__.
    assert total_requests(reg) == n
    assert requests(reg, agent=OVERFLOW) == (n - cap, 0)
    assert executions(reg, OVERFLOW, "bomb") == (n - cap, 0)
    assert executions(reg, "agent-00000", "bomb") == (1, 0)
    # Every folded request and every folded execution is counted, once each.
    assert overflow(reg, "agent") == 2 * (n - cap)


@pytest.mark.integration
def test_agent_cap(fake_anthropic):
    with capped(agent=3) as reg:
        client = fake_anthropic.client(max_retries=0)
        for i in range(6):
            with ce.execution("t", agent=f"a{i}"):
                client.messages.create(model=MODEL, max_tokens=8, messages=USER)
        assert label_values(reg, "agent")["claude_requests"] == {"a0", "a1", "a2", OVERFLOW}
        assert label_values(reg, "agent")["claude_executions"] == {"a0", "a1", "a2", OVERFLOW}
        assert requests(reg, agent=OVERFLOW) == (3, 0)
        assert executions(reg, OVERFLOW, "t") == (3, 0)
        assert requests(reg, agent="a2") == (1, 0)
        # Admitted names keep their own series afterwards.
        with ce.execution("t", agent="a1"):
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)
        assert requests(reg, agent="a1") == (2, 0)
        assert total_requests(reg) == 7


@pytest.mark.integration
def test_folded_agent_counts_each_request_and_each_execution(fake_anthropic):
    # The overflow counter counts observations recorded under a folded value (labels.py): each request
    # and each execution whose agent was folded counts once.
    with capped(agent=1) as reg:
        client = fake_anthropic.client(max_retries=0)
        with ce.execution("t", agent="kept"):
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)
        for name in ("x", "y", "z"):
            with ce.execution("t", agent=name):
                client.messages.create(model=MODEL, max_tokens=8, messages=USER)
        with ce.execution("t", agent="w"):
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)
        assert requests(reg, agent=OVERFLOW) == (5, 0)
        assert overflow(reg, "agent") == 5 + 4  # five requests, four executions


@pytest.mark.integration
def test_model_cap(fake_anthropic):
    with capped(model=2) as reg:
        client = fake_anthropic.client(max_retries=0)
        models = ["m0", "m1", "m2", "m3", "m4", "m3", "m0"]
        for model in models:
            client.messages.create(model=model, max_tokens=8, messages=USER)
        assert label_values(reg, "model")["claude_requests"] == {"m0", "m1", OVERFLOW}
        assert requests(reg, model="m0") == (2, 0)
        assert requests(reg, model=OVERFLOW) == (4, 0)
        assert overflow(reg, "model") == 4  # m2, m3, m4, m3: each folded request
        assert total_requests(reg) == len(models)
        # The unpriced-tokens counter is labelled by the folded model too.
        assert label_values(reg, "model")["claude_exporter_unpriced_tokens"] == {"m0", "m1", OVERFLOW}


@pytest.mark.integration
def test_task_cap(fake_anthropic):
    with capped(task=2) as reg:
        for i in range(5):
            with ce.execution(f"task-{i}", agent="one"):
                pass
        assert label_values(reg, "task")["claude_executions"] == {"task-0", "task-1", OVERFLOW}
        assert executions(reg, "one", OVERFLOW) == (3, 0)
        assert overflow(reg, "task") == 3


@pytest.mark.integration
def test_request_series_combination_cap(fake_anthropic):
    with capped(combinations=4) as reg:
        client = fake_anthropic.client(max_retries=0)
        models = ["m0", "m1", "m2", "m3", "m4", "m5", "m4"]
        for model in models:
            client.messages.create(model=model, max_tokens=8, messages=USER)
        for model in ("m0", "m1", "m2", "m3"):
            assert requests(reg, model=model) == (1, 0)
        # Past the budget a new combination is recorded with its capped labels set to __overflow__.
        assert requests(reg, agent=OVERFLOW, model=OVERFLOW) == (3, 0)
        assert overflow(reg, "claude_requests_total") == 3
        assert total_requests(reg) == len(models)


@pytest.mark.integration
def test_stop_reason_combination_cap(fake_anthropic):
    with capped(combinations=4) as reg:
        reasons = [f"reason_{i}" for i in range(6)]
        fake_anthropic.script(*(Reply(stop_reason=r) for r in reasons))
        client = fake_anthropic.client(max_retries=0)
        for _ in reasons:
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)

        def stops(agent, model, reason):
            return val(reg, "claude_stop_reasons_total", agent=agent, model=model, stop_reason=reason)

        for reason in reasons[:4]:
            assert stops("default", MODEL, reason) == 1
        for reason in reasons[4:]:
            assert stops("default", MODEL, reason) == 0
            assert stops(OVERFLOW, OVERFLOW, reason) == 1
        assert overflow(reg, "claude_stop_reasons_total") == 2
        assert requests(reg) == (6, 0)
        # The series that holds the overflow shows no request totals of its own.
        assert requests(reg, agent=OVERFLOW, model=OVERFLOW) == (0, 0)
        assert total_requests(reg) == 6


@pytest.mark.integration
def test_open_label_cap_on_stop_reasons(reg, fake_anthropic):
    # Unknown stop reasons pass through the SDK: the label is bounded (64 values by default).
    reasons = [f"novel_reason_{i:02d}" for i in range(70)]
    fake_anthropic.script(*(Reply(stop_reason=r) for r in reasons))
    client = fake_anthropic.client(max_retries=0)
    for _ in reasons:
        client.messages.create(model=MODEL, max_tokens=8, messages=USER)
    values = label_values(reg, "stop_reason")["claude_stop_reasons"]
    assert values == set(reasons[:64]) | {OVERFLOW}
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason=OVERFLOW) == 6
    assert overflow(reg, "stop_reason") == 6
    assert requests(reg) == (70, 0)


@pytest.mark.integration
def test_no_overflow_under_the_caps(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    for i in range(5):
        with ce.execution(f"t{i}", agent=f"a{i}"):
            client.messages.create(model=MODEL, max_tokens=8, messages=USER)
    assert "claude_exporter_label_overflow" not in label_values(reg, "label")
    assert OVERFLOW not in label_values(reg, "agent")["claude_requests"]
