"""One request as the caller sees it: opened by the instrumentation's request seam, finished exactly once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from claude_exporter.recording.records import Totals

if TYPE_CHECKING:
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.labels import RequestLabels
    from claude_exporter.recording.recorder import Recorder
    from claude_exporter.recording.usage import Usage

__all__ = ["Call"]


class Call:
    """A request in progress; the attempt seam adds its retries, :meth:`finish` ends it."""

    __slots__ = (
        "attempts",
        "client_blocks",
        "done",
        "execution",
        "http",
        "labels",
        "last_reason",
        "raw_model",
        "rec",
        "start",
    )

    def __init__(
        self,
        rec: Recorder,
        labels: RequestLabels,
        execution: Execution | None,
        raw_model: str,
        http: Any = None,
        client_blocks: list[tuple[str, str]] | None = None,
    ) -> None:
        self.rec = rec
        self.labels = labels
        self.execution = execution
        self.raw_model = raw_model  # the model the caller named, which the label may have folded
        self.attempts = 0
        self.last_reason = "unknown"
        self.done = False
        self.client_blocks = client_blocks  # results of client code tools sent in
        self.http = http  # the transport client whose sends are this request's attempts
        self.start = time.perf_counter()
        rec.running_calls[id(self)] = self

    def retried(self) -> None:
        """An attempt after the first began: count the retry under what caused it."""
        self.labels.retry(self.last_reason)

    def finish(
        self,
        usage: Usage | None,
        stop_reason: str | None = None,
        blocks: Sequence[tuple[str, str]] = (),
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> None:
        """The one way a request ends, successful (``error_type`` None) or not; later calls do nothing."""
        if self.done:
            return
        rec = self.rec
        busy = rec.busy
        if busy.on:
            # Reached from a finaliser (the garbage collector closing a caller's stream) while this
            # thread is recording: it may hold a series lock, so leave the finish to the next call.
            rec.orphans.append(lambda: self.finish(usage, stop_reason, blocks, error_type, error_message))
            return
        self.done = True
        busy.on = True
        try:
            seconds = time.perf_counter() - self.start
            labels = self.labels
            cost = labels.cost(usage, self.raw_model) if usage is not None else 0.0
            if self.client_blocks:
                blocks = [*blocks, *self.client_blocks]
            labels.finish(error_type is None, seconds, usage, cost, stop_reason, error_type, blocks)
            ex = self.execution
            if ex is not None:
                ex.totals.add(usage, cost, len(blocks), labels.model, stop_reason)
            else:  # outside any execution the request is an execution of its own
                totals = Totals.of_request(usage, cost, len(blocks), labels.model, stop_reason)
                rec.finish_execution(labels.default_exec(), seconds, totals, error_type, error_message)
        finally:  # even after a fault: a request left "in flight" would look like a hung agent
            busy.on = False
            rec.running_calls.pop(id(self), None)
            if rec.orphans:
                rec.settle_orphans()
