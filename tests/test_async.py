"""AsyncAnthropic: create, create(stream=True) and messages.stream(), with the same exact values as sync."""

from __future__ import annotations

import asyncio

import anthropic
import claude_exporter as ce
import pytest
from anthropic.types import Message
from anthropic.types.parsed_message import ParsedMessage
from claude_exporter.testing import Reply, code_execution_blocks
from conftest import (
    MODEL,
    collect_garbage,
    duration,
    exec_hist,
    executions,
    expected_cost,
    is_close,
    kw,
    requests,
    tokens,
    ttft,
    val,
)

pytestmark = pytest.mark.integration


def finished(reg) -> float:
    return sum(requests(reg))


def test_async_create(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(input_tokens=40, output_tokens=60, cache_creation_input_tokens=8, cache_read_input_tokens=2)
    )

    async def main():
        return await fake_anthropic.async_client(max_retries=0).messages.create(**kw())

    msg = asyncio.run(main())
    assert type(msg) is Message
    assert requests(reg) == (1, 0)
    assert tokens(reg) == {"input": 40, "output": 60, "cache_creation": 8, "cache_read": 2}
    cost = val(reg, "claude_cost_usd_total", agent="default", model=MODEL)
    assert is_close(cost, expected_cost(input=40, output=60, cache_5m=8, cache_read=2))
    assert duration(reg)[0] == 1
    assert ttft(reg) == (0, 0)
    assert executions(reg) == (1, 0)


def test_async_create_stream(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(latency=0.05, event_delay=0.01, input_tokens=5, output_tokens=55, stop_reason="max_tokens")
    )

    async def main():
        stream = await fake_anthropic.async_client(max_retries=0).messages.create(**kw(), stream=True)
        assert type(stream) is anthropic.AsyncStream
        return [event.type async for event in stream]

    kinds = asyncio.run(main())
    assert kinds[-1] == "message_stop"
    assert requests(reg) == (1, 0)
    count, first = ttft(reg)
    assert count == 1
    assert first >= 0.05 + 3 * 0.01
    assert tokens(reg)["output"] == 55
    assert val(reg, "claude_stop_reasons_total", agent="default", model=MODEL, stop_reason="max_tokens") == 1


def test_async_messages_stream_helpers(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(text="a b c", text_deltas=3, output_tokens=9),
        Reply(text="x y", text_deltas=2, output_tokens=8),
        Reply(output_tokens=7),
        Reply(output_tokens=6),
    )

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        async with client.messages.stream(**kw()) as stream:
            text = "".join([t async for t in stream.text_stream])
        async with client.messages.stream(**kw()) as stream:
            final = await stream.get_final_message()
        async with client.messages.stream(**kw()) as stream:
            await stream.until_done()
        async with client.messages.stream(**kw()) as stream:
            kinds = [event.type async for event in stream]
        return text, final, kinds

    text, final, kinds = asyncio.run(main())
    assert text == "a b c"
    assert type(final) is ParsedMessage
    assert final.content[0].text == "x y"
    assert "message_stop" in kinds
    assert requests(reg) == (4, 0)
    assert duration(reg)[0] == 4
    assert ttft(reg)[0] == 4
    assert tokens(reg)["output"] == 9 + 8 + 7 + 6


def test_async_break_then_aclose_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5, input_tokens=13))

    async def main():
        stream = await fake_anthropic.async_client(max_retries=0).messages.create(**kw(), stream=True)
        async for _ in stream:
            break
        assert finished(reg) == 0
        await stream.close()
        assert finished(reg) == 1
        await stream.close()

    asyncio.run(main())
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 13
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_async_context_exit_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        async with await client.messages.create(**kw(), stream=True) as stream:
            async for _ in stream:
                break
        assert finished(reg) == 1

    asyncio.run(main())
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1


def test_async_caller_exception_mid_stream_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5), Reply(text_deltas=5))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        with pytest.raises(ZeroDivisionError):
            async with await client.messages.create(**kw(), stream=True) as stream:
                async for event in stream:
                    if event.type == "content_block_delta":
                        _ = 1 / 0
        with pytest.raises(ZeroDivisionError):
            async with client.messages.stream(**kw()) as manager_stream:
                async for _ in manager_stream.text_stream:
                    _ = 1 / 0

    asyncio.run(main())
    collect_garbage()
    assert finished(reg) == 2
    assert duration(reg)[0] == 2
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_async_break_without_close_finalises_by_loop_shutdown(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5, input_tokens=3))

    async def main():
        stream = await fake_anthropic.async_client(max_retries=0).messages.create(**kw(), stream=True)
        async for _ in stream:
            break
        assert finished(reg) == 0

    asyncio.run(main())  # asyncio.run closes the abandoned async generators
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 3


