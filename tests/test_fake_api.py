"""The fake Anthropic API against the real SDK, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import doctest
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import claude_exporter.testing
import pytest
from anthropic.types import (
    BashCodeExecutionResultBlock,
    BashCodeExecutionToolResultBlock,
    BashCodeExecutionToolResultErrorObject,
    CodeExecutionResultBlock,
    CodeExecutionToolResultBlock,
    CodeExecutionToolResultErrorObject,
    Message,
    ServerToolUseBlock,
    TextBlock,
    TextEditorCodeExecutionToolResultBlock,
    TextEditorCodeExecutionToolResultErrorObject,
    TextEditorCodeExecutionViewResultBlock,
    ToolUseBlock,
)
from anthropic.types.beta import BetaCodeExecutionToolResultBlock, BetaServerToolUseBlock
from claude_exporter.testing import FakeAnthropic, FakeRequest, Reply, code_execution_blocks, fake_api

MODEL = "claude-test-1"
KW: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.unit
def test_sdk_version() -> None:
    # These tests pin the SDK shapes of anthropic 2.x (httpx2 based); re-check them on a new major.
    assert anthropic.__version__.startswith("2.")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as f:
        yield f


def without_id(message: Message) -> dict[str, object]:
    data = message.to_dict()
    data.pop("id")
    return data


Raw = tuple[int, dict[str, str], bytes]


def http(fake: FakeAnthropic, method: str, path: str, body: object = None) -> Raw:
    """A plain urllib request, to see status, headers and body exactly as sent."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(fake.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# -- successful answers ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_non_stream_message(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(
        Reply(
            input_tokens=11,
            output_tokens=22,
            cache_creation_input_tokens=33,
            cache_read_input_tokens=44,
            cache_creation_5m=30,
            cache_creation_1h=3,
            service_tier="priority",
        )
    )
    msg = fake_anthropic.client(max_retries=0).messages.create(**KW)

    assert isinstance(msg, Message)
    assert msg.id.startswith("msg_")
    assert msg._request_id is not None and msg._request_id.startswith("req_")
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", "claude-test-1")
    assert msg.content == [TextBlock(type="text", text="Hello from the fake API.")]
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    u = msg.usage
    assert (u.input_tokens, u.output_tokens) == (11, 22)
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (33, 44)
    assert u.cache_creation is not None
    assert (u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens) == (30, 3)
    assert u.service_tier == "priority"

    [req] = fake_anthropic.requests
    assert (req.method, req.path, req.key) == ("POST", "/v1/messages", None)
    assert (req.stream, req.retry_count) == (False, 0)
    # anthropic 2.12 sends the API key as a bearer token (older SDKs: x-api-key).
    assert req.headers["authorization"] == "Bearer test-key"
    assert req.body == KW


@pytest.mark.integration
def test_defaults_and_overrides(fake: FakeAnthropic) -> None:
    client = fake.client(max_retries=0)
    plain = client.messages.create(**KW)
    assert plain.usage.cache_creation is None
    u = plain.usage
    assert (u.input_tokens, u.output_tokens) == (10, 20)
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens, u.service_tier) == (0, 0, "standard")

    fake.default = Reply(model="claude-other", stop_reason="max_tokens", text="cut", stop_sequence=None)
    msg = client.messages.create(**KW)
    assert (msg.model, msg.stop_reason) == ("claude-other", "max_tokens")
    assert msg.content == [TextBlock(type="text", text="cut")]


