"""The shim is invisible to the caller: the SDK's own return types and objects, raw and streaming responses
untouched, a clean uninstrument(), idempotent instrument(), and every client measured (made before or after
instrument(), first-party, beta, Bedrock and Vertex)."""

from __future__ import annotations

import importlib
import warnings

import anthropic
import claude_exporter as ce
import httpx2
import pytest
from anthropic._response import APIResponse
from anthropic.types import Message
from anthropic.types.beta import BetaMessage
from claude_exporter.instrumentation import instrumentor
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import MODEL, duration, kw, requests, tokens, ttft, val
from prometheus_client import CollectorRegistry

MARK = "__claude_exporter_original__"


def entry_point_attributes():
    """{(class, attribute): the attribute as it is in the class __dict__ now}."""
    out = {}
    for module_name, class_name, attribute, _ in instrumentor.SEAMS:
        owner = getattr(importlib.import_module(module_name), class_name)
        out[(owner, attribute)] = owner.__dict__[attribute]
    return out


def replaced(attr) -> bool:
    return getattr(attr, MARK, None) is not None


# -- return types -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_return_types_are_the_sdks(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    msg = client.messages.create(**kw())
    beta = client.beta.messages.create(**kw(), betas=["context-1m-2025-08-07"])
    stream = client.messages.create(**kw(), stream=True)
    beta_stream = client.beta.messages.create(**kw(), betas=["context-1m-2025-08-07"], stream=True)
    manager = client.messages.stream(**kw())

    assert type(msg) is Message
    assert type(beta) is BetaMessage
    assert type(stream) is anthropic.Stream
    assert type(beta_stream) is anthropic.Stream
    assert type(manager) is anthropic.lib.streaming.MessageStreamManager
    with manager as message_stream:
        assert type(message_stream) is anthropic.lib.streaming.MessageStream
        message_stream.until_done()
    assert msg.content[0].text == "Hello from the fake API."
    assert msg.usage.input_tokens == 10
    for s in (stream, beta_stream):
        for _ in s:
            pass
    assert requests(reg) == (5, 0)


@pytest.mark.integration
def test_same_result_instrumented_or_not(fake_anthropic):
    # The very bytes decode to the same model either way.
    fake_anthropic.script(Reply(text="same"), Reply(text="same"))
    client = fake_anthropic.client(max_retries=0)
    plain = client.messages.create(**kw())
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    try:
        measured = client.messages.create(**kw())
    finally:
        ce.uninstrument()
    assert type(plain) is type(measured)
    assert plain.model_dump(exclude={"id"}) == measured.model_dump(exclude={"id"})


@pytest.mark.integration
def test_with_raw_response(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=31, output_tokens=41, headers={"x-custom": "yes"}))
    raw = fake_anthropic.client(max_retries=0).messages.with_raw_response.create(**kw())

    assert type(raw) is APIResponse
    assert raw.headers["x-custom"] == "yes"
    assert raw.headers["request-id"].startswith("req_")
    first = raw.parse()
    assert type(first) is Message
    assert raw.parse() is first
    assert first.usage.output_tokens == 41
    assert requests(reg) == (1, 0)
    assert tokens(reg)["input"] == 31
    assert tokens(reg)["output"] == 41


@pytest.mark.integration
def test_with_raw_response_stream(reg, fake_anthropic):
    fake_anthropic.script(Reply(output_tokens=23))
    raw = fake_anthropic.client(max_retries=0).messages.with_raw_response.create(**kw(), stream=True)
    stream = raw.parse()
    assert type(stream) is anthropic.Stream
    assert raw.parse() is stream
    kinds = [event.type for event in stream]
    assert kinds[-1] == "message_stop"
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 23
    assert ttft(reg)[0] == 1


@pytest.mark.integration
def test_with_streaming_response_message(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=3, output_tokens=5))
    client = fake_anthropic.client(max_retries=0)
    with client.messages.with_streaming_response.create(**kw()) as response:
        assert response.headers["request-id"].startswith("req_")
        msg = response.parse()
        assert type(msg) is Message
        assert response.parse() is msg
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 5
    assert duration(reg)[0] == 1