def test_async_mid_stream_error(reg, fake_anthropic):
    fake_anthropic.script(Reply(stream_error_after=3), Reply(stream_error_after=3))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as first:
            async for _ in await client.messages.create(**kw(), stream=True):
                pass
        with pytest.raises(anthropic.APIStatusError) as second:
            async with client.messages.stream(**kw()) as stream:
                await stream.get_final_message()
        return first.value, second.value

    first, second = asyncio.run(main())
    assert type(first) is anthropic.APIStatusError
    assert type(second) is anthropic.APIStatusError
    assert requests(reg) == (0, 2)
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="APIStatusError",
            error_code="none",
        )
        == 2
    )


def test_async_status_error_is_recorded_and_reraised(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=529))

    async def main():
        with pytest.raises(anthropic.OverloadedError) as info:
            await fake_anthropic.async_client(max_retries=0).messages.create(**kw())
        return info.value

    err = asyncio.run(main())
    assert type(err) is anthropic.OverloadedError
    assert requests(reg) == (0, 1)
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


def test_async_retries_and_rate_limits(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=429, retry_after=0.05), Reply(status=429, retry_after=0.05), Reply())

    async def main():
        return await fake_anthropic.async_client(max_retries=2).messages.create(**kw())

    asyncio.run(main())
    assert requests(reg) == (1, 0)
    assert (
        val(reg, "claude_retries_total", agent="default", model=MODEL, reason="429", error_code="none") == 2
    )
    assert val(reg, "claude_rate_limited_total", agent="default", model=MODEL, error_code="none") == 2
    assert duration(reg)[1] >= 0.1


def test_async_with_raw_response(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=17))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        raw = await client.messages.with_raw_response.create(**kw())
        return raw, await raw.parse(), await raw.parse()

    raw, first, second = asyncio.run(main())
    assert raw.headers.get("request-id", "").startswith("req_")
    assert type(first) is Message
    assert first is second
    assert requests(reg) == (1, 0)
    assert tokens(reg)["input"] == 17


def test_async_with_streaming_response(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=4, output_tokens=44), Reply(input_tokens=5, output_tokens=55))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        async with client.messages.with_streaming_response.create(**kw()) as response:
            msg = await response.parse()
        async with client.messages.with_streaming_response.create(**kw(), stream=True) as response:
            stream = await response.parse()
            kinds = [event.type async for event in stream]
        return msg, kinds

    msg, kinds = asyncio.run(main())
    assert type(msg) is Message
    assert kinds[-1] == "message_stop"
    assert requests(reg) == (2, 0)
    assert tokens(reg)["output"] == 99
    assert ttft(reg)[0] == 1


def test_async_beta(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(content=code_execution_blocks("success")), Reply(content=code_execution_blocks("tool_error"))
    )

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        msg = await client.beta.messages.create(**kw(), betas=["code-execution-2025-08-25"])
        async with client.beta.messages.stream(**kw(), betas=["code-execution-2025-08-25"]) as stream:
            await stream.until_done()
        return msg

    msg = asyncio.run(main())
    assert type(msg) is anthropic.types.beta.BetaMessage
    assert requests(reg) == (2, 0)
    for outcome in ("success", "tool_error"):
        labels = {"agent": "default", "model": MODEL, "tool": "code_execution", "outcome": outcome}
        assert val(reg, "claude_code_blocks_executed_total", **labels) == 1


def test_async_execution_spans_gathered_requests(reg, fake_anthropic):
    fake_anthropic.script(*(Reply(input_tokens=10, output_tokens=1) for _ in range(5)))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        async with ce.execution("fanout", agent="async-bot"):
            await asyncio.gather(*(client.messages.create(**kw()) for _ in range(5)))

    asyncio.run(main())
    assert requests(reg, agent="async-bot") == (5, 0)
    assert executions(reg, "async-bot", "fanout") == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "async-bot", "fanout") == (1, 5)
    assert exec_hist(reg, "claude_execution_tokens", "async-bot", "fanout", type="input") == (1, 50)
    assert executions(reg, "async-bot", "default") == (0, 0)


def test_cancelled_request_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(latency=1.0))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.messages.create(**kw()), 0.1)

    asyncio.run(main())
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_cancelled_stream_finalises_once(reg, fake_anthropic):
    fake_anthropic.script(Reply(text_deltas=5, event_delay=0.5, input_tokens=4))

    async def consume(client):
        async with client.messages.stream(**kw()) as stream:
            await stream.until_done()

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(consume(client), 0.2)

    asyncio.run(main())
    collect_garbage()
    assert finished(reg) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 4
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_async_status_error_before_the_stream_starts(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=401), Reply(status=500))

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            async with client.messages.stream(**kw()) as stream:
                await stream.until_done()
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(**kw(), stream=True)

    asyncio.run(main())
    assert requests(reg) == (0, 2)
    assert (
        val(
            reg,
            "claude_errors_total",
            agent="default",
            model=MODEL,
            error_type="AuthenticationError",
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
            error_type="InternalServerError",
            error_code="none",
        )
        == 1
    )
    assert val(reg, "claude_requests_in_flight", agent="default") == 0
