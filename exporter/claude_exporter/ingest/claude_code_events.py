"""Claude Code's telemetry events read into what the exporter counts; pure functions, no recording.

Claude Code (2.1.x) logs one record per event, named ``claude_code.<name>``; numbers sometimes arrive as
strings (protobuf export) and sometimes as numbers (JSON export), and releases have dropped fields, so
every field is read leniently and a record whose required fields are unusable is rejected by name.

What is read, per event (everything else, prompt text included, is never looked at):

- ``user_prompt``: a turn (one prompt and its agent loop) starts: ``prompt.id``, the record's time.
- ``api_request``: a finished request: model, the four token counts and the 5m/1h split of the cache
  writes, speed, duration_ms, ttft_ms, cost_usd, request_id, client_request_id, query_source.
- ``api_error``: a failed request (sent once, after its last attempt): model, status_code, duration_ms,
  attempt, query_source.
- ``api_refusal``: a response that stopped with ``refusal``: model, category, request_id, query_source.
- ``api_retries_exhausted``: a request gave up after more than one attempt: total_attempts,
  total_retry_duration_ms; it ends its turn as failed.
- ``assistant_response``: a reply that carried text. The CLI sends one after **every** such reply (text
  before a tool call included), so it never ends a turn; it only says the model answered.
- ``tool_result``: tool_name, tool_use_id, success, duration_ms, error_type.
- ``tool_decision``: tool_name, tool_use_id, decision (accept, reject), source.
- ``compaction``: trigger, success. ``internal_error``: counted, its name never read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from claude_exporter.ingest.otlp_records import LogEvent

__all__ = [
    "MAIN_SOURCES",
    "Answer",
    "ApiCall",
    "Compaction",
    "InternalError",
    "Refusal",
    "SessionStop",
    "ToolDecision",
    "ToolResult",
    "TurnEnd",
    "TurnStart",
    "error_type_for_status",
    "read_event",
    "side_source",
]

# The SDK exception class name for a status, so Claude Code's errors share the SDK agents' error_type values.
_STATUS_ERRORS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "APITimeoutError",
    409: "ConflictError",
    413: "RequestTooLargeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    529: "OverloadedError",
}
# The query sources of a turn's own agent loop (``sdk`` with ``-p`` and the Agent SDK, ``repl_main_thread``
# interactively, ``main`` in the metrics); any other value is a sub-agent's or an auxiliary request's.
MAIN_SOURCES = frozenset({"sdk", "repl_main_thread", "main"})
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


def error_type_for_status(status: int | None) -> str:
    """The SDK's exception class name for an HTTP status (no status: a connection error)."""
    if status is None:
        return "APIConnectionError"
    found = _STATUS_ERRORS.get(status)
    if found is not None:
        return found
    return "InternalServerError" if status >= 500 else "APIStatusError"


@dataclass(frozen=True, slots=True)
class Turn:
    """Where an event belongs: its session (empty when the CLI leaves it out) and prompt; opaque ids, never
    labels. ``prompt.id`` is a fresh UUID per prompt, so a turn stays apart from every other process's."""

    session: str
    prompt: str


@dataclass(frozen=True, slots=True)
class ApiCall:
    """A finished request (``api_request``) or a failed one (``api_error``)."""

    model: str
    ok: bool
    seconds: float
    ttft_seconds: float | None
    tokens: tuple[int, int, int, int]  # input, output, cache creation, cache read
    cost_usd: float | None
    error_type: str | None
    status: int | None
    attempts: int
    request_id: str | None
    query_source: str | None
    turn: Turn | None
    time_ns: int
    cache_5m: int | None = None  # the cache writes' split by lifetime, when the CLI sends it
    cache_1h: int | None = None
    speed: str | None = None
    client_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool: str
    tool_use_id: str | None
    ok: bool
    seconds: float | None
    error_type: str | None
    request_id: str | None
    turn: Turn | None


