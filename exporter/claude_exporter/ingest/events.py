"""Events from agents in other languages: the event-log shape in, the same metrics out.

``POST /v1/events`` takes one JSON object or NDJSON lines. The whole body is checked first: one bad line
and the answer is 400 naming every bad line by number, with nothing applied, so a client can fix and
resend without double counting. Bodies over 1 MiB get 413. ``claude-exporter serve --tail`` feeds the
same :func:`parse_event` / :func:`apply_events` line by line.

An event counts as one request and one execution of its agent (default: the configured default agent),
task (``default``) and model (``unknown``, which is unpriced, when the event names none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.usage import Usage

__all__ = ["MAX_BODY", "Event", "apply_events", "events_route", "parse_body", "parse_event"]

MAX_BODY = 1 << 20
KINDS = ("claude_execution_complete", "claude_execution_error")
_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_TEXT = ("agent", "task", "model", "stop_reason", "error_type", "error_message", "execution_id", "timestamp")


@dataclass(frozen=True)
class Event:
    ok: bool
    seconds: float
    agent: str | None
    task: str
    model: str
    usage: tuple[int, int, int, int]  # input, output, cache creation, cache read
    stop_reason: str | None
    error_type: str | None
    error_message: str | None
    requests: int


def _show(value: object) -> str:
    return json.dumps(value)[:80]


def parse_event(obj: object) -> Event | list[str]:
    """An :class:`Event`, or the list of what is wrong with ``obj`` (each naming its field)."""
    if not isinstance(obj, dict):
        return [f"must be a JSON object, got {_show(obj)}"]
    problems: list[str] = []
    kind = obj.get("event")
    if kind not in KINDS:
        problems.append(f"event: must be one of {', '.join(KINDS)}, got {_show(kind)}")
    duration = obj.get("duration_ms")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, (int, float))
        or not math.isfinite(duration)
        or duration < 0
    ):
        problems.append(f"duration_ms: must be a non-negative number, got {_show(duration)}")
    counts = []
    for key in _COUNTS:
        value = obj.get(key, 0)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{key}: must be a non-negative integer, got {_show(value)}")
            value = 0
        counts.append(value)
    requests = obj.get("requests", 1)
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        problems.append(f"requests: must be a positive integer, got {_show(requests)}")
    for key in _TEXT:
        value = obj.get(key)
        if value is not None and (
            not isinstance(value, str) or (key in ("agent", "task", "model") and not value)
        ):
            problems.append(f"{key}: must be a non-empty string, got {_show(value)}")
    if kind == "claude_execution_error" and not isinstance(obj.get("error_type"), str):
        problems.append(
            f"error_type: required for claude_execution_error, got {_show(obj.get('error_type'))}"
        )
    if problems:
        return problems
    return Event(
        ok=kind == "claude_execution_complete",
        seconds=float(duration) / 1000.0,  # type: ignore[arg-type]
        agent=obj.get("agent"),
        task=obj.get("task") or "default",
        model=obj.get("model") or "unknown",
        usage=(counts[0], counts[1], counts[2], counts[3]),
        stop_reason=obj.get("stop_reason"),
        error_type=obj.get("error_type"),
        error_message=obj.get("error_message"),
        requests=requests,
    )


def parse_body(body: bytes) -> tuple[list[Event], list[str]]:
    """Every event of a body (one object, or NDJSON), or every problem as ``line N: ...``."""
    events: list[Event] = []
    problems: list[str] = []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return [], [f"body: not UTF-8 ({err.reason} at byte {err.start})"]
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"line {number}: not JSON ({err.msg} at column {err.colno})")
            continue
        found = parse_event(obj)
        if isinstance(found, Event):
            events.append(found)
        else:
            problems.extend(f"line {number}: {problem}" for problem in found)
    if not events and not problems:
        problems.append("body: no events")
    return events, problems


def apply_events(rec: Recorder, events: Iterable[Event]) -> int:
    """Record ``events`` as requests and executions; returns how many."""
    count = 0
    for event in events:
        agent = event.agent or rec.options.default_agent
        labels = rec.request_labels(agent, event.model)
        usage = Usage(*event.usage)
        cost = labels.cost(usage, event.model)
        labels.finish(event.ok, event.seconds, usage, cost, event.stop_reason, event.error_type, ())
        rec.exec_labels(agent, event.task).record(
            event.ok, event.seconds, usage.all_input, usage.output, event.requests
        )
        count += 1
    return count


def _drain(stream: Any, length: int, cap: int = 16 * MAX_BODY) -> None:
    """Read and drop an oversized body, so the client gets the 413 instead of a broken pipe."""
    left = min(length, cap)
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


def _json(start_response: Callable[..., Any], status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def events_route(
    get_recorder: Callable[[], Recorder | None], source: str = "http"
) -> Callable[..., list[bytes]]:
    """The WSGI route for ``POST /v1/events``."""

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
            return [b"405 Method Not Allowed: POST one event or NDJSON lines\n"]
        rec = get_recorder()
        if rec is None:
            return _json(start_response, "503 Service Unavailable", {"error": "not instrumented"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _json(start_response, "400 Bad Request", {"error": "Content-Length is not a number"})
        if length > MAX_BODY:
            _drain(environ["wsgi.input"], length)
            return _json(start_response, "413 Content Too Large", {"error": f"body over {MAX_BODY} bytes"})
        body = environ["wsgi.input"].read(length) if length else b""
        events, problems = parse_body(body)
        if problems:
            bad_lines = {p.split(":", 1)[0] for p in problems if p.startswith("line")}
            rec.events.inc((source, "rejected"), max(1, len(bad_lines)))
            return _json(
                start_response, "400 Bad Request", {"error": "no event applied", "problems": problems}
            )
        applied = apply_events(rec, events)
        rec.events.inc((source, "accepted"), applied)
        return _json(start_response, "200 OK", {"accepted": applied})

    return route
