"""Claude Code sessions in the exporter's metrics: OTLP events, sum points and hooks, counted once.

Sources of truth (one each, so nothing is counted twice when Claude Code sends both metrics and events):

- Requests, tokens, cost, request duration, time to first token, errors and retries come from the
  ``api_request`` / ``api_error`` **events** (``usage_from: events``, the default): they are per request
  and carry the model. The ``claude_code.token.usage`` and ``claude_code.cost.usage`` metrics are then
  ignored. With ``usage_from: metrics`` (for a fleet that exports metrics only) tokens and cost come from
  those metrics instead, and requests are not counted.
- Cost is the exporter's own estimate through the same price function as SDK agents, from the CLI's own
  fields (the 5m/1h split of cache writes, ``speed``), so both compare; a mode the table has no figure
  for is counted as unpriced, never priced at another rate. For a model the table lacks, Claude Code's
  ``cost_usd`` is taken instead of counting the tokens as unpriced.
- Sessions, lines of code, commits, pull requests, active time and edit decisions come from the metrics.
- Tool results come from the ``tool_result`` event or the PostToolUse / PostToolUseFailure hook, whichever
  arrives first for a ``tool_use_id``; the other is recognised and not counted again.

An execution is one turn: a prompt (``prompt.id``) and its agent loop. It ends only when the CLI says the
turn is over: the ``Stop`` or ``SessionEnd`` hook of its session, the session's next ``user_prompt``,
``api_retries_exhausted`` or an ``api_error`` after a single attempt (no ``api_retries_exhausted`` follows
one) of its own loop (failed); else after
``turn_idle_seconds`` without news, failed if its last request failed. ``assistant_response`` never ends
a turn (the CLI sends one after every reply with text), but a turn whose last news is one is out of the
in-flight gauges until more work arrives, so a process that has exited is not "running".
Requests of a sub-agent or an auxiliary query (any ``query_source`` but the main loop's) are an execution
of their own inside the turn, with the query source as their task, ended with the turn; as with nested
``execution()`` blocks, each request counts towards one execution only.
A turn whose resource names a running ``execution()`` (``claude_exporter.scope``: a Claude Agent SDK session
started inside one) is no execution: its requests count towards that execution.
The agent is the resource attribute named by ``agent_attribute`` (``OTEL_RESOURCE_ATTRIBUTES=agent=NAME``),
else ``default_agent`` (``claude-code``); the task is the resource attribute named by ``task_attribute``,
else ``default``.

Re-sent records are recognised by what identifies an event (its name, time, session, ``prompt.id``,
sequence, request and tool-use ids), never by the per-process ``event.sequence`` alone: every process
counts from 0 and ``--continue`` / ``--resume`` keep the session id. A request is also recognised by its
request id together with its ``client_request_id``. What is dropped as a re-send is counted as
``claude_exporter_events_total{result="duplicate"}``. Every id is remembered as a 16-byte digest, so
memory is bounded by ``memory`` entries whatever the ids' length. Session, user, account and organisation
ids and e-mail addresses are only ever used as keys in memory, never as labels; prompt text is never read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from claude_exporter.config.exporter import OtlpConfig
from claude_exporter.ingest.claude_code_events import (
    Answer,
    ApiCall,
    Compaction,
    InternalError,
    Refusal,
    SessionStop,
    ToolDecision,
    ToolResult,
    Turn,
    TurnEnd,
    TurnStart,
    read_event,
    side_source,
)
from claude_exporter.ingest.otlp_counting import Deltas, Recent, digest
from claude_exporter.ingest.otlp_records import LogEvent, SumPoint
from claude_exporter.ingest.otlp_state import WriterState
from claude_exporter.recording.cardinality import OVERFLOW
from claude_exporter.recording.claude_code_series import ClaudeCodeStore
from claude_exporter.recording.execution import SCOPE_ATTRIBUTE, scoped
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
_DECISION_SOURCES = frozenset(
    {"config", "hook", "user_permanent", "user_temporary", "user_abort", "user_reject"}
)
_TRIGGERS = frozenset({"auto", "manual"})
_REFUSAL_CATEGORIES = frozenset({"cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms"})
# The identifying attributes of an event: a re-sent record repeats them all, two distinct events never do
# (event.sequence is unique within a process, prompt.id and the timestamp apart from other processes).
_IDENTITY = (
    "session.id", "prompt.id", "event.sequence", "event.timestamp", "request_id", "client_request_id",
    "tool_use_id",
)  # fmt: skip
_HOOK_TOOL_CHARS = 256  # a waiting hook keeps its tool name this long at most (labels are cut shorter)


def code_outcome(ok: bool, error_type: str | None, interrupted: bool = False) -> str:
    """A code tool's result as the code-block outcome: success, nonzero_exit (the command ran and
    failed: Claude Code's ShellError) or tool_error (interrupted, timed out, refused). ``interrupted``: the
    hook said the command was cut short, which the CLI reports as a success when it timed out."""
    if interrupted:
        return "tool_error"
    if ok:
        return "success"
    if error_type == "ShellError":
        return "nonzero_exit"
    return "tool_error"


@dataclass(slots=True)
class OpenTurn:
    """A turn in progress; it stands in the recorder's running executions (``series`` is itself)."""

    agent: str
    task: str  # "default" until the task attribute names it (a sub-execution: its query source)
    start_ns: int | None
    start: float  # time.perf_counter() when it began, for the in-flight and longest-running gauges
    touched: float
    last_ns: int | None = None  # the sender's clock at its latest event
    totals: Totals = field(default_factory=Totals)
    failed: str | None = None
    task_named: bool = False
    session: bytes = b""  # digest of its session id (b"" without one), for hooks and the next prompt
    answered: bool = False  # its latest news was a text reply: out of the in-flight gauges until more
    # Made when first needed: most turns have no sub-agent, and up to ``memory`` turns may be open.
    subs: dict[str, OpenTurn] | None = None  # query source -> its own execution
    last_request: bytes | None = None  # digest of the request id its loop counted last
    stopped: bool = False  # a Stop or SessionEnd hook said it is over; its last records may still come
    # The key of the running execution() its CLI was started in (a Claude Agent SDK session): its totals
    # are that execution's, and it is no execution of its own.
    scope: str | None = None

    @property
    def series(self) -> OpenTurn:
        """What the in-flight gauges read of a running execution: its agent and task."""
        return self

    def seen(self, time_ns: int) -> None:
        self.touched = time.perf_counter()
        if time_ns:
            self.last_ns = max(self.last_ns or 0, time_ns)
            if self.start_ns is None:
                self.start_ns = time_ns


