"""``execution()``: one unit of agent work, spanning every request made inside it.

The execution travels in a contextvar, so it follows ``await`` and threads started with
``contextvars.copy_context().run``. A request made outside any execution is an execution of its own.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, cast

from claude_exporter.instrumentation.extract import Usage, error_message
from claude_exporter.recording.recorder import ExecutionRecord
from claude_exporter.recording.series import ExecSeries
from claude_exporter.recording.state import CURRENT_EXECUTION, STATE

__all__ = ["Execution", "execution"]

F = TypeVar("F", bound=Callable[..., Any])


class Execution:
    """A running execution: its labels and the totals of its requests."""

    __slots__ = (
        "_lock",
        "_token",
        "agent",
        "cache_creation_tokens",
        "cache_read_tokens",
        "code_blocks",
        "cost_usd",
        "input_tokens",
        "labels",
        "model",
        "output_tokens",
        "requests",
        "start",
        "stop_reason",
        "task",
    )

    def __init__(self, agent: str, task: str, labels: ExecSeries | None) -> None:
        self.agent = agent
        self.task = task
        self.labels = labels
        self.start = time.perf_counter()
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_creation_tokens = 0
        self.cache_read_tokens = 0
        self.cost_usd = 0.0
        self.code_blocks = 0
        self.requests = 0
        self.model: str | None = None
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._token: Token[Execution | None] | None = None  # set by the scope that made it current

    def add(self, usage: Usage, cost: float, blocks: int, model: str, stop_reason: str | None) -> None:
        with self._lock:  # requests of one execution may finish in several threads
            self.input_tokens += usage.input
            self.output_tokens += usage.output
            self.cache_creation_tokens += usage.cache_creation
            self.cache_read_tokens += usage.cache_read
            self.cost_usd += cost
            self.code_blocks += blocks
            self.requests += 1
            self.model = model
            if stop_reason is not None:
                self.stop_reason = stop_reason

    @property
    def all_input(self) -> int:
        return self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens


def _open(task: str, agent: str | None) -> Execution:
    rec = STATE.recorder
    if agent is None:
        parent = CURRENT_EXECUTION.get()
        if parent is not None:
            agent = parent.agent
        else:
            agent = rec.options.default_agent if rec is not None else "default"
    if rec is None:
        return Execution(agent, task, None)
    try:
        ex = Execution(agent, task, rec.exec_labels(agent, task))
        rec.running_executions[id(ex)] = ex
        return ex
    except Exception:
        rec.fault("execution_start")
        return Execution(agent, task, None)


def _close(ex: Execution, error: BaseException | None) -> None:
    rec = STATE.recorder
    labels = ex.labels
    if rec is None or labels is None:
        return
    try:
        seconds = time.perf_counter() - ex.start
        rec.running_executions.pop(id(ex), None)
        labels.record(error is None, seconds, ex.all_input, ex.output_tokens, ex.requests)
        if rec.listeners and rec.listening():
            rec.finish_execution(
                ExecutionRecord(
                    labels.agent,
                    labels.task,
                    error is None,
                    seconds,
                    ex.input_tokens,
                    ex.output_tokens,
                    ex.cache_creation_tokens,
                    ex.cache_read_tokens,
                    ex.requests,
                    ex.cost_usd,
                    ex.code_blocks,
                    ex.model,
                    ex.stop_reason,
                    None if error is None else type(error).__name__,
                    error_message(error),
                )
            )
    except Exception:
        rec.fault("execution_finish")


class execution:  # lower case: it reads like a function, ``with execution("task"):``
    """Open an execution: a context manager (sync and async) and a decorator.

    >>> import claude_exporter
    >>> with claude_exporter.execution("summarise", agent="summariser"):
    ...     pass  # every client.messages.create(...) here counts towards this execution
    """

    def __init__(self, task: str = "default", *, agent: str | None = None) -> None:
        self.task = task
        self.agent = agent

    def __enter__(self) -> Execution:
        ex = _open(self.task, self.agent)
        ex._token = CURRENT_EXECUTION.set(ex)
        return ex

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The execution this scope opened is the current one of *this* context (task or thread), so one
        # scope object may be entered by many tasks and threads at once.
        ex = CURRENT_EXECUTION.get()
        if ex is None or ex._token is None:
            return
        CURRENT_EXECUTION.reset(ex._token)
        ex._token = None
        _close(ex, exc)

    async def __aenter__(self) -> Execution:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        task, agent = self.task, self.agent
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # The call returns at once and the body runs later, in the consumer's context: there is no
            # span to measure. Decorate the function that drives the generator instead.
            raise TypeError(f"execution() cannot decorate the generator function {func.__qualname__}")
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with execution(task, agent=agent):
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with execution(task, agent=agent):
                return func(*args, **kwargs)

        return cast(F, run)
