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
from claude_exporter.recording.cardinality import OVERFLOW, Admission, LabelCap
from claude_exporter.recording.labels import RequestLabels
from claude_exporter.recording.records import ExecutionRecord, Totals
from claude_exporter.recording.storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from claude_exporter.recording.call import Call
    from claude_exporter.recording.execution import Execution
    from claude_exporter.recording.pricing import Priced
    from claude_exporter.recording.usage import Usage

__all__ = ["Recorder", "RecorderOptions"]

log = logging.getLogger("claude_exporter")

PriceLookup = Callable[[str], Any]
# (prices or None, usage, the lookup for its iterations' models) -> pricing.price_request's result
CostFunction = Callable[[Any, "Usage", PriceLookup], "Priced"]
# Execution histograms compare integer counts: integer bounds make each bisect an int comparison.
_TOKEN_BOUNDS = tuple(int(bound) for bound in TOKEN_BUCKETS)
_REQUEST_BOUNDS = tuple(int(bound) for bound in REQUEST_BUCKETS)
_OPEN_LABELS = ("stop_reason", "error_type", "error_code", "reason", "tool", "cache_miss_reason", "category")


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
    """Records requests and executions into its storage; :mod:`claude_exporter.exposition` exposes them.

    ``storage`` is chosen once by whoever opens the recorder (memory by default, or the mmap files of
    multiprocess mode); ``describe_error`` gives the event log's message for an exception the
    instrumentation knows (the SDK's own errors), None for any other.
    """

    def __init__(
        self,
        options: RecorderOptions,
        price_lookup: PriceLookup,
        cost: CostFunction,
        storage: Storage | None = None,
        describe_error: Callable[[BaseException], str | None] = _no_message,
    ) -> None:
        self.options = options
        if storage is None:
            storage = MemoryStorage()
        self.storage: Storage = storage
        self.duration_bounds = duration_buckets(options.timeout_seconds)
        # Every label value passes the admission rule once, where its cap first sees it.
        self.gate = LabelGate(options.label_length, self.count_change)
        count, gate = self.count_overflow, self.gate
        self.caps = {
            "agent": LabelCap("agent", options.agent_cap, count, gate),
            "task": LabelCap("task", options.task_cap, count, gate),
            "model": LabelCap("model", options.model_cap, count, gate),
            **{name: LabelCap(name, options.open_label_cap, count, gate) for name in _OPEN_LABELS},
        }
        self.admission = Admission(self.caps, options.combination_cap, count)
        self.price_lookup = price_lookup
        self.cost = cost
        self.describe_error = describe_error
        # The exporter's own counters (claude_exporter_*_total).
        self.overflow = storage.counter("claude_exporter_label_overflow_total")
        self.changes = storage.counter("claude_exporter_label_changes_total")
        self.unpriced = storage.counter("claude_exporter_unpriced_tokens_total")
        self.internal_errors = storage.counter("claude_exporter_internal_errors_total")
        self.events = storage.counter("claude_exporter_events_total")
        # Keyed (agent, model), or (agent, model, platform) for a client of another platform.
        self._requests: dict[tuple[str, ...], RequestLabels] = {}
        # One series per (agent, model), shared by the platforms that use that model name.
        self._series: dict[tuple[str, str], Any] = {}
        self.exec_series: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()
        # Running work, keyed by id(); read at scrape time for the in-flight gauges.
        self.running_calls: dict[int, Call] = storage.running_calls
        self.running_executions: dict[int, Execution] = storage.running_executions
        # (model, response headers) with rate-limit values, for the exposition (see the storages).
        self.recent_headers: Any = storage.rate_limit_sink(self.fault)
        # Requests a finaliser (garbage collection) ended: finished by the next ordinary call or scrape,
        # never inside the finaliser, which may run while this thread holds a series lock.
        self.orphans: deque[Callable[[], None]] = deque()
        self.busy = _Busy()  # per thread: is this thread inside a recording section right now?
        self._listeners: list[Callable[[ExecutionRecord], None]] = []
        # Each listener's gate: a record is built only when some gate says a listener would use it.
        self._gates: list[Callable[[], bool]] = []
        self._closers: list[Callable[[], None]] = [storage.close]  # run by close()

    def listen(self, listener: Callable[[ExecutionRecord], None], gate: Callable[[], bool]) -> None:
        """Hand every finished execution to ``listener`` while ``gate()`` says it would use it."""
        self._listeners.append(listener)
        self._gates.append(gate)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` (stop a thread, close a file) when the recorder closes."""
        self._closers.append(closer)

    @property
    def request_series(self) -> list[Any]:
        return list(self._series.values())

    @property
    def agents(self) -> set[str]:
        return {series.agent for series in self.request_series} | {key[0] for key in self.exec_series}

    # -- label resolution (once per pair) ---------------------------------------------------------------

    def request_labels(self, agent: str, model: str, platform: str = "anthropic") -> RequestLabels:
        """The labels of requests by ``agent`` to ``model`` through a client of ``platform`` (whose price
        list applies: anthropic, aws and foundry bill at the first-party list, bedrock and vertex on their
        own)."""
        key: tuple[str, ...] = (agent, model) if platform == "anthropic" else (agent, model, platform)
        # Only strings are looked up as they are: anything else (even unhashable) goes to the admission.
        found = self._requests.get(key) if type(agent) is str and type(model) is str else None
        if found is not None:
            return found
        with self._lock:
            return self._resolve(agent, model, platform)

    def _resolve(self, agent: str, model: str, platform: str) -> RequestLabels:
        pair, admitted = self.admission.admit("series", ("agent", "model"), (agent, model), self._series)
        if not admitted:
            pair = (OVERFLOW, OVERFLOW)
        folded = pair if platform == "anthropic" else (*pair, platform)
        # A folded pair is cached under its folded key only, so each folded request counts.
        found = self._requests.get(folded)
        if found is None:
            found = self._new_request_labels(pair[0], pair[1], platform)
        return found

    def _new_request_labels(self, agent: str, model: str, platform: str = "anthropic") -> RequestLabels:
        if platform in self.options.unpriced_platforms:
            price, reason = None, "platform"
        else:
            # A folded model has no one price: its requests are priced by the model each one names.
            price, reason = (None if model == OVERFLOW else self.price_lookup(model)), "model"
        series = self._series.get((agent, model))
        if series is None:
            series = self._series[(agent, model)] = self.storage.request_series(
                agent, model, self.duration_bounds, TTFT_BUCKETS
            )
        labels = RequestLabels(self, series, price, self.options.code_tools_for(agent), reason)
        self._requests[(agent, model) if platform == "anthropic" else (agent, model, platform)] = labels
        return labels

    def overflow_series(self) -> Any:
        with self._lock:
            found = self._requests.get((OVERFLOW, OVERFLOW))
            if found is None:
                found = self._new_request_labels(OVERFLOW, OVERFLOW)
            return found.series

    def exec_labels(self, agent: str, task: str) -> Any:
        found = self.exec_series.get((agent, task)) if type(agent) is str and type(task) is str else None
        if found is not None:
            return found
        with self._lock:
            pair, admitted = self.admission.admit(
                "executions", ("agent", "task"), (agent, task), self.exec_series
            )
            if not admitted:
                pair = (OVERFLOW, OVERFLOW)
            found = self.exec_series.get(pair)
            if found is None:
                found = self.exec_series[pair] = self.storage.exec_series(
                    pair[0], pair[1], self.duration_bounds, _TOKEN_BOUNDS, _REQUEST_BOUNDS
                )
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
        series: Any,
        seconds: float,
        totals: Totals | tuple[Any, ...],
        error_type: str | None,
        error_message: str | None,
        bucket: int = -1,
        counts: tuple[int, int, int] | None = None,
    ) -> None:
        """The one way an execution ends, whatever its source: its series, then its listeners (when one
        would use it). ``totals``: a :class:`Totals`, or for a lone request the arguments of
        :meth:`Totals.of_request` (made only when a listener would read them) with ``counts``: (input
        tokens, cache included; output tokens; requests). ``bucket``: its duration bucket when known."""
        if counts is None:
            counts = (totals.all_input, totals.output, totals.requests)  # type: ignore[union-attr]
        series.record(error_type is None, seconds, counts[0], counts[1], counts[2], bucket)
        if self._listeners and self.listening():
            if not isinstance(totals, Totals):
                totals = Totals.of_request(*totals)
            record = ExecutionRecord.of(series.agent, series.task, seconds, totals, error_type, error_message)
            for listener in self._listeners:
                try:
                    listener(record)
                except Exception:
                    self.fault("listener")

    def listening(self) -> bool:
        for gate in self._gates:  # noqa: SIM110 - a plain loop: any() with a generator costs more per execution
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
        for close in self._closers:
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