@pytest.mark.integration
def test_with_streaming_response_stream(reg, fake_anthropic):
    fake_anthropic.script(Reply(output_tokens=19, event_delay=0.005))
    client = fake_anthropic.client(max_retries=0)
    with client.messages.with_streaming_response.create(**kw(), stream=True) as response:
        stream = response.parse()
        assert type(stream) is anthropic.Stream
        kinds = [event.type for event in stream]
    assert kinds[-1] == "message_stop"
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 19
    assert ttft(reg)[0] == 1
    assert duration(reg)[0] == 1


@pytest.mark.integration
def test_with_streaming_response_stream_closed_early(reg, fake_anthropic):
    fake_anthropic.script(Reply(input_tokens=8, text_deltas=5))
    client = fake_anthropic.client(max_retries=0)
    with client.messages.with_streaming_response.create(**kw(), stream=True) as response:
        for _ in response.parse():
            break
    assert sum(requests(reg)) == 1
    assert duration(reg)[0] == 1
    assert tokens(reg)["input"] == 8


@pytest.mark.integration
def test_with_streaming_response_read_without_parse(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    with client.messages.with_streaming_response.create(**kw()) as response:
        body = response.read()
    assert b'"type": "message"' in body or b'"type":"message"' in body
    assert sum(requests(reg)) == 1
    assert duration(reg)[0] == 1


@pytest.mark.integration
def test_beta_with_raw_response(reg, fake_anthropic):
    fake_anthropic.script(Reply(output_tokens=6))
    client = fake_anthropic.client(max_retries=0)
    raw = client.beta.messages.with_raw_response.create(**kw(), betas=["context-1m-2025-08-07"])
    assert type(raw.parse()) is BetaMessage
    assert requests(reg) == (1, 0)
    assert tokens(reg)["output"] == 6


# -- instrument / uninstrument -------------------------------------------------------------------------------


@pytest.mark.integration
def test_uninstrument_restores_every_entry_point(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    before = entry_point_attributes()
    assert not any(replaced(attr) for attr in before.values())
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    try:
        during = entry_point_attributes()
        for key, attr in during.items():
            assert replaced(attr), key
            assert getattr(attr, MARK) is before[key], key
        client = fake_anthropic.client(max_retries=0)
        client.messages.create(**kw())
        assert client._middleware == ()  # the client stays on the SDK's own code path
    finally:
        ce.uninstrument()
    after = entry_point_attributes()
    for key, attr in after.items():
        assert attr is before[key], key
    assert not ce.is_instrumented()
    # Nothing is counted any more, and the metrics left the registry.
    client.messages.create(**kw())
    assert registry.get_sample_value("claude_requests_total", {}) is None
    assert "claude_requests" not in {m.name for m in registry.collect()}


@pytest.mark.unit
def test_bedrock_and_vertex_clients_go_through_the_one_request_seam():
    from anthropic import AnthropicBedrock, AnthropicVertex, AsyncAnthropicBedrock, AsyncAnthropicVertex
    from anthropic._base_client import AsyncAPIClient, SyncAPIClient

    if ACTIVE.recorder is not None:
        ce.uninstrument()
    ce.instrument(registry=CollectorRegistry())
    try:
        # They inherit the request method: nothing of theirs needs a patch of its own.
        for client_class in (AnthropicBedrock, AnthropicVertex):
            assert client_class.request is SyncAPIClient.request
            assert replaced(client_class.request)
        for client_class in (AsyncAnthropicBedrock, AsyncAnthropicVertex):
            assert client_class.request is AsyncAPIClient.request
            assert replaced(client_class.request)
    finally:
        ce.uninstrument()
    assert not replaced(AnthropicBedrock.request)


@pytest.mark.integration
def test_instrument_twice_is_idempotent(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    first = ce.instrument(registry=registry)
    try:
        second = ce.instrument(registry=registry)
        third = ce.instrument(registry=CollectorRegistry())
        assert second is first
        assert third is first
        for attr in entry_point_attributes().values():
            assert replaced(attr)
            assert not replaced(getattr(attr, MARK))  # never wrapped twice
        client = fake_anthropic.client(max_retries=0)
        client.messages.create(**kw())
        assert requests(registry) == (1, 0)
    finally:
        ce.uninstrument()
    ce.uninstrument()  # a second uninstrument is harmless


@pytest.mark.integration
def test_client_created_before_instrument_is_measured(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    client = fake_anthropic.client(max_retries=1)
    async_client = fake_anthropic.async_client(max_retries=0)
    client.messages.create(**kw())  # used before, too
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    try:
        fake_anthropic.script(Reply(status=429, retry_after=0.01), Reply())
        client.messages.create(**kw())
        import asyncio

        asyncio.run(async_client.messages.create(**kw()))
        assert requests(registry) == (2, 0)
        # The per-attempt seam reached the old client too.
        labels = {"agent": "default", "model": MODEL, "reason": "429", "error_code": "none"}
        assert registry.get_sample_value("claude_retries_total", labels) == 1
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_raw_response_accessor_read_before_instrument_is_measured(fake_anthropic):
    # with_raw_response binds messages.create when first read; a client that read it before instrument()
    # is still a client made before instrument(), which the contract says is measured.
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    client = fake_anthropic.client(max_retries=0)
    raw_api = client.messages.with_raw_response
    streaming_api = client.messages.with_streaming_response
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    try:
        raw_api.create(**kw()).parse()
        with streaming_api.create(**kw()) as response:
            response.parse()
        assert requests(registry) == (2, 0)
    finally:
        ce.uninstrument()


def _attributes_a_request_changes(client) -> set[str]:
    assert client.messages is not None  # a cached property: read it before taking the snapshot
    before = dict(vars(client))
    client.messages.create(**kw())
    client.with_options(timeout=5.0).messages.create(**kw())
    after = vars(client)
    return {key for key in before.keys() | after.keys() if before.get(key) is not after.get(key)}


@pytest.mark.integration
def test_the_shim_writes_nothing_on_a_client(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    bare = _attributes_a_request_changes(fake_anthropic.client(max_retries=0))
    registry = CollectorRegistry()
    ce.instrument(registry=registry)
    try:
        client = fake_anthropic.client(max_retries=0)
        assert _attributes_a_request_changes(client) == bare  # what the SDK itself changes, nothing more
        assert client._middleware == ()
        assert requests(registry) == (2, 0)
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_instrument_again_after_uninstrument_on_the_same_registry(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    client = fake_anthropic.client(max_retries=0)
    for expected in (1, 2):
        ce.instrument(registry=registry)
        try:
            for _ in range(expected):
                client.messages.create(**kw())
            assert requests(registry) == (expected, 0)  # a fresh recorder each time
        finally:
            ce.uninstrument()


@pytest.mark.integration
def test_copied_clients_are_measured_once(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())
    copied = client.with_options(timeout=5.0)
    copied.messages.create(**kw())
    assert requests(reg) == (2, 0)


@pytest.mark.integration
def test_user_middleware_still_sees_every_attempt(reg, fake_anthropic):
    seen = []

    class Spy(anthropic.Middleware):
        def handle(self, request, call_next):
            response = call_next(request)
            seen.append(response.http_response.status_code)
            return response

    fake_anthropic.script(Reply(status=529, retry_after=0.01), Reply())
    fake_anthropic.client(max_retries=1, middleware=[Spy()]).messages.create(**kw())
    assert seen == [529, 200]
    assert (
        val(reg, "claude_retries_total", agent="default", model=MODEL, reason="529", error_code="none") == 1
    )


def _deprecated_model(monkeypatch) -> str:
    """A model the installed SDK warns for: the first of its own deprecation table, which changes with every
    release. An SDK whose table is empty gets a priced model entered into that same table, so the warning
    still comes from the SDK's own code path (create() reading its table), never from this test."""
    table = importlib.import_module("anthropic.resources.messages.messages").DEPRECATED_MODELS
    if table:
        return str(next(iter(table)))
    monkeypatch.setitem(table, MODEL, "a date the installed SDK does not know")
    return MODEL


def _deprecation_filenames(client, model: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.messages.create(**kw(model))
    return [w.filename for w in caught if issubclass(w.category, DeprecationWarning)]


@pytest.mark.integration
def test_deprecation_warning_points_at_the_caller(fake_anthropic, monkeypatch):
    # The SDK warns with stacklevel=3 (create -> required_args wrapper -> caller): the warning names the
    # caller's file, so users' warning filters and reports keep working. A Python-level wrapper frame
    # between the caller and create() would shift it onto the shim.
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    model = _deprecated_model(monkeypatch)
    client = fake_anthropic.client(max_retries=0)
    assert _deprecation_filenames(client, model) == [__file__]  # the SDK alone
    ce.instrument(registry=CollectorRegistry())
    try:
        assert _deprecation_filenames(client, model) == [__file__]
    finally:
        ce.uninstrument()


@pytest.mark.integration
def test_nothing_measured_when_not_instrumented(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    client = fake_anthropic.client(max_retries=0)
    assert type(client.messages.create(**kw())) is Message
    assert client._middleware == ()


# -- Bedrock and Vertex, over real HTTP to the fake ---------------------------------------------------------


class ToMessagesPath(httpx2.HTTPTransport):
    """Bedrock and Vertex post to their own paths; the fake serves /v1/messages."""

    def handle_request(self, request):
        self.paths.append(request.url.path)
        request.url = request.url.copy_with(path="/v1/messages")
        return super().handle_request(request)

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []


@pytest.mark.integration
def test_bedrock_traffic_is_measured(reg, fake_anthropic):
    # Bedrock's API-key auth needs no AWS libraries. Non-streaming only: Bedrock streams in AWS's binary
    # event-stream encoding, which the fake does not speak.
    transport = ToMessagesPath()
    client = anthropic.AnthropicBedrock(
        api_key="test-key",
        aws_region="us-east-1",
        base_url=fake_anthropic.url,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )
    model = "anthropic.claude-haiku-4-5-v1:0"
    fake_anthropic.script(Reply(input_tokens=7, output_tokens=9), Reply(input_tokens=7, output_tokens=9))
    msg = client.messages.create(**kw(model))
    beta = client.beta.messages.create(**kw(model))

    assert type(msg) is Message
    assert type(beta) is BetaMessage
    assert all(path.startswith("/model/") for path in transport.paths)
    assert requests(reg, model=model) == (2, 0)
    assert tokens(reg, model=model) == {"input": 14, "output": 18, "cache_creation": 0, "cache_read": 0}


@pytest.mark.integration
def test_vertex_traffic_is_measured(reg, fake_anthropic):
    # An explicit access token needs no google-auth.
    transport = ToMessagesPath()
    client = anthropic.AnthropicVertex(
        region="us-east5",
        project_id="test-project",
        access_token="test-token",
        base_url=fake_anthropic.url,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )
    model = "claude-haiku-4-5@20251001"
    fake_anthropic.script(*(Reply(input_tokens=2, output_tokens=3) for _ in range(4)))
    msg = client.messages.create(**kw(model))
    beta = client.beta.messages.create(**kw(model))
    with client.beta.messages.stream(**kw(model)) as stream:
        stream.until_done()
    for _ in client.messages.create(**kw(model), stream=True):
        pass

    assert type(msg) is Message
    assert type(beta) is BetaMessage
    assert all(path.startswith("/projects/test-project/") for path in transport.paths)
    assert requests(reg, model=model) == (4, 0)
    assert tokens(reg, model=model)["output"] == 12
    assert ttft(reg, model=model)[0] == 2


@pytest.mark.unit
def test_sdk_version():
    # These tests rely on anthropic 2.x shapes (httpx2, Middleware, error classes); re-check on a new major.
    assert anthropic.__version__.startswith("2.")


@pytest.mark.unit
@pytest.mark.parametrize("name", ["Anthropic", "AsyncAnthropic", "AnthropicBedrock", "AnthropicVertex"])
def test_client_classes_are_not_replaced(name):
    cls = getattr(anthropic, name)
    assert cls.__module__.startswith("anthropic")
