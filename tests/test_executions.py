"""execution(): context manager (sync and async) and decorator; agent and task labels, nesting, outcomes,
the execution histograms, and the in-flight and longest-running gauges."""

from __future__ import annotations

import asyncio
import threading
import time

import anthropic
import claude_exporter as ce
import pytest
from claude_exporter.recording.state import ACTIVE
from claude_exporter.testing import Reply
from conftest import (
    MODEL,
    exec_hist,
    executions,
    kw,
    requests,
    run_in_thread,
    val,
    wait_for,
)
from prometheus_client import CollectorRegistry


def replies(n: int, **fields) -> list[Reply]:
    return [Reply(**fields) for _ in range(n)]


@pytest.mark.integration
def test_context_manager_records_one_execution(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(input_tokens=10, output_tokens=1, cache_creation_input_tokens=100, cache_read_input_tokens=0),
        Reply(input_tokens=20, output_tokens=2, cache_creation_input_tokens=0, cache_read_input_tokens=300),
        Reply(input_tokens=30, output_tokens=3, cache_creation_input_tokens=7, cache_read_input_tokens=5),
    )
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("triage", agent="support-bot") as ex:
        for _ in range(3):
            client.messages.create(**kw())
        time.sleep(0.05)
    assert ex.requests == 3

    assert executions(reg, "support-bot", "triage") == (1, 0)
    assert requests(reg, agent="support-bot") == (3, 0)
    assert requests(reg) == (0, 0)
    # Input includes cache writes and reads: 10+100 + 20+300 + 30+7+5.
    assert exec_hist(reg, "claude_execution_tokens", "support-bot", "triage", type="input") == (1, 472)
    assert exec_hist(reg, "claude_execution_tokens", "support-bot", "triage", type="output") == (1, 6)
    assert exec_hist(reg, "claude_execution_requests", "support-bot", "triage") == (1, 3)
    count, seconds = exec_hist(reg, "claude_execution_duration_seconds", "support-bot", "triage")
    assert count == 1
    assert seconds >= 0.05
    # The requests belong to the execution: no lone "default" executions for them.
    assert executions(reg, "support-bot", "default") == (0, 0)
    assert executions(reg) == (0, 0)


@pytest.mark.unit
def test_execution_without_requests(reg):
    with ce.execution("idle", agent="quiet"):
        pass
    assert executions(reg, "quiet", "idle") == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "quiet", "idle") == (1, 0)
    assert exec_hist(reg, "claude_execution_tokens", "quiet", "idle", type="input") == (1, 0)


@pytest.mark.integration
def test_defaults_task_and_agent(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    with ce.execution():
        client.messages.create(**kw())
        client.messages.create(**kw())
    assert executions(reg) == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "default", "default") == (1, 2)


@pytest.mark.integration
def test_exception_inside_execution_is_an_error_and_propagates(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    boom = RuntimeError("agent crashed")
    with pytest.raises(RuntimeError) as info, ce.execution("crashy", agent="bot"):
        client.messages.create(**kw())
        raise boom
    assert info.value is boom
    assert executions(reg, "bot", "crashy") == (0, 1)
    assert exec_hist(reg, "claude_execution_requests", "bot", "crashy") == (1, 1)
    assert requests(reg, agent="bot") == (1, 0)  # the request itself was fine


@pytest.mark.integration
def test_failed_request_escaping_the_execution(reg, fake_anthropic):
    fake_anthropic.script(Reply(status=529))
    client = fake_anthropic.client(max_retries=0)
    with pytest.raises(anthropic.OverloadedError), ce.execution("job", agent="bot"):
        client.messages.create(**kw())
    assert executions(reg, "bot", "job") == (0, 1)
    assert requests(reg, agent="bot") == (0, 1)
    assert exec_hist(reg, "claude_execution_requests", "bot", "job") == (1, 1)


@pytest.mark.integration
def test_sync_decorator(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)

    @ce.execution("summarise", agent="summariser")
    def summarise(n: int) -> str:
        for _ in range(n):
            client.messages.create(**kw())
        return "done"

    assert summarise.__name__ == "summarise"
    assert summarise(2) == "done"
    assert summarise(1) == "done"
    assert executions(reg, "summariser", "summarise") == (2, 0)
    assert exec_hist(reg, "claude_execution_requests", "summariser", "summarise") == (2, 3)


@pytest.mark.unit
def test_sync_decorator_error(reg):
    @ce.execution("fails", agent="bot")
    def fails():
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        fails()
    assert executions(reg, "bot", "fails") == (0, 1)


@pytest.mark.integration
def test_async_decorator_and_context_manager(reg, fake_anthropic):
    fake_anthropic.script(*replies(3, input_tokens=4, output_tokens=2))
    client = fake_anthropic.async_client(max_retries=0)

    @ce.execution("plan", agent="planner")
    async def plan() -> int:
        await client.messages.create(**kw())
        await client.messages.create(**kw())
        return 7

    async def main():
        assert await plan() == 7
        async with ce.execution("act", agent="planner"):
            await client.messages.create(**kw())

    assert asyncio.iscoroutinefunction(plan)
    asyncio.run(main())
    assert executions(reg, "planner", "plan") == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "planner", "plan") == (1, 2)
    assert exec_hist(reg, "claude_execution_tokens", "planner", "plan", type="input") == (1, 8)
    assert executions(reg, "planner", "act") == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "planner", "act") == (1, 1)


