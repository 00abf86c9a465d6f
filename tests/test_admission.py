"""One admission rule for every label value, numbers checked where they enter, and a scrape that serves
every family it can (issue 9, findings 1, 2 and 4). Real SDK over HTTP to the fake API; the property
tests drive the recorder with any value at all."""

from __future__ import annotations

import json
import unicodedata
import urllib.request
from typing import Any

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.recording.admission import EMPTY, INVALID, MAX_LENGTH, clean
from claude_exporter.recording.state import ACTIVE as STATE
from claude_exporter.recording.usage import Usage
from claude_exporter.testing import Reply
from conftest import MODEL, kw, scrape, val
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def changes(reg: CollectorRegistry, label: str, change: str) -> float:
    return val(reg, "claude_exporter_label_changes_total", label=label, change=change)


def faults(reg: CollectorRegistry, stage: str) -> float:
    return val(reg, "claude_exporter_internal_errors_total", stage=stage)


# -- execution(): strings only, refused at the call ----------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "kwargs",
    [{"agent": 5}, {"task": None}, {"agent": ("a",)}, {"task": b"bytes"}, {"agent": ["x"], "task": "t"}],
    ids=["agent-int", "task-none", "agent-tuple", "task-bytes", "agent-list"],
)
def test_execution_refuses_a_non_string_before_the_body_runs(reg, kwargs):
    ran = []
    with pytest.raises(TypeError, match=r"execution\(\) (agent|task) must be a str"), ce.execution(**kwargs):
        ran.append(1)
    with pytest.raises(TypeError):

        @ce.execution(**kwargs)
        def job() -> None:
            ran.append(2)

    assert ran == []
    generate_latest(reg)


@pytest.mark.integration
def test_a_lone_surrogate_agent_is_replaced_and_the_scrape_and_health_stay_up(instrumented, fake_anthropic):
    reg, _ = instrumented
    fake_anthropic.script(Reply())
    with ce.execution("t\ud800", agent="\ud800x"):
        fake_anthropic.client(max_retries=0).messages.create(**kw())
    text = scrape(reg)  # used to raise UnicodeEncodeError for good
    assert 'agent="\ufffdx"' in text
    assert changes(reg, "agent", "replaced") >= 1 and changes(reg, "task", "replaced") == 1
    srv = ce.start_http_server(
        0, config=parse_config({"monitoring": {}, "exporter": {"server": {"token_env": None}}})
    )
    try:
        with urllib.request.urlopen(srv.url + "/health/claude-agent", timeout=10) as answer:
            assert answer.status == 200
            json.loads(answer.read())
        with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as answer:
            assert answer.status == 200
    finally:
        srv.close()


@pytest.mark.integration
def test_a_million_character_agent_name_is_cut_to_the_cap(instrumented, fake_anthropic):
    reg, _ = instrumented
    fake_anthropic.script(Reply(), Reply())
    client = fake_anthropic.client(max_retries=0)
    for _ in range(2):
        with ce.execution("task", agent="a" * 1_000_000):
            client.messages.create(**kw())
    text = scrape(reg)
    assert len(text) < 100_000  # was 100 MB per such agent
    assert val(reg, "claude_requests_total", agent="a" * MAX_LENGTH, model=MODEL, outcome="success") == 2
    assert changes(reg, "agent", "truncated") >= 2


@pytest.mark.integration
def test_control_characters_from_the_api_are_removed(instrumented, fake_anthropic):
    reg, _ = instrumented
    fake_anthropic.script(Reply(stop_reason="end\n_turn\x00"))
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert msg.stop_reason == "end\n_turn\x00"  # the caller's object is untouched
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="end_turn") == 1
    assert changes(reg, "stop_reason", "control_stripped") == 1


@pytest.mark.integration
def test_the_length_cap_is_configurable(fake_anthropic):
    if STATE.recorder is not None:
        ce.uninstrument()
    reg = CollectorRegistry()
    ce.instrument(
        config=parse_config({"monitoring": {}, "exporter": {"label_caps": {"length": 16}}}), registry=reg
    )
    try:
        fake_anthropic.script(Reply())
        with ce.execution("t", agent="x" * 40):
            fake_anthropic.client(max_retries=0).messages.create(**kw())
        assert val(reg, "claude_executions_total", agent="x" * 16, task="t", outcome="success") == 1
    finally:
        ce.uninstrument()


