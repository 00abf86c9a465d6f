"""The recorder: turns finished requests and executions into metric updates.

One :class:`Recorder` exists per ``instrument()``. It owns the metric families, the label caps, the
caches of resolved label children and the registry of running requests and executions from which the
in-flight gauges are computed at scrape time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from claude_exporter.exposition.collectors import (
    REQUEST_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    Metrics,
    duration_buckets,
)
from claude_exporter.recording.cardinality import OVERFLOW, LabelCap
from claude_exporter.recording.labels import FAMILY_NAMES, Budget, RequestLabels
from claude_exporter.recording.series import ExecSeries, RequestSeries

if TYPE_CHECKING:
    from claude_exporter.instrumentation.extract import Usage
    from claude_exporter.recording.call import Call
    from claude_exporter.recording.execution import Execution

__all__ = ["ExecutionRecord", "Recorder", "RecorderOptions"]

log = logging.getLogger("claude_exporter")

PriceLookup = Callable[[str], Any]
CostFunction = Callable[[Any, "Usage"], float]


@dataclass(frozen=True)
class RecorderOptions:
    """What the recorder decides once, from the configuration."""

    default_agent: str = "default"
    agent_cap: int = 200
    task_cap: int = 200
    model_cap: int = 200
    combination_cap: int = 2000
    open_label_cap: int = 64
    timeout_seconds: tuple[float, ...] = ()
    code_tools: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default_code_tools: frozenset[str] = frozenset()

    def code_tools_for(self, agent: str) -> frozenset[str]:
        return self.code_tools.get(agent, self.default_code_tools)


@dataclass(slots=True)
class ExecutionRecord:
    """A finished execution, as handed to listeners (event log, health window).

    ``input_tokens`` is plain input as the API reports it; cache writes and reads are apart.
    """

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


class Recorder:
    """Records requests and executions; the series it keeps are exposed by :mod:`.exposition`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        options: RecorderOptions,
        price_lookup: PriceLookup,
        cost: CostFunction,
    ) -> None:
        self.options = options
        self.metrics = Metrics(registry)
        self.duration_bounds = duration_buckets(options.timeout_seconds)
        self._overflow: dict[str, Callable[..., None]] = {}
        self._caps = {
            "agent": LabelCap("agent", options.agent_cap, self._count_overflow),
            "task": LabelCap("task", options.task_cap, self._count_overflow),
            "model": LabelCap("model", options.model_cap, self._count_overflow),
            **{
                name: LabelCap(name, options.open_label_cap, self._count_overflow)
                for name in ("stop_reason", "error_type", "reason", "tool")
            },
        }
        self._budgets = {name: Budget(name, options.combination_cap) for name in FAMILY_NAMES}
        self._price_lookup = price_lookup
        self.cost = cost
        self._requests: dict[tuple[str, str], RequestLabels] = {}
        self.exec_series: dict[tuple[str, str], ExecSeries] = {}
        self._lock = threading.RLock()
        # Running work, keyed by id(); read at scrape time for the in-flight gauges.
        self.running_calls: dict[int, Call] = {}
        self.running_executions: dict[int, Execution] = {}
        # Response headers not parsed yet, oldest first; bounded, since only the newest values matter.
        self.recent_headers: deque[Any] = deque(maxlen=32)
        self.listeners: list[Callable[[ExecutionRecord], None]] = []
        # Each listener's gate: a record is built only when some gate says a listener would use it.
        self.gates: list[Callable[[], bool]] = []
        self.closers: list[Callable[[], None]] = []  # run by uninstrument(): stop threads, close files
        self.config: Any = None  # the Config it was made from, for the endpoints that read it
        self.health: Any = None  # the HealthWindow, when a listener set one
        self._faults: dict[str, Callable[..., None]] = {}

    @property
    def request_series(self) -> list[RequestSeries]:
        # Labels are cached under their folded key only, so each series appears once.
        return [labels.series for labels in list(self._requests.values())]

    @property
    def agents(self) -> set[str]:
        return {series.agent for series in self.request_series} | {key[0] for key in self.exec_series}

    # -- label resolution (once per pair) ---------------------------------------------------------------

    def request_labels(self, agent: str, model: str) -> RequestLabels:
        key = (agent, model)
        found = self._requests.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._requests.get(key)
            if found is not None:
                return found
            fagent = self._caps["agent"].fold(agent)
            fmodel = self._caps["model"].fold(model)
            found = self._requests.get((fagent, fmodel))
            if found is None and not self._budgets["series"].take():
                self._count_overflow(FAMILY_NAMES["series"])
                fagent = fmodel = OVERFLOW
                found = self._requests.get((fagent, fmodel))
            if found is None:
                found = self._new_request_labels(fagent, fmodel, model)
            # A folded pair is cached under its folded key only, so each folded request counts.
            return found

    def _new_request_labels(self, agent: str, model: str, raw_model: str) -> RequestLabels:
        price = self._price_lookup(raw_model)
        # Only a model missing from the table gets an unpriced-tokens series.
        unpriced = None if price is not None else self.metrics.unpriced_tokens.labels(model).inc
        series = RequestSeries(agent, model, self.duration_bounds, TTFT_BUCKETS)
        labels = RequestLabels(
            series,
            self._caps,
            self._budgets,
            self.exec_labels,
            self._overflow_series,
            self._count_overflow,
            price,
            unpriced,
            self.options.code_tools_for(agent),
        )
        self._requests[(agent, model)] = labels
        return labels

    def _overflow_series(self) -> RequestSeries:
        with self._lock:
            found = self._requests.get((OVERFLOW, OVERFLOW))
            if found is None:
                found = self._new_request_labels(OVERFLOW, OVERFLOW, OVERFLOW)
            return found.series

    def exec_labels(self, agent: str, task: str) -> ExecSeries:
        found = self.exec_series.get((agent, task))
        if found is not None:
            return found
        with self._lock:
            fagent = self._caps["agent"].fold(agent)
            ftask = self._caps["task"].fold(task)
            found = self.exec_series.get((fagent, ftask))
            if found is None and not self._budgets["executions"].take():
                self._count_overflow(FAMILY_NAMES["executions"])
                fagent = ftask = OVERFLOW
                found = self.exec_series.get((fagent, ftask))
            if found is None:
                found = ExecSeries(fagent, ftask, self.duration_bounds, TOKEN_BUCKETS, REQUEST_BUCKETS)
                self.exec_series[(fagent, ftask)] = found
            return found

    # -- faults and overflow ------------------------------------------------------------------------------

    def fault(self, stage: str) -> None:
        """Count a fault inside the shim; never raises."""
        try:
            inc = self._faults.get(stage)
            if inc is None:
                inc = self._faults[stage] = self.metrics.internal_errors.labels(stage).inc
            inc()
            log.debug("claude-exporter internal error in %s", stage, exc_info=True)
        except Exception:  # pragma: no cover - the last line of defence
            pass

    def _count_overflow(self, label: str) -> None:
        inc = self._overflow.get(label)
        if inc is None:
            inc = self._overflow[label] = self.metrics.label_overflow.labels(label).inc
        inc()

    # -- recording -------------------------------------------------------------------------------------

    def tokens_and_cost(self, labels: RequestLabels, usage: Usage) -> tuple[tuple[int, int, int, int], float]:
        tokens = (usage.input, usage.output, usage.cache_creation, usage.cache_read)
        if labels.unpriced is None:
            return tokens, self.cost(labels.price, usage)
        total = usage.all_input + usage.output
        if total:
            labels.unpriced(total)
        return tokens, 0.0

    def listening(self) -> bool:
        for gate in self.gates:  # noqa: SIM110 - a plain loop: any() with a generator costs more per execution
            if gate():
                return True
        return False

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:
                self.fault("close")

    def finish_execution(self, record: ExecutionRecord) -> None:
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                self.fault("listener")

    def gauge_requests_in_flight(self) -> Iterator[tuple[tuple[str, ...], float]]:
        counts = dict.fromkeys(self.agents, 0)
        for call in list(self.running_calls.values()):
            counts[call.labels.agent] = counts.get(call.labels.agent, 0) + 1
        for agent, n in sorted(counts.items()):
            yield (agent,), float(n)

    def gauge_executions_in_flight(self) -> Iterator[tuple[tuple[str, ...], float]]:
        counts = dict.fromkeys(self.exec_series, 0)
        for key, _ in self._running_work():
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            yield key, float(n)

    def gauge_longest_running(self) -> Iterator[tuple[tuple[str, ...], float]]:
        now = time.perf_counter()
        oldest = dict.fromkeys(self.agents, now)
        for (agent, _), start in self._running_work():
            if start < oldest.get(agent, now):
                oldest[agent] = start
        for agent, start in sorted(oldest.items()):
            yield (agent,), now - start

    def _running_work(self) -> Iterator[tuple[tuple[str, str], float]]:
        """(agent, task) and start of every running execution, implicit ones (lone requests) included."""
        for ex in list(self.running_executions.values()):
            if ex.labels is not None:
                yield (ex.labels.agent, ex.labels.task), ex.start
        for call in list(self.running_calls.values()):
            if call.execution is None:
                yield (call.labels.agent, "default"), call.start
