"""What a finished execution hands to its listeners, and the totals it keeps while it runs.

The listeners are the event log and the health window; the totals grow as its requests finish."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from claude_exporter.recording.usage import Usage

__all__ = ["ExecutionRecord", "Totals"]


class Totals:
    """The sums of an execution's requests; requests of one execution may finish in several threads."""

    __slots__ = (
        "_lock",
        "cache_creation",
        "cache_read",
        "code_blocks",
        "cost_usd",
        "input",
        "model",
        "output",
        "requests",
        "stop_reason",
    )

    def __init__(self) -> None:
        self.input = 0
        self.output = 0
        self.cache_creation = 0
        self.cache_read = 0
        self.cost_usd = 0.0
        self.code_blocks = 0
        self.requests = 0
        self.model: str | None = None
        self.stop_reason: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_request(
        cls, usage: Usage | None, cost: float, blocks: int, model: str, stop_reason: str | None
    ) -> Totals:
        """The totals of a request that is an execution of its own: filled at once, never added to."""
        totals = cls.__new__(cls)
        if usage is None:
            totals.input = totals.output = totals.cache_creation = totals.cache_read = 0
        else:
            totals.input = usage.input
            totals.output = usage.output
            totals.cache_creation = usage.cache_creation
            totals.cache_read = usage.cache_read
        totals.cost_usd = cost
        totals.code_blocks = blocks
        totals.requests = 1
        totals.model = model
        totals.stop_reason = stop_reason
        return totals

    def add(self, usage: Usage | None, cost: float, blocks: int, model: str, stop_reason: str | None) -> None:
        with self._lock:
            if usage is not None:
                self.input += usage.input
                self.output += usage.output
                self.cache_creation += usage.cache_creation
                self.cache_read += usage.cache_read
            self.cost_usd += cost
            self.code_blocks += blocks
            self.requests += 1
            self.model = model
            if stop_reason is not None:
                self.stop_reason = stop_reason

    @property
    def all_input(self) -> int:
        return self.input + self.cache_creation + self.cache_read


@dataclass(slots=True, kw_only=True)
class ExecutionRecord:
    """A finished execution. ``input_tokens`` is plain input as the API reports it; cache writes and
    reads are apart."""

    agent: str
    task: str
    ok: bool
    seconds: float
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    requests: int
    cost_usd: float
    code_blocks: int
    model: str | None
    stop_reason: str | None
    error_type: str | None
    error_message: str | None
    execution_id: str | None = None  # made when something needs it: the event log, not the metrics

    @classmethod
    def of(
        cls,
        agent: str,
        task: str,
        seconds: float,
        totals: Totals,
        error_type: str | None,
        error_message: str | None,
    ) -> ExecutionRecord:
        return cls(
            agent=agent,
            task=task,
            ok=error_type is None,
            seconds=seconds,
            input_tokens=totals.input,
            output_tokens=totals.output,
            cache_creation_tokens=totals.cache_creation,
            cache_read_tokens=totals.cache_read,
            requests=totals.requests,
            cost_usd=totals.cost_usd,
            code_blocks=totals.code_blocks,
            model=totals.model,
            stop_reason=totals.stop_reason,
            error_type=error_type,
            error_message=error_message,
        )
