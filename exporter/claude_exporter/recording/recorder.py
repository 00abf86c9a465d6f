"""The recorder: turns finished requests and executions into series updates.

One :class:`Recorder` exists per active configuration (``instrument()``, or ``serve`` without the SDK).
It owns the label caps, the resolved label children, the series the collectors expose, the registry of
running requests and executions from which the in-flight gauges are computed at scrape time, and the
exporter's own counters. No SDK and no prometheus_client import here: the instrumentation feeds it, the
exposition reads it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from claude_exporter.families import REQUEST_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS, duration_buckets
from claude_exporter.recording.admission import MAX_LENGTH, LabelGate
from claude_exporter.recording.cardinality import FAMILY_NAMES, OVERFLOW, Budget, LabelCap
from claude_exporter.recording.labels import RequestLabels
from claude_exporter.recording.records import ExecutionRecord, Totals
from claude_exporter.recording.series import ExecSeries, LabelledCounter, RequestSeries

if TYPE_CHECKING:
    from claude_exporter.exposition.multiprocess import MultiprocessBackend
    from claude_exporter.recording.call import Call
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.pricing import Priced
    from claude_exporter.recording.usage import Usage

__all__ = ["Recorder", "RecorderOptions"]

log = logging.getLogger("claude_exporter")

PriceLookup = Callable[[str], Any]
# (prices or None, usage, the lookup for its iterations' models) -> pricing.price_request's result
CostFunction = Callable[[Any, "Usage", PriceLookup], "Priced"]


def _no_message(exc: BaseException) -> str | None:
    return None


class _Busy(threading.local):
    on = False


@dataclass(frozen=True)
class RecorderOptions:
    """What the recorder decides once, from the configuration."""

    default_agent: str = "default"
    agent_cap: int = 200
    task_cap: int = 200
    model_cap: int = 200
    combination_cap: int = 2000
    open_label_cap: int = 64
    label_length: int = MAX_LENGTH
    timeout_seconds: tuple[float, ...] = ()
    code_tools: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default_code_tools: frozenset[str] = frozenset()
    # Platforms whose clients bill on their own price lists (Bedrock, Vertex): their requests are unpriced.
    unpriced_platforms: frozenset[str] = frozenset()

    def code_tools_for(self, agent: str) -> frozenset[str]:
        return self.code_tools.get(agent, self.default_code_tools)


class Recorder:
    """Records requests and executions; :mod:`claude_exporter.exposition` exposes what it keeps."""

    def __init__(
        self,
        options: RecorderOptions,
        price_lookup: PriceLookup,
        cost: CostFunction,
        backend: MultiprocessBackend | None = None,
    ) -> None:
        self.options = options
        # Multiprocess mode is decided here, once: the backend's series classes, counters and running-work
        # maps also write through per-process files. Without one, nothing on the request path differs.
        self.backend = backend
        self._request_series = RequestSeries if backend is None else backend.request_series
        self._exec_series = ExecSeries if backend is None else backend.exec_series
        self.duration_bounds = duration_buckets(options.timeout_seconds)
        # Every label value passes the admission rule once, where its cap first sees it.
        self.gate = LabelGate(options.label_length, self.count_change)
        count, gate = self.count_overflow, self.gate
        self.caps = {
            "agent": LabelCap("agent", options.agent_cap, count, gate),
            "task": LabelCap("task", options.task_cap, count, gate),
            "model": LabelCap("model", options.model_cap, count, gate),
            **{
                name: LabelCap(name, options.open_label_cap, count, gate)
                for name in (
                    "stop_reason",
                    "error_type",
                    "error_code",
                    "reason",
                    "tool",
                    "cache_miss_reason",
                    "category",
                )
            },
        }
        self.budgets = {name: Budget(name, options.combination_cap) for name in FAMILY_NAMES}
        self.price_lookup = price_lookup
        self.cost = cost
        # The exporter's own counters (claude_exporter_*_total).
        self.overflow = LabelledCounter() if backend is None else backend.overflow
        self.changes = LabelledCounter() if backend is None else backend.changes
        self.unpriced = LabelledCounter() if backend is None else backend.unpriced
        self.internal_errors = LabelledCounter() if backend is None else backend.internal_errors
        self.events = LabelledCounter() if backend is None else backend.events
        # Keyed (agent, model), or (agent, model, platform) for a client of another platform.
        self._requests: dict[tuple[str, ...], RequestLabels] = {}
        # One series per (agent, model), shared by the platforms that use that model name.
        self._series: dict[tuple[str, str], RequestSeries] = {}
        self.exec_series: dict[tuple[str, str], ExecSeries] = {}
        self._lock = threading.RLock()
        # Running work, keyed by id(); read at scrape time for the in-flight gauges.
        self.running_calls: dict[int, Call] = {} if backend is None else backend.running_calls
        self.running_executions: dict[int, Execution] = {} if backend is None else backend.running_executions
        # (model, response headers) not parsed yet, oldest first; bounded, since only the newest matter.
        # In multiprocess mode, a sink that parses them on arrival into the files.
        self.recent_headers: deque[tuple[str, Any]] = (
            deque(maxlen=64) if backend is None else backend.rate_limit_sink(self.fault)
        )
        # Requests a finaliser (garbage collection) ended: finished by the next ordinary call or scrape,
        # never inside the finaliser, which may run while this thread holds a series lock.
        self.orphans: deque[Callable[[], None]] = deque()
        self.busy = _Busy()  # per thread: is this thread inside a recording section right now?
        self.listeners: list[Callable[[ExecutionRecord], None]] = []
        # Each listener's gate: a record is built only when some gate says a listener would use it.
        self.gates: list[Callable[[], bool]] = []
        self.closers: list[Callable[[], None]] = []  # run by close(): stop threads, close files
        self.describe_error: Callable[[BaseException], str | None] = _no_message
        self.config: Any = None  # the Config it was made from, for the endpoints that read it
        self.health: Any = None  # the HealthWindow, when a listener set one
        self.claude_code: Any = None  # the ClaudeCodeIngest that OTLP and hooks feed (ingest.claude_code)

    @property
    def request_series(self) -> list[RequestSeries]:
        return list(self._series.values())

    @property
    def agents(self) -> set[str]:
        return {series.agent for series in self.request_series} | {key[0] for key in self.exec_series}

    # -- label resolution (once per pair) ---------------------------------------------------------------

    def request_labels(self, agent: str, model: str, platform: str = "anthropic") -> RequestLabels:
        """The labels of requests by ``agent`` to ``model`` through a client of ``platform`` (whose price
        list applies: anthropic, aws and foundry bill at the first-party list, bedrock and vertex on their
        own)."""
        # Only strings are looked up as they are: anything else (even unhashable) goes to the gate.
        plain = type(agent) is str and type(model) is str
        key: tuple[str, ...] = (agent, model) if platform == "anthropic" else (agent, model, platform)
        found = self._requests.get(key) if plain else None
        if found is not None:
            return found
        with self._lock:
            found = self._requests.get(key) if plain else None
            if found is not None:
                return found
            fagent = self.caps["agent"].fold(agent)
            fmodel = self.caps["model"].fold(model)
            folded = (fagent, fmodel) if platform == "anthropic" else (fagent, fmodel, platform)
            found = self._requests.get(folded)
            if found is None and (fagent, fmodel) not in self._series and not self.budgets["series"].take():
                self.count_overflow(FAMILY_NAMES["series"])
                fagent = fmodel = OVERFLOW
                folded = (fagent, fmodel) if platform == "anthropic" else (fagent, fmodel, platform)
                found = self._requests.get(folded)
            if found is None:
                found = self._new_request_labels(fagent, fmodel, platform)
            # A folded pair is cached under its folded key only, so each folded request counts.
            return found

    def _new_request_labels(self, agent: str, model: str, platform: str = "anthropic") -> RequestLabels:
        if platform in self.options.unpriced_platforms:
            price, reason = None, "platform"
        else:
            # A folded model has no one price: its requests are priced by the model each one names.
            price, reason = (None if model == OVERFLOW else self.price_lookup(model)), "model"
        series = self._series.get((agent, model))
        if series is None:
            series = self._series[(agent, model)] = self._request_series(
                agent, model, self.duration_bounds, TTFT_BUCKETS
            )
        labels = RequestLabels(self, series, price, self.options.code_tools_for(agent), reason)
        self._requests[(agent, model) if platform == "anthropic" else (agent, model, platform)] = labels
        return labels

    def overflow_series(self) -> RequestSeries:
        with self._lock:
            found = self._requests.get((OVERFLOW, OVERFLOW))
            if found is None:
                found = self._new_request_labels(OVERFLOW, OVERFLOW)
            return found.series

    def exec_labels(self, agent: str, task: str) -> ExecSeries:
        found = self.exec_series.get((agent, task)) if type(agent) is str and type(task) is str else None
        if found is not None:
            return found
        with self._lock:
            fagent = self.caps["agent"].fold(agent)
            ftask = self.caps["task"].fold(task)
            found = self.exec_series.get((fagent, ftask))
            if found is None and not self.budgets["executions"].take():
                self.count_overflow(FAMILY_NAMES["executions"])
                fagent = ftask = OVERFLOW
                found = self.exec_series.get((fagent, ftask))
            if found is None:
                found = self._exec_series(fagent, ftask, self.duration_bounds, TOKEN_BUCKETS, REQUEST_BUCKETS)
                self.exec_series[(fagent, ftask)] = found
            return found

    # -- faults and overflow ------------------------------------------------------------------------------

    def fault(self, stage: str) -> None:
        """Count a fault inside the shim; never raises."""
        try:
            self.internal_errors.inc((stage,))
            log.debug("claude-exporter internal error in %s", stage, exc_info=True)
        except Exception:  # pragma: no cover - the last line of defence
            pass

    def count_overflow(self, label: str) -> None:
        self.overflow.inc((label,))

    def count_change(self, label: str, change: str) -> None:
        self.changes.inc((label, change))

    # -- finishing ------------------------------------------------------------------------------------

    def finish_execution(
        self,
        series: ExecSeries,
        seconds: float,
        totals: Totals,
        error_type: str | None,
        error_message: str | None,
    ) -> None:
        """The one way an execution ends: its series, then its listeners (when one would use it)."""
        series.record(error_type is None, seconds, totals.all_input, totals.output, totals.requests)
        if self.listeners and self.listening():
            record = ExecutionRecord.of(series.agent, series.task, seconds, totals, error_type, error_message)
            for listener in self.listeners:
                try:
                    listener(record)
                except Exception:
                    self.fault("listener")

    def listening(self) -> bool:
        for gate in self.gates:  # noqa: SIM110 - a plain loop: any() with a generator costs more per execution
            if gate():
                return True
        return False

    def settle_orphans(self) -> None:
        """Finish the requests that finalisers handed over (see ``orphans``)."""
        orphans = self.orphans
        while orphans:
            try:
                finish = orphans.popleft()
            except IndexError:  # another thread took the last one
                return
            try:
                finish()
            except Exception:
                self.fault("orphan")

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:
                self.fault("close")

    # -- live gauges, computed at scrape time -----------------------------------------------------------

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
            yield (ex.series.agent, ex.series.task), ex.start
        for call in list(self.running_calls.values()):
            if call.execution is None:
                yield (call.labels.agent, "default"), call.start