@pytest.mark.integration
def test_stream_event_sequence(fake: FakeAnthropic) -> None:
    fake.script(Reply(text="abcdef", text_deltas=3, output_tokens=7))
    client = fake.client(max_retries=0)
    with client.messages.create(stream=True, **KW) as stream:
        events = list(stream)

    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, block_start, *deltas, _, message_delta, _ = events
    assert start.type == "message_start"
    assert start.message.content == [] and start.message.stop_reason is None
    su = start.message.usage
    assert (su.input_tokens, su.output_tokens) == (10, 1)
    assert (su.cache_creation_input_tokens, su.cache_read_input_tokens) == (0, 0)
    assert block_start.type == "content_block_start"
    assert block_start.content_block == TextBlock(type="text", text="")
    texts = [d.delta.text for d in deltas if d.type == "content_block_delta" and d.delta.type == "text_delta"]
    assert texts == ["ab", "cd", "ef"]
    assert message_delta.type == "message_delta"
    assert (message_delta.delta.stop_reason, message_delta.delta.stop_sequence) == ("end_turn", None)
    assert (message_delta.usage.output_tokens, message_delta.usage.input_tokens) == (7, 10)
    assert fake.requests[0].stream


@pytest.mark.integration
def test_stream_wire_format(fake: FakeAnthropic) -> None:
    # The SDK hides pings; read the raw lines to see the whole sequence and the HTTP framing.
    with fake.client().messages.with_streaming_response.create(stream=True, **KW) as resp:
        headers = resp.headers
        names = [line.removeprefix("event: ") for line in resp.iter_lines() if line.startswith("event: ")]
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert headers["request-id"].startswith("req_")
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]


CONTENTS: dict[str, list[dict[str, Any]] | None] = {
    "text": None,
    "tools": [
        {"type": "thinking", "thinking": "let me see", "signature": "sig=="},
        {"type": "text", "text": "calling"},
        {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"q": "x", "n": [1, 2]}},
    ],
    "code": [*code_execution_blocks("success"), *code_execution_blocks("tool_error", "bash_code_execution")],
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", list(CONTENTS))
def test_stream_final_message_equals_non_stream(fake: FakeAnthropic, kind: str) -> None:
    fake.default = Reply(
        content=CONTENTS[kind],
        stop_reason="tool_use",
        text_deltas=4,
        output_tokens=99,
        cache_read_input_tokens=5,
        cache_creation_5m=1,
        cache_creation_1h=2,
        usage_extra={"server_tool_use": {"web_search_requests": 1}},
    )
    client = fake.client(max_retries=0)
    plain = client.messages.create(**KW)
    with client.messages.stream(**KW) as stream:
        final = stream.get_final_message()
    assert without_id(final) == without_id(plain)
    assert final.usage.output_tokens == 99 and final.stop_reason == "tool_use"


@pytest.mark.integration
def test_many_deltas_and_timing(fake: FakeAnthropic) -> None:
    fake.script(Reply(latency=0.1, event_delay=0.004, text="x" * 50, text_deltas=50))
    t0 = time.monotonic()
    with fake.client(max_retries=0).messages.stream(**KW) as stream:
        first = time.monotonic() - t0  # __enter__ returns once the status line arrived
        deltas = [e for e in stream if e.type == "content_block_delta"]
        total = time.monotonic() - t0
    assert len(deltas) == 50
    assert first >= 0.1
    assert total >= 0.1 + 52 * 0.004  # delays between the 54 events, ping included


@pytest.mark.integration
def test_count_tokens_health_and_unknown_paths(fake: FakeAnthropic) -> None:
    fake.script(Reply(input_tokens=1234))
    counted = fake.client().messages.count_tokens(model="m", messages=[{"role": "user", "content": "x"}])
    assert counted.input_tokens == 1234

    assert http(fake, "GET", "/-/healthy")[::2] == (200, b"ok")
    status, _, body = http(fake, "GET", "/v1/nope")
    assert status == 404
    assert json.loads(body)["error"] == {"type": "not_found_error", "message": "Not found: GET /v1/nope"}
    seen = [(r.method, r.path) for r in fake.requests]
    assert seen == [("POST", "/v1/messages/count_tokens"), ("GET", "/v1/nope")]


