"""The defects the core v2 issue found by reading, each reproduced; every test here fails on the 0.1 core."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import claude_exporter as ce
import pytest
from claude_exporter.cli.localstack import LocalStack
from claude_exporter.config import parse_config
from claude_exporter.exposition import eventlog
from claude_exporter.instrumentation import instrumentor
from claude_exporter.recording.pricing import load_price_table
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import has, is_close, kw, requests, val
from prometheus_client import CollectorRegistry

OPUS, HAIKU = "claude-opus-4-6", "claude-haiku-4-5"


def _caps(**caps: int):
    return parse_config({"exporter": {"label_caps": caps}, "monitoring": {}})


@pytest.fixture
def fresh():
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    yield
    ce.uninstrument()


# 1. Once `model` folds into __overflow__, each later model is priced as the one it names.
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


# 2. A stream finalised by the garbage collector while this thread holds its series' lock.
def test_a_stream_collected_while_its_series_is_locked_does_not_deadlock(instrumented, fake_anthropic):
    reg, rec = instrumented
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())  # the series exists
    series = rec.request_series[0]
    finished = threading.Event()

    def scenario() -> None:
        stream = client.messages.create(**kw(), stream=True)
        next(iter(stream))  # started, then dropped without close()
        with series.lock:  # a garbage collection may run at any allocation, also under this lock
            del stream
            gc.collect()
        finished.set()

    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(10)
    assert finished.is_set(), "the finaliser deadlocked on the series lock"
    assert requests(reg) == (2, 0)  # the scrape settles the orphaned stream


# 3. instrument() that fails half-way leaves nothing behind, so a retry works.
def test_instrument_is_all_or_nothing(fresh, monkeypatch):
    registry = CollectorRegistry()
    threads_before = {t.name for t in threading.enumerate()}

    def broken_factory(original, rec):
        raise RuntimeError("the last seam cannot be built")

    module, cls, attribute, _ = instrumentor.SEAMS[-1]
    monkeypatch.setattr(
        instrumentor, "SEAMS", (*instrumentor.SEAMS[:-1], (module, cls, attribute, broken_factory))
    )
    with pytest.raises(RuntimeError):
        ce.instrument(registry=registry)  # five seams were patched before the sixth failed
    assert not ce.is_instrumented()
    assert list(registry.collect()) == []  # nothing registered
    assert "claude-exporter-health" not in {t.name for t in threading.enumerate()} - threads_before
    monkeypatch.undo()
    for module, cls, attribute, _ in instrumentor.SEAMS:
        owner = getattr(__import__(module, fromlist=[cls]), cls)
        assert not hasattr(owner.__dict__[attribute], "__claude_exporter_original__"), (cls, attribute)
    ce.instrument(registry=registry)  # no DuplicateTimeseries
    assert ce.is_instrumented()


# 4. The event log costs nothing per request unless asked for (a config file or a handler of its own).
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


# 5a. `metrics:` enables families per agent.
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


# 5b. `retention_days` reaches the Prometheus the project starts.
def test_retention_days_reaches_the_local_prometheus(tmp_path: Path):
    config = parse_config({"monitoring": {"a": {"retention_days": 30}, "b": {"retention_days": 90}}})
    argv = LocalStack(config, "127.0.0.1:1", tmp_path, print).prometheus_argv(9090)
    assert "--storage.tsdb.retention.time=90d" in argv


# -- found in review of the new core ----------------------------------------------------------------------


def test_a_callers_stream_closed_by_the_collector_while_recording_does_not_deadlock(
    instrumented, fake_anthropic
):
    """The caller's own finaliser (a generator holding ``messages.stream()``) closes the stream from inside
    a garbage collection that runs while this thread holds a series lock."""
    reg, rec = instrumented
    client = fake_anthropic.client(max_retries=0)
    client.messages.create(**kw())
    series = rec.request_series[0]
    finished = threading.Event()

    def agent_step():
        with client.messages.stream(**kw()) as stream:
            yield from stream

    def scenario() -> None:
        steps = agent_step()
        next(steps)
        cycle = [steps]
        cycle.append(cycle)  # only the cyclic collector frees it
        del steps, cycle
        # The state inside RequestSeries.finish: this thread is recording and holds the series lock
        # when an allocation sets off a collection.
        with series.lock:
            rec.busy.on = True
            try:
                gc.collect()
            finally:
                rec.busy.on = False
        finished.set()

    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(10)
    assert finished.is_set(), "the caller's finaliser deadlocked on the series lock"
    assert requests(reg) == (2, 0)


def test_a_fault_opening_a_request_leaves_nothing_in_flight(fresh, fake_anthropic, monkeypatch):
    from claude_exporter.instrumentation import seams

    registry = CollectorRegistry()
    rec = ce.instrument(
        parse_config({"monitoring": {"default": {"code_tools": ["run_python"]}}}), registry=registry
    )

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(seams, "client_code_blocks", boom)
    fake_anthropic.client(max_retries=0).messages.create(**kw())
    assert rec.running_calls == {}
    assert val(registry, "claude_exporter_internal_errors_total", stage="request_start") == 1


def test_a_streaming_response_dropped_unclosed_is_finished(instrumented, fake_anthropic):
    reg, rec = instrumented
    client = fake_anthropic.client(max_retries=0)
    response = client.messages.with_streaming_response.create(**kw()).__enter__()
    assert len(rec.running_calls) == 1
    del response
    gc.collect()
    assert requests(reg) == (1, 0)  # the scrape settles it
    assert rec.running_calls == {}


def test_async_seams_are_still_coroutine_functions(fresh):
    import asyncio
    import inspect
    from unittest import mock

    import httpx2
    from anthropic._base_client import AsyncAPIClient

    ce.instrument(registry=CollectorRegistry())
    for function in (AsyncAPIClient.request, httpx2.AsyncClient.send, anthropic_async_stream_close()):
        assert inspect.iscoroutinefunction(function)
        assert asyncio.iscoroutinefunction(function)
    with mock.patch.object(httpx2.AsyncClient, "send") as patched:
        assert isinstance(patched, mock.AsyncMock)


def anthropic_async_stream_close():
    from anthropic import AsyncStream

    return AsyncStream.close


def test_other_http_calls_during_a_request_are_not_attempts(reg, fake_anthropic):
    import httpx2

    side: list[int] = []

    def hook(request):  # a request hook that fetches something of its own, e.g. a gateway token
        with httpx2.Client() as other:
            side.append(other.get(fake_anthropic.url + "/-/nothing-here").status_code)

    client = fake_anthropic.client(max_retries=0, http_client=httpx2.Client(event_hooks={"request": [hook]}))
    client.messages.create(**kw())
    assert side  # the side request was made inside the measured request
    assert requests(reg) == (1, 0)
    assert not has(
        reg, "claude_retries_total", agent="default", model=kw()["model"], reason="unknown", error_code="none"
    )
    assert val(reg, "claude_rate_limited_total", agent="default", model=kw()["model"], error_code="none") == 0


def test_a_raw_response_the_sdk_rejects_is_counted_without_a_fault(reg):
    """with_raw_response.create() returns before the body is parsed; when the SDK's parse rejects the body
    (found running the SDK's own suite), the request still counts and the shim reports no internal fault."""
    import anthropic
    import httpx2

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={})

    http = anthropic.DefaultHttpxClient(transport=httpx2.MockTransport(handler))
    client = anthropic.Anthropic(
        api_key="x", http_client=http, max_retries=0, _strict_response_validation=True
    )
    raw = client.messages.with_raw_response.create(**kw())
    with pytest.raises(anthropic.APIResponseValidationError):
        raw.parse()
    assert requests(reg) == (1, 0)
    assert not has(reg, "claude_exporter_internal_errors_total", stage="request_result")
