"""Streaming requests (sync): time to first token, usage from message_delta, and finalising exactly once
however the caller leaves the stream."""

from __future__ import annotations

import anthropic
import pytest
from anthropic.types.beta.parsed_beta_message import ParsedBetaMessage
from anthropic.types.parsed_message import ParsedMessage
from claude_exporter.testing import Reply
from conftest import (
    MODEL,
    collect_garbage,
    duration,
    executions,
    kw,
    requests,
    tokens,
    ttft,
    val,
)

pytestmark = pytest.mark.integration

# message_start, ping, content_block_start, then the first content_block_delta: 3 event delays before it.
EVENTS_BEFORE_FIRST_DELTA = 3


def finished(reg) -> float:
    return sum(requests(reg))


def test_create_stream_records_ttft_usage_and_stop_reason(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(
            latency=0.05,
            event_delay=0.02,
            input_tokens=11,
            output_tokens=77,
            cache_creation_input_tokens=5,
            cache_read_input_tokens=3,
            stop_reason="max_tokens",
            text_deltas=4,
        )
    )
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    assert type(stream) is anthropic.Stream
    assert finished(reg) == 0  # nothing is final before the stream is read
    events = [event.type for event in stream]

    assert events.count("content_block_delta") == 4
    assert requests(reg) == (1, 0)
    count, first = ttft(reg)
    assert count == 1
    assert first >= 0.05 + EVENTS_BEFORE_FIRST_DELTA * 0.02
    # message_start says output_tokens=1; message_delta's final count overwrites it.
    assert tokens(reg) == {"input": 11, "output": 77, "cache_creation": 5, "cache_read": 3}
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="max_tokens") == 1
    count, total = duration(reg)
    assert count == 1
    assert total >= first
    assert executions(reg) == (1, 0)
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_ttft_is_at_least_the_latency(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=0.2))
    for _ in fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True):
        pass
    count, first = ttft(reg)
    assert count == 1
    assert first >= 0.2


def test_break_then_close_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=11, output_tokens=77, text_deltas=5, event_delay=0.01))
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    for event in stream:
        if event.type == "content_block_delta":
            break
    assert finished(reg) == 0
    assert val(reg, "claude_requests_in_flight", agent="default") == 1
    stream.close()

    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert ttft(reg)[0] == 1
    assert tokens(reg)["input"] == 11  # what message_start showed is counted
    assert val(reg, "claude_requests_in_flight", agent="default") == 0
    stream.close()
    del stream
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert sum(executions(reg)) == 1


def test_context_exit_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5))
    with fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True) as stream:
        for _ in stream:
            break
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    del stream
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1


def test_caller_exception_mid_stream_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5))

    class Stop(Exception):
        pass

    with (
        pytest.raises(Stop),
        fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True) as stream,
    ):
        for event in stream:
            if event.type == "content_block_delta":
                raise Stop
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert val(reg, "claude_requests_in_flight", agent="default") == 0
    del stream
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1


def test_break_without_close_finalises_when_collected(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=9, text_deltas=5))
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    for _ in stream:
        break
    assert finished(reg) == 0
    del stream
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 9
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_stream_never_iterated_finalises_on_close(reg, fake_anthropic):
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    stream.close()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    del stream
    collect_garbage()
    assert finished(reg) == 1


def test_stream_never_iterated_finalises_when_collected(reg, fake_anthropic):
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    assert finished(reg) == 0
    del stream
    collect_garbage()
    assert finished(reg) == 1
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def _stream_reply():
    return Reply(
        text="one two three four",
        text_deltas=4,
        input_tokens=21,
        output_tokens=34,
        cache_read_input_tokens=8,
        stop_reason="end_turn",
        event_delay=0.005,
    )


def _assert_one_full_stream(reg):
    assert requests(reg) == (1, 0)
    assert duration(reg)[0] == 1
    assert ttft(reg)[0] == 1
    assert tokens(reg) == {"input": 21, "output": 34, "cache_creation": 0, "cache_read": 8}
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="end_turn") == 1