@dataclass(frozen=True, slots=True)
class TurnStart:
    turn: Turn
    time_ns: int


@dataclass(frozen=True, slots=True)
class TurnEnd:
    """``api_retries_exhausted``: the turn's request gave up, so the turn ends as failed."""

    turn: Turn
    ok: bool
    error_type: str | None
    time_ns: int
    query_source: str | None = None
    attempts: int | None = None
    retry_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """``assistant_response``: the model replied with text; the turn goes on unless the CLI ends it."""

    turn: Turn
    time_ns: int
    query_source: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """``api_refusal``: a response that stopped with ``refusal`` (its request is an ``api_request`` too)."""

    model: str
    category: str | None  # None: the CLI did not send it (it needs OTEL_LOG_TOOL_DETAILS)
    request_id: str | None
    query_source: str | None
    turn: Turn | None
    time_ns: int


@dataclass(frozen=True, slots=True)
class ToolDecision:
    tool: str
    tool_use_id: str | None
    decision: str  # accept, reject, other
    source: str | None
    turn: Turn | None


@dataclass(frozen=True, slots=True)
class Compaction:
    trigger: str | None
    ok: bool
    turn: Turn | None


@dataclass(frozen=True, slots=True)
class InternalError:
    turn: Turn | None


@dataclass(frozen=True, slots=True)
class SessionStop:
    """A hook that ends what a session is doing: ``Stop`` (its turn is over) or ``SessionEnd``. The CLI
    (2.1.328) also sends the turn's ``prompt_id``, which finds the turn when events carry no session id."""

    session: str
    event: str
    prompt: str | None = None


Action = (
    ApiCall | ToolResult | TurnStart | TurnEnd | Answer | Refusal | ToolDecision | Compaction | InternalError
)


def side_source(query_source: str | None) -> str | None:
    """The query source when it is not the turn's own agent loop (a sub-agent, a compaction ...)."""
    if query_source is None or query_source in MAIN_SOURCES:
        return None
    return query_source


def _text(attrs: Mapping[str, Any], key: str) -> str | None:
    value = attrs.get(key)
    if isinstance(value, str) and value:
        return value
    return None


def _number(attrs: Mapping[str, Any], key: str, problems: list[str], required: bool = False) -> float | None:
    """A non-negative finite number, from a number or a numeric string; None when absent."""
    value = attrs.get(key)
    if value is None or value == "":
        if required:
            problems.append(f"{key}: required")
        return None
    if isinstance(value, bool):
        number = math.nan
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value))
        except ValueError:
            number = math.nan
    if not math.isfinite(number) or number < 0:
        problems.append(f"{key}: must be a non-negative number, got {str(value)[:40]!r}")
        return None
    return number


def _count(attrs: Mapping[str, Any], key: str, problems: list[str]) -> int:
    number = _number(attrs, key, problems)
    if number is None:
        return 0
    if not number.is_integer():
        problems.append(f"{key}: must be a whole number, got {number}")
        return 0
    return int(number)


