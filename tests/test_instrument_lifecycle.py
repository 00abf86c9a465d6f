"""``instrument()`` is all or nothing, leaves the SDK's async seams coroutine functions, and a fault while
opening a request leaves nothing in flight."""

from __future__ import annotations

import threading

import claude_exporter as ce
import pytest
from claude_exporter.config import parse_config
from claude_exporter.instrumentation import instrumentor
from conftest import kw, val
from prometheus_client import CollectorRegistry


# instrument() that fails half-way leaves nothing behind, so a retry works.
@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.integration
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
