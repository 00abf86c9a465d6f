"""Exact counts under concurrency: threads sharing one sync client, many concurrent async requests, and
executions that follow contextvars into worker threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import claude_exporter as ce
import pytest
from claude_exporter.testing import Reply
from conftest import (
    duration,
    exec_hist,
    executions,
    kw,
    requests,
    tokens,
    val,
)

pytestmark = pytest.mark.integration

THREADS = 8
PER_THREAD = 500


def widen_backlog(fake) -> None:
    """The fake's server listens with socketserver's default backlog of 5, so a burst of simultaneous TCP
    connects gets reset before the fake ever sees it. Listening again with a deeper queue fixes that (a
    suggestion for the fake itself: ``request_queue_size = 256`` on its server class)."""
    server = fake._server
    if server.request_queue_size < 256:
        server.socket.listen(256)


@pytest.fixture(autouse=True)
def _deep_backlog(fake_anthropic):
    widen_backlog(fake_anthropic)


def test_threads_share_one_sync_client(reg, fake_anthropic):
    fake_anthropic.default = Reply(input_tokens=3, output_tokens=5, cache_read_input_tokens=1)
    client = fake_anthropic.client(max_retries=0)
    barrier = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def work():
        barrier.wait()
        try:
            for _ in range(PER_THREAD):
                client.messages.create(**kw())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []

    n = THREADS * PER_THREAD
    assert len(fake_anthropic.requests) == n
    assert requests(reg) == (n, 0)
    assert duration(reg)[0] == n
    assert tokens(reg) == {"input": 3 * n, "output": 5 * n, "cache_creation": 0, "cache_read": n}
    assert (
        val(reg, "claude_stop_reasons_total", agent="default", model=kw()["model"], stop_reason="end_turn")
        == n
    )
    assert executions(reg) == (n, 0)
    assert exec_hist(reg, "claude_execution_tokens", "default", "default", type="input") == (n, 4 * n)
    assert exec_hist(reg, "claude_execution_requests", "default", "default") == (n, n)
    assert val(reg, "claude_requests_in_flight", agent="default") == 0
    assert val(reg, "claude_executions_in_flight", agent="default", task="default") == 0


def test_200_concurrent_async_requests(reg, fake_anthropic):
    n = 200
    fake_anthropic.default = Reply(latency=0.02, input_tokens=2, output_tokens=3)
    seen_in_flight = []

    async def main():
        client = fake_anthropic.async_client(max_retries=0)
        tasks = [asyncio.ensure_future(client.messages.create(**kw())) for _ in range(n)]
        await asyncio.sleep(0)  # every task runs to its first await: all requests have begun
        seen_in_flight.append(val(reg, "claude_requests_in_flight", agent="default"))
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert len(results) == n
    assert seen_in_flight == [n]
    assert requests(reg) == (n, 0)
    assert duration(reg)[0] == n
    assert tokens(reg)["input"] == 2 * n
    assert tokens(reg)["output"] == 3 * n
    assert executions(reg) == (n, 0)
    assert val(reg, "claude_requests_in_flight", agent="default") == 0


def test_execution_follows_copied_context_into_threads(reg, fake_anthropic):
    fake_anthropic.default = Reply(input_tokens=7, output_tokens=11)
    client = fake_anthropic.client(max_retries=0)
    workers, per_worker = 4, 10
    with ce.execution("fan-out", agent="coordinator"):
        threads = []
        for _ in range(workers):
            ctx = contextvars.copy_context()

            def work(ctx=ctx):
                for _ in range(per_worker):
                    client.messages.create(**kw())

            threads.append(threading.Thread(target=ctx.run, args=(work,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    n = workers * per_worker
    assert requests(reg, agent="coordinator") == (n, 0)
    assert executions(reg, "coordinator", "fan-out") == (1, 0)
    assert exec_hist(reg, "claude_execution_requests", "coordinator", "fan-out") == (1, n)
    assert exec_hist(reg, "claude_execution_tokens", "coordinator", "fan-out", type="input") == (1, 7 * n)
    assert exec_hist(reg, "claude_execution_tokens", "coordinator", "fan-out", type="output") == (1, 11 * n)
    # None of them became a lone execution of its own.
    assert executions(reg, "coordinator", "default") == (0, 0)
    assert executions(reg) == (0, 0)


def test_thread_pool_with_copied_context(reg, fake_anthropic):
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("pool", agent="pooled"), ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, client.messages.create, **kw()) for _ in range(12)
        ]
        for future in futures:
            future.result()
    assert exec_hist(reg, "claude_execution_requests", "pooled", "pool") == (1, 12)
    assert requests(reg, agent="pooled") == (12, 0)


def test_threads_without_copied_context_are_lone_requests(reg, fake_anthropic):
    # A plain thread starts with an empty context: its requests are not part of the execution.
    client = fake_anthropic.client(max_retries=0)
    with ce.execution("solo", agent="main-agent"):
        t = threading.Thread(target=client.messages.create, kwargs=kw())
        t.start()
        t.join(10)
    assert exec_hist(reg, "claude_execution_requests", "main-agent", "solo") == (1, 0)
    assert requests(reg) == (1, 0)
    assert executions(reg) == (1, 0)


def test_concurrent_executions_in_async_tasks(reg, fake_anthropic):
    client = fake_anthropic.async_client(max_retries=0)

    async def agent(i: int):
        async with ce.execution("task", agent=f"a{i % 5}"):
            for _ in range(i % 3 + 1):
                await client.messages.create(**kw())

    async def main():
        await asyncio.gather(*(agent(i) for i in range(50)))

    asyncio.run(main())
    for k in range(5):
        members = [i for i in range(50) if i % 5 == k]
        expected_requests = sum(i % 3 + 1 for i in members)
        assert executions(reg, f"a{k}", "task") == (len(members), 0)
        assert exec_hist(reg, "claude_execution_requests", f"a{k}", "task") == (
            len(members),
            expected_requests,
        )
        assert requests(reg, agent=f"a{k}") == (expected_requests, 0)


def test_concurrent_streams_in_threads(reg, fake_anthropic):
    fake_anthropic.default = Reply(output_tokens=9, text_deltas=3)
    client = fake_anthropic.client(max_retries=0)

    def consume(i: int):
        if i % 2:
            with client.messages.stream(**kw()) as stream:
                stream.until_done()
        else:
            for _ in client.messages.create(**kw(), stream=True):
                pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(consume, range(80)))
    assert requests(reg) == (80, 0)
    assert tokens(reg)["output"] == 9 * 80
    assert val(reg, "claude_time_to_first_token_seconds_count", agent="default", model=kw()["model"]) == 80