def test_messages_stream_iteration(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        kinds = [event.type for event in stream]
    assert "message_stop" in kinds
    _assert_one_full_stream(reg)


def test_messages_stream_text_stream(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        text = "".join(stream.text_stream)
    assert text == "one two three four"
    _assert_one_full_stream(reg)


def test_messages_stream_get_final_message(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        final = stream.get_final_message()
    assert type(final) is ParsedMessage  # what the SDK's stream helper returns, untouched
    assert final.usage.output_tokens == 34
    _assert_one_full_stream(reg)


def test_messages_stream_until_done(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        stream.until_done()
    _assert_one_full_stream(reg)


def test_messages_stream_nothing_measured_before_enter(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=0.2))
    manager = fake_anthropic.client(max_retries=0).messages.stream(**kw())
    assert fake_anthropic.requests == []
    with manager as stream:
        stream.until_done()
    assert requests(reg) == (1, 0)
    assert ttft(reg)[1] >= 0.2


def test_messages_stream_break_and_exit_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5, input_tokens=4))
    with fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        for _ in stream:
            break
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 4
    del stream
    collect_garbage()
    assert finished(reg) == 1


def test_messages_stream_caller_exception_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5))
    with pytest.raises(KeyError), fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream:
        for _ in stream.text_stream:
            raise KeyError("caller")
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    del stream
    collect_garbage()
    assert finished(reg) == 1


def test_mid_stream_error_event_is_an_error_and_reraised(reg, fake_anthropic):
    fake_anthropic.script(Reply(stream_error_after=3, input_tokens=6))
    stream = fake_anthropic.client(max_retries=0).messages.create(**kw(), stream=True)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in stream:
            seen.append(event.type)
    assert type(info.value) is anthropic.APIStatusError
    assert info.value.type == "overloaded_error"
    assert seen == ["message_start", "content_block_start"]  # the ping is not surfaced
    assert requests(reg) == (0, 1)
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="APIStatusError",
            error_code="none",
        )
        == 1
    )
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 6
    assert executions(reg) == (0, 1)
    stream.close()
    del stream
    collect_garbage()
    assert requests(reg) == (0, 1)
    # Never retried: one HTTP request.
    assert len(fake_anthropic.requests) == 1


def test_mid_stream_error_through_messages_stream(reg, fake_anthropic):
    fake_anthropic.script(Reply(stream_error_after=4))
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        fake_anthropic.client(max_retries=0).messages.stream(**kw()) as stream,
    ):
        stream.get_final_message()
    assert type(info.value) is anthropic.APIStatusError
    assert requests(reg) == (0, 1)
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="APIStatusError",
            error_code="none",
        )
        == 1
    )


def test_mid_stream_error_exception_is_the_sdk_object(reg, fake_anthropic):
    fake_anthropic.script(Reply(stream_error_after=2))
    client = fake_anthropic.client(max_retries=0)
    made = []
    original = client._make_status_error

    def recording(*args, **kwargs):
        err = original(*args, **kwargs)
        made.append(err)
        return err

    client._make_status_error = recording  # the SDK builds the mid-stream error with this
    with pytest.raises(anthropic.APIStatusError) as info:
        for _ in client.messages.create(**kw(), stream=True):
            pass
    assert made == [info.value]
    assert made[0] is info.value


def test_beta_stream_is_counted(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    client = fake_anthropic.client(max_retries=0)
    with client.beta.messages.stream(**kw(), betas=["context-1m-2025-08-07"]) as stream:
        final = stream.get_final_message()
    assert type(final) is ParsedBetaMessage
    _assert_one_full_stream(reg)


def test_beta_create_stream_is_counted(reg, fake_anthropic):
    fake_anthropic.script(_stream_reply())
    client = fake_anthropic.client(max_retries=0)
    stream = client.beta.messages.create(**kw(), betas=["context-1m-2025-08-07"], stream=True)
    assert type(stream) is anthropic.Stream
    for _ in stream:
        pass
    _assert_one_full_stream(reg)


def test_streams_finish_independently(reg, fake_anthropic):
    fake_anthropic.script(Reply(output_tokens=5, text_deltas=3), Reply(output_tokens=7, text_deltas=3))
    client = fake_anthropic.client(max_retries=0)
    first = client.messages.create(**kw(), stream=True)
    second = client.messages.create(**kw(), stream=True)
    for _ in second:
        pass
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 7
    for _ in first:
        pass
    assert requests(reg) == (2, 0)
    assert tokens(reg)["output"] == 12
    assert ttft(reg)[0] == 2


def test_status_error_before_the_stream_starts(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=400), Reply(status=529))
    client = fake_anthropic.client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError), client.messages.stream(**kw()) as stream:
        stream.until_done()
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(**kw(), stream=True)
    assert requests(reg) == (0, 2)
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="BadRequestError",
            error_code="none",
        )
        == 1
    )
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="OverloadedError",
            error_code="none",
        )
        == 1
    )
    assert duration(reg)[0] == 2
    assert ttft(reg) == (0, 0)
    assert val(reg, "claude_requests_in_flight", agent="default") == 0