class ClaudeCodeIngest:
    """Maps Claude Code's telemetry onto one recorder; every ``apply_*`` is safe to call from many threads."""

    def __init__(self, rec: Recorder, options: OtlpConfig | None = None) -> None:
        self.rec = rec
        self.options = options or OtlpConfig()
        memory = self.options.memory
        self.store = ClaudeCodeStore(rec.admission.take)
        self.deltas = Deltas(memory, on_evict=lambda: rec.fault("otlp_writer_evicted"))
        self._events = Recent(memory)  # digests of every event applied
        self._requests = Recent(memory)  # digests of (outcome, request id, client request id)
        self._tools = Recent(memory)  # digests of the tool_use ids of tool results counted
        # Hook results waiting for their tool_result event: digest -> (since, agent, result, interrupted)
        self._hooks: OrderedDict[bytes, tuple[float, str, ToolResult, bool]] = OrderedDict()
        self._ended = Recent(memory)  # turns already recorded as executions
        self._models: OrderedDict[bytes, str] = OrderedDict()  # request id digest -> model, for tool results
        self.turns: OrderedDict[bytes, OpenTurn] = OrderedDict()
        self._current: dict[bytes, bytes] = {}  # session digest -> its open turn (the latest prompt's)
        # Turns a Stop or SessionEnd hook ended, waiting hook_join_seconds for their last records: the hook
        # comes at once, the CLI's records in its next export batch (every 5 s by default).
        self._stopping: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.RLock()
        self._state: WriterState | None = None
        if self.options.state_dir is not None:
            # Cumulative totals re-sent to a restarted serve then add only what is new.
            state = self._state = WriterState(self.options.state_dir, self.deltas, rec.fault)
            rec.on_close(lambda: state.save(force=True))

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

    def apply_logs(self, events: Iterable[LogEvent]) -> tuple[int, list[str], int]:
        """Apply what maps; returns (records rejected, their problems, records dropped as re-sent).
        Unknown events are accepted."""
        rejected, problems = 0, []
        read: list[tuple[LogEvent, Any]] = []
        for event in events:
            found = read_event(event)
            if isinstance(found, list):
                rejected += 1
                problems.extend(found)
            else:
                read.append((event, found))
        duplicates = 0
        with self._lock:
            self.sweep()
            for event, action in read:
                if not self._events.add(_identity(event)):
                    duplicates += 1
                    continue
                if action is None:
                    continue
                try:
                    if not self._apply(event, action):
                        duplicates += 1
                except Exception:
                    self.rec.fault("otlp_apply")
        if duplicates:
            self.rec.events.inc(("otlp", "duplicate"), duplicates)
        return rejected, problems, duplicates

    def _apply(self, event: LogEvent, action: Any) -> bool:
        """Apply one event; False when it repeats a request already counted."""
        agent = self.agent_of(event.resource)
        task = self._task_of(event.resource)
        marker = event.resource.get(SCOPE_ATTRIBUTE)
        if marker is not None and not isinstance(action, InternalError):
            try:
                self._scoped_turn(action.turn, agent, task, marker)
            except Exception:
                self.rec.fault("otlp_scope")  # the event still counts, its turn an ordinary one
        if isinstance(action, ApiCall):
            return self._api_call(agent, task, action)
        if isinstance(action, ToolResult):
            self.tool_result(agent, action)
            self._news(action.turn, agent, task, event.time_ns)
        elif isinstance(action, TurnStart):
            self._start(action, agent, task)
        elif isinstance(action, TurnEnd):
            self._retries_exhausted(agent, task, action)
        elif isinstance(action, Answer):
            turn = self._turn(action.turn, agent, task, None)
            if turn is not None:
                turn.seen(action.time_ns)
                source = side_source(action.query_source)
                # The main loop's reply: its sub-agents' work is done too, whatever they last said.
                answered = (
                    [turn, *(turn.subs or {}).values()] if source is None else [(turn.subs or {}).get(source)]
                )
                for work in answered:
                    if work is not None:
                        self._answered(work)
        elif isinstance(action, Refusal):
            self._refusal(agent, task, action, event.time_ns)
        elif isinstance(action, ToolDecision):
            self._decision(agent, action)
            self._news(action.turn, agent, task, event.time_ns)
        elif isinstance(action, Compaction):
            trigger = action.trigger if action.trigger in _TRIGGERS else "other"
            outcome = "success" if action.ok else "failure"
            self.store.add("claude_code_compactions_total", (agent, str(trigger), outcome), 1.0)
            self._news(action.turn, agent, task, event.time_ns)
        elif isinstance(action, InternalError):
            self.store.add("claude_code_internal_errors_total", (agent,), 1.0)
        return True

    def _api_call(self, agent: str, task: str | None, call: ApiCall) -> bool:
        if call.client_request_id is not None:
            # The same request (its request id and the CLI's own client request id) in another record. A
            # request id alone is not enough: a gateway may repeat it, or leave it out.
            key = digest("ok" if call.ok else "error", call.request_id, call.client_request_id)
            if not self._requests.add(key):
                return False
        if call.request_id is not None:
            self._models[digest(call.request_id)] = call.model
            if len(self._models) > self.options.memory:
                self._models.popitem(last=False)
        labels = self.rec.request_labels(agent, call.model)
        usage: Usage | None = None
        own_cost: float | None = None
        if self.options.usage_from == "events" and call.ok:
            usage = Usage(*call.tokens)
            usage.cache_5m, usage.cache_1h = call.cache_5m, call.cache_1h
            usage.speed = call.speed
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
        if call.turn is None:
            return True
        turn = self._turn(call.turn, agent, task, None)
        if turn is None:
            return True
        turn.seen(call.time_ns)
        self._running(turn)
        source = side_source(call.query_source)
        work = turn if source is None else self._sub(turn, agent, source)
        work.seen(call.time_ns)
        self._running(work)
        work.totals.add(usage, cost, 0, labels.model, None)
        work.failed = call.error_type
        if source is not None:
            return True
        turn.last_request = None if call.request_id is None else digest(call.request_id)
        if not call.ok and call.attempts <= 1:
            # One attempt and no more (CLAUDE_CODE_MAX_RETRIES=0, or an error not retried): the CLI sends
            # api_retries_exhausted only after more than one attempt, so this is the turn's end.
            self._end_key(digest(call.turn), False, call.error_type, call.time_ns)
        return True

    def _sub(self, turn: OpenTurn, agent: str, source: str) -> OpenTurn:
        """The execution of a sub-agent's (or auxiliary query's) work inside ``turn``."""
        if turn.subs is None:
            turn.subs = {}
        sub = turn.subs.get(source)
        if sub is None:
            now = time.perf_counter()
            task = self.rec.admission.fold("task", source)
            sub = turn.subs[source] = OpenTurn(agent, task, None, now, now, task_named=True)
            self.rec.running_executions[id(sub)] = sub  # type: ignore[assignment]
        return sub

    def _news(self, key: Turn | None, agent: str, task: str | None, time_ns: int) -> None:
        """More work in a turn: it is running (again)."""
        if key is None:
            return
        turn = self._turn(key, agent, task, None)
        if turn is not None:
            turn.seen(time_ns)
            self._running(turn)

    def _running(self, turn: OpenTurn) -> None:
        if turn.answered and not turn.stopped and turn.scope is None:
            turn.answered = False
            self.rec.running_executions[id(turn)] = turn  # type: ignore[assignment]

    def _answered(self, turn: OpenTurn) -> None:
        if not turn.answered:
            turn.answered = True
            self.rec.running_executions.pop(id(turn), None)

    def _start(self, action: TurnStart, agent: str, task: str | None) -> None:
        key = digest(action.turn)
        if action.turn.session:
            # The session's next prompt: its previous turn is over.
            session = digest(action.turn.session)
            previous = self._current.get(session)
            if previous is not None and previous != key:
                turn = self.turns.get(previous)
                if turn is not None:
                    self._end_key(previous, turn.failed is None, turn.failed, None)
            self._current[session] = key
        turn = self._turn(action.turn, agent, task, action.time_ns)
        if turn is not None:
            turn.seen(action.time_ns)

    def _retries_exhausted(self, agent: str, task: str | None, end: TurnEnd) -> None:
        self.store.add("claude_code_retries_exhausted_total", (agent,), 1.0)
        if end.retry_seconds is not None:
            self.store.add("claude_code_retry_seconds_total", (agent,), end.retry_seconds)
        if side_source(end.query_source) is not None:
            return  # a sub-agent's request gave up; its parent turn goes on
        # An end whose turn was never seen (its first records lost or still to come) still counts once.
        self._turn(end.turn, agent, task, None)
        self._end_key(digest(end.turn), end.ok, end.error_type, end.time_ns)

    def _refusal(self, agent: str, task: str | None, refusal: Refusal, time_ns: int) -> None:
        category = refusal.category if refusal.category in _REFUSAL_CATEGORIES else None
        if refusal.category is not None and category is None:
            category = "__other__"
        self.rec.request_labels(agent, refusal.model).refused(category or "none")
        # The turn goes on: the real CLI (2.1.328) tells the model its reply was withheld and asks again.
        self._news(refusal.turn, agent, task, time_ns)

    def _decision(self, agent: str, decision: ToolDecision) -> None:
        tool = self.rec.admission.fold("tool", decision.tool)
        source = decision.source if decision.source in _DECISION_SOURCES else "other"
        self.store.add("claude_code_tool_decisions_total", (agent, tool, decision.decision, str(source)), 1.0)

    # -- hooks -------------------------------------------------------------------------------------------

    def apply_hook(self, agent: str | None, result: ToolResult, interrupted: bool) -> bool:
        """A hook's tool result for ``agent`` (the hook URL's ``?agent=``). It waits for Claude Code's own
        ``tool_result`` event (which knows the agent and model) for ``hook_join_seconds``, lending it the
        hook's detail (an interrupted command); without one it counts alone, as does a hook pushed out of
        ``memory`` by newer ones. False when already counted."""
        key = digest(result.tool_use_id or "")
        with self._lock:
            if key in self._tools or key in self._hooks:
                return False
            # What waits is small whatever the hook sent: the id is in the key, the tool name is cut.
            kept = replace(result, tool_use_id=None, tool=result.tool[:_HOOK_TOOL_CHARS])
            self._hooks[key] = (time.perf_counter(), self._agent(agent), kept, interrupted)
            while len(self._hooks) > self.options.memory:
                old, (_, old_agent, old_result, old_interrupted) = self._hooks.popitem(last=False)
                self._count_tool(old_agent, old_result, old_interrupted, old)
            return True

    def apply_stop(self, stop: SessionStop) -> bool:
        """A ``Stop`` or ``SessionEnd`` hook: the session's open turn is over. False when no open turn of
        that session is known (the events carry no session id, or the turn already ended)."""
        session = digest(stop.session)
        with self._lock:
            key = self._current.get(session)
            if stop.prompt is not None:
                # Its own turn, with or without the session id on the events.
                for candidate in (digest(Turn(stop.session, stop.prompt)), digest(Turn("", stop.prompt))):
                    if candidate in self.turns:
                        key = candidate
                        break
            turn = self.turns.get(key) if key is not None else None
            if key is None or turn is None:
                return False
            if not turn.stopped:
                # Over, but its last records may be in the CLI's next export batch: it ends in sweep(),
                # hook_join_seconds from now (or earlier, at the session's next prompt), out of the
                # in-flight gauges meanwhile.
                turn.stopped = True
                self._answered(turn)
                self._stopping[key] = time.perf_counter()
            return True

    def tool_result(self, agent: str, result: ToolResult) -> None:
        """Claude Code's ``tool_result`` event: counted once per tool_use_id, with its hook's detail."""
        key = digest(result.tool_use_id) if result.tool_use_id else None
        hook = self._hooks.pop(key, None) if key is not None else None
        self._count_tool(agent, result, hook is not None and hook[3], key)

    def _count_tool(self, agent: str, result: ToolResult, interrupted: bool, key: bytes | None) -> None:
        if key is not None and not self._tools.add(key):
            return
        tool = self.rec.admission.fold("tool", result.tool)
        outcome = "success" if result.ok else "failure"
        self.store.add("claude_code_tool_results_total", (agent, tool, outcome), 1.0)
        if result.seconds is not None:
            self.store.observe_tool(agent, tool, result.seconds)
        if result.tool in self.options.code_tools:
            model = self._models.get(digest(result.request_id or ""), "unknown")
            block = (tool, code_outcome(result.ok, result.error_type, interrupted))
            self.rec.request_labels(agent, model).add_blocks((block,))
            turn = self.turns.get(digest(result.turn)) if result.turn is not None else None
            if turn is not None:
                turn.totals.code_blocks += 1

    # -- turns (executions) ------------------------------------------------------------------------------

    def _turn(self, key: Turn, agent: str, task: str | None, start_ns: int | None) -> OpenTurn | None:
        hashed = digest(key)
        if hashed in self._ended:
            return None
        now = time.perf_counter()
        turn = self.turns.get(hashed)
        if turn is None:
            session = digest(key.session) if key.session else b""
            turn = self.turns[hashed] = OpenTurn(agent, "default", start_ns, now, now, session=session)
            self.rec.running_executions[id(turn)] = turn  # type: ignore[assignment]
            if session and session not in self._current:
                self._current[session] = hashed
        else:
            self.turns.move_to_end(hashed)
            turn.touched = now
            if turn.scope is not None and scoped(turn.scope) is None:
                # Its execution() ended before these records came: they are the turn's own execution.
                turn.scope, turn.totals = None, Totals()
                if not turn.stopped:
                    turn.answered = False
                    self.rec.running_executions[id(turn)] = turn  # type: ignore[assignment]
        if task is not None and not turn.task_named:
            turn.task = self.rec.admission.fold("task", task)
            turn.task_named = True
        if start_ns is not None and (turn.start_ns is None or start_ns < turn.start_ns):
            turn.start_ns = start_ns
        return turn

    def _scoped_turn(self, key: Turn | None, agent: str, task: str | None, marker: object) -> None:
        """Make the turn of an event whose resource names an execution() (``marker``) as that execution's:
        not in flight, its totals the execution's. An execution that is over, unknown or another
        recorder's leaves it an ordinary turn (nothing is lost, nothing counted twice)."""
        if key is None:
            return
        hashed = digest(key)
        if hashed in self.turns or hashed in self._ended:
            return  # decided when the turn was made
        ex = scoped(marker)
        if ex is None or ex.rec is not self.rec:
            return
        turn = self._turn(key, agent, task, None)
        if turn is not None:
            self.rec.running_executions.pop(id(turn), None)
            turn.scope, turn.totals = ex.scope, ex.totals

    def _end_key(self, key: bytes, ok: bool, error_type: str | None, end_ns: int | None) -> None:
        turn = self.turns.pop(key, None)
        self._stopping.pop(key, None)
        if turn is None or not self._ended.add(key):
            return
        if self._current.get(turn.session) == key:
            del self._current[turn.session]
        for sub in (turn.subs or {}).values():
            self._finish(sub, sub.failed is None, sub.failed, None)
        self._finish(turn, ok, error_type, end_ns)

    def _finish(self, turn: OpenTurn, ok: bool, error_type: str | None, end_ns: int | None) -> None:
        self.rec.running_executions.pop(id(turn), None)
        if turn.scope is not None:
            # Its execution() is the one execution; a failed turn fails it (unless its block raised).
            ex = scoped(turn.scope)
            if ex is not None and not ok:
                ex.failed = error_type or turn.failed or "Error"
            return
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
        if self._state is not None:
            self._state.save()  # a write the batches' pace put off (this runs at every scrape too)
        with self._lock:
            while self._hooks:
                key, (since, agent, result, interrupted) = next(iter(self._hooks.items()))
                if now - since < self.options.hook_join_seconds:
                    break
                self._hooks.popitem(last=False)
                self._count_tool(agent, result, interrupted, key)
            while self._stopping:
                key, since = next(iter(self._stopping.items()))
                if now - since < self.options.hook_join_seconds:
                    break
                turn = self.turns.get(key)
                if turn is None:
                    del self._stopping[key]
                else:
                    self._end_key(key, turn.failed is None, turn.failed, None)
            while self.turns:
                key, turn = next(iter(self.turns.items()))
                if now - turn.touched < idle and len(self.turns) <= self.options.memory:
                    return
                self._end_key(key, turn.failed is None, turn.failed, None)

    # -- metrics -----------------------------------------------------------------------------------------

    def apply_points(self, points: Iterable[SumPoint]) -> None:
        with self._lock:
            self.sweep()
            for point in points:
                try:
                    self._point(point)
                except Exception:
                    self.rec.fault("otlp_apply")
            if self._state is not None:
                self._state.save()

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


def _identity(event: LogEvent) -> bytes:
    """What tells this event from every other: a re-sent record gives the same digest."""
    attrs = event.attrs
    return digest(event.name, event.time_ns, *(attrs.get(key) for key in _IDENTITY))
