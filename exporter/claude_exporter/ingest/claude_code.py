"""Claude Code sessions in the exporter's metrics: OTLP events, sum points and hooks, counted once.

Sources of truth (one each, so nothing is counted twice when Claude Code sends both metrics and events):

- Requests, tokens, cost, request duration, time to first token, errors and retries come from the
  ``api_request`` / ``api_error`` **events** (``usage_from: events``, the default): they are per request,
  carry the model and a request id to deduplicate by. The ``claude_code.token.usage`` and
  ``claude_code.cost.usage`` metrics are then ignored. With ``usage_from: metrics`` (for a fleet that
  exports metrics only) tokens and cost come from those metrics instead, and requests are not counted.
- Cost is the exporter's own estimate from its pricing table, as for SDK agents, so both compare; for a
  model the table lacks, Claude Code's ``cost_usd`` is taken instead of counting the tokens as unpriced.
- Sessions, lines of code, commits, pull requests, active time and edit decisions come from the metrics.
- Tool results come from the ``tool_result`` event or the PostToolUse / PostToolUseFailure hook, whichever
  arrives first for a ``tool_use_id``; the other is recognised and not counted again.

An execution is one turn: a prompt (``prompt.id``) and its agent loop, from ``user_prompt`` to
``assistant_response`` (success) or ``api_retries_exhausted`` (error); a turn that goes quiet for
``turn_idle_seconds`` ends then, failed if its last request failed. With ``claude -p`` a session is one turn.
The agent is the resource attribute named by ``agent_attribute`` (``OTEL_RESOURCE_ATTRIBUTES=agent=NAME``),
else ``default_agent`` (``claude-code``); the task is the resource attribute named by ``task_attribute``,
else the turn's query source. Session, user, account and organisation ids and e-mail addresses are
only ever used as keys in memory, never as labels; prompt text is never read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from claude_exporter.config.exporter import OtlpConfig
from claude_exporter.ingest.claude_code_events import (
    ApiCall,
    ToolResult,
    Turn,
    TurnEnd,
    TurnStart,
    read_event,
)
from claude_exporter.ingest.otlp_counting import Deltas, Recent
from claude_exporter.ingest.otlp_records import LogEvent, SumPoint
from claude_exporter.recording.cardinality import OVERFLOW
from claude_exporter.recording.claude_code_series import ClaudeCodeStore
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.records import Totals
from claude_exporter.recording.usage import Usage

__all__ = ["ClaudeCodeIngest", "code_outcome"]

_TOKEN_TYPES = {"input": 0, "output": 1, "cacheCreation": 2, "cacheRead": 3}
_SIMPLE = {
    "claude_code.session.count": ("claude_code_sessions_total", None, ()),
    "claude_code.commit.count": ("claude_code_commits_total", None, ()),
    "claude_code.pull_request.count": ("claude_code_pull_requests_total", None, ()),
    "claude_code.lines_of_code.count": ("claude_code_lines_of_code_total", "type", ("added", "removed")),
    "claude_code.active_time.total": ("claude_code_active_time_seconds_total", "type", ("user", "cli")),
}


def code_outcome(ok: bool, error_type: str | None, interrupted: bool = False) -> str:
    """A code tool's result as the code-block outcome: success, nonzero_exit (the command ran and
    failed: Claude Code's ShellError) or tool_error (interrupted, timed out, refused)."""
    if ok:
        return "success"
    if not interrupted and error_type == "ShellError":
        return "nonzero_exit"
    return "tool_error"


@dataclass
class OpenTurn:
    """A turn in progress; it stands in the recorder's running executions (``series`` is itself)."""

    agent: str
    task: str  # "default" until a query source or the task attribute names it
    start_ns: int | None
    start: float  # time.perf_counter() when it began, for the in-flight and longest-running gauges
    touched: float
    last_ns: int | None = None  # the sender's clock at its latest event
    totals: Totals = field(default_factory=Totals)
    failed: str | None = None
    task_named: bool = False

    @property
    def series(self) -> OpenTurn:
        """What the in-flight gauges read of a running execution: its agent and task."""
        return self


