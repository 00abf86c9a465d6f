"""``execution()``: one unit of agent work, spanning every request made inside it.

The execution travels in a contextvar, so it follows ``await`` and threads started with
``contextvars.copy_context().run``. A request made outside any execution is an execution of its own.

A Claude Code CLI started inside an execution (a Claude Agent SDK session) reports its requests over OTLP,
from another process: its resource names the execution by a random key (:data:`SCOPE_ATTRIBUTE`, made by
:func:`scope_key`), and the Claude Code ingest adds those requests to the execution (:func:`scoped`) while
it runs, instead of counting the CLI's turns as executions of their own.
"""

from __future__ import annotations

import functools
import inspect
import secrets
import threading
import time
from collections.abc import Callable
from contextvars import Token
from types import SimpleNamespace, TracebackType
from typing import Any, TypeVar, cast

from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.records import Totals
from claude_exporter.recording.state import ACTIVE, CURRENT_EXECUTION
from claude_exporter.recording.storage.memory import ExecSeries

__all__ = ["SCOPE_ATTRIBUTE", "Execution", "execution", "scope_key", "scoped"]

F = TypeVar("F", bound=Callable[..., Any])

# The resource attribute that names the execution a Claude Code CLI was started in.
SCOPE_ATTRIBUTE = "claude_exporter.scope"
# Running executions by their scope key; an execution leaves when it finishes. Random keys: whoever may
# send OTLP cannot add to an execution it was not given the key of.
_SCOPES: dict[str, Execution] = {}
_SCOPES_LOCK = threading.Lock()


class Execution:
    """A running execution: its series and the totals of its requests."""

    __slots__ = ("_token", "agent", "failed", "rec", "scope", "series", "start", "task", "totals")

    def __init__(self, rec: Recorder | None, agent: str, task: str, series: ExecSeries | None) -> None:
        self.rec = rec  # None when opened while nothing records: its requests then stand alone
        self.agent = agent
        self.task = task
        self.series: ExecSeries = series  # type: ignore[assignment]  # set whenever rec is
        self.start = time.perf_counter()
        self.totals = Totals()
        self._token: Token[Execution | None] | None = None  # set by the scope that made it current
        self.scope: str | None = None  # its scope key, once a CLI was started in it
        self.failed: str | None = None  # a CLI turn of its failed: its outcome unless the block raised

    # Kept for callers of the 0.1 API, which read the totals off the execution.
    @property
    def input_tokens(self) -> int:
        return self.totals.input

    @property
    def output_tokens(self) -> int:
        return self.totals.output

    @property
    def requests(self) -> int:
        return self.totals.requests

    @property
    def cost_usd(self) -> float:
        return self.totals.cost_usd

    def finish(self, error: BaseException | None) -> None:
        """The one way an execution ends."""
        rec = self.rec
        if rec is None:
            return
        seconds = time.perf_counter() - self.start
        busy = rec.busy
        if busy.on:
            # A finaliser (a caller's generator closed by the garbage collector) while this thread is
            # recording and may hold a series lock: leave the finish to the next ordinary call.
            rec.orphans.append(functools.partial(self._finish, rec, seconds, error))
            return
        busy.on = True
        try:
            self._finish(rec, seconds, error)
        finally:
            busy.on = False

    def _finish(self, rec: Recorder, seconds: float, error: BaseException | None) -> None:
        try:
            rec.running_executions.pop(id(self), None)
            if self.scope is not None:
                with _SCOPES_LOCK:
                    _SCOPES.pop(self.scope, None)  # from now on its CLIs' late requests stand alone
            error_type = self.failed if error is None else type(error).__name__
            message = None if error is None else rec.describe_error(error)
            rec.finish_execution(self.series, seconds, self.totals, error_type, message)
        except Exception:
            rec.fault("execution_finish")


def scope_key(ex: Execution) -> str | None:
    """The key a CLI started inside ``ex`` names it by (made once, when the first one starts); None when
    ``ex`` is not running (nothing records it, or a thread that copied its context outlived it)."""
    rec = ex.rec
    if rec is None:
        return None
    with _SCOPES_LOCK:
        # The key before the check, and the check under the lock: _finish (which takes running first)
        # then either sees the key and removes it, or this sees the execution gone.
        if ex.scope is None:
            ex.scope = secrets.token_hex(16)
        if id(ex) not in rec.running_executions:
            return None
        _SCOPES[ex.scope] = ex
        return ex.scope


def scoped(key: object) -> Execution | None:
    """The running execution ``key`` names; None for a finished, unknown or malformed one."""
    return _SCOPES.get(key) if isinstance(key, str) else None


def _open(task: str, agent: str | None) -> Execution:
    rec = ACTIVE.recorder
    if agent is None:
        parent = CURRENT_EXECUTION.get()
        if parent is not None:
            agent = parent.agent
        else:
            agent = rec.options.default_agent if rec is not None else "default"
    if rec is None:
        return Execution(None, agent, task, None)
    try:
        ex = Execution(rec, agent, task, rec.exec_labels(agent, task))
        rec.running_executions[id(ex)] = ex
        return ex
    except Exception:
        rec.fault("execution_start")
        return Execution(None, agent, task, None)


class execution:  # lower case: it reads like a function, ``with execution("task"):``
    """Open an execution: a context manager (sync and async) and a decorator.

    >>> import claude_exporter
    >>> with claude_exporter.execution("summarise", agent="summariser"):
    ...     pass  # every client.messages.create(...) here counts towards this execution
    """

    def __init__(self, task: str = "default", *, agent: str | None = None) -> None:
        # Refused here, at the call and before the caller's code runs: a label value is a string.
        if not isinstance(task, str):
            raise TypeError(f"execution() task must be a str, got {type(task).__name__}")
        if agent is not None and not isinstance(agent, str):
            raise TypeError(f"execution() agent must be a str or None, got {type(agent).__name__}")
        self.task = task
        self.agent = agent

    def __enter__(self) -> Execution:
        try:
            ex = _open(self.task, self.agent)
        except Exception:
            # A fault past _open's own handling: the scope still opens, recording nothing, so the
            # caller's block runs as it would without the exporter.
            rec = ACTIVE.recorder
            if rec is not None:
                rec.fault("execution_start")
            # Its shape built inline from SimpleNamespace, so no code of this package runs to make it.
            ex = cast(
                Execution,
                SimpleNamespace(
                    rec=None, agent=self.agent or "default", task=self.task, series=None, totals=None,
                    start=0.0, _token=None, input_tokens=0, output_tokens=0, requests=0, cost_usd=0.0,
                    scope=None, failed=None,
                ),
            )  # fmt: skip
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
        if ex.rec is not None:
            try:
                ex.finish(exc)
            except Exception:
                ex.rec.fault("execution_finish")

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