@pytest.mark.integration
def test_beta_client(fake: FakeAnthropic) -> None:
    fake.script(Reply(content=code_execution_blocks("success")))
    msg = fake.client().beta.messages.create(betas=["code-execution-2025-08-25"], **KW)
    assert isinstance(msg.content[0], BetaServerToolUseBlock)
    assert isinstance(msg.content[1], BetaCodeExecutionToolResultBlock)
    req = fake.requests[0]
    assert (req.path, req.headers["anthropic-beta"]) == ("/v1/messages", "code-execution-2025-08-25")


# -- errors and retries ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_429_retry_after_then_success(fake: FakeAnthropic) -> None:
    fake.script(Reply(status=429, retry_after=0.05), Reply(text="after wait"))
    t0 = time.monotonic()
    msg = fake.client(max_retries=2).messages.create(**KW)
    elapsed = time.monotonic() - t0
    assert msg.content[0] == TextBlock(type="text", text="after wait")
    assert [r.retry_count for r in fake.requests] == [0, 1]
    assert elapsed >= 0.05
    assert fake.pending() == 0


@pytest.mark.integration
def test_retry_after_headers_and_error_body(fake: FakeAnthropic) -> None:
    fake.script(Reply(status=429, retry_after=1.5, error_message="slow down"))
    status, headers, body = http(fake, "POST", "/v1/messages", KW)
    assert status == 429
    assert (headers["retry-after-ms"], headers["retry-after"]) == ("1500", "2")
    parsed = json.loads(body)
    assert parsed["type"] == "error"
    assert parsed["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert parsed["request_id"] == headers["request-id"]

    # Sub-millisecond waits stay exact: the SDK parses retry-after-ms as a float.
    fake.script(Reply(status=503, retry_after=0.0125))
    status, headers, _ = http(fake, "POST", "/v1/messages", KW)
    assert (status, headers["retry-after-ms"], headers["retry-after"]) == (503, "12.5", "1")


@pytest.mark.integration
def test_error_status_on_stream_request(fake: FakeAnthropic) -> None:
    # Errors before the stream starts are plain JSON responses, as with the real API.
    fake.script(Reply(status=529))
    with pytest.raises(anthropic.OverloadedError), fake.client(max_retries=0).messages.stream(**KW) as stream:
        stream.get_final_message()
    assert fake.requests[0].stream


@pytest.mark.integration
@pytest.mark.parametrize(
    ("status", "exc_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.ContentTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_error_status_raises_sdk_class(
    fake: FakeAnthropic, status: int, exc_class: type[anthropic.APIStatusError], error_type: str
) -> None:
    fake.script(Reply(status=status))
    with pytest.raises(anthropic.APIStatusError) as info:
        fake.client(max_retries=0).messages.create(**KW)
    assert type(info.value) is exc_class
    assert (info.value.status_code, info.value.type) == (status, error_type)
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")
    assert len(fake.requests) == 1


@pytest.mark.integration
def test_error_code_selects_subclass(fake: FakeAnthropic) -> None:
    fake.script(Reply(status=429, error_code="ramp_limit_exceeded"))
    with pytest.raises(anthropic.RampLimitExceededError) as info:
        fake.client(max_retries=0).messages.create(**KW)
    assert info.value.error_code == "ramp_limit_exceeded"


@pytest.mark.integration
def test_5xx_is_retried(fake: FakeAnthropic) -> None:
    fake.script(Reply(status=529, retry_after=0.01), Reply(status=500, retry_after=0.01), Reply(text="ok"))
    assert fake.client(max_retries=2).messages.create(**KW).content[0] == TextBlock(type="text", text="ok")
    assert len(fake.requests) == 3


@pytest.mark.integration
def test_drop_connection(fake: FakeAnthropic) -> None:
    fake.script(Reply(drop_connection=True))
    with pytest.raises(anthropic.APIConnectionError):
        fake.client(max_retries=0).messages.create(**KW)

    fake.script(Reply(drop_connection=True), Reply(text="second try"))
    msg = fake.client(max_retries=1).messages.create(**KW)
    assert msg.content[0] == TextBlock(type="text", text="second try")
    assert [r.retry_count for r in fake.requests] == [0, 0, 1]


@pytest.mark.integration
def test_latency_beyond_timeout(fake: FakeAnthropic) -> None:
    fake.script(Reply(latency=1.0))
    with pytest.raises(anthropic.APITimeoutError):
        fake.client(max_retries=0, timeout=0.1).messages.create(**KW)


@pytest.mark.integration
def test_stream_error_mid_iteration(fake: FakeAnthropic) -> None:
    # message_start, ping, content_block_start, one delta, then the error event.
    fake.script(Reply(text="abcdef", text_deltas=3, stream_error_after=4))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in fake.client(max_retries=0).messages.create(stream=True, **KW):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert type(info.value) is anthropic.APIStatusError
    err = info.value
    assert (err.status_code, err.type, err.api_message) == (200, "overloaded_error", "Overloaded")
    assert len(fake.requests) == 1  # never retried


@pytest.mark.integration
def test_client_disconnect_is_quiet(fake: FakeAnthropic, capfd: pytest.CaptureFixture[str]) -> None:
    fake.script(Reply(text="x" * 40, text_deltas=40, event_delay=0.005))
    with fake.client(max_retries=0).messages.create(stream=True, **KW) as stream:
        for _ in stream:
            break
    assert fake.wait_idle(timeout=5)
    assert capfd.readouterr().err == ""
    assert fake.errors == []


# -- scripting --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_keyed_queues(fake: FakeAnthropic) -> None:
    fake.script(Reply(text="for a 1"), Reply(text="for a 2"), key="agent-a")
    fake.script(Reply(text="unkeyed"))
    fake.default = Reply(text="default")
    a = fake.client(key="agent-a", max_retries=0)
    plain = fake.client(max_retries=0)

    texts = [
        a.messages.create(**KW).content[0],
        plain.messages.create(**KW).content[0],
        a.messages.create(**KW).content[0],
        a.messages.create(**KW).content[0],  # its queue is empty: never the unkeyed queue
        plain.messages.create(**KW).content[0],
    ]
    assert [t.text for t in texts if isinstance(t, TextBlock)] == [
        "for a 1",
        "unkeyed",
        "for a 2",
        "default",
        "default",
    ]
    assert [r.key for r in fake.requests] == ["agent-a", None, "agent-a", "agent-a", None]
    assert fake.requests[0].headers["x-fake-key"] == "agent-a"


@pytest.mark.integration
def test_answered_pairs_each_messages_request_with_the_reply_it_took(fake: FakeAnthropic) -> None:
    """The ground truth of a test: which reply answered which request, per key, whatever chose it."""
    first, second = Reply(text="one", input_tokens=5), Reply(status=529)
    fake.script(first, second, key="k")
    fake.default = Reply(text="default")
    client = fake.client(key="k", max_retries=0)
    client.messages.create(**KW)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(**KW)
    client.messages.create(**KW)  # its queue is empty: the default
    fake.client(max_retries=0).messages.create(**{**KW, "model": "other"})
    answered = fake.answered("k")
    assert [reply for _, reply in answered] == [first, second, fake.default]
    assert [request for request, _ in answered] == [r for r in fake.requests if r.key == "k"]
    [(request, reply)] = fake.answered()
    assert (request.body["model"], reply) == ("other", fake.default)
    fake.reset()
    assert fake.answered("k") == []


@pytest.mark.integration
def test_responder(fake: FakeAnthropic) -> None:
    def echo(req: FakeRequest) -> Reply:
        return Reply(text=f"echo: {req.body['messages'][0]['content']}", output_tokens=req.body["max_tokens"])

    fake.responder = echo
    fake.script(Reply(text="queued first"))
    client = fake.client(max_retries=0)
    assert client.messages.create(**KW).content[0] == TextBlock(type="text", text="queued first")
    msg = client.messages.create(**KW)
    assert (msg.content[0], msg.usage.output_tokens) == (TextBlock(type="text", text="echo: hi"), 64)


@pytest.mark.integration
def test_responder_exception_is_500(fake: FakeAnthropic) -> None:
    def broken(req: FakeRequest) -> Reply:
        raise KeyError("oops")

    fake.responder = broken
    with pytest.raises(anthropic.InternalServerError):
        fake.client(max_retries=0).messages.create(**KW)
    assert [type(e) for e in fake.errors] == [KeyError]


@pytest.mark.integration
def test_ratelimit_and_extra_headers(fake: FakeAnthropic) -> None:
    reset = "2026-01-01T00:00:30Z"
    fake.script(
        Reply(
            ratelimit={"requests": (50, 49, reset), "input_tokens": (40000, 39000, reset)},
            headers={"anthropic-organization-id": "org-1"},
        )
    )
    raw = fake.client().messages.with_raw_response.create(**KW)
    h = raw.headers
    assert h["anthropic-ratelimit-requests-limit"] == "50"
    assert h["anthropic-ratelimit-requests-remaining"] == "49"
    assert h["anthropic-ratelimit-requests-reset"] == reset
    assert h["anthropic-ratelimit-input-tokens-limit"] == "40000"
    assert h["anthropic-ratelimit-input-tokens-remaining"] == "39000"
    assert h["anthropic-organization-id"] == "org-1"
    assert "retry-after" not in h
    assert raw.parse().usage.input_tokens == 10


@pytest.mark.unit
def test_invalid_replies() -> None:
    with pytest.raises(ValueError):
        Reply(text_deltas=0)
    with pytest.raises(ValueError):
        Reply(status=42)
    with pytest.raises(ValueError):
        code_execution_blocks("exploded")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        FakeAnthropic().script({"status": 200})  # type: ignore[arg-type]


# -- code execution blocks ----------------------------------------------------------------------------------

RESULTS: dict[tuple[str, str], tuple[type[Any], type[Any]]] = {
    ("code_execution", "success"): (CodeExecutionToolResultBlock, CodeExecutionResultBlock),
    ("code_execution", "nonzero_exit"): (CodeExecutionToolResultBlock, CodeExecutionResultBlock),
    ("code_execution", "tool_error"): (CodeExecutionToolResultBlock, CodeExecutionToolResultErrorObject),
    ("bash_code_execution", "success"): (BashCodeExecutionToolResultBlock, BashCodeExecutionResultBlock),
    ("bash_code_execution", "nonzero_exit"): (BashCodeExecutionToolResultBlock, BashCodeExecutionResultBlock),
    ("bash_code_execution", "tool_error"): (
        BashCodeExecutionToolResultBlock,
        BashCodeExecutionToolResultErrorObject,
    ),
    ("text_editor_code_execution", "success"): (
        TextEditorCodeExecutionToolResultBlock,
        TextEditorCodeExecutionViewResultBlock,
    ),
    ("text_editor_code_execution", "nonzero_exit"): (
        TextEditorCodeExecutionToolResultBlock,
        TextEditorCodeExecutionToolResultErrorObject,
    ),
    ("text_editor_code_execution", "tool_error"): (
        TextEditorCodeExecutionToolResultBlock,
        TextEditorCodeExecutionToolResultErrorObject,
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize(("tool", "outcome"), list(RESULTS))
@pytest.mark.parametrize("streaming", [False, True])
def test_code_execution_blocks_parse(fake: FakeAnthropic, tool: Any, outcome: Any, streaming: bool) -> None:
    blocks = code_execution_blocks(outcome, tool)
    fake.default = Reply(content=blocks)
    client = fake.client(max_retries=0)
    if streaming:
        with client.messages.stream(**KW) as stream:
            msg = stream.get_final_message()
    else:
        msg = client.messages.create(**KW)

    use, result = msg.content
    block_class, content_class = RESULTS[tool, outcome]
    assert isinstance(use, ServerToolUseBlock)
    assert use.name == tool and use.id.startswith("srvtoolu_") and use.input == blocks[0]["input"]
    assert isinstance(result, block_class)
    assert result.tool_use_id == use.id
    assert isinstance(result.content, content_class)
    if outcome == "tool_error":
        assert result.content.error_code == "execution_time_exceeded"
    elif tool == "text_editor_code_execution":
        assert result.content.type == (
            "text_editor_code_execution_view_result"
            if outcome == "success"
            else "text_editor_code_execution_tool_result_error"
        )
    else:
        assert result.content.return_code == (0 if outcome == "success" else 1)


@pytest.mark.unit
def test_code_execution_blocks_fresh_ids() -> None:
    a, b = code_execution_blocks(), code_execution_blocks()
    assert a[0]["id"] != b[0]["id"]
    assert code_execution_blocks(tool_use_id="srvtoolu_x")[1]["tool_use_id"] == "srvtoolu_x"


# -- async, lifecycle, packaging -------------------------------------------------------------------------


@pytest.mark.integration
def test_async_client(fake: FakeAnthropic) -> None:
    fake.script(
        Reply(text="async hi", output_tokens=5),
        Reply(content=[{"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"k": 1}}], text_deltas=2),
        Reply(status=529),
    )

    async def main() -> tuple[Message, Message, BaseException]:
        async with fake.async_client(max_retries=0) as client:
            plain = await client.messages.create(**KW)
            async with client.messages.stream(**KW) as stream:
                final = await stream.get_final_message()
            try:
                await client.messages.create(**KW)
            except anthropic.APIStatusError as err:
                return plain, final, err
            raise AssertionError("no error raised")

    plain, final, err = asyncio.run(main())
    assert plain.content[0] == TextBlock(type="text", text="async hi") and plain.usage.output_tokens == 5
    assert final.content[0] == ToolUseBlock(type="tool_use", id="toolu_9", name="f", input={"k": 1})
    assert type(err) is anthropic.OverloadedError


@pytest.mark.integration
def test_lifecycle() -> None:
    fake = FakeAnthropic()
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    assert fake.start() is fake and fake.running
    assert fake.url.startswith("http://127.0.0.1:")
    assert http(fake, "GET", "/-/healthy")[0] == 200
    fake.stop()
    fake.stop()  # idempotent
    assert not fake.running
    with pytest.raises(RuntimeError):
        _ = fake.port


@pytest.mark.integration
def test_stop_interrupts_slow_request() -> None:
    fake = FakeAnthropic().start()
    fake.script(Reply(latency=3600))  # never answered unless stop() interrupts it
    client = fake.client(max_retries=0)
    threading_error: list[BaseException] = []

    def call() -> None:
        try:
            client.messages.create(**KW)
        except BaseException as exc:
            threading_error.append(exc)

    t = threading.Thread(target=call)
    t.start()
    while not fake.requests:
        time.sleep(0.01)
    fake.stop()
    t.join(timeout=120)  # bounds a failing run only: without the interruption it would wait an hour
    assert not t.is_alive()
    assert [type(e) for e in threading_error] == [anthropic.APIConnectionError]


@pytest.mark.integration
def test_reset(fake: FakeAnthropic) -> None:
    fake.script(Reply(), Reply(), key="k")
    fake.client().messages.create(**KW)
    fake.reset()
    assert (fake.requests, fake.pending("k")) == ([], 0)


@pytest.mark.unit
def test_plugin_registered(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("claude_exporter")


@pytest.mark.integration
def test_docstring_examples() -> None:
    for module in (claude_exporter.testing, fake_api):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.unit
def test_public_surface() -> None:
    for name in claude_exporter.testing.__all__:
        assert getattr(claude_exporter.testing, name) is not None
    required = {"FakeAnthropic", "Reply", "FakeRequest", "code_execution_blocks"}
    assert required <= set(claude_exporter.testing.__all__)