def _flag(attrs: Mapping[str, Any], key: str) -> bool | None:
    value = attrs.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _turn(event: LogEvent) -> Turn | None:
    prompt = _text(event.attrs, "prompt.id")
    if prompt is None:
        return None
    return Turn(_text(event.attrs, "session.id") or "", prompt)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def read_event(event: LogEvent) -> Action | list[str] | None:
    """What ``event`` counts as; a list of problems when it is unusable; None when nothing maps it."""
    attrs = event.attrs
    name = event.name
    problems: list[str] = []
    if name in {"api_request", "api_error"}:
        model = _text(attrs, "model")
        if model is None:
            problems.append("model: required")
        duration = _number(attrs, "duration_ms", problems)
        ok = name == "api_request"
        tokens = tuple(_count(attrs, key, problems) for key in TOKEN_FIELDS) if ok else (0, 0, 0, 0)
        five = _count(attrs, "cache_creation_5m_tokens", problems) if ok else 0
        hour = _count(attrs, "cache_creation_1h_tokens", problems) if ok else 0
        # The split as sent; the price function's one rule reads it (writes it leaves out are 5-minute ones:
        # the CLI sends 0 and 0 when the API gave no breakdown).
        split = ok and ("cache_creation_5m_tokens" in attrs or "cache_creation_1h_tokens" in attrs)
        status_number = _number(attrs, "status_code", problems) if not ok else None
        status = int(status_number) if status_number is not None else None
        attempts = _count(attrs, "attempt", problems) if not ok else 1
        if problems or model is None:
            return [f"{name}: {problem}" for problem in problems]
        return ApiCall(
            model=model,
            ok=ok,
            seconds=(duration or 0.0) / 1000.0,
            ttft_seconds=_seconds(_number(attrs, "ttft_ms", [])),
            tokens=(tokens[0], tokens[1], tokens[2], tokens[3]),
            cost_usd=_number(attrs, "cost_usd", []),
            error_type=None if ok else error_type_for_status(status),
            status=status,
            attempts=max(1, attempts),
            request_id=_text(attrs, "request_id"),
            query_source=_text(attrs, "query_source"),
            turn=_turn(event),
            time_ns=event.time_ns,
            cache_5m=five if split else None,
            cache_1h=hour if split else None,
            speed=_text(attrs, "speed"),
            client_request_id=_text(attrs, "client_request_id"),
        )
    if name == "tool_result":
        tool = _text(attrs, "tool_name")
        success = _flag(attrs, "success")
        if tool is None:
            problems.append("tool_name: required")
        if success is None:
            problems.append(f"success: must be true or false, got {str(attrs.get('success'))[:40]!r}")
        duration = _number(attrs, "duration_ms", problems)
        if problems or tool is None or success is None:
            return [f"{name}: {problem}" for problem in problems]
        return ToolResult(
            tool=tool,
            tool_use_id=_text(attrs, "tool_use_id"),
            ok=success,
            seconds=_seconds(duration),
            error_type=_text(attrs, "error_type"),
            request_id=_text(attrs, "request_id"),
            turn=_turn(event),
        )
    if name == "api_refusal":
        model = _text(attrs, "model")
        if model is None:
            return [f"{name}: model: required"]
        return Refusal(
            model=model,
            category=_text(attrs, "category"),
            request_id=_text(attrs, "request_id"),
            query_source=_text(attrs, "query_source"),
            turn=_turn(event),
            time_ns=event.time_ns,
        )
    if name == "tool_decision":
        tool = _text(attrs, "tool_name")
        if tool is None:
            return [f"{name}: tool_name: required"]
        decision = attrs.get("decision")
        return ToolDecision(
            tool=tool,
            tool_use_id=_text(attrs, "tool_use_id"),
            decision=decision if decision in ("accept", "reject") else "other",
            source=_text(attrs, "source"),
            turn=_turn(event),
        )
    if name == "compaction":
        return Compaction(_text(attrs, "trigger"), _flag(attrs, "success") is not False, _turn(event))
    if name == "internal_error":
        return InternalError(_turn(event))
    if name in ("user_prompt", "assistant_response", "api_retries_exhausted"):
        turn = _turn(event)
        if turn is None:
            return None  # a turn without an id cannot be joined; its requests still count
        if name == "user_prompt":
            return TurnStart(turn, event.time_ns)
        if name == "assistant_response":
            return Answer(turn, event.time_ns, _text(attrs, "query_source"))
        status_number = _number(attrs, "status_code", [])
        status = int(status_number) if status_number is not None else None
        total = _number(attrs, "total_attempts", [])
        return TurnEnd(
            turn,
            False,
            error_type_for_status(status),
            event.time_ns,
            _text(attrs, "query_source"),
            None if total is None or not total.is_integer() else int(total),
            _seconds(_number(attrs, "total_retry_duration_ms", [])),
        )
    return None
