"""One request as the caller sees it: opened by an entry-point wrapper, finished exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from claude_exporter.instrumentation.extract import Usage, code_blocks, error_message, error_type
from claude_exporter.recording.recorder import ExecutionRecord

if TYPE_CHECKING:
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.labels import RequestLabels
    from claude_exporter.recording.recorder import Recorder

__all__ = ["Call"]

_NO_USAGE = Usage()


class Call:
    """A request in progress; the middleware adds its attempts, the wrappers finish it."""

    __slots__ = ("client_blocks", "done", "execution", "labels", "last_reason", "rec", "start")

    def __init__(self, rec: Recorder, labels: RequestLabels, execution: Execution | None) -> None:
        self.rec = rec
        self.labels = labels
        self.execution = execution
        self.last_reason = "unknown"
        self.done = False
        self.client_blocks: list[tuple[str, str]] | None = None  # results of client code tools sent in
        self.start = time.perf_counter()
        rec.running_calls[id(self)] = self

    def retried(self) -> None:
        """An attempt after the first began: count the retry under what caused it."""
        self.labels.retry(self.last_reason)

    def succeed_message(self, message: Any) -> None:
        usage = Usage()
        usage.update(message.usage)
        content = message.content
        # Most replies hold no code-execution result: skip the generator unless a block could be one.
        blocks = code_blocks(content) if len(content) > 1 else ()
        self.succeed(usage, message.stop_reason, blocks)

    def succeed(self, usage: Usage, stop_reason: str | None, blocks: Iterable[tuple[str, str]]) -> None:
        if self.done:
            return
        self.done = True
        try:
            seconds = time.perf_counter() - self.start
            tokens, cost = self.rec.tokens_and_cost(self.labels, usage)
            found = list(blocks)
            if self.client_blocks:
                found.extend(self.client_blocks)
            self.labels.finish(True, seconds, tokens, cost, stop_reason, None, found)
            self._close(None, seconds, usage, cost, len(found), stop_reason)
        finally:  # even after a fault: a request left "in flight" would look like a hung agent
            self.rec.running_calls.pop(id(self), None)

    def fail(
        self, exc: BaseException, usage: Usage | None = None, blocks: Iterable[tuple[str, str]] = ()
    ) -> None:
        if self.done:
            return
        self.done = True
        try:
            seconds = time.perf_counter() - self.start
            tokens, cost = self.rec.tokens_and_cost(self.labels, usage) if usage is not None else (None, 0.0)
            found = list(blocks)
            if self.client_blocks:
                found.extend(self.client_blocks)
            self.labels.finish(False, seconds, tokens, cost, None, error_type(exc), found)
            self._close(exc, seconds, usage or _NO_USAGE, cost, len(found), None)
        finally:
            self.rec.running_calls.pop(id(self), None)

    def _close(
        self,
        exc: BaseException | None,
        seconds: float,
        usage: Usage,
        cost: float,
        blocks: int,
        stop: str | None,
    ) -> None:
        rec = self.rec
        labels = self.labels
        ex = self.execution
        if ex is not None:
            ex.add(usage, cost, blocks, labels.model, stop)
            return
        # Outside any execution the request is an execution of its own.
        (labels._default_exec or labels.default_exec()).record(
            exc is None, seconds, usage.all_input, usage.output, 1
        )
        if rec.listeners and rec.listening():
            rec.finish_execution(
                ExecutionRecord(
                    labels.agent,
                    "default",
                    exc is None,
                    seconds,
                    usage.input,
                    usage.output,
                    usage.cache_creation,
                    usage.cache_read,
                    1,
                    cost,
                    blocks,
                    labels.model,
                    stop,
                    None if exc is None else error_type(exc),
                    error_message(exc),
                )
            )