@pytest.mark.unit
def test_ingested_names_pass_the_same_gate(instrumented):
    from claude_exporter.ingest.events import apply_events, parse_body

    reg, rec = instrumented
    body = json.dumps(
        {"event": "claude_execution_complete", "duration_ms": 1, "agent": "b" * 1_000_000, "task": "a\tb"}
    )
    parsed = parse_body(body.encode())
    assert parsed.ok
    apply_events(rec, parsed.events)
    assert val(reg, "claude_executions_total", agent="b" * MAX_LENGTH, task="ab", outcome="success") == 1
    assert changes(reg, "agent", "truncated") >= 1 and changes(reg, "task", "control_stripped") == 1


# -- numbers: checked where they enter -----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens", "cache_read_input_tokens"])
def test_a_huge_token_count_from_the_api_is_a_fault_not_a_broken_scrape(instrumented, fake_anthropic, field):
    reg, _ = instrumented
    fake_anthropic.script(Reply(**{field: 10**400}), Reply(**{field: 10**400}))
    client = fake_anthropic.client(max_retries=0)
    for _ in range(2):
        msg = client.messages.create(**kw())
        assert getattr(msg.usage, field) == 10**400  # the caller's object is untouched
    scrape(reg)  # used to raise OverflowError for good
    assert faults(reg, "request_result") == 2


@pytest.mark.integration
def test_a_huge_token_count_in_a_stream_is_a_fault(instrumented, fake_anthropic):
    reg, _ = instrumented
    fake_anthropic.script(Reply(output_tokens=10**400, text_deltas=3))
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        text = "".join(stream.text_stream)
    assert text
    scrape(reg)
    assert faults(reg, "stream_event") >= 1


@pytest.mark.integration
@pytest.mark.parametrize("raw", ["inf", "nan", "-5", "1e999"])
def test_a_rate_limit_header_that_is_no_finite_count_is_a_fault(instrumented, fake_anthropic, raw):
    reg, _ = instrumented
    fake_anthropic.script(Reply(headers={"anthropic-ratelimit-tokens-remaining": raw}))
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert val(reg, "claude_ratelimit_remaining", resource="tokens") == 0  # no series, not inf
    assert faults(reg, "ratelimit_header") == 1


# -- exposition: a bad stored value costs one family, not the scrape -------------------------------------


@pytest.mark.integration
def test_one_family_that_cannot_render_leaves_the_others_served(instrumented, fake_anthropic):
    reg, rec = instrumented
    fake_anthropic.script(Reply())
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    [series] = rec.request_series
    series.cost = 10**400  # a stored value no float can hold, as if something skipped the checks
    text = scrape(reg)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "claude_cost_usd" not in names
    assert {"claude_requests", "claude_tokens", "claude_request_duration_seconds"} <= names
    assert faults(reg, "scrape") == 1
    assert val(reg, "claude_requests_total", agent="default", model=MODEL, outcome="success") == 1


@pytest.mark.unit
def test_a_failing_gauge_leaves_the_others_served(instrumented, monkeypatch):
    reg, rec = instrumented

    def broken() -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(rec, "gauge_requests_in_flight", broken)
    text = scrape(reg)
    assert "claude_requests_in_flight" not in text
    assert "claude_executions_in_flight" in text and "claude_exporter_build_info" in text
    assert faults(reg, "scrape") == 1


# -- the class: any value, any source ------------------------------------------------------------------

_anything = st.one_of(
    st.text(),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=300),
    st.integers(),
    st.none(),
    st.binary(max_size=10),
    st.lists(st.text(max_size=3), max_size=2),
)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(_anything, st.integers(min_value=16, max_value=4096))
def test_clean_always_gives_an_admissible_value(value, length):
    cleaned, made = clean(value, length)
    assert isinstance(cleaned, str) and cleaned
    cleaned.encode("utf-8")  # encodable
    assert len(cleaned) <= max(length, len(EMPTY), len(INVALID))
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in cleaned)
    assert clean(cleaned, length) == (cleaned, [])  # idempotent: an admitted value passes as it is
    if isinstance(value, str) and value and len(value) <= length and value.isprintable():
        assert (cleaned, made) == (value, [])


@pytest.mark.unit
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(_anything, _anything, _anything, _anything),
        min_size=1,
        max_size=4,
    )
)
def test_any_label_values_through_the_recorder_never_break_the_scrape(instrumented, rows):
    reg, rec = instrumented
    for agent, model, task, stop in rows:
        labels = rec.request_labels(agent, model)  # any type: a non-string becomes __invalid__
        labels.record(True, 0.1, Usage(1, 2, 3, 4), stop if isinstance(stop, str) else None, cost=0.5)
        rec.exec_labels(agent, task).record(True, 0.1, 3, 4, 1)
    text = generate_latest(reg).decode("utf-8")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for value in sample.labels.values():
                assert len(value) <= MAX_LENGTH and not any(unicodedata.category(c) == "Cc" for c in value)