class ClaudeCodeIngest:
    """Maps Claude Code's telemetry onto one recorder; every ``apply_*`` is safe to call from many threads."""

    def __init__(self, rec: Recorder, options: OtlpConfig | None = None) -> None:
        self.rec = rec
        self.options = options or OtlpConfig()
        memory = self.options.memory
        self.store = ClaudeCodeStore(rec.admission.take)
        self.deltas = Deltas(memory, on_evict=lambda: rec.fault("otlp_writer_evicted"))
        self._events = Recent(memory)  # (session, sequence, name) of every event applied
        self._requests = Recent(memory)  # request ids of api_request / api_error
        self._tools = Recent(memory)  # tool_use ids of tool results
        # Hook results waiting for their tool_result event: tool_use_id -> (since, agent, result, interrupted)
        self._hooks: OrderedDict[str, tuple[float, str, ToolResult, bool]] = OrderedDict()
        self._ended = Recent(memory)  # turns already recorded as executions
        self._models: OrderedDict[str, str] = OrderedDict()  # request id -> model, for tool results
        self.turns: OrderedDict[Turn, OpenTurn] = OrderedDict()
        self._lock = threading.RLock()

    # -- who ---------------------------------------------------------------------------------------------

    def agent_of(self, resource: Mapping[str, Any]) -> str:
        value = resource.get(self.options.agent_attribute)
        return self._agent(value if isinstance(value, str) else None)

    def _agent(self, name: str | None) -> str:
        agent = self.rec.admission.fold("agent", name or self.options.default_agent)
        self.store.add_agent(agent)
        return agent

    def _task_of(self, resource: Mapping[str, Any]) -> str | None:
        value = resource.get(self.options.task_attribute)
        return value if isinstance(value, str) and value else None

    # -- logs --------------------------------------------------------------------------------------------

    def apply_logs(self, events: Iterable[LogEvent]) -> tuple[int, list[str]]:
        """Apply what maps; returns (records rejected, their problems). Unknown events are accepted."""
        rejected, problems = 0, []
        read: list[tuple[LogEvent, Any]] = []
        for event in events:
            found = read_event(event)
            if isinstance(found, list):
                rejected += 1
                problems.extend(found)
            elif found is not None:
                read.append((event, found))
        with self._lock:
            self.sweep()
            for event, action in read:
                if not self._first_time(event):
                    continue
                try:
                    self._apply(event, action)
                except Exception:
                    self.rec.fault("otlp_apply")
        return rejected, problems

    def _first_time(self, event: LogEvent) -> bool:
        sequence = event.attrs.get("event.sequence")
        if sequence is None or isinstance(sequence, bool):
            return True
        return self._events.add((event.attrs.get("session.id"), str(sequence), event.name))

    def _apply(self, event: LogEvent, action: Any) -> None:
        if isinstance(action, ApiCall):
            self._api_call(self.agent_of(event.resource), self._task_of(event.resource), action)
        elif isinstance(action, ToolResult):
            self.tool_result(self.agent_of(event.resource), action)
        elif isinstance(action, TurnStart):
            self._turn(
                action.turn, self.agent_of(event.resource), self._task_of(event.resource), action.time_ns
            )
        elif isinstance(action, TurnEnd):
            # An end whose turn was never seen (its first records lost or still to come) still counts once.
            self._turn(action.turn, self.agent_of(event.resource), self._task_of(event.resource), None)
            self._end(action.turn, action.ok, action.error_type, action.time_ns)

    def _api_call(self, agent: str, task: str | None, call: ApiCall) -> None:
        if call.request_id is not None:
            if not self._requests.add(("ok" if call.ok else "error", call.request_id)):
                return
            self._models[call.request_id] = call.model
            if len(self._models) > self.options.memory:
                self._models.popitem(last=False)
        labels = self.rec.request_labels(agent, call.model)
        usage: Usage | None = None
        own_cost: float | None = None
        if self.options.usage_from == "events" and call.ok:
            usage = Usage(*call.tokens)
            if labels.price is None and labels.model != OVERFLOW and call.cost_usd is not None:
                own_cost = call.cost_usd  # Claude Code's own estimate beats counting the tokens as unpriced
        error = None if call.error_type is None else (call.error_type, "none")  # OTLP names no error_code
        cost, _ = labels.record(call.ok, call.seconds, usage, None, error, (), call.model, own_cost)
        if call.ttft_seconds is not None:
            labels.ttft(call.ttft_seconds)
        reason = str(call.status) if call.status is not None else "connection"
        for _ in range(call.attempts - 1):
            labels.retry(reason)
        if call.status == 429:
            labels.rate_limited("none")
        if call.turn is not None:
            turn = self._turn(call.turn, agent, task or call.query_source, None)
            if turn is not None:
                turn.totals.add(usage, cost, 0, labels.model, None)
                turn.failed = call.error_type
                turn.last_ns = max(turn.last_ns or 0, call.time_ns) or None

    def apply_hook(self, agent: str | None, result: ToolResult, interrupted: bool) -> bool:
        """A hook's tool result for ``agent`` (the hook URL's ``?agent=``). It waits for Claude Code's own
        ``tool_result`` event (which knows the agent and model) for ``hook_join_seconds``, lending it the
        hook's detail (an interrupted command); without one it counts alone. False when already counted."""
        use_id = result.tool_use_id or ""
        with self._lock:
            if use_id in self._tools or use_id in self._hooks:
                return False
            self._hooks[use_id] = (time.perf_counter(), self._agent(agent), result, interrupted)
            while len(self._hooks) > self.options.memory:
                self._hooks.popitem(last=False)
            return True

    def tool_result(self, agent: str, result: ToolResult) -> None:
        """Claude Code's ``tool_result`` event: counted once per tool_use_id, with its hook's detail."""
        hook = self._hooks.pop(result.tool_use_id, None) if result.tool_use_id else None
        self._count_tool(agent, result, hook is not None and hook[3])

    def _count_tool(self, agent: str, result: ToolResult, interrupted: bool) -> None:
        if result.tool_use_id is not None and not self._tools.add(result.tool_use_id):
            return
        tool = self.rec.admission.fold("tool", result.tool)
        outcome = "success" if result.ok else "failure"
        self.store.add("claude_code_tool_results_total", (agent, tool, outcome), 1.0)
        if result.seconds is not None:
            self.store.observe_tool(agent, tool, result.seconds)
        if result.tool in self.options.code_tools:
            model = self._models.get(result.request_id or "", "unknown")
            block = (tool, code_outcome(result.ok, result.error_type, interrupted))
            self.rec.request_labels(agent, model).add_blocks((block,))
            turn = self.turns.get(result.turn) if result.turn is not None else None
            if turn is not None:
                turn.totals.code_blocks += 1

    # -- turns (executions) ------------------------------------------------------------------------------

    def _turn(self, key: Turn, agent: str, task: str | None, start_ns: int | None) -> OpenTurn | None:
        if key in self._ended:
            return None
        now = time.perf_counter()
        turn = self.turns.get(key)
        if turn is None:
            turn = self.turns[key] = OpenTurn(agent, "default", start_ns, now, now)
            self.rec.running_executions[id(turn)] = turn  # type: ignore[assignment]
        else:
            self.turns.move_to_end(key)
            turn.touched = now
        if task is not None and not turn.task_named:
            turn.task = self.rec.admission.fold("task", task)
            turn.task_named = True
        if start_ns is not None and (turn.start_ns is None or start_ns < turn.start_ns):
            turn.start_ns = start_ns
        return turn

    def _end(self, key: Turn, ok: bool, error_type: str | None, end_ns: int | None) -> None:
        turn = self.turns.pop(key, None)
        if turn is None or not self._ended.add(key):
            return
        self.rec.running_executions.pop(id(turn), None)
        end_ns = end_ns or turn.last_ns
        if turn.start_ns is not None and end_ns is not None and end_ns >= turn.start_ns:
            seconds = (end_ns - turn.start_ns) / 1e9
        else:
            seconds = turn.touched - turn.start
        series = self.rec.exec_labels(turn.agent, turn.task)
        failure = None if ok else (error_type or turn.failed or "Error")
        self.rec.finish_execution(series, seconds, turn.totals, failure, None)

    def sweep(self) -> None:
        """End the turns quiet for ``turn_idle_seconds`` (failed if their last request failed), and count
        the hook results whose tool_result event has not come within ``hook_join_seconds``."""
        idle = self.options.turn_idle_seconds
        now = time.perf_counter()
        with self._lock:
            while self._hooks:
                since, agent, result, interrupted = next(iter(self._hooks.values()))
                if now - since < self.options.hook_join_seconds:
                    break
                self._hooks.popitem(last=False)
                self._count_tool(agent, result, interrupted)
            while self.turns:
                key, turn = next(iter(self.turns.items()))
                if now - turn.touched < idle and len(self.turns) <= self.options.memory:
                    return
                self._end(key, turn.failed is None, turn.failed, None)

    # -- metrics -----------------------------------------------------------------------------------------

    def apply_points(self, points: Iterable[SumPoint]) -> None:
        with self._lock:
            self.sweep()
            for point in points:
                try:
                    self._point(point)
                except Exception:
                    self.rec.fault("otlp_apply")

    def _point(self, point: SumPoint) -> None:
        name = point.metric
        usage_metric = name in ("claude_code.token.usage", "claude_code.cost.usage")
        simple = _SIMPLE.get(name)
        if not (simple or usage_metric or name == "claude_code.code_edit_tool.decision"):
            return
        if usage_metric and self.options.usage_from != "metrics":
            return
        amount = self.deltas.increment(point)
        if amount <= 0:
            return
        agent = self.agent_of(point.resource)
        if simple is not None:
            family, kind_key, kinds = simple
            labels: tuple[str, ...] = (agent,)
            if kind_key is not None:
                kind = point.attrs.get(kind_key)
                labels = (agent, kind if kind in kinds else "other")
            self.store.add(family, labels, amount)
        elif usage_metric:
            model = point.attrs.get("model")
            labels_ = self.rec.request_labels(agent, model if isinstance(model, str) and model else "unknown")
            if name == "claude_code.cost.usage":
                labels_.add_usage(Usage(), amount)
            else:
                index = _TOKEN_TYPES.get(str(point.attrs.get("type")))
                if index is not None and amount.is_integer():
                    tokens = [0, 0, 0, 0]
                    tokens[index] = int(amount)
                    labels_.add_usage(Usage(*tokens), 0.0)
        else:
            tool = point.attrs.get("tool_name") or point.attrs.get("tool")
            decision = point.attrs.get("decision")
            tool = self.rec.admission.fold("tool", tool if isinstance(tool, str) and tool else "unknown")
            decision = decision if decision in ("accept", "reject") else "other"
            self.store.add("claude_code_edit_decisions_total", (agent, tool, decision), amount)
