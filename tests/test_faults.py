"""Faults inside the shim are swallowed and counted: the caller's result (or exception) is exactly what the
SDK gave, and the shim's own state (in-flight gauges) stays sane."""

from __future__ import annotations

import asyncio

import anthropic
import claude_exporter as ce
import pytest
from anthropic.types import Message
from claude_exporter.instrumentation import streams
from claude_exporter.recording.storage import memory as store
from claude_exporter.testing import Reply
from conftest import MODEL, kw, requests, val

pytestmark = pytest.mark.integration


def faults(reg, stage: str) -> float:
    return val(reg, "claude_exporter_internal_errors_total", stage=stage)


def all_faults(reg) -> dict[str, float]:
    out = {}
    for family in reg.collect():
        if family.name == "claude_exporter_internal_errors":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["stage"]] = sample.value
    return out


def boom(*args, **kwargs):
    raise RuntimeError("injected fault")


REPLY = Reply(text="the answer", input_tokens=12, output_tokens=34, stop_reason="max_tokens")


def assert_untouched(msg) -> None:
    assert type(msg) is Message
    assert msg.content[0].text == "the answer"
    assert msg.usage.input_tokens == 12
    assert msg.usage.output_tokens == 34
    assert msg.stop_reason == "max_tokens"


def assert_nothing_in_flight(reg, agent: str = "default") -> None:
    assert val(reg, "claude_requests_in_flight", agent=agent) == 0
    assert val(reg, "claude_executions_in_flight", agent=agent, task="default") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent=agent) == 0


def test_fault_recording_a_request(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.RequestSeries, "finish", boom)
    fake_anthropic.script(REPLY)
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())

    assert_untouched(msg)
    assert faults(reg, "request_result") == 1
    assert sum(all_faults(reg).values()) == 1


def test_fault_in_the_cost_function(instrumented, fake_anthropic):
    reg, rec = instrumented
    rec.cost = boom
    fake_anthropic.script(REPLY)
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())

    assert_untouched(msg)
    assert faults(reg, "request_result") == 1


def test_fault_recording_a_failed_request_keeps_the_sdk_exception(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.RequestSeries, "finish", boom)
    fake_anthropic.script(Reply(status=400))
    client = fake_anthropic.client(max_retries=0)
    made = []
    original = client._make_status_error_from_response

    def recording(response):
        made.append(original(response))
        return made[-1]

    client._make_status_error_from_response = recording
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**kw())
    assert info.value is made[0]
    assert faults(reg, "request_error") == 1


def test_fault_finishing_a_stream(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.RequestSeries, "finish", boom)
    fake_anthropic.script(REPLY)
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "the answer"
    assert final.usage.output_tokens == 34
    assert faults(reg, "stream_finish") == 1


def test_fault_reading_stream_events(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(streams.StreamWatch, "see", boom)
    fake_anthropic.script(Reply(text="abc", text_deltas=3))
    kinds = [
        event.type for event in fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    ]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert faults(reg, "stream_event") == len(kinds)
    assert requests(reg) == (1, 0)  # the request itself is still counted


def test_fault_in_the_attempt_seam(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.RequestSeries, "add", boom)
    fake_anthropic.script(Reply(status=429, retry_after=0.01), REPLY)
    msg = fake_anthropic.client(max_retries=1).messages.create(**kw())
    assert_untouched(msg)
    assert len(fake_anthropic.requests) == 2  # the SDK's retry is untouched
    assert faults(reg, "attempt_response") == 1
    assert requests(reg) == (1, 0)


def test_fault_starting_a_request(instrumented, fake_anthropic, monkeypatch):
    reg, _ = instrumented
    from claude_exporter.recording.call import Call

    monkeypatch.setattr(Call, "__init__", boom)
    fake_anthropic.script(REPLY)
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert_untouched(msg)
    assert faults(reg, "request_start") == 1
    monkeypatch.undo()
    assert requests(reg) == (0, 0)


def test_fault_finishing_an_execution(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.ExecSeries, "record", boom)
    marker = LookupError("the caller's own")
    with pytest.raises(LookupError) as info, ce.execution("job", agent="bot"):
        fake_anthropic.client(max_retries=0).messages.create(**kw())
        raise marker
    assert info.value is marker
    assert faults(reg, "execution_finish") == 1
    with ce.execution("job", agent="bot"):
        pass  # a clean exit is not disturbed either
    assert faults(reg, "execution_finish") == 2
    monkeypatch.undo()
    assert val(reg, "claude_executions_in_flight", agent="bot", task="job") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent="bot") == 0


def test_fault_in_a_listener(instrumented, fake_anthropic):
    reg, rec = instrumented
    rec.listen(boom, lambda: True)
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert type(msg) is Message
    assert faults(reg, "listener") >= 1
    assert requests(reg) == (1, 0)


def test_bad_ratelimit_header_is_a_fault_at_scrape(reg, fake_anthropic):
    fake_anthropic.script(Reply(ratelimit={"requests": (100, 40, "not a timestamp")}))
    msg = fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert type(msg) is Message
    assert val(reg, "claude_ratelimit_limit", model=MODEL, resource="requests") == 100
    assert val(reg, "claude_ratelimit_remaining", model=MODEL, resource="requests") == 40
    reset = {"model": MODEL, "resource": "requests"}
    assert reg.get_sample_value("claude_ratelimit_reset_timestamp_seconds", reset) is None
    assert faults(reg, "ratelimit_header") == 1


def test_async_fault_recording_a_request(reg, fake_anthropic, monkeypatch):
    monkeypatch.setattr(store.RequestSeries, "finish", boom)
    fake_anthropic.script(REPLY, REPLY)

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        msg = await client.messages.create(**kw())
        async with client.messages.stream(**kw()) as stream:
            final = await stream.get_final_message()
        return msg, final

    msg, final = asyncio.run(main())
    assert_untouched(msg)
    assert final.usage.output_tokens == 34
    assert faults(reg, "request_result") == 1
    assert faults(reg, "stream_finish") == 1


@pytest.mark.parametrize("where", ["request", "cost", "failed_request", "stream", "async_request"])
def test_no_request_left_in_flight_after_a_recording_fault(instrumented, fake_anthropic, monkeypatch, where):
    reg, rec = instrumented
    # A request whose recording failed is still over: the in-flight gauges must not keep it (a stuck
    # request would age claude_execution_longest_running_seconds and fire the execution-timeout alert).
    client = fake_anthropic.client(max_retries=0)
    if where == "cost":
        rec.cost = boom
    else:
        monkeypatch.setattr(store.RequestSeries, "finish", boom)
    if where in ("request", "cost"):
        client.messages.create(**kw())
    elif where == "failed_request":
        fake_anthropic.script(Reply(status=400))
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(**kw())
    elif where == "stream":
        with client.messages.stream(**kw()) as stream:
            stream.until_done()
    else:
        asyncio.run(fake_anthropic.async_client(max_retries=0).messages.create(**kw()))
    monkeypatch.undo()
    assert sum(all_faults(reg).values()) == 1
    assert_nothing_in_flight(reg)
