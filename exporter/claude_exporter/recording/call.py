"""One request as the caller sees it: what the instrumentation tells the recorder, and nothing else.

The instrumentation opens a :class:`Call` per Messages request and then only talks to it: each HTTP
attempt (:meth:`Call.attempt`, :meth:`Call.attempt_failed`, :meth:`Call.responded`,
:meth:`Call.error_code`), the first streamed token (:meth:`Call.first_token`) and the end
(:meth:`Call.finish`), exactly once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.labels import RequestLabels
    from claude_exporter.recording.recorder import Recorder
    from claude_exporter.recording.usage import Usage

__all__ = ["Call"]

_NO_CODE = "none"
_NO_TOKENS = (0, 0, 1)  # a lone request that failed: no tokens, one request
# Statuses whose error_code the instrumentation reads from the body at the attempt: the SDK closes a
# response it retries without reading it, so only there can a retried 429 tell a spend limit from
# throttling.
_CODED = frozenset((429, 529))


class Call:
    """A request in progress; its attempts add retries, :meth:`finish` ends it."""

    # Class-level defaults for what most requests never change: a new Call writes six fields, not eleven.
    attempts = 0
    last_reason = "unknown"
    last_code = _NO_CODE  # the error_code of the last failed attempt
    done = False
    client_blocks: list[tuple[str, str]] | None = None  # results of client code tools sent in

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
        if client_blocks is not None:
            self.client_blocks = client_blocks
        self.http = http  # the transport client whose sends are this request's attempts
        self.start = time.perf_counter()
        rec.running_calls[id(self)] = self

    # -- attempts -------------------------------------------------------------------------------------

    def attempt(self) -> None:
        """An HTTP attempt begins; one after the first is a retry, counted under what caused it."""
        n = self.attempts
        self.attempts = n + 1
        if n:
            self.labels.retry(self.last_reason, self.last_code)

    def attempt_failed(self, reason: str) -> None:
        """The attempt raised (``reason``: timeout or connection) instead of answering."""
        self.last_reason = reason
        self.last_code = _NO_CODE

    def responded(self, status: int, headers: Any) -> bool:
        """The attempt answered ``status`` with ``headers`` (kept for their rate-limit values). True when
        its error_code should be read from the body (429, 529) and handed to :meth:`error_code`."""
        self.rec.recent_headers.append((self.labels.model, headers))
        if status >= 400:
            self.last_reason = str(status)
            self.last_code = _NO_CODE
            return status in _CODED
        return False

    def error_code(self, code: str) -> None:
        """A 429's or 529's error_code, kept for the retry that follows; a 429 counts under it."""
        self.last_code = code
        if self.last_reason == "429":
            self.labels.rate_limited(code)

    def first_token(self) -> None:
        """A stream's first content delta."""
        self.labels.ttft(time.perf_counter() - self.start)

    # -- the end --------------------------------------------------------------------------------------

    def finish(
        self,
        usage: Usage | None,
        stop_reason: str | None = None,
        blocks: Sequence[tuple[str, str]] = (),
        error_type: str | None = None,
        error_message: str | None = None,
        error_code: str = _NO_CODE,
    ) -> None:
        """The one way a request ends, successful (``error_type`` None) or not; later calls do nothing.
        ``error_code`` is the API's (bounded by the instrumentation), ``none`` when it gave none."""
        if self.done:
            return
        rec = self.rec
        busy = rec.busy
        if busy.on:
            # Reached from a finaliser (the garbage collector closing a caller's stream) while this
            # thread is recording: it may hold a series lock, so leave the finish to the next call.
            # (A partial, not a lambda: a lambda would make every variable it names a cell on each call.)
            rec.orphans.append(
                functools.partial(
                    self.finish, usage, stop_reason, blocks, error_type, error_message, error_code
                )
            )
            return
        self.done = True
        busy.on = True
        try:
            seconds = time.perf_counter() - self.start
            labels = self.labels
            if self.client_blocks:
                blocks = [*blocks, *self.client_blocks]
            ok = error_type is None
            error = None if error_type is None else (error_type, error_code)
            ex = self.execution
            if ex is None and not rec.listening():
                # Outside any execution, with nothing listening for executions: the request and the
                # execution of its own it is are recorded together, under its series' one lock.
                labels.default_exec()
                labels.record(ok, seconds, usage, stop_reason, error, blocks, self.raw_model, None, True)
                return
            cost, bucket = labels.record(ok, seconds, usage, stop_reason, error, blocks, self.raw_model)
            if ex is not None:
                ex.totals.add(usage, cost, len(blocks), labels.model, stop_reason)
            else:  # outside any execution the request is an execution of its own
                rec.finish_execution(
                    labels.default_exec(),
                    seconds,
                    (usage, cost, len(blocks), labels.model, stop_reason),  # Totals.of_request's
                    error_type,
                    error_message,
                    bucket,
                    _NO_TOKENS if usage is None else (usage.all_input, usage.output, 1),
                )
        finally:  # even after a fault: a request left "in flight" would look like a hung agent
            busy.on = False
            rec.running_calls.pop(id(self), None)
            if rec.orphans:
                rec.settle_orphans()

    def abandon(self) -> None:
        """Stop counting this request as running, whether or not it finished (a fault while finishing)."""
        self.done = True
        self.rec.running_calls.pop(id(self), None)

    def fault(self, stage: str) -> None:
        """Count a fault of the shim at ``stage`` (never raises)."""
        self.rec.fault(stage)
