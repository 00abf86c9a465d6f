"""Non-streaming requests through the real SDK: every request-level family, with exact values."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import anthropic
import claude_exporter
import claude_exporter as ce
import pydantic
import pytest
from anthropic.types import Message
from claude_exporter.testing import Reply
from conftest import (
    MODEL,
    UNKNOWN_MODEL,
    duration,
    exec_hist,
    executions,
    expected_cost,
    has,
    is_close,
    kw,
    requests,
    run_in_thread,
    tokens,
    ttft,
    val,
    wait_for,
)


@pytest.mark.integration
def test_success_records_every_request_family(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(
            input_tokens=100,
            output_tokens=50,
            cache_creation_input_tokens=30,
            cache_read_input_tokens=7,
            stop_reason="max_tokens",
        )
    )
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())

    assert type(msg) is Message
    assert requests(reg) == (1, 0)
    assert tokens(reg) == {"input": 100, "output": 50, "cache_creation": 30, "cache_read": 7}
    # Without a 5m/1h breakdown every cache write is a 5-minute one.
    cost = val(reg, "claude_cost_usd_total", agent="default", model=MODEL)
    assert is_close(cost, expected_cost(input=100, output=50, cache_5m=30, cache_read=7))
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="max_tokens") == 1
    assert not has(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="end_turn")
    count, seconds = duration(reg)
    assert count == 1
    assert seconds > 0
    assert val(reg, "claude_rate_limited_total", agent="default", model=MODEL, error_code="none") == 0
    assert not has(
        reg,
        "claude_errors_total",
        agent="default",
        model=MODEL,
        error_type="APIStatusError",
        error_code="none",
    )
    # Non-streaming requests have no time to first token.
    assert ttft(reg) == (0, 0)
    # A request outside any execution is an execution of its own, task "default".
    assert executions(reg) == (1, 0)
    assert exec_hist(reg, "claude_execution_tokens", "default", "default", type="input") == (1, 137)
    assert exec_hist(reg, "claude_execution_tokens", "default", "default", type="output") == (1, 50)
    assert exec_hist(reg, "claude_execution_requests", "default", "default") == (1, 1)
    assert exec_hist(reg, "claude_execution_duration_seconds", "default", "default")[0] == 1


@pytest.mark.integration
def test_tokens_and_cost_accumulate_over_requests(reg, fake_anthropic):
    replies = [
        Reply(input_tokens=10, output_tokens=20),
        Reply(input_tokens=5, output_tokens=1, cache_creation_input_tokens=1000, cache_read_input_tokens=0),
        Reply(input_tokens=3, output_tokens=7, cache_read_input_tokens=4000),
    ]
    fake_anthropic.script(*replies)
    client = fake_anthropic.client(max_retries=0)
    for _ in replies:
        client.messages.create(**kw())

    assert requests(reg) == (3, 0)
    assert tokens(reg) == {"input": 18, "output": 28, "cache_creation": 1000, "cache_read": 4000}
    cost = val(reg, "claude_cost_usd_total", agent="default", model=MODEL)
    assert is_close(cost, expected_cost(input=18, output=28, cache_5m=1000, cache_read=4000))
    assert exec_hist(reg, "claude_execution_tokens", "default", "default", type="input") == (3, 5018)
    assert exec_hist(reg, "claude_execution_requests", "default", "default") == (3, 3)


@pytest.mark.integration
def test_cost_splits_5m_and_1h_cache_writes(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(
            input_tokens=10,
            output_tokens=10,
            cache_creation_input_tokens=3000,
            cache_creation_5m=1000,
            cache_creation_1h=2000,
        )
    )
    fake_anthropic.client(max_retries=0).messages.create(**kw())

    assert tokens(reg)["cache_creation"] == 3000
    cost = val(reg, "claude_cost_usd_total", agent="default", model=MODEL)
    assert is_close(cost, expected_cost(input=10, output=10, cache_5m=1000, cache_1h=2000))
    assert not is_close(cost, expected_cost(input=10, output=10, cache_5m=3000))


@pytest.mark.integration
def test_batch_tier_gets_the_batch_discount(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=1000, service_tier="batch"))
    fake_anthropic.client(max_retries=0).messages.create(**kw())

    cost = val(reg, "claude_cost_usd_total", agent="default", model=MODEL)
    assert is_close(cost, expected_cost(input=1000, output=1000, batch=True))


@pytest.mark.integration
def test_other_model_is_priced_at_its_own_rate(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=1000, output_tokens=2000))
    fake_anthropic.client(max_retries=0).messages.create(**kw("claude-opus-4-6"))

    assert requests(reg, model="claude-opus-4-6") == (1, 0)
    assert requests(reg) == (0, 0)
    cost = val(reg, "claude_cost_usd_total", agent="default", model="claude-opus-4-6")
    assert is_close(cost, expected_cost("claude-opus-4-6", input=1000, output=2000))


@pytest.mark.integration
def test_stop_reasons_by_value(reg, fake_anthropic):
    reasons = ["end_turn", "end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", "pause_turn"]
    fake_anthropic.script(*(Reply(stop_reason=r) for r in reasons))
    client = fake_anthropic.client(max_retries=0)
    for _ in reasons:
        client.messages.create(**kw())

    for reason in set(reasons):
        got = val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason=reason)
        assert got == reasons.count(reason), reason
    assert requests(reg) == (len(reasons), 0)


@pytest.mark.integration
def test_unknown_model_counts_unpriced_tokens_and_no_cost(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(input_tokens=11, output_tokens=13, cache_creation_input_tokens=17, cache_read_input_tokens=19)
    )
    fake_anthropic.client(max_retries=0).messages.create(**kw(UNKNOWN_MODEL))

    assert requests(reg, model=UNKNOWN_MODEL) == (1, 0)
    assert tokens(reg, model=UNKNOWN_MODEL) == {
        "input": 11,
        "output": 13,
        "cache_creation": 17,
        "cache_read": 19,
    }
    assert (
        val(reg, "claude_exporter_unpriced_tokens_total", model=UNKNOWN_MODEL, reason="model")
        == 11 + 13 + 17 + 19
    )
    assert val(reg, "claude_cost_usd_total", agent="default", model=UNKNOWN_MODEL) == 0


@pytest.mark.integration
def test_priced_model_has_no_unpriced_tokens(reg, fake_anthropic):
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert not has(reg, "claude_exporter_unpriced_tokens_total", model=MODEL, reason="model")


@pytest.mark.integration
def test_ratelimit_gauges_follow_the_latest_headers(reg, fake_anthropic):
    resets = {
        "requests": "2030-01-01T00:00:00Z",
        "tokens": "2030-01-01T00:00:30Z",
        "input_tokens": "2030-01-01T00:01:00+00:00",
        "output_tokens": "2030-06-15T12:30:45Z",
    }
    fake_anthropic.script(
        Reply(
            ratelimit={
                "requests": (1000, 999, resets["requests"]),
                "tokens": (400000, 350000, resets["tokens"]),
                "input_tokens": (300000, 290000, resets["input_tokens"]),
                "output_tokens": (100000, 60000, resets["output_tokens"]),
            }
        ),
        Reply(ratelimit={"requests": (1000, 998, "2030-01-01T00:00:05Z")}),
        Reply(),  # no headers: the last known values stay
    )
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())

    limits = {"requests": 1000, "tokens": 400000, "input_tokens": 300000, "output_tokens": 100000}
    remaining = {"requests": 999, "tokens": 350000, "input_tokens": 290000, "output_tokens": 60000}
    for resource, limit in limits.items():
        assert val(reg, "claude_ratelimit_limit", model=MODEL, resource=resource) == limit
        assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource=resource) == remaining[resource]
        expected = datetime.fromisoformat(resets[resource].replace("Z", "+00:00")).timestamp()
        assert (
            val(reg, "claude_ratelimit_reset_timestamp_seconds", model=MODEL, resource=resource) == expected
        )
    assert (
        val(reg, "claude_ratelimit_reset_timestamp_seconds", model=MODEL, resource="requests")
        == datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    )

    client.messages.create(**kw())
    assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource="requests") == 998
    assert (
        val(reg, "claude_ratelimit_reset_timestamp_seconds", model=MODEL, resource="requests")
        == datetime(2030, 1, 1, 0, 0, 5, tzinfo=timezone.utc).timestamp()
    )
    assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource="tokens") == 350000

    client.messages.create(**kw())
    assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource="requests") == 998
    assert val(reg, "claude_ratelimit_limit", model=MODEL, resource="output_tokens") == 100000


@pytest.mark.integration
def test_ratelimit_values_survive_a_later_response_without_headers(reg, fake_anthropic):
    # No scrape between the two responses: the second one (no rate-limit headers, as from a Bedrock or
    # Vertex client, or a proxy that strips them) must not erase what the first one said.
    fake_anthropic.script(Reply(ratelimit={"requests": (50, 7, "2030-01-01T00:00:00Z")}), Reply())
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())
    client.messages.create(**kw())
    assert reg.get_sample_value("claude_ratelimit_limit", {"model": MODEL, "resource": "requests"}) == 50
    assert reg.get_sample_value("claude_ratelimit_remaining", {"model": MODEL, "resource": "requests"}) == 7


@pytest.mark.integration
def test_ratelimit_gauges_absent_before_any_header(reg, fake_anthropic):
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert not has(reg, "claude_ratelimit_limit", model=MODEL, resource="requests")
    assert not has(reg, "claude_ratelimit_remaining", model=MODEL, resource="tokens")


@pytest.mark.integration
def test_requests_and_executions_in_flight_mid_request(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=0.5))
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())  # the series exist, so the gauges read 0 rather than nothing

    assert val(reg, "claude_requests_in_flight", agent="default") == 0
    assert val(reg, "claude_executions_in_flight", agent="default", task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent="default") == 0

    fake_anthropic.script(Reply(latency=0.5))
    thread, box = run_in_thread(lambda: client.messages.create(**kw()))
    assert wait_for(lambda: len(fake_anthropic.requests) == 2)
    time.sleep(0.1)
    assert val(reg, "claude_requests_in_flight", agent="default") == 1
    # The lone request is an execution of its own, running now.
    assert val(reg, "claude_executions_in_flight", agent="default", task="default") == 1
    assert val(reg, "claude_execution_longest_running_seconds", agent="default") >= 0.1
    thread.join(5)
    assert type(box[0]) is Message

    assert val(reg, "claude_requests_in_flight", agent="default") == 0
    assert val(reg, "claude_executions_in_flight", agent="default", task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent="default") == 0
    assert requests(reg) == (2, 0)


@pytest.mark.integration
def test_in_flight_inside_an_execution(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=0.5))
    client = fake_anthropic.client(max_retries=0)
    entered = threading.Event()

    def work():
        with ce.execution("triage", agent="bot"):
            entered.set()
            return client.messages.create(**kw())

    thread, box = run_in_thread(work)
    assert entered.wait(5)
    assert wait_for(lambda: len(fake_anthropic.requests) == 1)
    assert val(reg, "claude_requests_in_flight", agent="bot") == 1
    assert val(reg, "claude_executions_in_flight", agent="bot", task="triage") == 1
    # The request belongs to the execution: no lone "default" execution runs.
    assert val(reg, "claude_executions_in_flight", agent="bot", task="default") == 0
    thread.join(5)
    assert type(box[0]) is Message
    assert val(reg, "claude_requests_in_flight", agent="bot") == 0
    assert val(reg, "claude_executions_in_flight", agent="bot", task="triage") == 0


@pytest.mark.unit
def test_build_info(reg):
    labels = {"version": claude_exporter.__version__, "anthropic_version": anthropic.__version__}
    assert reg.get_sample_value("claude_exporter_build_info", labels) == 1


@pytest.mark.integration
def test_messages_parse_is_counted_once(reg, fake_anthropic):
    class Answer(pydantic.BaseModel):
        answer: int

    fake_anthropic.script(Reply(text='{"answer": 42}', input_tokens=12, output_tokens=5))
    parsed = fake_anthropic.client(max_retries=0).messages.parse(**kw(), output_format=Answer)

    assert parsed.parsed_output == Answer(answer=42)
    assert requests(reg) == (1, 0)
    assert tokens(reg)["input"] == 12
    assert tokens(reg)["output"] == 5


@pytest.mark.integration
def test_beta_create_is_counted(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=3, output_tokens=4, stop_reason="tool_use"))
    msg = fake_anthropic.client(max_retries=0).beta.messages.create(**kw(), betas=["context-1m-2025-08-07"])

    assert type(msg) is anthropic.types.beta.BetaMessage
    assert requests(reg) == (1, 0)
    assert tokens(reg)["input"] == 3
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="tool_use") == 1


@pytest.mark.integration
def test_count_tokens_is_not_a_request(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=99))
    count = fake_anthropic.client(max_retries=0).messages.count_tokens(model=MODEL, messages=kw()["messages"])
    assert count.input_tokens == 99
    assert requests(reg) == (0, 0)


@pytest.mark.integration
@pytest.mark.parametrize("model", [MODEL, UNKNOWN_MODEL])
def test_model_label_is_the_requested_model(reg, fake_anthropic, model):
    # The fake answers with another model name: the label is what the caller asked for.
    fake_anthropic.script(Reply(model="claude-something-else"))
    fake_anthropic.client(max_retries=0).messages.create(**kw(model))
    assert requests(reg, model=model) == (1, 0)
    assert requests(reg, model="claude-something-else") == (0, 0)