@pytest.mark.unit
def test_async_decorator_error(reg):
    @ce.execution("async-fails", agent="bot")
    async def fails():
        await asyncio.sleep(0)
        raise KeyError("x")

    with pytest.raises(KeyError):
        asyncio.run(fails())
    assert executions(reg, "bot", "async-fails") == (0, 1)


@pytest.mark.integration
def test_nested_executions_and_agent_inheritance(reg, fake_anthropic):
    fake_anthropic.script(
        Reply(input_tokens=1, output_tokens=1),
        Reply(input_tokens=10, output_tokens=10),
        Reply(input_tokens=100, output_tokens=100),
        Reply(input_tokens=1000, output_tokens=1000),
    )
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("outer", agent="boss") as outer:
        client.messages.create(**kw())
        with ce.execution("inner") as inner:  # no agent: inherits the enclosing execution's
            assert inner.agent == "boss"
            client.messages.create(**kw())
            client.messages.create(**kw())
        with ce.execution("helper", agent="worker"):
            client.messages.create(**kw())
        assert outer.agent == "boss"

    assert executions(reg, "boss", "outer") == (1, 0)
    assert executions(reg, "boss", "inner") == (1, 0)
    assert executions(reg, "worker", "helper") == (1, 0)
    # Each request counts toward the innermost execution it was made in.
    assert exec_hist(reg, "claude_execution_requests", "boss", "inner") == (1, 2)
    assert exec_hist(reg, "claude_execution_tokens", "boss", "inner", type="input") == (1, 110)
    assert exec_hist(reg, "claude_execution_requests", "worker", "helper") == (1, 1)
    assert exec_hist(reg, "claude_execution_tokens", "worker", "helper", type="output") == (1, 1000)
    assert exec_hist(reg, "claude_execution_requests", "boss", "outer") == (1, 1)
    assert requests(reg, agent="boss") == (3, 0)
    assert requests(reg, agent="worker") == (1, 0)
    # The outer execution is longer than the inner ones it contains.
    outer_seconds = exec_hist(reg, "claude_execution_duration_seconds", "boss", "outer")[1]
    inner_seconds = exec_hist(reg, "claude_execution_duration_seconds", "boss", "inner")[1]
    assert outer_seconds >= inner_seconds


@pytest.mark.unit
def test_inner_error_does_not_fail_the_outer_when_handled(reg):
    with ce.execution("outer", agent="a"), pytest.raises(OSError), ce.execution("inner"):
        raise OSError("disk")
    assert executions(reg, "a", "inner") == (0, 1)
    assert executions(reg, "a", "outer") == (1, 0)


@pytest.mark.unit
def test_same_execution_object_reused_sequentially(reg):
    ex = ce.execution("again", agent="loop")
    for _ in range(3):
        with ex:
            pass
    assert executions(reg, "loop", "again") == (3, 0)


@pytest.mark.integration
def test_hung_execution_longest_running_and_in_flight(reg, fake_anthropic):
    release = threading.Event()
    entered = threading.Event()
    client = fake_anthropic.client(max_retries=0)

    def hung():
        with ce.execution("stuck", agent="hang"):
            client.messages.create(**kw())
            entered.set()
            release.wait(10)

    thread, box = run_in_thread(hung)
    try:
        assert entered.wait(5)
        time.sleep(0.1)
        first = val(reg, "claude_execution_longest_running_seconds", agent="hang")
        assert first >= 0.1
        time.sleep(0.05)
        assert (
            val(reg, "claude_execution_longest_running_seconds", agent="hang") > first
        )  # computed at scrape
        assert val(reg, "claude_executions_in_flight", agent="hang", task="stuck") == 1
        assert val(reg, "claude_requests_in_flight", agent="hang") == 0
        assert executions(reg, "hang", "stuck") == (0, 0)
    finally:
        release.set()
        thread.join(5)
    assert box == [None]
    assert val(reg, "claude_execution_longest_running_seconds", agent="hang") == 0
    assert val(reg, "claude_executions_in_flight", agent="hang", task="stuck") == 0
    assert executions(reg, "hang", "stuck") == (1, 0)


