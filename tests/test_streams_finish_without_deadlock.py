"""Streams left to the garbage collector or dropped unclosed are finished exactly once, and finishing one
never deadlocks a thread that holds a series lock (the collector may run anywhere)."""

from __future__ import annotations

import gc
import threading

import pytest
from conftest import kw, requests

pytestmark = pytest.mark.integration


# A stream finalised by the garbage collector while this thread holds its series' lock.
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


def test_a_streaming_response_dropped_unclosed_is_finished(instrumented, fake_anthropic):
    reg, rec = instrumented
    client = fake_anthropic.client(max_retries=0)
    response = client.messages.with_streaming_response.create(**kw()).__enter__()
    assert len(rec.running_calls) == 1
    del response
    gc.collect()
    assert requests(reg) == (1, 0)  # the scrape settles it
    assert rec.running_calls == {}