@pytest.mark.unit
def test_longest_running_is_the_oldest_of_several(reg):
    release = threading.Event()
    started = []

    def hold():
        with ce.execution("many", agent="multi"):
            started.append(time.monotonic())
            release.wait(10)

    first, _ = run_in_thread(hold)
    assert wait_for(lambda: len(started) == 1)
    time.sleep(0.2)
    second, _ = run_in_thread(hold)
    try:
        assert wait_for(lambda: len(started) == 2)
        assert val(reg, "claude_executions_in_flight", agent="multi", task="many") == 2
        assert val(reg, "claude_execution_longest_running_seconds", agent="multi") >= 0.2
    finally:
        release.set()
        first.join(5)
        second.join(5)
    assert val(reg, "claude_executions_in_flight", agent="multi", task="many") == 0
    assert val(reg, "claude_execution_longest_running_seconds", agent="multi") == 0


@pytest.mark.integration
def test_execution_opened_before_instrument(fake_anthropic):
    if ACTIVE.recorder is not None:
        ce.uninstrument()
    registry = CollectorRegistry()
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("early", agent="pre"):
        ce.instrument(registry=registry)
        try:
            client.messages.create(**kw())
            # The request is measured, under the execution's agent; the execution itself was never
            # opened by the recorder, so the request stands alone.
            assert requests(registry, agent="pre") == (1, 0)
            assert executions(registry, "pre", "default") == (1, 0)
        finally:
            ce.uninstrument()
    assert executions(registry, "pre", "early") == (0, 0)


@pytest.mark.unit
def test_execution_while_not_instrumented_is_harmless():
    if ACTIVE.recorder is not None:
        ce.uninstrument()

    @ce.execution("off")
    def work():
        return 3

    assert work() == 3
    with ce.execution("off", agent="x") as ex:
        assert ex.agent == "x"


@pytest.mark.integration
def test_execution_object_is_usable_from_other_agents_in_parallel(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    results = []

    def agent(name: str, n: int):
        with ce.execution("work", agent=name):
            for _ in range(n):
                client.messages.create(**kw())
        results.append(name)

    threads = [threading.Thread(target=agent, args=(f"agent-{i}", i + 1)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 4
    for i in range(4):
        assert executions(reg, f"agent-{i}", "work") == (1, 0)
        assert exec_hist(reg, "claude_execution_requests", f"agent-{i}", "work") == (1, i + 1)
        assert requests(reg, agent=f"agent-{i}") == (i + 1, 0)
    assert sum(requests(reg, agent=f"agent-{i}", model=MODEL)[0] for i in range(4)) == 10


@pytest.mark.unit
def test_one_execution_object_shared_by_concurrent_tasks(reg):
    # A module-level `job = execution("job")` used by overlapping tasks: each `async with job` is its own
    # execution, and the exits may come in any order. The shim must never raise into the caller.
    job = ce.execution("shared-job", agent="shared")

    async def one(seconds: float) -> str:
        async with job:
            await asyncio.sleep(seconds)
        return "ok"

    async def main():
        return await asyncio.gather(one(0.01), one(0.05), one(0.03))

    assert asyncio.run(main()) == ["ok", "ok", "ok"]
    assert executions(reg, "shared", "shared-job") == (3, 0)
    assert val(reg, "claude_executions_in_flight", agent="shared", task="shared-job") == 0


@pytest.mark.unit
def test_one_execution_object_shared_by_threads(reg):
    job = ce.execution("shared-job", agent="threads")
    first_in = threading.Event()
    second_in = threading.Event()
    errors: list[BaseException] = []

    def first():
        try:
            with job:
                first_in.set()
                second_in.wait(5)  # exit while the second thread is still inside
        except BaseException as exc:
            errors.append(exc)

    def second():
        try:
            first_in.wait(5)
            with job:
                second_in.set()
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert executions(reg, "threads", "shared-job") == (2, 0)


@pytest.mark.integration
def test_tool_runner_turns_count_toward_the_execution(reg, fake_anthropic):
    @anthropic.beta_tool
    def add(a: int, b: int) -> str:
        """Add two numbers."""
        return str(a + b)

    fake_anthropic.script(
        Reply(
            content=[{"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1, "b": 2}}],
            stop_reason="tool_use",
            input_tokens=5,
            output_tokens=6,
        ),
        Reply(text="3", input_tokens=7, output_tokens=8),
    )
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("calc", agent="runner"):
        runner = client.beta.messages.tool_runner(
            model=MODEL, max_tokens=50, tools=[add], messages=[{"role": "user", "content": "1+2"}]
        )
        turns = list(runner)
    assert len(turns) == 2
    assert requests(reg, agent="runner") == (2, 0)
    assert exec_hist(reg, "claude_execution_requests", "runner", "calc") == (1, 2)
    assert exec_hist(reg, "claude_execution_tokens", "runner", "calc", type="input") == (1, 12)
    assert exec_hist(reg, "claude_execution_tokens", "runner", "calc", type="output") == (1, 14)
    assert val(reg, "claude_stop_reasons_total", agent="runner", model=MODEL, stop_reason="tool_use") == 1
